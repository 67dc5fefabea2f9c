"""The one address parser: RFC 5322 §3.4 address lists and RFC 5321 paths.

Every reading of From, Sender, Reply-To, To and Cc goes through
`parse_address_list`, so DMARC, ARC, the loop, names, automation, bounce
and header checks see the same mailboxes for the same field, however
hostile it is. The parser consumes its input once (no backtracking
regular expressions, no recursion): linear in the field's length, where
email.headerregistry is quadratic on long or unbalanced input and
email.utils.getaddresses recurses once per nested comment.

Envelope addresses (MAIL FROM, RCPT TO) are not parsed here: the MTA has
checked their syntax (RFC 5321 §4.1.2). `envelope_address` only takes
off the angle brackets, once, where the envelope enters trustmilter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trustmilter.mail.text import clip
from trustmilter.memo import remembered_when

_SPACE = re.compile(r"\s+")
# An atom here is any run of characters that are not RFC 5322 specials or
# space; dots stay inside so dot-atoms come out whole.
_ATOM = re.compile(r'[^\s"(),:;<>@\[\]\\]+')
# Quoted-string / domain-literal bodies with backslash escapes, unrolled so
# matching is linear.
_QUOTED_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_LITERAL_BODY = re.compile(r"[^\]\\]*(?:\\.[^\]\\]*)*", re.DOTALL)
_COMMENT_PIECE = re.compile(r"[^()\\]+|\\.|[()]|\\\Z", re.DOTALL)
_SPECIALS = frozenset(",:;<>@")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9_-]+\Z")
_SURROGATE = re.compile(r"[\udc80-\udcff]")

# Address lists up to this long are remembered (senders repeat their From);
# longer ones are parsed each time.
MEMO_VALUE_CHARS = 512


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One local@domain with its display name, as written, and its domain as
    names are compared and looked up (lower case, no trailing dot)."""

    local: str
    domain: str
    display: str = ""

    @property
    def domain_name(self) -> str:
        """The domain as compared and looked up: lower case, no trailing dot.
        (Computed when asked: a few checks ask, and a stored field cost an
        object.__setattr__ for every mailbox of every header.)"""
        return self.domain.rstrip(".").lower()

    @property
    def address(self) -> str:
        """local@domain as written (for findings and for the `check` envelope)."""
        return f"{self.local}@{self.domain}"


@dataclass(frozen=True, slots=True)
class AddressList:
    """What `parse_address_list` found; `problems` is empty for a valid list."""

    mailboxes: tuple[Mailbox, ...]
    problems: tuple[str, ...]
    groups: int = 0  # named groups, which may be empty ("undisclosed-recipients:;")
    # The domain text of addresses dropped for a bad domain ("a@foo..com"),
    # so the names check can report an invalid domain name, not just a problem.
    bad_domains: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


Token = tuple[str, str]  # (kind, text): kind is "atom", "quoted", "literal" or a special


def envelope_address(text: str) -> str:
    """An envelope address as the MTA gave it (``<a@b.example>``, ``<>``), without
    its angle brackets: '' is the null reverse-path (RFC 5321 §4.5.5)."""
    return text.strip().strip("<>").strip()


def normalise_address(address: str) -> str:
    """An envelope or configured address as policy compares it: no <>, no
    surrounding space, lower case (RFC 5321 §2.4 allows a case-sensitive
    local part, but no real mailbox relies on it)."""
    return envelope_address(address).lower()


def first_address(value: str) -> str:
    """The first mailbox's local@domain in an address field, as written, or ''
    (for fields read whole elsewhere, like a returned message's From)."""
    mailboxes = parse_address_list(value).mailboxes
    return mailboxes[0].address if mailboxes else ""


def _tokens(value: str) -> tuple[list[Token], list[str]]:
    """Split an address field into RFC 5322 §3.2 tokens; comments are dropped."""
    tokens: list[Token] = []
    problems: list[str] = []
    i, end = 0, len(value)
    while i < end:
        char = value[i]
        if char.isspace():
            space = _SPACE.match(value, i)
            i = space.end() if space else i + 1
        elif char in _SPECIALS:
            tokens.append((char, char))
            i += 1
        elif char == '"':
            body = _QUOTED_BODY.match(value, i + 1)
            assert body is not None  # the pattern matches the empty string
            if body.end() >= end:
                problems.append("unterminated quoted string")
                break
            tokens.append(("quoted", body.group()))
            i = body.end() + 1
        elif char == "[":
            body = _LITERAL_BODY.match(value, i + 1)
            assert body is not None
            if body.end() >= end:
                problems.append("unterminated domain literal")
                break
            tokens.append(("literal", "[" + body.group() + "]"))
            i = body.end() + 1
        elif char == "(":
            i = _comment_end(value, i)
            if i < 0:
                problems.append("unterminated comment")
                break
        elif char in ")]\\":
            problems.append(f"stray {char!r}")
            i += 1
        else:
            atom = _ATOM.match(value, i)
            assert atom is not None
            tokens.append(("atom", atom.group()))
            i = atom.end()
    return tokens, problems


def _comment_end(value: str, start: int) -> int:
    """The index after the comment opening at `start` (comments nest, §3.2.2), or -1.

    A depth counter, not recursion: any nesting depth costs one pass."""
    depth = 0
    for piece in _COMMENT_PIECE.finditer(value, start):
        text = piece.group()
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
            if depth == 0:
                return piece.end()
    return -1


def _valid_domain(domain: str) -> bool:
    """A dot-atom domain of non-empty labels (RFC 6532 U-labels allowed), or a literal."""
    if domain.startswith("["):
        return domain.endswith("]")
    labels = domain.split(".")
    return all(
        label and (_DOMAIN_LABEL.match(label) or (not label.isascii() and
                                                   not _SURROGATE.search(label)))
        for label in labels
    )


def _addr_spec(
    tokens: list[Token], problems: list[str], display: str = "",
    bad_domains: list[str] | None = None,
) -> Mailbox | None:
    """local-part "@" domain (RFC 5322 §3.4.1), or None with a problem noted
    (and a bad domain's text added to `bad_domains`).

    The domain follows the last "@": a quoted local part may hold more."""
    text = "".join(t for _, t in tokens)
    ats = [i for i, (kind, _) in enumerate(tokens) if kind == "@"]
    if not ats:
        problems.append(f"no @ in {clip(text)!r}")
        return None
    at = ats[-1]
    local, domain = tokens[:at], tokens[at + 1 :]
    if not local or any(kind not in ("atom", "quoted") for kind, _ in local):
        problems.append(f"bad local part in {clip(text)!r}")
        return None
    if len(domain) != 1 or domain[0][0] not in ("atom", "literal") or not _valid_domain(
        domain[0][1]
    ):
        problems.append(f"bad domain in {clip(text)!r}")
        if bad_domains is not None:
            bad_domains.append(clip(" ".join(t for _, t in domain)))
        return None
    return Mailbox("".join(t for _, t in local), domain[0][1], display)


def _mailbox(item: list[Token], problems: list[str], bad_domains: list[str]) -> Mailbox | None:
    """One name-addr or addr-spec (RFC 5322 §3.4).

    With angle brackets the address is what they hold; whatever comes
    before them is display name, even when it looks like an address."""
    kinds = [kind for kind, _ in item]
    if "<" not in kinds:
        return _addr_spec(item, problems, bad_domains=bad_domains)
    left = kinds.index("<")
    if ">" not in kinds[left:]:
        problems.append("unclosed <")
        return None
    right = left + kinds[left:].index(">")
    if item[right + 1 :]:
        problems.append("text after >")
    display = " ".join(t for _, t in item[:left])
    inside = item[left + 1 : right]
    colons = [i for i, (kind, _) in enumerate(inside) if kind == ":"]
    if colons and inside[0][0] == "@":
        inside = inside[colons[0] + 1 :]  # RFC 5322 §4.4 obs-route: ignored
    if not inside:
        problems.append("empty <>")
        return None
    return _addr_spec(inside, problems, display, bad_domains)


@remembered_when(lambda value: len(value) <= MEMO_VALUE_CHARS, maxsize=2048)
def parse_address_list(value: str) -> AddressList:
    """The mailboxes of an RFC 5322 §3.4 address-list (groups included), leniently.

    Linear in len(value). Empty list elements and a group without its
    closing ";" are tolerated (both are common and harmless); everything
    else that is not an address is a problem. Encoded words (RFC 2047)
    are display text and never decoded into an address.
    """
    tokens, problems = _tokens(value)
    mailboxes: list[Mailbox] = []
    bad_domains: list[str] = []
    item: list[Token] = []
    in_angle = in_group = False
    groups = 0

    def finish() -> None:
        if item:
            mailbox = _mailbox(item, problems, bad_domains)
            if mailbox is not None:
                mailboxes.append(mailbox)
            item.clear()

    for token in tokens:
        kind = token[0]
        if kind == "<":
            if in_angle:
                problems.append("nested <")
            in_angle = True
            item.append(token)
        elif kind == ">":
            if not in_angle:
                problems.append("stray >")
            in_angle = False
            item.append(token)
        elif in_angle:
            item.append(token)
        elif kind == ":":
            # group = display-name ":" [group-list] ";" (RFC 5322 §3.4)
            if in_group or not item:
                problems.append("misplaced :")
            item.clear()
            in_group = True
            groups += 1
        elif kind == ";":
            if not in_group:
                problems.append("stray ;")
            finish()
            in_group = False
        elif kind == ",":
            finish()
        else:
            item.append(token)
    if in_angle:
        problems.append("unclosed <")
    finish()
    return AddressList(tuple(mailboxes), tuple(problems), groups, tuple(bad_domains))
