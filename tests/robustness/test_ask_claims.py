"""`campaign ask --new` under a kill and under concurrency (issue 27, item 6).

- A kill after an ask claimed its points but before it wrote its file: the retry finishes that
  ask (same points, same file) instead of proposing others and leaving the first pending in no
  file.
- Two asks at once: the points are claimed in the transaction that checks nothing changed since
  they were chosen, so the two batches never share a point.
- A second `--new` never replaces an ask file whose points are still pending.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_objectives_bandgap import synthetic_pool_frame  # noqa: E402

from screening.bo.campaign import StopRules  # noqa: E402
from screening.bo.strategy import Strategy  # noqa: E402
from screening.objectives.bandgap.campaign_dir import (  # noqa: E402
    ask_into_file,
    create_pool_campaign,
    open_campaign_dir,
)

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = Strategy(surrogate="neighbour", acquisition="window", n_neighbours=8, neighbour_components=6)


@pytest.fixture()
def campaign(tmp_path) -> Path:
    frame = synthetic_pool_frame(300, seed=4)
    frame.to_parquet(tmp_path / "pool.parquet")
    cd = create_pool_campaign(tmp_path / "c", tmp_path / "pool.parquet", 2.5, 0.01, STRATEGY, stop=StopRules())
    ids = list(frame["id"])
    cd.campaign.tell(ids[:4], list(frame["band_gap"][:4]), source="prior")
    cd.campaign.close()
    return tmp_path / "c"


def _run(code: str, *, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT)
    if wait:
        proc.wait(timeout=300)
    return proc


def _pending(folder: Path) -> list[str]:
    cd = open_campaign_dir(folder)
    keys = [p.key for p in cd.campaign.store.pending()]
    cd.campaign.close()
    return keys


def test_an_ask_killed_before_its_file_is_finished_by_the_retry(campaign) -> None:
    # first a normal ask, so the killed one is a second batch (`--new`)
    cd = open_campaign_dir(campaign)
    first, first_path = ask_into_file(cd, None, 2)
    cd.campaign.close()
    killed = _run(
        f"""
        import os, signal
        import screening.safe_csv as sc
        from screening.objectives.bandgap.campaign_dir import ask_into_file, open_campaign_dir
        sc.write_text_csv = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed before the file
        ask_into_file(open_campaign_dir({str(campaign)!r}), None, 3, fresh=True)
        """
    )
    assert killed.returncode == -9
    claimed = _pending(campaign)[2:]
    assert len(claimed) == 3  # committed: pending, but in no file
    assert not (campaign / "ask-0004-2.csv").exists()
    cd = open_campaign_dir(campaign)
    frame, path = ask_into_file(cd, None, 3, fresh=True)  # the user runs the same command again
    notes = cd.campaign.notices()
    cd.campaign.close()
    assert list(frame["id"]) == claimed
    assert path == campaign / "ask-0004-2.csv" and path != first_path
    assert any("interrupted" in n for n in notes)
    assert _pending(campaign) == list(first["id"]) + claimed  # nothing new proposed
    # and once written, the next `--new` proposes new points again
    cd = open_campaign_dir(campaign)
    more, more_path = ask_into_file(cd, None, 1, fresh=True)
    cd.campaign.close()
    assert set(more["id"]).isdisjoint(claimed) and more_path == campaign / "ask-0004-3.csv"


def test_two_concurrent_asks_never_hand_out_the_same_point(campaign) -> None:
    # each process chooses, then waits, so both choose from the same state before either claims
    code = f"""
        import time
        from screening.bo import campaign as cm
        from screening.objectives.bandgap.campaign_dir import ask_into_file, open_campaign_dir
        real = cm.Campaign._propose
        def slow(self, n):
            points = real(self, n)
            time.sleep(1.5)
            return points
        cm.Campaign._propose = slow
        cd = open_campaign_dir({str(campaign)!r})
        ask_into_file(cd, None, 3, fresh=True)
        """
    procs = [_run(code, wait=False) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    files = sorted(campaign.glob("ask-*.csv"))
    assert [f.name for f in files] == ["ask-0004-2.csv", "ask-0004.csv"]
    batches = [list(pd.read_csv(f)["id"]) for f in files]
    assert all(len(b) == 3 for b in batches)
    assert set(batches[0]).isdisjoint(batches[1])
    assert sorted(_pending(campaign)) == sorted(batches[0] + batches[1])


def test_a_new_batch_never_replaces_a_file_whose_points_are_pending(campaign, tmp_path) -> None:
    cd = open_campaign_dir(campaign)
    a, pa = ask_into_file(cd, tmp_path / "lab.csv", 2)
    b, pb = ask_into_file(cd, tmp_path / "lab.csv", 2, fresh=True)
    assert pa == tmp_path / "lab.csv" and pb == tmp_path / "lab-2.csv"
    assert list(pd.read_csv(pa)["id"]) == list(a["id"])  # the first file is intact
    # once its points are told, the name is free again
    cd.campaign.tell(list(a["id"]) + list(b["id"]), [1.0, 1.1, 1.2, 1.3])
    _, pc = ask_into_file(cd, tmp_path / "lab.csv", 1, fresh=True)
    cd.campaign.close()
    assert pc == tmp_path / "lab.csv"
