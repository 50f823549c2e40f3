"""The README's Python snippets run as written (in a temporary folder holding the small inputs they
name), so the library section cannot drift from the library again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_the_extractor_finds_blocks_and_only_python_ones() -> None:
    sample = "x\n```python\na = 1\n```\n```bash\nrm -rf /\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(sample) == ["a = 1\n", "b = a + 1\n"]


def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "the README's library section lost its Python examples"
    folder = tmp_path / "my_structures"  # the folder the library example reads
    folder.mkdir()
    Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(folder / "nacl.cif"))
    Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(folder / "mgo.cif"))
    Poscar(Structure(Lattice.cubic(6.6), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])).write_file(folder / "POSCAR_kbr")
    (folder / "broken.cif").write_text("data_x\nnot a crystal\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__readme__"}
    for k, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {k + 1}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - name the block that broke
            pytest.fail(f"README python block {k + 1} raised {type(exc).__name__}: {exc}\n{block}")
    # what the first snippet promises
    assert len(namespace["result"].frame) == 3 and [e.record_id for e in namespace["result"].errors] == ["broken"]
    assert namespace["pcs"].shape == (3, 2)
    assert list(namespace["frame"]["id"]) == ["NaCl"]
    assert "cgcnn_emb_0" in namespace["df"].columns
