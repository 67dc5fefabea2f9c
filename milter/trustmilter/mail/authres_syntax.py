"""RFC 8601 §2.2 syntax, the two pieces trustmilter needs exactly.

Writing: a property value (``pvalue``) as RFC 8601 allows it bare, else
as a quoted-string. authres quotes every value containing "@" as is, so a
domain-literal sender (``foo@[192.0.2.5]``) came out unquoted and no RFC
8601 parser (authres among them) could read the field.

Reading: the authserv-id an incoming field claims, even when the rest of
it does not parse, so that a forgery of ours is found however it is spelt
(a quoted-string, comments nested to any depth, quoted-pairs). It is a
loop over the characters, not a recursive parser: sender-controlled text,
linear and without a recursion limit to hit.
"""

from __future__ import annotations

import re

# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                         "!#$%&'*+-.^_`{|}~")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+\Z")
# RFC 5322 §3.2.3 dot-atom-text (the local-part of an address, bare).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# RFC 6376 §3.5: domain-name = sub-domain 1*("." sub-domain), sub-domain as
# RFC 5321's (Let-dig [Ldh-str]). No domain-literal: "[192.0.2.5]" is not one.
_SUB_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"(?:{_DOT_ATOM})?@{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})+\Z")
_QUOTE_OR_BACKSLASH = re.compile(r'(["\\])')

_WHITESPACE = frozenset(" \t\r\n")


def quoted_string(text: str) -> str:
    """`text` as an RFC 5322 §3.2.4 quoted-string: '"' and '\\' as quoted-pairs."""
    return '"' + _QUOTE_OR_BACKSLASH.sub(r"\\\1", text) + '"'


def pvalue(text: str) -> str:
    """A property value as written (RFC 8601 §2.2):

        pvalue = [CFWS] ( value / [ [ local-part ] "@" ] domain-name ) [CFWS]
        value  = token / quoted-string                  (RFC 2045 §5.1)

    Bare when it is a token or an address whose local-part is a dot-atom and
    whose domain is a domain-name; every other value is a quoted-string.
    """
    if _TOKEN.match(text) or _ADDRESS.match(text):
        return text
    return quoted_string(text)


def _after_cfws(text: str, pos: int) -> int | None:
    """Where text[pos:] continues after [CFWS] (RFC 5322 §3.2.2: comments nest
    and hold quoted-pairs); None if a comment never closes."""
    depth = 0
    end = len(text)
    while pos < end:
        char = text[pos]
        if depth:
            if char == "\\":
                pos += 1  # a quoted-pair: its second character is text, even ( or )
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif char not in _WHITESPACE:
            return pos
        pos += 1
    return None if depth else pos


def _quoted_content(text: str, pos: int) -> str | None:
    """The content of the quoted-string opening at text[pos] ('"'), quoted-pairs
    undone; None if it never closes."""
    chars: list[str] = []
    pos += 1
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == '"':
            return "".join(chars)
        if char == "\\" and pos + 1 < end:
            pos += 1
            char = text[pos]
        chars.append(char)
        pos += 1
    return None


def read_authserv_id(value: str) -> str | None:
    """The authserv-id an A-R field value claims, as written (quotes and
    quoted-pairs undone), or None if it names none. RFC 8601 §2.2:

        authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ...
        authserv-id     = value            (token / quoted-string)

    Only the id is read; whatever follows (a version, "/1", garbage) does
    not matter. A token ends at the first character that is not a token
    character, so "mx.example.org/1" claims "mx.example.org".
    """
    pos = _after_cfws(value, 0)
    if pos is None or pos >= len(value):
        return None
    if value[pos] == '"':
        return _quoted_content(value, pos)
    end = pos
    while end < len(value) and value[end] in _TOKEN_CHARS:
        end += 1
    return value[pos:end] or None


def same_authserv_id(claimed: str, ours: str) -> bool:
    """Whether a claimed authserv-id is ours: case-insensitive, and a host name
    with its root dot ("mx.example.org.") or folding whitespace inside quotes
    (" mx.example.org ") is the same name."""
    def normal(name: str) -> str:
        return name.strip(" \t\r\n").lower().removesuffix(".")

    return bool(ours) and normal(claimed) == normal(ours)
