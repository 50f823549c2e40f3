#!/usr/bin/env bash
# CI: the package as a user gets it. Build a wheel, install it (not editable) into a fresh virtual
# environment, and from a folder outside the source tree run `matscreen --version` and
# `matscreen featurize` with the default (shipped) model on two generated CIFs.
# Usage: .ci/wheel_check.sh  (from anywhere; PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/matscreen-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
# Nothing may come from the checkout at run time: no MATSCREEN_PRETRAINED, no PYTHONPATH.
unset MATSCREEN_PRETRAINED PYTHONPATH

echo "== building the wheel"
"$PYTHON" -m venv "$WORK/build-env"
"$WORK/build-env/bin/pip" wheel -q --no-deps -w "$WORK/dist" "$ROOT"
WHEEL="$(ls "$WORK"/dist/matscreen-*.whl)"
echo "$WHEEL"

echo "== checking the wheel's contents"
"$PYTHON" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = [
    "screening/pretrained/cgcnn_bandgap_128.safetensors",
    "screening/pretrained/MODEL_CARD.md",
    "screening/data/agbonn_target.json",
    "screening/data/virtual_lab_agbonn.json",
    "screening/models/cgcnn.py",
]
missing = [n for n in need if n not in names]
licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")]
if missing or not licence:
    sys.exit(f"wheel lacks {missing or ''} {'' if licence else 'LICENSE in .dist-info'}")
print(f"ok: {len(names)} files, weights, model card, data files and {licence[0]}")
PY

echo "== installing into a fresh environment"
"$PYTHON" -m venv "$WORK/env"
# (the grep hides pip's notes about index folders this machine lacks; pipefail keeps pip's status)
"$WORK/env/bin/pip" install -q -c "$ROOT/constraints.txt" "$WHEEL" 2>&1 | { grep -v "^WARNING: Location" || true; }

echo "== running from outside the source tree"
cd "$WORK"
"$WORK/env/bin/matscreen" --version
"$WORK/env/bin/python" - <<'PY'
from pathlib import Path
from pymatgen.core import Lattice, Structure
Path("cifs").mkdir()
Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename="cifs/NaCl.cif")
Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename="cifs/MgO.cif")
PY
"$WORK/env/bin/matscreen" featurize cifs -o out/emb.parquet --no-cache --workers 0
"$WORK/env/bin/python" - <<'PY'
import sys
import pandas as pd
import screening
frame = pd.read_parquet("out/emb.parquet")
if "/site-packages/" not in screening.__file__:
    sys.exit(f"screening was imported from {screening.__file__}, not the installed wheel")
if sorted(frame["id"]) != ["MgO", "NaCl"] or frame.filter(like="emb_").shape[1] != 128:
    sys.exit(f"unexpected featurize output: {frame.shape}, ids {list(frame['id'])}")
print(f"ok: {len(frame)} rows, {frame.filter(like='emb_').shape[1]} embedding columns, pred_band_gap "
      f"{frame['pred_band_gap'].round(2).tolist()}")
PY
echo "wheel check passed"
