"""Authentication-Results (RFC 8601): build ours, find forgeries, parse any.

We write one header carrying every authentication result the checks
produced (iprev, spf, dkim per signature, dmarc, arc). An incoming header
that claims our authserv-id was not written by us and must go (RFC 8601
§5). Headers from an upstream gateway are read by checks/upstream.py,
which believes them only when its authserv-id is in the policy's
`trusted_authserv_ids` and the message comes from that gateway. The
RFC 8601 syntax of values and of the authserv-id is mail/authres_syntax.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import authres
import authres.arc
import authres.core
import authres.dkim_b
import authres.dmarc

from trustmilter.compat.authres import linear_features
from trustmilter.mail.authres_syntax import pvalue, read_authserv_id, same_authserv_id
from trustmilter.results import AuthMethod, CheckResult, Outcome, Results

HEADER_NAME = "Authentication-Results"

# The methods we report, in the order of the header's clauses: connection
# first (see AuthMethod); the checks name theirs in their specs.
_METHOD_ORDER: tuple[str, ...] = tuple(method.value for method in AuthMethod)
# authres parsing by position (compat/authres.py), with the methods we write
_FEATURES = linear_features(
    authres.FeatureContext(authres.dkim_b, authres.dmarc, authres.arc)
)
# and with authres's core features only (authres.parse_value).
_CORE_FEATURES = linear_features(authres.FeatureContext())
# RFC 5322 §2.1.1: the recommended line length, without the line end.
FOLD_WIDTH = 78
_COMMENT_UNSAFE = re.compile(r"[^\x20-\x7e]|[()\\]")
_VALUE_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _comment(text: str) -> str | None:
    """Text safe inside an RFC 5322 comment (no parentheses, backslashes, controls)."""
    cleaned = _COMMENT_UNSAFE.sub("", text).strip()
    return cleaned[:200] or None


def _value(text: str) -> str:
    """A property value in printable ASCII without spaces (garbage in mail must not
    break the header for readers downstream); _Property quotes it where needed."""
    return _VALUE_UNSAFE.sub("?", text)[:256]


class _Property(authres.core.AuthenticationResultProperty):  # type: ignore[misc]
    """A property written as RFC 8601 §2.2 allows: authres leaves any value with
    an "@" bare, so "smtp.mailfrom=foo@[192.0.2.5]" made the field unreadable."""

    def __str__(self) -> str:
        return f"{self.type}.{self.name}={pvalue(str(self.value))}"


def _clause(result: CheckResult) -> authres.core.AuthenticationResult:
    assert result.method is not None
    properties = [
        _Property(*key.split(".", 1), value=_value(value))
        for key, value in result.props
        if value
    ]
    return authres.core.AuthenticationResult(
        method=result.method,
        result=result.outcome.value,
        result_comment=_comment(result.reason),
        properties=properties,
    )


def _header(authserv_id: str, results: Results) -> authres.core.AuthenticationResultsHeader:
    reportable = [
        r for r in results.all() if r.method in _METHOD_ORDER and r.outcome is not Outcome.SKIPPED
    ]
    reportable.sort(key=lambda r: _METHOD_ORDER.index(r.method or ""))
    return _FEATURES.header(authserv_id=authserv_id, results=[_clause(r) for r in reportable])


def build_header_value(authserv_id: str, results: Results) -> str:
    """Our Authentication-Results value on one line: every reportable result, or ``none``."""
    value: str = _header(authserv_id, results).header_value()
    return value


def build_folded_value(authserv_id: str, results: Results, width: int = FOLD_WIDTH) -> str:
    """Our Authentication-Results value as the MTA is to write it, folded."""
    return build_header_values(authserv_id, results, width)[1]


def build_header_values(authserv_id: str, results: Results,
                        width: int = FOLD_WIDTH) -> tuple[str, str]:
    """Our Authentication-Results value on one line, and folded (the header built once).

    RFC 5322 §2.1.1: lines SHOULD be at most 78 characters; §2.2.3: a
    field is folded by a line break before white space. RFC 8601 §2.2
    allows CFWS before each ``;`` resinfo and between a result's parts, so
    when the field does not fit on one line each result starts a line of
    its own, and a result longer than a line is folded at its spaces: no
    value we write has one (_value), so each is between two parts or in a
    comment, where RFC 5322 §3.2.2 allows FWS too. A fold is ``\n\t``:
    libmilter (smfi_addheader) takes a line feed without carriage return
    and the MTA writes the line end; unfolded, the value is the one-line
    value but for a tab where a space was.
    """
    header = _header(authserv_id, results)
    single: str = header.header_value()
    first = len(HEADER_NAME) + 2  # "Authentication-Results: "
    if first + len(single) <= width:
        return single, single
    clauses = [str(r) for r in header.results] or [str(header.NONE_RESULT)]
    pieces = [f"{header.authserv_id};", *(f"{c};" for c in clauses[:-1]), clauses[-1]]
    lines = [pieces[0]]
    for piece in pieces[1:]:
        lines.extend(_fold_within(piece, width - 1))  # after the tab
    return single, "\n\t".join(lines)


def _fold_within(clause: str, room: int) -> list[str]:
    """`clause` as lines of at most `room` characters, broken at its spaces (a token
    longer than that stays whole: RFC 5322 §2.1.1 allows up to 998)."""
    if len(clause) <= room:
        return [clause]
    lines: list[str] = []
    line = ""
    for token in clause.split(" "):
        if line and len(line) + 1 + len(token) > room:
            lines.append(line)
            line = token
        else:
            line = f"{line} {token}" if line else token
    return [*lines, line]


def parse_header_value(value: str) -> authres.core.AuthenticationResultsHeader:
    """Parse an A-R value with every method trustmilter writes; raises authres.AuthResError."""
    return _FEATURES.parse_value(value)


def parse_core_header_value(value: str) -> authres.core.AuthenticationResultsHeader:
    """authres.AuthenticationResultsHeader.parse_value(value), in linear time."""
    return _CORE_FEATURES.parse_value(value)


def authserv_id_of(value: str) -> str | None:
    """The authserv-id a header claims (lower-cased), even when the rest does not
    parse: read by itself (RFC 8601 §2.2), not by authres, which takes only a
    dot-atom (no quoted-string) and recurses into nested comments."""
    claimed = read_authserv_id(value)
    return claimed.lower() if claimed is not None else None


@dataclass(frozen=True, slots=True)
class ForgedHeader:
    """An incoming header only we may write (an A-R with our authserv-id, our
    verdict headers); `index` counts from 1 among the headers of that name,
    as libmilter's chgheader expects."""

    index: int
    value: str
    name: str = HEADER_NAME


def find_named(headers: Sequence[tuple[str, str]], name: str) -> list[ForgedHeader]:
    """Every header called `name` (case-insensitive), with its chgheader index."""
    wanted = name.lower()
    found = [value for key, value in headers if key.lower() == wanted]
    return [ForgedHeader(index, value, name) for index, value in enumerate(found, 1)]


def find_forged(headers: Sequence[tuple[str, str]], our_id: str) -> list[ForgedHeader]:
    """Incoming A-R headers carrying our authserv-id (RFC 8601 §5: remove them)."""
    return [
        header
        for header in find_named(headers, HEADER_NAME)
        if same_authserv_id(authserv_id_of(header.value) or "", our_id)
    ]
