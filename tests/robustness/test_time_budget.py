"""A record that takes longer than its wall-clock budget is an error in the report, not a stall."""

from __future__ import annotations

import time

import pytest
from pymatgen.core import Lattice, Structure

import screening.io.records as records_module
from screening.featurize.featurizer import prepare_record
from screening.io.records import StructureRecord
from screening.io.time_budget import RecordTimeout, time_budget


def test_the_budget_interrupts_a_slow_block_and_then_leaves_no_alarm_behind() -> None:
    start = time.perf_counter()
    with pytest.raises(RecordTimeout, match="0.2 s"), time_budget(0.2):
        time.sleep(5)
    assert time.perf_counter() - start < 2
    with time_budget(0.5):
        time.sleep(0.05)  # within budget: nothing raised
    time.sleep(0.6)  # and the alarm is cleared afterwards


def test_a_slow_record_is_reported_and_the_next_one_is_embedded(monkeypatch) -> None:
    cif = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
    slow = StructureRecord(record_id="slow", source="slow.cif", text=cif)
    fast = StructureRecord(record_id="fast", source="fast.cif", text=cif)
    real_parse = records_module.parse_record

    def parse(record, **kwargs):
        if record.record_id == "slow":
            time.sleep(5)  # a pathological file the parser chews on
        return real_parse(record, **kwargs)

    monkeypatch.setattr(records_module, "parse_record", parse)
    bad = prepare_record(slow, 8.0, 12, seconds=0.3)
    assert bad.error is not None and bad.error.reason.startswith("time_budget:")
    assert bad.error.source == "slow.cif" and bad.graph is None
    good = prepare_record(fast, 8.0, 12, seconds=0.3)
    assert good.error is None and good.graph is not None
