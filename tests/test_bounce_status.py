"""RFC 3463 tables: every registered code is described, nothing raises."""

from __future__ import annotations

import pytest

from trustmilter.bounce.status import (
    CLASSES,
    DETAILS,
    SUBJECTS,
    all_codes,
    describe,
    find_basic,
    find_enhanced,
)

# RFC 3463 §3.3-3.10 as printed in the RFC: the detail codes per subject.
RFC3463 = {0: 0, 1: 8, 2: 4, 3: 5, 4: 7, 5: 5, 6: 5, 7: 7}


def test_tables_hold_every_rfc3463_code() -> None:
    for subject, last in RFC3463.items():
        for detail in range(last + 1):
            assert (subject, detail) in DETAILS, f"X.{subject}.{detail} missing"
    assert set(SUBJECTS) == set(range(8))
    assert set(CLASSES) == {2, 4, 5}


@pytest.mark.parametrize(
    ("code", "meaning", "reference"),
    [("5.1.10", "Recipient address has null MX", "RFC 7505"),
     ("5.7.23", "SPF validation failed", "RFC 7372"),
     ("5.7.13", "User Account Disabled", "RFC 5248"),
     ("5.5.6", "Authentication Exchange line is too long", "RFC 4954"),
     ("4.3.6", "Requested priority was changed", "RFC 6710"),
     ("5.1.9", "Message relayed to non-compliant mailer", "RFC 3886"),
     ("5.6.6", "Message content not available", "RFC 4468")],
)
def test_later_registrations(code: str, meaning: str, reference: str) -> None:
    described = describe(code)
    assert (described.detail_meaning, described.reference) == (meaning, reference)


def test_walk_every_code() -> None:
    codes = all_codes()
    assert len(codes) == 3 * len(DETAILS)
    for code in codes:
        meaning = describe(code)
        klass, subject, detail = (int(x) for x in code.split("."))
        assert meaning.valid and meaning.known and meaning.code == code
        assert meaning.class_name == CLASSES[klass][0]
        assert meaning.subject_meaning == SUBJECTS[subject]
        assert meaning.detail_meaning == DETAILS[(subject, detail)][0]
        assert meaning.permanent == (klass == 5)
        assert meaning.temporary == (klass == 4)


def test_user_unknown() -> None:
    meaning = describe("5.1.1")
    assert meaning.class_meaning == "Permanent Failure"
    assert meaning.subject_meaning == "Addressing Status"
    assert meaning.detail_meaning == "Bad destination mailbox address"
    assert meaning.permanent and not meaning.temporary


def test_unregistered_detail_keeps_class_and_subject() -> None:
    meaning = describe(" 4.2.99 ")
    assert meaning.valid and not meaning.known
    assert (meaning.code, meaning.class_name, meaning.subject_meaning) == (
        "4.2.99", "temporary", "Mailbox Status")


@pytest.mark.parametrize("bad", ["", "5.1", "3.1.1", "5.8.1", "5.1.1.1", "x.y.z", "550",
                                 "5.1.1000", None, 5.11, "\x00\xff"])
def test_malformed_never_raises(bad: object) -> None:
    meaning = describe(bad)
    if bad == "5.8.1":  # syntactically a code, subject outside RFC 3463
        assert meaning.valid and meaning.subject_meaning is None
    else:
        assert not meaning.valid and meaning.class_name is None


def test_codes_in_reply_text() -> None:
    text = "host mx.example.net [192.0.2.7] said: 550 5.1.1 <a@example.net>: unknown (in reply)"
    assert find_enhanced(text) == "5.1.1"
    assert find_basic(text) == "550"
    assert find_enhanced("version 1.2.3.4 only") is None
    assert find_basic("554: delivery error: dd") == "554"
    assert find_basic(None) is None and find_enhanced("") is None
