"""Materials Project download into the project's local database format, resumable and key-safe.

The local database is a folder:

    db/
      manifest.json          format, the query (band-gap window, elements, max sites, fields),
                             batch size and which batches have arrived
      material_ids.json      every material id the query matched, sorted (written once)
      part-00000.parquet     one file per batch of ids: material_id, formula, cif (the structure
      part-00001.parquet     as CIF text), band_gap (eV) and the other requested fields
      ...

Each part is a table with a ``cif`` column, so any single part is also a source that
:func:`screening.io.sources.iter_records` reads; :func:`iter_database_records` reads the whole
folder. The download runs in two steps so it can resume: first the ids of every matching
material (one small query), then full documents batch by batch, each batch committed to disk
(temporary file, then an atomic rename) before the manifest records it. A re-run of the same
query skips every batch that arrived; an interrupted batch is fetched again.

The API key is a secret: it goes only to the client's constructor. It is never stored in the
manifest, a log line, a ``repr`` or an error message (every message that leaves this module is
scrubbed of it). The client is injected (``client_factory``), so tests run with a fake client
that has ``MPRester``'s interface and never touch the network.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from screening.errors import MatscreenError, RecordError
from screening.progress import progress_bar
from screening.redaction import redact as redact_text
from screening.redaction import register_secret

log = logging.getLogger(__name__)

DB_FORMAT = "matscreen-mp-db-1"
MANIFEST = "manifest.json"
IDS_FILE = "material_ids.json"
PART_PATTERN = "part-{:05d}.parquet"
API_KEY_ENV = "MP_API_KEY"

#: Fields every database row needs; more can be requested with ``fields``.
REQUIRED_FIELDS = ("material_id", "formula_pretty", "structure", "band_gap")
#: The default download: the required fields plus a few cheap, useful labels.
DEFAULT_FIELDS = REQUIRED_FIELDS + ("nsites", "elements", "formation_energy_per_atom", "energy_above_hull", "is_stable")


class MaterialsProjectError(MatscreenError):
    """The Materials Project download failed; the message says why and what to do."""


class MPAuthError(MaterialsProjectError):
    """No API key, or the server rejected it."""


class MPNetworkError(MaterialsProjectError):
    """The Materials Project API could not be reached."""


class MPRateLimitError(MaterialsProjectError):
    """The API kept answering HTTP 429 (too many requests) after every retry."""


# ---------------------------------------------------------------------------------------------
# The API key and the client
# ---------------------------------------------------------------------------------------------


def resolve_api_key(
    api_key: str | None = None, environ: Mapping[str, str] | None = None, api_key_file: str | Path | None = None
) -> str:
    """The key from ``--api-key-file``, else ``--api-key``, else ``MP_API_KEY``; a clear
    :class:`MPAuthError` if none. The key is registered for redaction (:mod:`screening.redaction`),
    so no ``error:`` line of the command line can print it."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if api_key_file is not None:
        try:
            key = Path(api_key_file).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise MPAuthError(f"the API key file {api_key_file} is not UTF-8 text") from None
        except OSError as exc:
            raise MPAuthError(f"cannot read the API key file {api_key_file}: {exc.strerror or exc}") from None
        if not key:
            raise MPAuthError(f"the API key file {api_key_file} is empty")
    else:
        key = (api_key or env.get(API_KEY_ENV) or "").strip()
    if not key:
        raise MPAuthError(
            f"no Materials Project API key: set the {API_KEY_ENV} environment variable or pass --api-key-file "
            "(keys are at https://materialsproject.org/api)"
        )
    register_secret(key)
    return key


class MPClientFactory:
    """Builds the API client with the key, and redacts the key from any text.

    ``client_class`` is ``mp_api.client.MPRester`` by default; tests pass a fake with the same
    interface. The key lives only in this object and is hidden from ``repr`` and pickling.
    """

    def __init__(self, api_key: str, client_class: Callable[..., Any] | None = None) -> None:
        self._api_key = api_key
        self._client_class = client_class

    def __call__(self) -> Any:
        client_class = self._client_class
        if client_class is None:
            try:
                from mp_api.client import MPRester
            except ImportError:
                raise MaterialsProjectError(
                    "mp-api is not installed: pip install 'matscreen[mp]' (or pip install mp-api)"
                ) from None
            client_class = MPRester
        return client_class(self._api_key)

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***``."""
        return redact(text, [self._api_key])

    def __repr__(self) -> str:
        name = getattr(self._client_class, "__name__", "MPRester")
        return f"MPClientFactory(client={name}, api_key=<hidden>)"

    __str__ = __repr__

    def __reduce__(self):  # never let the key travel inside a pickle
        raise TypeError("MPClientFactory holds an API key and cannot be pickled")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (of 4 characters or more) in ``text`` by ``***``: in any letter case,
    URL-encoded or base64-encoded (:func:`screening.redaction.redact`)."""
    return redact_text(text, secrets)


# ---------------------------------------------------------------------------------------------
# Classifying and retrying API failures
# ---------------------------------------------------------------------------------------------


def classify_error(exc: BaseException) -> str:
    """Which kind of failure ``exc`` is: ``rate_limit``, ``auth``, ``network`` or ``other``.

    mp-api reports HTTP errors as ``MPRestError("... error status code 429 ...")``; its own
    urllib3 retries end in ``requests.exceptions.RetryError`` ("too many 429 error responses");
    an unreachable server is a ``requests.exceptions.ConnectionError`` (an ``OSError``).
    """
    text = f"{type(exc).__name__}: {exc}".lower()
    if any(s in text for s in ("status code 429", "429 error", "http 429", "too many requests", "rate limit")):
        return "rate_limit"
    if any(
        s in text for s in ("status code 401", "status code 403", "api key", "api_key", "unauthorized", "forbidden")
    ):
        return "auth"
    network_names = ("connectionerror", "timeout", "connecttimeout", "readtimeout", "maxretryerror", "retryerror")
    if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__.lower() in network_names:
        return "network"
    if isinstance(exc, OSError) and "requests" in type(exc).__module__:
        return "network"
    if any(s in text for s in ("status code 502", "status code 503", "status code 504", "timed out")):
        return "network"
    return "other"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for rate limits and network hiccups: waits ``backoff_s * 2**k`` seconds, k = 0, 1, ..."""

    max_retries: int = 5
    backoff_s: float = 2.0
    max_wait_s: float = 120.0

    def wait(self, attempt: int) -> float:
        return min(self.backoff_s * (2**attempt), self.max_wait_s)


def call_with_retry(
    call: Callable[[], Any],
    what: str,
    policy: RetryPolicy,
    redactor: Callable[[str], str],
    sleep: Callable[[float], None] = time.sleep,
    resume_hint: str = "",
) -> Any:
    """Run ``call``; retry rate limits and network errors with exponential backoff.

    A rejected key fails at once. Every message is passed through ``redactor`` and the
    original exception is not chained (its text or its request headers could hold the key).
    """
    attempt = 0
    while True:
        try:
            return call()
        except MaterialsProjectError:
            raise
        except SystemExit as exc:  # a client that exits with a message: an error, its text redacted
            hint = f" {resume_hint}" if resume_hint else ""
            raise MaterialsProjectError(
                f"{what}: the Materials Project client stopped ({redactor(str(exc.code))}).{hint}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - mp-api / requests raise many kinds
            kind = classify_error(exc)
            detail = redactor(f"{type(exc).__name__}: {exc}")
            if len(detail) > 400:
                detail = detail[:400] + " ..."
            if kind in ("rate_limit", "network") and attempt < policy.max_retries:
                wait = policy.wait(attempt)
                reason = "rate limited (HTTP 429)" if kind == "rate_limit" else "network error"
                log.warning("%s: %s; retry %d/%d in %.1f s", what, reason, attempt + 1, policy.max_retries, wait)
                sleep(wait)
                attempt += 1
                continue
            hint = f" {resume_hint}" if resume_hint else ""
            if kind == "rate_limit":
                raise MPRateLimitError(
                    f"{what}: the Materials Project API is rate-limiting this key (HTTP 429) and still did after "
                    f"{policy.max_retries} retries with backoff; wait a few minutes and re-run.{hint}"
                ) from None
            if kind == "network":
                raise MPNetworkError(
                    f"{what}: cannot reach the Materials Project API ({detail}); check the network connection "
                    f"and re-run.{hint}"
                ) from None
            if kind == "auth":
                raise MPAuthError(
                    f"{what}: the Materials Project API rejected the API key ({detail}); check MP_API_KEY / "
                    f"--api-key-file (new-style keys are 32 characters, from https://materialsproject.org/api).{hint}"
                ) from None
            raise MaterialsProjectError(f"{what}: the Materials Project query failed ({detail}).{hint}") from None


# ---------------------------------------------------------------------------------------------
# The query and the rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MPQuery:
    """What to download: a band-gap window (eV), required elements, a site limit, the fields."""

    band_gap: tuple[float, float] | None = None
    elements: tuple[str, ...] | None = None
    max_sites: int | None = None
    fields: tuple[str, ...] = DEFAULT_FIELDS
    #: A list of ids to download as they are (``--ids``), instead of a search.
    material_ids: tuple[str, ...] | None = None

    def criteria(self) -> dict[str, Any]:
        """Keyword arguments for ``mpr.materials.summary.search`` (without ``fields``).

        Deprecated materials (superseded calculations) are left out.
        """
        crit: dict[str, Any] = {"deprecated": False}
        if self.band_gap is not None:
            crit["band_gap"] = (float(self.band_gap[0]), float(self.band_gap[1]))
        if self.elements:
            crit["elements"] = list(self.elements)
        if self.max_sites is not None:
            crit["num_sites"] = (1, int(self.max_sites))
        return crit

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["band_gap"] = list(self.band_gap) if self.band_gap is not None else None
        d["elements"] = list(self.elements) if self.elements else None
        d["fields"] = list(self.fields)
        # Absent unless set, so folders written before ``--ids`` existed still resume.
        ids = d.pop("material_ids")
        if ids:
            d["material_ids"] = list(ids)
        return d


MATERIAL_ID = re.compile(r"^[a-z]+-\d+$")


def check_material_ids(ids: Iterable[str], where: str = "--ids") -> tuple[str, ...]:
    """Sorted, de-duplicated Materials Project ids (``mp-149``, ``mvc-12``); a malformed one is
    refused by name, so a typo never turns into a silent 'not returned'."""
    cleaned = [i.strip() for i in ids if i.strip()]
    bad = [i for i in cleaned if not MATERIAL_ID.match(i)]
    if bad:
        raise MaterialsProjectError(f"{where}: not Materials Project ids (like mp-149): {', '.join(bad[:5])}")
    if not cleaned:
        raise MaterialsProjectError(f"{where}: no material ids given")
    return tuple(sorted(set(cleaned), key=lambda i: (i.split("-")[0], int(i.split("-")[1]))))


def read_ids_file(path: str | Path) -> list[str]:
    """Material ids from a text file: one per line, or separated by commas or spaces; ``#`` starts
    a comment. A malformed id is refused with its file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MaterialsProjectError(f"cannot read the ids file {path}: {exc}") from exc
    ids: list[str] = []
    for number, line in enumerate(lines, start=1):
        for token in line.split("#", 1)[0].replace(",", " ").split():
            if not MATERIAL_ID.match(token):
                raise MaterialsProjectError(
                    f"{path}, line {number}: {token!r} is not a Materials Project id (like mp-149)"
                )
            ids.append(token)
    if not ids:
        raise MaterialsProjectError(f"{path}: no material ids in the file")
    return ids


def make_query(
    band_gap: Sequence[float] | None = None,
    elements: Sequence[str] | None = None,
    max_sites: int | None = None,
    fields: Sequence[str] | None = None,
    material_ids: Sequence[str] | None = None,
) -> MPQuery:
    """Validate the user's options into an :class:`MPQuery` (required fields always included).

    ``material_ids`` downloads exactly those materials; it cannot be mixed with the search filters
    (a listed id outside a window would vanish without a word).
    """
    ids = None
    if material_ids is not None:
        if band_gap is not None or elements or max_sites is not None:
            raise MaterialsProjectError(
                "--ids/--ids-file download the listed materials as they are; leave out --band-gap, --elements "
                "and --max-sites"
            )
        ids = check_material_ids(material_ids)
    if band_gap is not None:
        if len(band_gap) != 2 or not float(band_gap[0]) <= float(band_gap[1]):
            raise MaterialsProjectError(f"--band-gap needs LO HI with LO <= HI (eV), got {list(band_gap)}")
        band_gap = (float(band_gap[0]), float(band_gap[1]))
    if max_sites is not None and int(max_sites) < 1:
        raise MaterialsProjectError(f"--max-sites must be at least 1, got {max_sites}")
    els = tuple(sorted({e.strip() for e in elements if e.strip()})) if elements else None
    wanted = list(REQUIRED_FIELDS) + [f for f in (fields or DEFAULT_FIELDS) if f not in REQUIRED_FIELDS]
    return MPQuery(
        band_gap=band_gap,
        elements=els or None,
        max_sites=max_sites,
        fields=tuple(dict.fromkeys(wanted)),
        material_ids=ids,
    )


def _get(doc: Any, name: str) -> Any:
    if isinstance(doc, dict):
        return doc.get(name)
    return getattr(doc, name, None)


def _plain(value: Any) -> Any:
    """A document field as a Parquet-friendly scalar (lists become space-separated text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (list, tuple, set)):
        return " ".join(str(v) for v in value)
    if hasattr(value, "value") and isinstance(value.value, (str, int, float)):  # enums
        return value.value
    return str(value)


def doc_to_row(doc: Any, fields: Sequence[str]) -> dict[str, Any]:
    """One summary document as a database row: material_id, formula, cif, band_gap, other fields.

    Raises :class:`RecordError` (naming the material) when the document has no structure.
    """
    from pymatgen.core import Structure

    material_id = str(_get(doc, "material_id"))
    structure = _get(doc, "structure")
    if structure is None:
        raise RecordError(material_id, "the Materials Project document has no structure", "Materials Project")
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    formula = _get(doc, "formula_pretty") or structure.composition.reduced_formula
    row: dict[str, Any] = {"material_id": material_id, "formula": str(formula), "cif": structure.to(fmt="cif")}
    gap = _get(doc, "band_gap")
    row["band_gap"] = float(gap) if gap is not None else None
    for name in fields:
        if name in ("material_id", "formula_pretty", "structure", "band_gap"):
            continue
        row[name] = _plain(_get(doc, name))
    return row


# ---------------------------------------------------------------------------------------------
# The database folder
# ---------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _write_rows_atomic(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> None:
    import pandas as pd

    columns = ["material_id", "formula", "cif", "band_gap"] + [
        f for f in fields if f not in ("material_id", "formula_pretty", "structure", "band_gap")
    ]
    frame = pd.DataFrame(rows, columns=columns)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def is_mp_database(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`fetch_materials_project`."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == DB_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def read_manifest(db: str | Path) -> dict[str, Any]:
    path = Path(db) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MatscreenError(f"cannot read the database manifest {path}: {exc}") from exc
    if manifest.get("format") != DB_FORMAT:
        raise MatscreenError(f"{path}: not a matscreen Materials Project database (format {manifest.get('format')!r})")
    return manifest


def database_parts(db: str | Path) -> list[Path]:
    """The part files that have arrived, in batch order."""
    manifest = read_manifest(db)
    return [Path(db) / info["file"] for _, info in sorted(manifest["parts"].items(), key=lambda kv: int(kv[0]))]


def count_database_records(db: str | Path) -> int:
    """Rows in the arrived parts (from Parquet metadata; no CIF is read)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in database_parts(db))


def iter_database_records(db: str | Path) -> Iterator[Any]:
    """Every record of a downloaded database, part by part (see :func:`iter_records`).

    An id seen in an earlier part becomes an error record, so no material is screened twice.
    """
    from screening.io.records import StructureRecord
    from screening.io.sources import iter_records

    seen: set[str] = set()
    for part in database_parts(db):
        for item in iter_records(part):
            if isinstance(item, StructureRecord):
                if item.record_id in seen:
                    item = RecordError(item.record_id, "duplicate material id (an earlier part has it)", item.source)
                else:
                    seen.add(item.record_id)
            yield item


# ---------------------------------------------------------------------------------------------
# The download
# ---------------------------------------------------------------------------------------------


@dataclass
class FetchSummary:
    """What a (re-)run of :func:`fetch_materials_project` did."""

    out_dir: str
    matched: int
    rows: int
    batches_total: int
    batches_fetched: int
    batches_skipped: int
    skipped_docs: list[str] = field(default_factory=list)  # ids with no structure, or not returned

    @property
    def complete(self) -> bool:
        return self.batches_fetched + self.batches_skipped == self.batches_total


def _batches(ids: Sequence[str], batch_size: int) -> list[list[str]]:
    return [list(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]


def _search(client: Any, **kwargs: Any) -> list[Any]:
    return list(client.materials.summary.search(**kwargs))


def fetch_materials_project(
    client_factory: Callable[[], Any],
    out_dir: str | Path,
    band_gap: Sequence[float] | None = None,
    elements: Sequence[str] | None = None,
    max_sites: int | None = None,
    fields: Sequence[str] | None = None,
    batch_size: int = 1000,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
    material_ids: Sequence[str] | None = None,
) -> FetchSummary:
    """Download the materials matching the query into ``out_dir`` (see the module docstring).

    ``client_factory()`` returns an ``MPRester``-like client (a context manager with
    ``materials.summary.search(..., fields=[...])``); use :class:`MPClientFactory`. ``band_gap``
    is a (lo, hi) window in eV, ``elements`` the elements every material must contain,
    ``max_sites`` the largest cell (sites) to keep; or ``material_ids``, a list of ids to download
    without a search (ids the server does not return are listed in ``skipped_docs``). Re-running
    with the same query resumes; a folder holding another query is refused.
    """
    query = make_query(band_gap, elements, max_sites, fields, material_ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    redactor = getattr(client_factory, "redact", lambda text: text)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = read_manifest(out)
        if manifest["query"] != query.as_json():
            raise MaterialsProjectError(
                f"{out} holds a download for another query ({manifest['query']}); use another output folder "
                f"or the same options to resume"
            )
        batch_size = int(manifest["batch_size"])
    else:
        manifest = {
            "format": DB_FORMAT,
            "query": query.as_json(),
            "batch_size": int(batch_size),
            "parts": {},
            "complete": False,
        }
        _write_json_atomic(manifest_path, manifest)

    ids_path = out / IDS_FILE
    ids: list[str] | None = json.loads(ids_path.read_text()) if ids_path.exists() else None
    if ids is None and query.material_ids:
        ids = list(query.material_ids)
        _write_json_atomic(ids_path, ids)
    client_cm = None
    client = None

    def connect() -> Any:
        nonlocal client_cm, client
        if client is None:
            client_cm = call_with_retry(client_factory, "connecting to the Materials Project", retry, redactor, sleep)
            client = client_cm.__enter__() if hasattr(client_cm, "__enter__") else client_cm
        return client

    fetched = skipped = 0
    skipped_docs: list[str] = []
    try:
        if ids is None:
            docs = call_with_retry(
                lambda: _search(connect(), **query.criteria(), fields=["material_id"]),
                "listing the matching materials",
                retry,
                redactor,
                sleep,
                resume_hint=f"Nothing was downloaded yet into {out}.",
            )
            ids = sorted({str(_get(d, "material_id")) for d in docs})
            _write_json_atomic(ids_path, ids)
        batches = _batches(ids, batch_size)
        done = {int(k) for k in manifest["parts"]}
        with progress_bar(len(batches), f"Materials Project -> {out.name}", progress, unit="batches") as advance:
            advance(len(done & set(range(len(batches)))))
            for b, batch in enumerate(batches):
                if b in done:
                    skipped += 1
                    continue
                hint = f"{len(done)} of {len(batches)} batches are saved in {out}; re-run the same command to resume."

                def download(batch: list[str] = batch) -> list[Any]:
                    return _search(connect(), material_ids=batch, fields=list(query.fields))

                docs = call_with_retry(
                    download,
                    f"downloading batch {b + 1}/{len(batches)}",
                    retry,
                    redactor,
                    sleep,
                    resume_hint=hint,
                )
                rows, returned, wanted = [], set(), set(batch)
                for doc in docs:
                    try:
                        row = doc_to_row(doc, query.fields)
                    except RecordError as exc:
                        log.warning("%s", exc)
                        skipped_docs.append(exc.record_id)
                        returned.add(exc.record_id)
                        continue
                    if row["material_id"] in returned or row["material_id"] not in wanted:
                        continue
                    returned.add(row["material_id"])
                    rows.append(row)
                skipped_docs.extend(sorted(set(batch) - returned))
                part = PART_PATTERN.format(b)
                _write_rows_atomic(out / part, rows, query.fields)
                manifest["parts"][str(b)] = {"file": part, "rows": len(rows), "ids": len(batch)}
                _write_json_atomic(manifest_path, manifest)
                done.add(b)
                fetched += 1
                advance(1)
        manifest["complete"] = len(done) == len(batches)
        _write_json_atomic(manifest_path, manifest)
    finally:
        if client_cm is not None and hasattr(client_cm, "__exit__"):
            try:
                client_cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - closing a session must not hide the real outcome
                pass
    rows_total = sum(int(info["rows"]) for info in manifest["parts"].values())
    return FetchSummary(str(out), len(ids), rows_total, len(batches), fetched, skipped, skipped_docs)


__all__ = [
    "API_KEY_ENV",
    "DEFAULT_FIELDS",
    "FetchSummary",
    "MPAuthError",
    "MPClientFactory",
    "MPNetworkError",
    "MPQuery",
    "MPRateLimitError",
    "MaterialsProjectError",
    "RetryPolicy",
    "call_with_retry",
    "check_material_ids",
    "classify_error",
    "count_database_records",
    "database_parts",
    "doc_to_row",
    "fetch_materials_project",
    "is_mp_database",
    "iter_database_records",
    "make_query",
    "read_ids_file",
    "read_manifest",
    "redact",
    "resolve_api_key",
]
