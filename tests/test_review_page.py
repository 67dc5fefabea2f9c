"""The review page against a real Postfix's hold queue and a real SQLite state store.

The help desk logs in, sees the held messages newest first with why each
was held (in words, in its language), filters and pages them, opens one,
and releases (teaching the sender's reputation; the message is
delivered), releases without teaching, deletes, deletes as spam (a spam
mark) — every action in the audit log. The app runs in-process on the
rig's queue (review_rig.py); the security of the same page is in
test_review_security.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from review_rig import (
    TRUST,
    Browser,
    held_ids,
    hold,
    make_app,
    null_milter_on,
    policy_settings,
)
from trustmilter.command_support import state_store
from trustmilter.config.settings import Settings
from trustmilter.review.audit import AuditLog
from trustmilter.review.context import CONTEXT_KEY, ReviewContext
from trustmilter.signals import FINDINGS
from trustmilter.testing.postfix import PostfixInstance


@pytest.fixture(scope="module")
def holding_postfix(postfix: PostfixInstance, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[PostfixInstance]:
    with null_milter_on(postfix, tmp_path_factory) as holding:
        yield holding


@pytest.fixture
def mta(holding_postfix: PostfixInstance) -> PostfixInstance:
    holding_postfix.reset()
    return holding_postfix

AUTHRES = "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=example.com"
BOUNCE = b"""\
From: MAILER-DAEMON@mail.example.net\r
To: support@example.org\r
Subject: hold: Undelivered Mail Returned to Sender\r
Message-ID: <bounce-1@mail.example.net>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r
\r
--B\r
Content-Type: text/plain\r
\r
I'm sorry to have to inform you that your message could not be delivered.\r
--B\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mail.example.net\r
\r
Final-Recipient: rfc822; bob@example.net\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown\r
--B--\r
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return policy_settings(tmp_path)


@pytest.fixture
def app(settings: Settings, mta: PostfixInstance) -> Flask:
    app = make_app(settings, mta)
    ctx(app).accounts.add("alice", "reviewer", "correct horse battery", time.time())
    return app


def ctx(app: Flask) -> ReviewContext:
    found: ReviewContext = app.extensions[CONTEXT_KEY]
    return found


@pytest.fixture
def browser(app: Flask) -> Browser:
    browser = Browser(app)
    assert browser.login("alice").status_code == 302
    return browser


def newest_first(mta: PostfixInstance, ids: list[str]) -> bool:
    """Whether `ids` are in the order of their arrival, newest first."""
    arrival = {str(e["queue_id"]): float(str(e["arrival_time"])) for e in mta.hold_queue()}
    times = [arrival[queue_id] for queue_id in ids]
    return times == sorted(times, reverse=True)


def order_of(page: str, ids: list[str]) -> list[str]:
    """`ids` in the order the page lists them."""
    return sorted(ids, key=lambda queue_id: page.index(f'value="{queue_id}"'))


def test_the_list_shows_each_held_message_newest_first_with_its_reasons(
        browser: Browser, mta: PostfixInstance) -> None:
    ours = hold(mta, rcpts=("support@example.org", "help@example.org"), extra=(AUTHRES,))
    time.sleep(1.1)  # Postfix records arrival in whole seconds
    foreign = hold(mta, sender="alice@example.com", subject="hold plain", trust=None)
    bounce = hold_bounce(mta)
    page = browser.get("/").text
    assert order_of(page, [ours, foreign, bounce])[-1] == ours
    assert newest_first(mta, order_of(page, [ours, foreign, bounce]))
    row = _row(page, ours)
    assert "noreply@example.com" in row and "help@example.org" in row
    assert "hold me" in row and "held by trustmilter" in row and "score 8" in row
    assert "noreply-quarantine" in row
    for reason in ("auto.noreply_sender", "iprev.ptr_missing"):
        assert reason in row and _escaped(FINDINGS[reason]) in row
    assert "spf=pass smtp.mailfrom=example.com" in row
    assert re.search(r"<td title=\"[^\"]+\">\d+s</td>", row)  # its age
    assert "not held by trustmilter" in _row(page, foreign)
    told = _row(page, bounce)
    assert "bounce (null sender)" in told
    assert "Recipient bob@example.net: failed, permanent failure" in told  # explain-bounce's words
    assert "Held messages: 3" in page


def hold_bounce(mta: PostfixInstance) -> str:
    from review_rig import hold_raw

    return hold_raw(mta, BOUNCE, "", trust=TRUST.replace("noreply_sender", "bounce"))


def _row(page: str, queue_id: str) -> str:
    start = page.index(f'<tr id="m-{queue_id}">')
    return page[start:page.index("</tr>", start)]


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&#34;") \
        .replace("<", "&lt;").replace(">", "&gt;")


def test_filters_and_paging(app: Flask, browser: Browser, mta: PostfixInstance,
                            settings: Settings) -> None:
    ids = [hold(mta, sender=f"bulk{n}@example.com",
                rcpts=(f"team{n % 2}@example.org",)) for n in range(6)]
    other = hold(mta, sender="news@example.net", trust=TRUST.replace(
        "auto.noreply_sender,iprev.ptr_missing", "auto.bulk"))
    foreign = hold(mta, sender="alice@example.com", trust=None)
    everything = [*ids, other, foreign]

    def listed(query: str = "", via: Browser = browser) -> list[str]:
        page = via.get(f"/?{query}").text
        return order_of(page, [q for q in everything if f'value="{q}"' in page])

    first, second = listed(), listed("page=2")
    assert len(first) == 5 and len(second) == 3  # review.page_size 5
    assert sorted(first + second) == sorted(everything)
    assert newest_first(mta, first + second)
    assert listed("page=9") == second and listed("page=x") == first  # never an error
    assert set(listed("reason=auto.bulk")) == {other}
    assert set(listed("reason=-")) == {foreign}
    assert set(listed("sender=BULK3")) == {ids[3]}
    assert set(listed("recipient=team1@")) == {ids[1], ids[3], ids[5]}
    young = listed("age=hour&sender=bulk") + listed("age=hour&sender=bulk&page=2")
    assert sorted(young) == sorted(ids)
    assert listed("age=older") == []
    page = browser.get("/?sender=bulk&page=1").text
    assert "page=2" in page and "sender=bulk" in page  # paging keeps the filters
    # Eight days on, everything is more than a week old.
    later = make_app(settings, mta, clock=lambda: time.time() + 8 * 86400)
    aged = Browser(later)
    assert aged.login("alice").status_code == 302
    assert "Held messages: 8" in aged.get("/?age=older").text
    assert "Held messages: 0" in aged.get("/?age=week").text


def test_the_message_view_shows_every_header_escaped_and_the_body_as_text(
        browser: Browser, mta: PostfixInstance) -> None:
    body = (b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"Gr\xc3\xbc\xc3\x9fe,\r\nthe \x1b[31minvoice\x1b[0m is attached.\r\n"
            b"--B\r\nContent-Type: application/pdf; name=\"bill.pdf\"\r\n"
            b"Content-Disposition: attachment; filename=\"bill.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--B--\r\n")
    queue_id = hold(mta, subject="hold \x1b[2Jcleared", body=body, extra=(
        "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="B"', AUTHRES,
        "X-Bidi: abc\u202edcba".encode().decode("latin-1")))
    page = browser.get(f"/message/{queue_id}").text
    assert "\x1b" not in page and "\u202e" not in page
    assert "hold \\x1b[2Jcleared" in page
    assert "<th>X-Trustmilter-Trust</th>" in page and "<th>Received</th>" in page
    assert "<th>Message-ID</th>" in page and "spf=pass smtp.mailfrom=example.com" in page
    assert "Grüße," in page and "the \\x1b[31minvoice\\x1b[0m is attached." in page
    assert "<td>bill.pdf</td><td>application/pdf</td>" in page  # listed, not opened
    assert "JVBERi0" not in page
    assert _escaped(FINDINGS["iprev.ptr_missing"]) in page
    assert browser.get("/message/ABCDEF12345").status_code == 404  # not held
    assert browser.get("/message/ALL").status_code == 404  # not a queue ID


def test_release_teaches_and_delivers(app: Flask, browser: Browser, mta: PostfixInstance,
                                      settings: Settings) -> None:
    first, second = hold(mta, sender="NoReply@Example.com"), hold(mta)
    done = browser.post("/act", {"action": "release", "id": [first, second]})
    assert done.status_code == 302
    page = browser.get("/").text
    assert "Released: 2." in page and "noreply@example.com (2)" in page
    delivered = mta.wait_delivered(2, timeout=10)
    assert {m.header("Subject")[0] for m in delivered} == {"hold me"}
    assert held_ids(mta) == set()
    with state_store(settings) as store:
        learned = store.reputation("noreply@example.com")
    assert learned is not None and learned.releases == 2
    (entry,) = AuditLog_of(app).newest(10)
    assert (entry.who, entry.action, entry.queue_ids, entry.outcome) == (
        "alice", "release", (first, second), "ok")
    assert abs(entry.at - time.time()) < 60


def AuditLog_of(app: Flask) -> AuditLog:
    return ctx(app).audit


def test_release_without_teaching_and_delete(app: Flask, browser: Browser,
                                             mta: PostfixInstance, settings: Settings) -> None:
    quiet, gone = hold(mta, sender="quiet@example.com"), hold(mta, sender="gone@example.com")
    assert browser.post("/act", {"action": "release-no-learn", "id": quiet}).status_code == 302
    assert "Released without teaching: 1." in browser.get("/").text
    assert browser.post("/act", {"action": "delete", "id": gone}).status_code == 302
    assert "Deleted: 1." in browser.get("/").text
    (delivered,) = mta.wait_delivered(1, timeout=10)
    assert "quiet@example.com" in delivered.header("From")[0]
    assert held_ids(mta) == set()
    with state_store(settings) as store:
        assert store.reputations() == []
    actions = [(e.action, e.queue_ids, e.outcome) for e in AuditLog_of(app).newest(10)]
    assert actions == [("delete", (gone,), "ok"), ("release-no-learn", (quiet,), "ok")]


def test_delete_as_spam_marks_the_sender(app: Flask, browser: Browser, mta: PostfixInstance,
                                         settings: Settings) -> None:
    queue_id = hold(mta, sender="spammer@example.net")
    assert browser.post("/act", {"action": "delete-as-spam", "id": queue_id}).status_code == 302
    assert "Deleted as spam: 1." in browser.get("/").text
    assert held_ids(mta) == set() and mta.delivered() == []
    with state_store(settings) as store:
        marked = store.reputation("spammer@example.net")
    assert marked is not None and marked.spam_marks == 1
    assert marked.spam_reasons == ("auto.noreply_sender", "iprev.ptr_missing")
    (entry,) = AuditLog_of(app).newest(10)
    assert (entry.action, entry.queue_ids, entry.outcome) == ("delete-as-spam", (queue_id,), "ok")


def test_a_batch_with_a_message_no_longer_held_is_refused_whole(
        app: Flask, browser: Browser, mta: PostfixInstance) -> None:
    queue_id = hold(mta)
    done = browser.post("/act", {"action": "release", "id": [queue_id, "ABCDEF12345"]})
    assert done.status_code == 302
    assert "Not done: ABCDEF12345: not in the hold queue" in browser.get("/").text
    assert held_ids(mta) == {queue_id}
    (entry,) = AuditLog_of(app).newest(10)
    assert entry.outcome == "failed" and "ABCDEF12345" in entry.detail
    assert browser.post("/act", {"action": "release"}).status_code == 302  # none chosen
    assert "Choose at least one message." in browser.get("/").text
    assert browser.post("/act", {"action": "shred", "id": queue_id}).status_code == 400


def test_the_audit_page_newest_first_and_the_allowlist_line(
        app: Flask, mta: PostfixInstance) -> None:
    ctx(app).accounts.add("root-admin", "admin", "correct horse battery", time.time())
    admin = Browser(app)
    assert admin.login("root-admin").status_code == 302
    deleted = hold(mta, sender="bounces+4711@example.com")
    shown = hold(mta, sender="alerts-x@example.org")
    assert admin.post("/act", {"action": "delete", "id": deleted}).status_code == 302
    page = admin.post("/allowlist", {"id": shown})
    assert page.status_code == 200
    # The sender identity the allow-list compares with: the sub-address
    # (address_separators "+-") undone.
    assert "checks:\n  allowlist:\n    senders:\n      - alerts@example.org</pre>" in page.text
    assert held_ids(mta) == {shown}  # asking changes nothing
    audit = admin.get("/audit").text
    assert audit.index("allow-list requested") < audit.index(">deleted<")
    assert f"<code>{deleted}</code>" in audit and "root-admin" in audit
