"""Issue 27 item 8: the API key stays off the command line and out of every message.

The key comes from ``MP_API_KEY`` or ``--api-key-file`` (``--api-key`` still works, with a
warning); redaction masks it in any letter case, URL-encoded and base64-encoded; a client that
calls ``sys.exit(message)`` ends in one redacted ``error:`` line and exit code 1.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import typer
from typer.testing import CliRunner

from screening.redaction import redact, register_secret

KEY = "Zq3+Kx/9vLm2=Np7Rt5Wy8&Bc4Hd6Jf1"  # URL- and base64-hostile characters on purpose


def leaked_forms(key: str) -> list[str]:
    """The ways a client could print the key."""
    return [
        key,
        key.lower(),
        key.upper(),
        key.swapcase(),
        quote(key, safe=""),
        quote(key, safe="").lower(),
        quote_plus(key),
        base64.b64encode(key.encode()).decode(),
        base64.urlsafe_b64encode(key.encode()).decode(),
        base64.b64encode(key.encode()).decode().rstrip("="),
    ]


def _inside_base64(key: str) -> list[str]:
    """The key base64-encoded inside longer values (HTTP basic auth) at every byte offset."""
    return [base64.b64encode(f"{user}:{key}".encode()).decode() for user in ("u", "us", "usr")]


def _no_trace_of(key: str, text: str) -> None:
    for form in leaked_forms(key):
        assert form not in text, f"{form!r} leaked"
    assert base64.b64encode(key.encode()).decode()[4:-4] not in text


@pytest.mark.parametrize("form", range(len(leaked_forms(KEY))))
def test_every_printed_form_of_the_key_is_masked(form: int) -> None:
    leak = leaked_forms(KEY)[form]
    message = f"GET https://api.example/?key={leak} failed; headers={{'X-API-KEY': '{leak}'}} Bearer {leak}"
    redacted = redact(message, [KEY])
    _no_trace_of(KEY, redacted)
    assert redacted.count("***") == 3 and "X-API-KEY" in redacted and "Bearer ***" in redacted


def test_the_key_inside_a_longer_base64_value_is_masked() -> None:
    for value in _inside_base64(KEY):
        redacted = redact(f"Authorization: Basic {value}", [KEY])
        assert "***" in redacted
        remaining = redacted.split("Basic ", 1)[1].replace("***", "")
        assert len(remaining) <= 8  # only the few characters that also encode the user name or padding


def test_ordinary_text_is_left_alone() -> None:
    text = "the Materials Project query failed (HTTP 500) for mp-149"
    assert redact(text, [KEY]) == text


def test_the_key_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    from screening.io.materials_project import MPAuthError, resolve_api_key

    key_file = tmp_path / "mp.key"
    key_file.write_text(KEY + "\n")
    assert resolve_api_key(None, environ={}, api_key_file=key_file) == KEY
    assert resolve_api_key(None, environ={"MP_API_KEY": KEY}) == KEY
    with pytest.raises(MPAuthError, match="--api-key-file"):
        resolve_api_key(None, environ={})
    with pytest.raises(MPAuthError, match="empty"):
        (tmp_path / "empty.key").write_text("\n")
        resolve_api_key(None, environ={}, api_key_file=tmp_path / "empty.key")


def _exiting_client(message_of: Callable[[str], str]) -> type:
    class ExitingClient:
        """A client that ends the process itself, printing the key as it sent it."""

        def __init__(self, api_key: str | None = None, **_: object) -> None:
            raise SystemExit(message_of(api_key))

    return ExitingClient


def test_fetch_mp_turns_a_clients_system_exit_into_a_redacted_error(tmp_path: Path, monkeypatch) -> None:
    import mp_api.client

    from screening.cli import app

    def message(key: str) -> str:
        return f"invalid key {key.lower()} (sent as {quote(key, safe='')}, {base64.b64encode(key.encode()).decode()})"

    monkeypatch.setattr(mp_api.client, "MPRester", _exiting_client(message))
    key_file = tmp_path / "mp.key"
    key_file.write_text(KEY)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    res = CliRunner().invoke(
        app, ["fetch-mp", "--ids", "mp-1", "--api-key-file", str(key_file), "-o", str(tmp_path / "db")]
    )
    assert res.exit_code == 1, res.output
    assert "error:" in res.output and "invalid key ***" in res.output
    _no_trace_of(KEY, res.output)
    assert "warning: --api-key" not in res.output  # the file is the recommended way: no warning


def test_api_key_on_the_command_line_warns(tmp_path: Path, monkeypatch) -> None:
    import mp_api.client

    from screening.cli import app

    monkeypatch.setattr(mp_api.client, "MPRester", _exiting_client(lambda key: f"bad {key}"))
    res = CliRunner().invoke(app, ["fetch-mp", "--ids", "mp-1", "--api-key", KEY, "-o", str(tmp_path / "db")])
    assert res.exit_code == 1
    assert "warning: --api-key shows the key" in res.output and "MP_API_KEY" in res.output
    _no_trace_of(KEY, res.output)


def test_the_error_boundary_catches_a_libraries_system_exit() -> None:
    """Not only fetch-mp: any command whose library code calls sys.exit(message)."""
    from screening.cli.app import ErrorBoundaryGroup

    secret = "Boundary0Secret1Key2Value3Abc4"
    register_secret(secret)
    probe = typer.Typer(cls=ErrorBoundaryGroup)

    @probe.command()
    def leak() -> None:
        raise SystemExit(f"Authorization: Bearer {secret.upper()}")

    @probe.command()
    def other() -> None:
        pass

    res = CliRunner().invoke(probe, ["leak"])
    assert res.exit_code == 1
    assert res.output.startswith("error:") and "Bearer ***" in res.output
    _no_trace_of(secret, res.output)
