"""Secrets kept out of every message: the API key in any case and any encoding a client prints.

Why: a client library (mp-api, requests, urllib3) may echo the key in an error as it was sent:
in a URL (percent-encoded), in a header (``X-API-KEY: KEY``, ``Authorization: Bearer KEY``),
upper- or lower-cased, or base64-encoded (HTTP basic auth). Matching the exact string only let
those through. :func:`redact` replaces

- the key and its URL encodings (``quote``, ``quote_plus``), in any letter case;
- its base64 encodings (standard and URL-safe alphabets, with or without padding), also where the
  key sits at any byte offset inside a longer encoded value (``base64("user:" + key)``).

:func:`register_secret` adds a key to the process-wide list that the command line's error
boundary (:mod:`screening.cli.app`) redacts from every ``error:`` line it prints.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter strings would mask ordinary words
_MIN_ENCODED_LENGTH = 8  # a base64 fragment shorter than this could occur by chance

_registered: list[str] = []


def register_secret(secret: str) -> None:
    """Redact ``secret`` from every message the command line prints from now on."""
    if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in _registered:
        _registered.append(secret)


def registered_secrets() -> list[str]:
    return list(_registered)


def _base64_forms(secret: str) -> set[str]:
    """The base64 text of ``secret`` at each of the three byte alignments inside a longer value:
    only the 4-character groups made of the key's bytes alone, which do not depend on its neighbours."""
    raw = secret.encode("utf-8")
    forms: set[str] = set()
    whole = base64.b64encode(raw).decode()
    forms |= {whole, whole.rstrip("=")}
    for skip in range(3):
        part = raw[skip:]
        n = 4 * (len(part) // 3)
        for encoded in (base64.b64encode(part).decode(), base64.urlsafe_b64encode(part).decode()):
            if n >= _MIN_ENCODED_LENGTH:
                forms.add(encoded[:n])
    forms |= {f.translate(str.maketrans("+/", "-_")) for f in list(forms)}
    return {f for f in forms if len(f) >= _MIN_ENCODED_LENGTH}


def secret_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching every form of every secret (None when there are none)."""
    caseless: set[str] = set()
    exact: set[str] = set()
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            continue
        caseless |= {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
        exact |= _base64_forms(secret)
    if not caseless:
        return None
    forms = [(s, True) for s in caseless] + [(s, False) for s in exact - caseless]
    forms.sort(key=lambda form: len(form[0]), reverse=True)  # a longer form is masked whole first
    return re.compile("|".join(f"(?i:{re.escape(s)})" if nocase else re.escape(s) for s, nocase in forms))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every form of each of ``secrets`` and of the registered secrets replaced by ``***``."""
    pattern = secret_pattern([*secrets, *_registered])
    return text if pattern is None else pattern.sub(MASK, text)


__all__ = ["MASK", "redact", "register_secret", "registered_secrets", "secret_pattern"]
