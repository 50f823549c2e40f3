"""A damaged or tampered campaign store gets a named error and commits nothing; a deleted
write-ahead log is noticed; a clean exit leaves nothing only in the log (issue 27, items 3-4)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_objectives_bandgap import synthetic_pool_frame  # noqa: E402

from screening.bo.campaign import StopRules  # noqa: E402
from screening.bo.strategy import Strategy  # noqa: E402
from screening.objectives.bandgap.campaign_dir import create_pool_campaign  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture()
def campaign(tmp_path) -> tuple[Path, Path]:
    frame = synthetic_pool_frame(200, seed=4)
    frame.to_parquet(tmp_path / "pool.parquet")
    cd = create_pool_campaign(tmp_path / "c", tmp_path / "pool.parquet", 2.5, 0.01, Strategy(), stop=StopRules())
    ids = list(frame["id"])
    cd.campaign.tell(ids[:4], list(frame["band_gap"][:4]), source="prior")
    cd.campaign.close()
    results = tmp_path / "results.csv"
    results.write_text(f"id,band_gap\n{ids[10]},1.0\n{ids[11]},2.0\n")
    return tmp_path / "c", results


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "screening.cli", *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _count(folder: Path) -> int:
    with sqlite3.connect(folder / "campaign.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM observations").fetchone()[0]


def _corrupt(folder: Path, sql: str) -> None:
    conn = sqlite3.connect(folder / "campaign.sqlite")
    conn.execute(sql)
    conn.commit()
    conn.close()


DAMAGE = {
    "value-not-json": "UPDATE observations SET y = '{{' WHERE seq = 2",
    "value-is-text": "UPDATE observations SET y = '\"2.1 eV\"' WHERE seq = 2",
    "loss-is-text": "UPDATE observations SET loss = 'small' WHERE seq = 3",
    "point-not-json": "UPDATE observations SET x = '[1,' WHERE seq = 1",
    "config-not-json": "UPDATE meta SET value = '{{' WHERE key = 'config'",
    "pool-ref-not-json": "UPDATE meta SET value = '[' WHERE key = 'pool_ref'",
    "value-and-error-missing": "UPDATE observations SET y = NULL, error = NULL WHERE seq = 4",
    "observations-dropped": "DROP TABLE observations",
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_tell_on_a_damaged_store_names_it_and_commits_nothing(campaign, damage) -> None:
    folder, results = campaign
    _corrupt(folder, DAMAGE[damage])
    before = _count(folder) if damage != "observations-dropped" else None
    out = _cli("campaign", "tell", str(folder), str(results))
    assert out.returncode == 1, out.stderr
    assert "internal error" not in out.stderr
    assert "campaign.sqlite" in out.stderr and "error:" in out.stderr
    if before is not None:
        assert _count(folder) == before


def test_an_unterminated_quote_in_a_results_file_is_named(campaign) -> None:
    folder, results = campaign
    results.write_text('id,band_gap\n"mp-10,1.0\n')
    out = _cli("campaign", "tell", str(folder), str(results))
    assert out.returncode == 1 and "internal error" not in out.stderr
    assert "results.csv" in out.stderr
    assert _count(folder) == 4


def test_a_deleted_write_ahead_log_is_noticed(campaign) -> None:
    folder, results = campaign
    code = f"""
        import os, signal
        from screening.objectives.bandgap.campaign_dir import open_campaign_dir, tell_results_file
        cd = open_campaign_dir({str(folder)!r})
        tell_results_file(cd, {str(results)!r})  # committed: acknowledged
        os.kill(os.getpid(), signal.SIGKILL)  # before any checkpoint
        """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    wal = folder / "campaign.sqlite-wal"
    assert wal.exists() and wal.stat().st_size > 0  # the tell lives in the log
    wal.unlink()
    (folder / "campaign.sqlite-shm").unlink(missing_ok=True)
    out = _cli("campaign", "status", str(folder))
    assert out.returncode == 0, out.stderr
    assert "holds 4 observations but 6 were told" in out.stderr
    assert "write-ahead log is missing" in out.stderr


def test_a_clean_exit_leaves_nothing_only_in_the_log(campaign) -> None:
    folder, results = campaign
    out = _cli("campaign", "tell", str(folder), str(results))
    assert out.returncode == 0, out.stderr
    wal = folder / "campaign.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    # so copying campaign.sqlite alone keeps every tell
    copy = folder.parent / "copy"
    copy.mkdir()
    (copy / "campaign.sqlite").write_bytes((folder / "campaign.sqlite").read_bytes())
    assert _count(copy) == 6
    out = _cli("campaign", "status", str(folder))
    assert "note:" not in out.stderr
