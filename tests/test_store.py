"""SQLite campaign store: atomic writes, refusal to clobber, and survival of SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from screening.bo.campaign import Campaign, StopRules
from screening.bo.store import CampaignStore, ObservationRecord, StoreError
from screening.bo.strategy import Strategy

REPO = Path(__file__).resolve().parents[1]


def test_create_open_and_refuse_to_overwrite(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    with CampaignStore.create(path, {"seed": 3}, {"content_hash": "abc"}) as s:
        assert s.config == {"seed": 3}
    with pytest.raises(StoreError, match="already exists"):
        CampaignStore.create(path, {"seed": 4})
    with CampaignStore.open(path) as s:
        assert s.config == {"seed": 3} and s.pool_ref == {"content_hash": "abc"}
        mode = s._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    with pytest.raises(StoreError, match="no campaign file"):
        CampaignStore.open(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_text("not a database at all" * 100)
    with pytest.raises(StoreError, match="not a matscreen campaign"):
        CampaignStore.open(tmp_path / "junk.sqlite")


def test_record_tell_is_all_or_nothing(tmp_path) -> None:
    with CampaignStore.create(tmp_path / "c.sqlite", {}) as s:
        s.add_pending([("a", None), ("b", None)])
        s.record_tell([ObservationRecord("a", None, 1.5, 0.5, None, "search")])
        assert [p.key for p in s.pending()] == ["b"]
        with pytest.raises(StoreError, match="already told"):
            s.record_tell(
                [
                    ObservationRecord("b", None, 1.0, 0.1, None, "search"),
                    ObservationRecord("a", None, 1.0, 0.1, None, "search"),
                ]
            )
        assert [r.key for r in s.observations()] == ["a"]
        assert [p.key for p in s.pending()] == ["b"]
        s.record_tell([ObservationRecord("c", [1.0, 2.0], [0.1, 0.2], 0.3, None, "prior")])
        rec = s.observations()[-1]
        assert rec.x == [1.0, 2.0] and rec.y == [0.1, 0.2] and rec.seq == 2


WORKER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_store import slow_objective, STRATEGY, BUDGET
    from screening.bo.campaign import Campaign, StopRules
    path = sys.argv[1]
    obj = slow_objective(delay=float(sys.argv[2]))
    Campaign.open(path, obj).run()
""")

STRATEGY = Strategy(model="value", acquisition="window", n_init=3)
BUDGET = 12


class _Slow:
    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.domain, self.target, self.tolerance = inner.domain, inner.target, inner.tolerance

    def evaluate(self, points):
        time.sleep(self.delay)
        return self.inner.evaluate(points)

    def loss(self, y):
        return self.inner.loss(y)

    def is_hit(self, y):
        return self.inner.is_hit(y)


def slow_objective(delay: float = 0.0):
    from test_campaign import synthetic_objective

    return _Slow(synthetic_objective(n=200, seed=4, target=9.0), delay)  # no hit: runs to budget


def _new_campaign(path: Path) -> Campaign:
    obj = slow_objective()
    c = Campaign.create(path, obj, STRATEGY, seed=11, stop=StopRules(budget=BUDGET))
    c.tell(["c0", "c1", "c2"], [float(obj.inner.band_gaps[i]) for i in range(3)], source="prior")
    return c


def _count(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_mid_campaign_loses_nothing_and_resumes_identically(tmp_path) -> None:
    # Reference: an uninterrupted run with the same seed.
    ref = _new_campaign(tmp_path / "ref.sqlite")
    ref.run()
    ref_keys = [r.key for r in ref.store.observations()]
    assert len(ref_keys) == 3 + BUDGET

    path = tmp_path / "killed.sqlite"
    _new_campaign(path).close()
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), "0.3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 240
    while _count(path) < 3 + 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    resumed = Campaign.open(path, slow_objective())
    told = [r.key for r in resumed.store.observations()]
    assert 3 + 5 <= len(told) < 3 + BUDGET
    assert told == ref_keys[: len(told)]  # every told observation is there, in order
    pending = [p for p in resumed.pending_points()]
    next_point = pending[0] if pending else resumed.ask(1)[0]
    assert next_point == ref_keys[len(told)]  # the same next suggestion as the uninterrupted run
    if not pending:
        resumed.store.clear_pending()
    resumed.run()
    assert [r.key for r in resumed.store.observations()] == ref_keys
    assert resumed.stopped_because == "budget"


KILLED_ASK = textwrap.dedent("""
    import os, signal, sys
    from screening.objectives.bandgap.campaign_dir import open_campaign_dir
    cd = open_campaign_dir(sys.argv[1])
    print(",".join(cd.campaign.ask()), flush=True)  # the suggestions are committed as pending here
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before writing the ask file
""")


@pytest.mark.slow
def test_an_ask_killed_after_saving_its_suggestions_resumes_to_them(tmp_path) -> None:
    """SIGKILL between the pending commit and the ask file: the rerun writes the same ids, and a
    retried tell of the same results file is idempotent."""
    import pandas as pd
    from test_objectives_bandgap import synthetic_pool_frame
    from typer.testing import CliRunner

    from screening.cli import app

    runner = CliRunner()
    frame = synthetic_pool_frame(300, seed=2)
    frame.to_parquet(tmp_path / "pool.parquet")
    lab = tmp_path / "lab"
    res = runner.invoke(
        app, ["campaign", "new", str(lab), "--pool", str(tmp_path / "pool.parquet"), "--target", "2.5", "--batch", "2"]
    )
    assert res.exit_code == 0, res.output
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_ASK, str(lab)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed_ids = proc.stdout.strip().split(",")
    assert len(killed_ids) == 2
    res = runner.invoke(app, ["campaign", "ask", str(lab), "-o", str(tmp_path / "ask.csv")])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "ask.csv")["id"].tolist() == killed_ids
    with CampaignStore.open(lab / "campaign.sqlite") as s:
        assert [p.key for p in s.pending()] == killed_ids  # nothing left pending for good
    gaps = dict(zip(frame["id"], frame["band_gap"]))
    pd.DataFrame({"id": killed_ids, "band_gap": [gaps[i] for i in killed_ids]}).to_csv(tmp_path / "r.csv", index=False)
    for expected in ("told 2 asked result(s)", "2 already recorded"):
        res = runner.invoke(app, ["campaign", "tell", str(lab), str(tmp_path / "r.csv")])
        assert res.exit_code == 0 and expected in res.output, res.output
    with CampaignStore.open(lab / "campaign.sqlite") as s:
        assert [r.key for r in s.observations()] == killed_ids and s.pending() == []
