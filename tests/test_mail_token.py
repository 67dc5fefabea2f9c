"""The keyed token and digests of our own mail (mail/token.py): pure functions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trustmilter.mail.token import (
    KEY_MIN_BYTES,
    KeyFileError,
    date_instant,
    load_key,
    make_token,
    message_digest,
    message_id,
    referenced_ids,
    sender_digest,
    token_matches,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ID = "20240101100000.4711@mx.example.org"
DATE = "Mon, 01 Jan 2024 10:00:00 +0000"


# ---- the token ---------------------------------------------------------------------


def test_a_token_verifies_for_its_message() -> None:
    token = make_token(KEY, ID, DATE)
    assert token.startswith("1.") and len(token) == 2 + 22  # 128 bits, base64url
    assert token_matches(KEY, token, ID, DATE)


@pytest.mark.parametrize(("ident", "date"), [
    ("20240101100000.4712@mx.example.org", DATE),  # another message
    (ID, "Mon, 01 Jan 2024 10:00:01 +0000"),  # another date
    (ID, None),
])
def test_a_token_fails_for_another_message(ident: str, date: str | None) -> None:
    assert not token_matches(KEY, make_token(KEY, ID, DATE), ident, date)


def test_a_token_made_with_another_key_fails() -> None:
    assert not token_matches(KEY, make_token(OTHER_KEY, ID, DATE), ID, DATE)


@pytest.mark.parametrize("value", [
    "", "1.", "2." + "A" * 22, "1.AAAAAAAAAAAAAAAAAAAAAA", "garbage", "1." + "A" * 5000,
    "1.kca97Rbny IU0mFtMmKSJ6w", "\udcff\x00",
])
def test_forged_or_malformed_tokens_fail(value: str) -> None:
    assert not token_matches(KEY, value, ID, DATE)


def test_the_date_is_compared_as_the_instant_it_names() -> None:
    """A returned header refolded, re-spaced or in another zone still verifies."""
    token = make_token(KEY, ID, DATE)
    assert token_matches(KEY, token, ID, "Mon,  1 Jan 2024\r\n 11:00:00 +0100")
    assert token_matches(KEY, " " + token + " ", ID, DATE)
    assert date_instant(DATE) == date_instant("Mon, 1 Jan 2024 10:00:00 -0000")
    assert date_instant("not a date  at all") == "not a date at all"
    assert date_instant(None) == ""


def test_without_a_date_the_token_covers_the_message_id() -> None:
    token = make_token(KEY, ID, None)
    assert token_matches(KEY, token, ID, "")
    assert not token_matches(KEY, token, ID, DATE)


# ---- what is stored ----------------------------------------------------------------


def test_digests_are_keyed_and_separated_from_the_token() -> None:
    digest = message_digest(KEY, ID)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert digest != message_digest(OTHER_KEY, ID)
    assert digest != message_digest(KEY, ID + "x")
    assert ID not in digest
    assert sender_digest(KEY, "Agent@Example.ORG ") == sender_digest(KEY, "agent@example.org")
    assert sender_digest(KEY, "agent@example.org") != message_digest(KEY, "agent@example.org")
    assert sender_digest(KEY, "") == ""


# ---- what a reply names ------------------------------------------------------------


def test_message_id_is_the_first_msg_id() -> None:
    assert message_id(f" <{ID}> (comment)") == ID
    assert message_id("no brackets") is None
    assert message_id(None) is None
    assert message_id("<>") is None


def test_in_reply_to_first_then_references_from_the_end() -> None:
    refs = "<root@example.com> <a@example.com>\r\n <b@example.com> <parent@example.org>"
    assert referenced_ids("<parent@example.org>", refs, 3) == (
        "parent@example.org", "b@example.com", "a@example.com")
    assert referenced_ids(None, refs, 10) == (
        "parent@example.org", "b@example.com", "a@example.com", "root@example.com")
    assert referenced_ids("<x@y> <z@y> <w@y>", refs, 2) == ("x@y", "z@y")
    assert referenced_ids("<x@y>", refs, 0) == ()
    assert referenced_ids("", "", 5) == ()


def test_hostile_references_are_read_in_linear_time() -> None:
    """A million ids, or a megabyte of brackets: one pass, at most `limit` kept."""
    many = " ".join(f"<{n}@example.com>" for n in range(200_000))
    brackets = "<" * 1_000_000
    unclosed = "<" + "a" * 1_000_000
    started = time.perf_counter()
    assert referenced_ids(brackets, many, 20)[0] == "199999@example.com"
    assert len(referenced_ids(many, unclosed + brackets, 20)) == 20
    assert referenced_ids(unclosed, "<>" * 500_000, 20) == ()
    assert time.perf_counter() - started < 5.0  # generous: linear is about 0.2 s


# ---- the key file --------------------------------------------------------------------


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> str:
    path = tmp_path / "token.key"
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def test_a_key_is_read_from_a_private_file(tmp_path: Path) -> None:
    assert load_key(key_file(tmp_path, b"a" * 64 + b"\n")) == b"a" * 64


@pytest.mark.parametrize(("data", "mode", "words"), [
    (b"a" * (KEY_MIN_BYTES - 1), 0o600, "at least 32"),
    (b"a" * 64, 0o640, "group or others"),
    (b"a" * 64, 0o604, "group or others"),
    (b"a" * 5000, 0o600, "not a key"),
])
def test_an_unusable_key_file_is_refused(
    tmp_path: Path, data: bytes, mode: int, words: str
) -> None:
    with pytest.raises(KeyFileError, match=words):
        load_key(key_file(tmp_path, data, mode))


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="No such file"):
        load_key(str(tmp_path / "absent.key"))
    with pytest.raises(KeyFileError, match="directory"):
        load_key(str(tmp_path))
