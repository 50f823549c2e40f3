"""Materials Project download: a fake MPRester (no network), resume, retries, and a key that never leaks."""

from __future__ import annotations

import logging
import pickle
import traceback
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import requests
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from screening.io import materials_project as mp
from screening.io.materials_project import (
    MaterialsProjectError,
    MPAuthError,
    MPClientFactory,
    MPNetworkError,
    MPRateLimitError,
    RetryPolicy,
    classify_error,
    fetch_materials_project,
    iter_database_records,
    read_manifest,
    resolve_api_key,
)
from screening.io.records import StructureRecord, parse_record

KEY = "Zq7fakeKEYnotReal0123456789abcdE"  # 32 characters, like a real key
assert len(KEY) == 32


class MPRestError(Exception):
    """Stands in for mp_api's MPRestError (same messages as the real client)."""


def _material(k: int) -> SimpleNamespace:
    """Material ``mp-k``: a rock-salt or CsCl-type binary with 2 or 8 sites and gap k/10 eV."""
    pairs = [("Na", "Cl"), ("Mg", "O"), ("K", "Br"), ("Ca", "S"), ("Li", "F")]
    a, b = pairs[k % len(pairs)]
    if k % 2:
        s = Structure(Lattice.cubic(4.0 + 0.01 * k), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
    else:
        fcc = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
        s = Structure(Lattice.cubic(5.0 + 0.01 * k), [a] * 4 + [b] * 4, fcc + [[x + 0.5, y, z] for x, y, z in fcc])
    return SimpleNamespace(
        material_id=f"mp-{k}",
        formula_pretty=s.composition.reduced_formula,
        structure=s,
        band_gap=k / 10,
        nsites=len(s),
        elements=sorted({str(e) for e in s.composition.elements}),
        energy_above_hull=0.01 * k,
        formation_energy_per_atom=-1.0 - 0.01 * k,
        is_stable=k % 3 == 0,
    )


MATERIALS = [_material(k) for k in range(40)]


class FakeServer:
    """The server side of the fake: documents, a call log and scripted failures."""

    def __init__(self, materials=MATERIALS, key: str = KEY) -> None:
        self.materials = list(materials)
        self.key = key
        self.calls: list[dict] = []
        self.failures: list[Exception] = []  # raised by the next search calls, in order
        self.fail_on_call: dict[int, Exception] = {}  # call number -> exception

    def client_class(self):
        server = self

        class FakeMPRester:
            def __init__(self, api_key: str | None = None) -> None:
                if api_key != server.key:
                    raise MPRestError(
                        f"REST query returned with error status code 401 on URL "
                        f"https://api.materialsproject.org/heartbeat?key={api_key} with message:\ninvalid API key {api_key}"
                    )
                self.materials = SimpleNamespace(summary=SimpleNamespace(search=self._search))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def _search(self, fields=None, material_ids=None, band_gap=None, elements=None, num_sites=None, **kwargs):
                server.calls.append(
                    {
                        "fields": fields,
                        "material_ids": material_ids,
                        "band_gap": band_gap,
                        "elements": elements,
                        "num_sites": num_sites,
                        **kwargs,
                    }
                )
                number = len(server.calls)
                if number in server.fail_on_call:
                    raise server.fail_on_call.pop(number)
                if server.failures:
                    raise server.failures.pop(0)
                out = []
                for m in server.materials:
                    if material_ids is not None and m.material_id not in material_ids:
                        continue
                    if band_gap is not None and not band_gap[0] <= m.band_gap <= band_gap[1]:
                        continue
                    if elements and not set(elements) <= set(m.elements):
                        continue
                    if num_sites is not None and not num_sites[0] <= m.nsites <= num_sites[1]:
                        continue
                    out.append(SimpleNamespace(**{f: getattr(m, f, None) for f in (fields or vars(m))}))
                return out

        return FakeMPRester


def _too_many_requests() -> Exception:
    return MPRestError(
        "REST query returned with error status code 429 on URL https://api.materialsproject.org/materials/summary/ "
        "with message:\nToo Many Requests"
    )


def _fetch(server: FakeServer, out: Path, key: str = KEY, sleeps: list | None = None, **kwargs):
    factory = MPClientFactory(key, client_class=server.client_class())
    sleeps = [] if sleeps is None else sleeps
    kwargs.setdefault("retry", RetryPolicy(max_retries=3, backoff_s=0.5))
    return fetch_materials_project(factory, out, sleep=sleeps.append, progress=False, **kwargs)


def _all_text(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_download_writes_parquet_parts_with_requested_fields(tmp_path: Path) -> None:
    server = FakeServer()
    summary = _fetch(
        server, tmp_path / "db", band_gap=(1.0, 3.0), max_sites=4, fields=["energy_above_hull"], batch_size=3
    )
    expected = sorted(m.material_id for m in MATERIALS if 1.0 <= m.band_gap <= 3.0 and m.nsites <= 4)
    assert summary.complete and summary.matched == len(expected) == summary.rows
    assert summary.batches_total == -(-len(expected) // 3)
    parts = sorted((tmp_path / "db").glob("part-*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in parts])
    assert sorted(frame["material_id"]) == expected
    assert list(frame.columns) == ["material_id", "formula", "cif", "band_gap", "energy_above_hull"]
    by_id = {m.material_id: m for m in MATERIALS}
    for row in frame.itertuples():
        assert row.band_gap == pytest.approx(by_id[row.material_id].band_gap)
        assert row.energy_above_hull == pytest.approx(by_id[row.material_id].energy_above_hull)
        back = Structure.from_str(row.cif, fmt="cif")
        assert back.composition.reduced_formula == row.formula
        assert back.lattice.abc == pytest.approx(by_id[row.material_id].structure.lattice.abc, abs=1e-6)


def test_query_goes_to_mprester_search_as_criteria_and_fields(tmp_path: Path) -> None:
    server = FakeServer()
    _fetch(server, tmp_path / "db", band_gap=(0.5, 2.5), elements=["O", "Mg"], max_sites=8, batch_size=100)
    listing, batch = server.calls
    assert listing["band_gap"] == (0.5, 2.5) and listing["elements"] == ["Mg", "O"] and listing["num_sites"] == (1, 8)
    assert listing["fields"] == ["material_id"] and listing["deprecated"] is False
    assert set(mp.REQUIRED_FIELDS) <= set(batch["fields"])
    assert sorted(batch["material_ids"]) == sorted(
        m.material_id for m in MATERIALS if 0.5 <= m.band_gap <= 2.5 and {"Mg", "O"} <= set(m.elements)
    )


def test_database_reads_back_as_records(tmp_path: Path) -> None:
    server = FakeServer()
    _fetch(server, tmp_path / "db", batch_size=7)
    records = list(iter_database_records(tmp_path / "db"))
    assert all(isinstance(r, StructureRecord) for r in records)
    assert sorted(r.record_id for r in records) == sorted(m.material_id for m in MATERIALS)
    first = next(r for r in records if r.record_id == "mp-3")
    assert first.labels["band_gap"] == pytest.approx(0.3)
    assert parse_record(first).composition.reduced_formula == MATERIALS[3].formula_pretty
    assert mp.count_database_records(tmp_path / "db") == len(MATERIALS)


def test_resume_after_partial_download_skips_what_arrived(tmp_path: Path) -> None:
    server = FakeServer()
    server.fail_on_call = {
        4: requests.exceptions.ConnectionError("Connection aborted")
    }  # listing, batch 1, 2, then 3 fails
    out = tmp_path / "db"
    with pytest.raises(MPNetworkError) as info:
        _fetch(server, out, batch_size=5, retry=RetryPolicy(max_retries=0))
    message = str(info.value)
    assert "cannot reach the Materials Project API" in message and "2 of 8 batches" in message and "re-run" in message
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert not read_manifest(out)["complete"]

    server.calls.clear()
    summary = _fetch(server, out, batch_size=5)
    assert summary.batches_skipped == 2 and summary.batches_fetched == 6 and summary.complete
    assert all(c["material_ids"] is not None for c in server.calls)  # the id listing was not repeated
    fetched_again = {i for c in server.calls for i in c["material_ids"]}
    first_two = set(sorted(m.material_id for m in MATERIALS)[:10])
    assert not fetched_again & first_two
    ids = [r.record_id for r in iter_database_records(out)]
    assert len(ids) == len(set(ids)) == len(MATERIALS)

    server.calls.clear()
    again = _fetch(server, out, batch_size=5)  # a third run has nothing to do and needs no network
    assert again.batches_fetched == 0 and server.calls == []


def test_rate_limit_is_retried_with_exponential_backoff(tmp_path: Path) -> None:
    server = FakeServer()
    server.failures = [_too_many_requests(), _too_many_requests()]
    sleeps: list[float] = []
    summary = _fetch(server, tmp_path / "db", sleeps=sleeps, retry=RetryPolicy(max_retries=3, backoff_s=0.5))
    assert sleeps == [0.5, 1.0]
    assert summary.complete and summary.rows == len(MATERIALS)


def test_persistent_rate_limit_gives_a_clear_error_and_keeps_what_arrived(tmp_path: Path) -> None:
    server = FakeServer()
    server.fail_on_call = {n: _too_many_requests() for n in (3, 4, 5, 6)}  # batch 2 and its 3 retries
    out = tmp_path / "db"
    sleeps: list[float] = []
    with pytest.raises(MPRateLimitError) as info:
        _fetch(
            server, out, sleeps=sleeps, batch_size=10, retry=RetryPolicy(max_retries=3, backoff_s=1.0, max_wait_s=3.0)
        )
    assert sleeps == [1.0, 2.0, 3.0]
    assert "HTTP 429" in str(info.value) and "re-run" in str(info.value)
    assert [p.name for p in out.glob("part-*.parquet")] == ["part-00000.parquet"]


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(MPAuthError, match="MP_API_KEY"):
        resolve_api_key(None, environ={})
    assert resolve_api_key(None, environ={"MP_API_KEY": KEY}) == KEY
    assert resolve_api_key("  other  ", environ={"MP_API_KEY": KEY}) == "other"


def test_rejected_key_is_a_clear_error_that_does_not_contain_the_key(tmp_path: Path, caplog, capsys) -> None:
    wrong = "WrongKEY0000000000000000000wrong"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MPAuthError) as info:
        _fetch(FakeServer(), tmp_path / "db", key=wrong)
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert "rejected the API key" in text
    assert wrong not in text and "***" in text
    captured = capsys.readouterr()
    assert wrong not in caplog.text + captured.out + captured.err
    assert wrong.encode() not in _all_text(tmp_path / "db")


def test_key_is_never_written_to_files_logs_or_reprs(tmp_path: Path, caplog, capsys) -> None:
    server = FakeServer()
    server.failures = [_too_many_requests(), requests.exceptions.ConnectionError(f"failed with header x-api-key={KEY}")]
    caplog.set_level(logging.DEBUG)
    factory = MPClientFactory(KEY, client_class=server.client_class())
    summary = fetch_materials_project(factory, tmp_path / "db", batch_size=4, sleep=lambda s: None, progress=False)
    assert summary.complete
    captured = capsys.readouterr()
    assert KEY not in caplog.text + captured.out + captured.err
    assert "retry" in caplog.text  # the retries were logged, without the key
    assert KEY.encode() not in _all_text(tmp_path / "db")
    assert KEY not in repr(factory) + str(factory) + repr(summary)
    with pytest.raises(TypeError):
        pickle.dumps(factory)


def test_network_error_on_connect_is_clear_and_redacted(tmp_path: Path) -> None:
    class Offline:
        def __init__(self, api_key=None):
            raise requests.exceptions.ConnectionError(
                f"HTTPSConnectionPool(host='api.materialsproject.org', port=443): Max retries exceeded (key {api_key})"
            )

    factory = MPClientFactory(KEY, client_class=Offline)
    sleeps: list[float] = []
    with pytest.raises(MPNetworkError) as info:
        fetch_materials_project(
            factory,
            tmp_path / "db",
            sleep=sleeps.append,
            progress=False,
            retry=RetryPolicy(max_retries=2, backoff_s=0.1),
        )
    assert "cannot reach the Materials Project API" in str(info.value)
    assert KEY not in "".join(traceback.format_exception(info.value))
    assert sleeps == [0.1, 0.2]


def test_a_folder_holding_another_query_is_refused(tmp_path: Path) -> None:
    server = FakeServer()
    _fetch(server, tmp_path / "db", band_gap=(1.0, 2.0))
    with pytest.raises(MaterialsProjectError, match="another query"):
        _fetch(server, tmp_path / "db", band_gap=(1.0, 2.5))


def test_documents_without_structure_are_reported_not_stored(tmp_path: Path) -> None:
    broken = SimpleNamespace(**{**vars(_material(99)), "structure": None})
    server = FakeServer(MATERIALS[:5] + [broken])
    summary = _fetch(server, tmp_path / "db")
    assert summary.skipped_docs == ["mp-99"] and summary.rows == 5


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_too_many_requests(), "rate_limit"),
        (
            requests.exceptions.RetryError(
                "Max retries exceeded (Caused by ResponseError('too many 429 error responses'))"
            ),
            "rate_limit",
        ),
        (MPRestError("REST query returned with error status code 403 on URL x"), "auth"),
        (MPRestError("Please obtain a valid API key from https://materialsproject.org/api"), "auth"),
        (requests.exceptions.ConnectionError("Name or service not known"), "network"),
        (requests.exceptions.ReadTimeout("read timed out"), "network"),
        (ConnectionResetError("reset"), "network"),
        (MPRestError("REST query returned with error status code 400: bad field"), "other"),
        (MPRestError("No object found: mp-1429"), "other"),
    ],
)
def test_classify_error(exc: Exception, kind: str) -> None:
    assert classify_error(exc) == kind


def test_bad_options_are_refused() -> None:
    with pytest.raises(MaterialsProjectError, match="LO <= HI"):
        mp.make_query(band_gap=(3.0, 1.0))
    with pytest.raises(MaterialsProjectError, match="at least 1"):
        mp.make_query(max_sites=0)


def test_cli_fetch_mp_with_fake_client(tmp_path: Path, monkeypatch) -> None:
    import mp_api.client

    from screening.cli import app

    server = FakeServer()
    monkeypatch.setattr(mp_api.client, "MPRester", server.client_class())
    monkeypatch.delenv("MP_API_KEY", raising=False)
    runner = CliRunner()
    out = tmp_path / "db"
    res = runner.invoke(
        app,
        [
            "fetch-mp",
            "--band-gap",
            "1",
            "3",
            "--elements",
            "Na,Cl",
            "--max-sites",
            "8",
            "--api-key",
            KEY,
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert KEY not in res.output
    expected = [m for m in MATERIALS if 1 <= m.band_gap <= 3 and {"Na", "Cl"} <= set(m.elements)]
    assert f"{len(expected)} materials" in res.output
    assert KEY.encode() not in _all_text(out)

    res = runner.invoke(app, ["fetch-mp", "-o", str(tmp_path / "db2")])
    assert res.exit_code == 1 and "MP_API_KEY" in res.output

    monkeypatch.setenv("MP_API_KEY", "WrongKEY0000000000000000000wrong")
    res = runner.invoke(app, ["fetch-mp", "-o", str(tmp_path / "db3")])
    assert res.exit_code == 1 and "rejected the API key" in res.output
    assert "WrongKEY" not in res.output


# --- a list of ids (--ids, --ids-file) -------------------------------------------------------


def test_download_a_list_of_ids_skips_the_search(tmp_path: Path) -> None:
    server = FakeServer()
    summary = _fetch(server, tmp_path / "db", material_ids=["mp-7", "mp-3", "mp-7", "mp-12", "mp-999"], batch_size=2)
    assert all(call["material_ids"] is not None for call in server.calls)  # no listing search
    assert "deprecated" not in server.calls[0]
    frame = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "db").glob("part-*.parquet")))
    assert sorted(frame["material_id"]) == ["mp-12", "mp-3", "mp-7"]
    assert summary.matched == 4 and summary.rows == 3 and summary.skipped_docs == ["mp-999"]
    assert read_manifest(tmp_path / "db")["query"]["material_ids"] == ["mp-3", "mp-7", "mp-12", "mp-999"]
    again = _fetch(server, tmp_path / "db", material_ids=["mp-3", "mp-7", "mp-12", "mp-999"], batch_size=2)
    assert again.batches_fetched == 0 and again.batches_skipped == summary.batches_total
    with pytest.raises(MaterialsProjectError, match="another query"):
        _fetch(server, tmp_path / "db", material_ids=["mp-3"])


def test_bad_id_lists_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(MaterialsProjectError, match="mp149"):
        mp.make_query(material_ids=["mp-1", "mp149"])
    with pytest.raises(MaterialsProjectError, match="leave out --band-gap"):
        mp.make_query(band_gap=(1, 2), material_ids=["mp-1"])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# my shortlist\nmp-1, mp-2\n\nmp-3 mp-4  # done\nNaCl\n")
    with pytest.raises(MaterialsProjectError, match=r"ids.txt, line 5: 'NaCl'"):
        mp.read_ids_file(ids_file)
    ids_file.write_text("# nothing\n")
    with pytest.raises(MaterialsProjectError, match="no material ids"):
        mp.read_ids_file(ids_file)


def test_cli_fetch_mp_ids_and_ids_file(tmp_path: Path, monkeypatch) -> None:
    import mp_api.client

    from screening.cli import app

    server = FakeServer()
    monkeypatch.setattr(mp_api.client, "MPRester", server.client_class())
    monkeypatch.setenv("MP_API_KEY", KEY)
    runner = CliRunner()
    res = runner.invoke(app, ["fetch-mp", "--ids", "mp-1,mp-2", "--ids", "mp-5", "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "3 materials of 3 matched" in res.output
    assert sorted(pd.read_parquet(tmp_path / "a" / "part-00000.parquet")["material_id"]) == ["mp-1", "mp-2", "mp-5"]

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("mp-4\nmp-6  # a comment\nmp-404\n")
    res = runner.invoke(app, ["fetch-mp", "--ids-file", str(ids_file), "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "2 materials of 3 matched" in res.output and "mp-404" in res.output

    res = runner.invoke(app, ["fetch-mp", "--ids", "mp-1,149", "-o", str(tmp_path / "c")])
    assert res.exit_code == 1 and "'149'" not in res.output and "149" in res.output
    assert not (tmp_path / "c").exists()
