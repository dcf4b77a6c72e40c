"""Secrets out of anything shown: store URLs in /health, logs, errors and the CLI.

Two kinds of credentials can sit in a store URL, and both are masked wherever
the URL (or a message quoting it) is shown:

- ``user:password@`` before a host — the password may hold any character,
  ``@``, ``:`` and ``/`` included (everything up to the last ``@`` of that URL);
- ``password=``, ``token=``, ``secret=``, ``key=`` style parameters in a query
  string or an ILP configuration string (``...;password=quest;``).

Better still, keep credentials out of the URL: ``TICKTAPE_STORE_PASSWORD`` or
``TICKTAPE_STORE_PASSWORD_FILE`` (docs/security.md).
"""

from __future__ import annotations

import re

MASK = "***"

_PARAM_RE = re.compile(
    r"(?i)((?:^|[?&;\s])[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api_?key)[a-z0-9_.-]*=)"
    r"[^&;\s]*"
)


def redact(text: str) -> str:
    """``text`` with every credential of every URL in it replaced by ``***``."""
    text = _redact_userinfo(text)
    return _PARAM_RE.sub(rf"\1{MASK}", text)


def _redact_userinfo(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in re.finditer(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        start = match.end()
        if start < pos:
            continue
        # This URL's own part: up to whitespace or the next nested "scheme://".
        end = len(text)
        space = re.search(r"\s", text[start:])
        if space:
            end = start + space.start()
        nested = re.search(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text[start:end])
        if nested:
            end = start + nested.start()
        part = text[start:end]
        at = part.rfind("@")
        colon = part.find(":")
        if at > 0 and 0 <= colon < at and not re.search(r"[/?#]", part[:colon]):
            out.append(text[pos:start])
            out.append(f"{part[:colon]}:{MASK}@")
            pos = start + at + 1
    out.append(text[pos:])
    return "".join(out)


redact_url = redact
