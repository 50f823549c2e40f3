"""Make the pre-layout-change campaigns in ``tests/data/campaign_v0_1/`` with the code of bb14f27.

Why: ``tests/test_layout_compat.py`` must open campaigns that the *old* package wrote, not ones
today's code writes and reads back. Run it against a checkout of the old commit::

    git worktree add /tmp/old_layout bb14f27
    python tests/data/make_campaign_v0_1.py /tmp/old_layout tests/data/campaign_v0_1
    git worktree remove /tmp/old_layout

The script puts the old checkout first on ``sys.path`` and refuses to run if any ``screening``
module it imported came from elsewhere (the venv's editable install points at today's tree).
Pool campaigns record the pool's absolute path, so the pool is written to :data:`POOL_PATH`, a
fixed location the test recreates byte for byte from ``campaign_v0_1/pool.parquet``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

POOL_PATH = Path("/tmp/matscreen-campaign-v0_1/pool.parquet")


def main(old_tree: str, out: str) -> None:
    old = Path(old_tree).resolve()
    sys.path.insert(0, str(old / "tests"))
    sys.path.insert(0, str(old))
    import importlib.util

    import numpy as np
    import pandas as pd
    from typer.testing import CliRunner

    import screening

    # The old setup.py maps models/ to screening.models; without this the editable install's
    # finder would resolve screening.models to today's tree.
    spec = importlib.util.spec_from_file_location(
        "screening.models", old / "models" / "__init__.py", submodule_search_locations=[str(old / "models")]
    )
    assert spec is not None and spec.loader is not None, f"{old}/models/__init__.py is missing"
    models = importlib.util.module_from_spec(spec)
    sys.modules["screening.models"] = models
    spec.loader.exec_module(models)
    from test_objectives_bandgap import synthetic_pool_frame

    from screening.cli import app
    from screening.search import open_campaign_dir
    from screening.synthesis_campaign import SynthesisCampaign, build_objective

    outdir = Path(out).resolve()
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    runner = CliRunner()

    def cli(*args: str) -> str:
        res = runner.invoke(app, list(args))
        if res.exit_code != 0:
            raise SystemExit(f"matscreen {' '.join(args)} failed:\n{res.output}\n{res.exception!r}")
        return res.output

    # (a) band-gap pool campaign: 3 rounds of 2 told through the CLI (one failed), 2 pending.
    frame = synthetic_pool_frame(60, seed=3)
    POOL_PATH.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(POOL_PATH, index=False)
    shutil.copyfile(POOL_PATH, outdir / "pool.parquet")
    gaps = dict(zip(frame["id"], frame["band_gap"]))
    pool_dir = outdir / "pool_campaign"
    cli(
        "campaign",
        "new",
        str(pool_dir),
        "--pool",
        str(POOL_PATH),
        "--target",
        "2.9",
        "--tol",
        "0.02",
        "--batch",
        "2",
        "--seed",
        "1",
        "--n-init",
        "3",
    )
    scratch = outdir / "_scratch"
    scratch.mkdir()
    for k in range(3):
        ask = scratch / f"ask{k}.csv"
        cli("campaign", "ask", str(pool_dir), "-o", str(ask))
        ids = pd.read_csv(ask, dtype={"id": str})["id"].tolist()
        rows = [{"id": i, "band_gap": gaps[i], "error": ""} for i in ids]
        if k == 1:
            rows[1] = {"id": ids[1], "band_gap": "", "error": "furnace tripped"}
        pd.DataFrame(rows).to_csv(scratch / f"tell{k}.csv", index=False)
        cli("campaign", "tell", str(pool_dir), str(scratch / f"tell{k}.csv"))
    cli("campaign", "ask", str(pool_dir), "-o", str(scratch / "pending.csv"))

    # (b) --objective campaign over the synthesis objective by its old module path: created and
    # asked, nothing told (each told condition stores 21 droplet spectra, ~90 kB).
    obj_dir = outdir / "objective_campaign"
    cli(
        "campaign",
        "new",
        str(obj_dir),
        "--objective",
        "screening.objectives.synthesis:SynthesisObjective",
        "--model",
        "loss",
        "--acq",
        "logei",
        "--batch",
        "2",
        "--seed",
        "2",
        "--n-init",
        "3",
    )
    cd = open_campaign_dir(obj_dir)
    cd.campaign.ask()
    cd.campaign.close()

    # (c) synthesis campaign: one LHS round of 4 on the virtual lab (3 droplets), then 4 pending.
    syn_dir = outdir / "synthesis_campaign"
    sc = SynthesisCampaign(syn_dir, build_objective("virtual", replicates=3, seed=0), method="bo", batch=4, seed=3)
    sc.run(1)
    sc.ask_csv(scratch / "synth-ask.csv")
    sc.close()
    shutil.rmtree(scratch)

    loaded = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.split(".")[0] == "screening"}
    stray = {n: f for n, f in loaded.items() if f and not Path(f).resolve().is_relative_to(old)}
    if stray or not Path(screening.__file__).resolve().is_relative_to(old):
        raise SystemExit(f"imported screening modules from outside {old}: {stray}")
    print(f"old package {screening.__file__}; {len(loaded)} screening modules, all from {old}")
    print(f"numpy {np.__version__}, pandas {pd.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: make_campaign_v0_1.py OLD_TREE OUT_DIR")
    main(sys.argv[1], sys.argv[2])
