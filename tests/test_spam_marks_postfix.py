"""Negative feedback end to end: "mark as spam" damages a sender's standing.

Real SMTP into the module's private Postfix (conftest `postfix`), with
``trustmilter run`` (`DaemonProcess`) as its milter, a policy whose state
store is an SQLite file, the test DNS server, and the real command line
(``python -m trustmilter quarantine ...`` / ``reputation ...``) as an
operator runs it against that Postfix's hold queue and the same store.
Each message comes from 192.0.2.10 (XCLIENT) with SPF, DKIM and DMARC in
order, so only what a test puts in (a List-Id, Auto-Submitted) or what the
store learned can hold it.

The story of one sender identity, news.<id>@example.com, whose envelope
sender is dressed differently each time (VERP, BATV, a sub-address):
held and released twice, it is learned; one of its messages deleted as
spam takes that trust away at once; a second one holds even its clean
mail (rule reputation-rejected); `reputation forget`, given any dressed
form, makes it anyone's again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keys import key_zone, message, rsa_key, sign
from smtp_helpers import Outcome, send_one
from trustmilter.testing.daemon import DaemonProcess, Verdict, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from trustmilter.testing.postfix import PostfixInstance
from zones import GOOD_SENDER

AUTHSERV_ID = "mx.example.org"
KEY = rsa_key(1024)
ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
""" + key_zone(KEY, "sel", "example.com")
CLIENT = {"client_ip": "192.0.2.10", "helo": "mail.example.com"}
LIST = "List-Id: Newsletter <news.example.com>"
CLI_TIMEOUT = 60


@dataclass
class Rig:
    postfix: PostfixInstance
    daemon: DaemonProcess
    policy: Path

    def trustmilter(self, *argv: str) -> dict[str, Any]:
        """The real command line with --json; its one JSON document."""
        done = subprocess.run(
            [sys.executable, "-m", "trustmilter", *argv, "--json", "--policy", str(self.policy)],
            capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def quarantine(self, action: str, *argv: str) -> dict[str, Any]:
        return self.trustmilter("quarantine", action, "--postfix-config",
                                str(self.postfix.config_dir), *argv)

    def reputation_of(self, identity: str) -> dict[str, Any] | None:
        listed = self.trustmilter("reputation", "list")["reputations"]
        found = [r for r in listed if r["sender"] == identity]
        return found[0] if found else None


@pytest.fixture(scope="module")
def rig(
    postfix: PostfixInstance, _dns_test_server: DnsTestServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("spam-marks")
    policy = write_policy(
        workdir / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
        dns={"cache_size": 0},
        state={"backend": "sqlite", "sqlite_path": str(workdir / "state" / "state.sqlite3")},
    )
    daemon = DaemonProcess.start(policy, workdir / "trustmilter.log")
    try:
        postfix.set_milters(daemon.postfix_spec, default_action="tempfail")
        yield Rig(postfix, daemon, policy)
    finally:
        status = daemon.stop()
        assert status == 0, "SIGTERM: clean exit\n" + daemon.log_tail()


@pytest.fixture
def mta(rig: Rig, dns_server: DnsTestServer) -> Rig:
    rig.postfix.reset()
    dns_server.load(ZONE)
    return rig


def queue_id_of(out: Outcome) -> str:
    assert out.data is not None and out.data.code == 250, out
    match = re.search(r"queued as (\S+)", out.data.text)
    assert match, out.data
    return match.group(1)


class Sender:
    """One sender identity whose envelope sender is dressed anew for every message."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        # "." is no sub-address separator: the identity is the whole local part.
        self.identity = f"news.{uuid.uuid4().hex[:10]}@example.com"
        self.local = self.identity.split("@")[0]
        self.sent = 0

    def dressed(self) -> str:
        """VERP, BATV and sub-addressed forms in turn; all stand for `identity`."""
        self.sent += 1
        forms = (f"{self.local}+{self.sent}-bob=example.org@example.com",
                 f"prvs=0{self.sent:03d}abcdef={self.local}@example.com",
                 f"{self.local}-{self.sent}@example.com")
        return forms[self.sent % len(forms)]

    def send(self, *headers: str) -> tuple[str, Outcome]:
        """A signed message (DMARC passes) with `headers`; its envelope sender and outcome."""
        mail_from = self.dressed()
        raw = sign(message(from_=f"News <{self.identity}>", extra_headers=headers,
                           message_id=f"<{uuid.uuid4().hex}@example.com>"), KEY, "example.com")
        return mail_from, send_one(self.rig.postfix.smtp_port, raw, mail_from=mail_from, **CLIENT)

    def fate(self, *headers: str) -> tuple[str, Verdict]:
        """Send; "hold" or "accept" as Postfix saw it, and trustmilter's verdict line."""
        _, out = self.send(*headers)
        queue_id = queue_id_of(out)
        self.rig.postfix.wait_idle()
        held = queue_id in {e["queue_id"] for e in self.rig.postfix.hold_queue()}
        return ("hold" if held else "accept"), self.rig.daemon.wait_verdict(queue_id)


def findings(verdict: Verdict) -> set[str]:
    return set(verdict.fields.get("findings", "").split(","))


def rules(verdict: Verdict) -> list[str]:
    return [rule for rule in verdict.fields.get("rules", "").split(",") if rule]


def test_delete_as_spam_then_a_new_message_from_that_sender(mta: Rig) -> None:
    news = Sender(mta)

    # Held bulk mail released twice: learned ("the same sender passes later").
    for release in (1, 2):
        fate, verdict = news.fate(LIST)
        assert (fate, rules(verdict)) == ("hold", ["auto-bulk"])
        (released,) = mta.quarantine("release", verdict.queue_id)["released"]
        assert released["learned"]["sender"] == news.identity  # whatever the dressing
        assert released["learned"]["releases"] == release
    fate, verdict = news.fate(LIST)
    assert fate == "accept" and "reputation.learned" in findings(verdict)

    # Something new from the learned sender is held, and the operator deletes it as spam.
    fate, verdict = news.fate("Auto-Submitted: auto-generated")
    assert fate == "hold" and "auto-machine-generated" in rules(verdict)
    marked = mta.quarantine("delete", "--spam", verdict.queue_id)
    assert marked["deleted"] == [verdict.queue_id]
    (item,) = marked["marked"]
    assert (item["marked"]["sender"], item["marked"]["spam_marks"],
            item["marked"]["releases"]) == (news.identity, 1, 0)
    assert mta.postfix.hold_queue() == []
    known = mta.reputation_of(news.identity)
    assert known is not None
    assert (known["trusted"], known["rejected"]) == (False, False)

    # The next message: its learned trust is gone, bulk mail is held again.
    fate, verdict = news.fate(LIST)
    assert (fate, rules(verdict)) == ("hold", ["auto-bulk"])
    assert "reputation.learned" not in findings(verdict)
    assert verdict.fields["reputation"] == "none"

    # A second mark: now even its clean, authenticated mail is held, by the new rule.
    mta.quarantine("delete", "--spam", verdict.queue_id)
    fate, verdict = news.fate()
    assert (fate, rules(verdict)) == ("hold", ["reputation-rejected"]), verdict.fields
    assert "reputation.rejected" in findings(verdict)
    assert verdict.fields["reputation"] == "fail"
    assert float(verdict.fields["score"]) < 3, "held by the rule, not by the score"
    (held,) = mta.quarantine("list")["messages"]
    assert held["reasons"] == ["reputation.rejected"] and held["rules"] == ["reputation-rejected"]

    known = mta.reputation_of(news.identity)
    assert known is not None
    assert (known["releases"], known["spam_marks"], known["trusted"], known["rejected"]) == (
        0, 2, False, True)
    assert {"auto.machine_generated", "auto.bulk"} <= set(known["spam_reasons"])

    # Forgetting, under any dressing of the address, undoes both directions:
    # the sender is judged as anyone's again.
    forgotten = mta.trustmilter("reputation", "forget", f"{news.local}+77@example.com")
    assert forgotten == {"forgotten": news.identity}
    assert mta.reputation_of(news.identity) is None
    fate, verdict = news.fate()
    assert fate == "accept" and "reputation.rejected" not in findings(verdict)
    assert verdict.fields["reputation"] == "none"
    fate, verdict = news.fate(LIST)
    assert (fate, rules(verdict)) == ("hold", ["auto-bulk"])  # nothing learned either


def test_a_spam_mark_never_touches_another_sender(mta: Rig) -> None:
    """Marks are per identity: a different local part is a different sender."""
    spammer, other = Sender(mta), Sender(mta)
    for _ in range(2):
        fate, verdict = spammer.fate(LIST)
        assert fate == "hold"
        mta.quarantine("delete", "--spam", verdict.queue_id)
    assert spammer.fate()[0] == "hold"
    fate, verdict = other.fate()
    assert fate == "accept" and verdict.fields["reputation"] == "none"
