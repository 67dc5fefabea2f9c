"""Quoting sender-controlled text in a finding, a reason or a log line."""

from __future__ import annotations

import re

MAX_DETAIL = 120  # characters of header text quoted in a finding

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` shortened for a finding's detail, control characters shown as "?"
    so a header value cannot split a log line or a header we add."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "..."
