"""`trustmilter check` and the milter give the same answers on the same conversation.

Each case is played twice against the same policy and DNS: through the
daemon's pymilter adapter (TestCtx: the code libmilter calls, one RCPT at
a time) and through `trustmilter check --json`. Every decision's verdict
line (all fields but the queue ID and the milliseconds) and the answer to
every SMTP step must be the same.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import Milter
import pytest

from keys import key_zone, message, rsa_key, sign
from test_daemon_adapter import RecordingCtx
from trustmilter.cli import main
from trustmilter.config.dump import settings_to_yaml
from trustmilter.config.load import load_settings, parse_settings
from trustmilter.daemon.adapter import TrustMilter
from trustmilter.daemon.apps import AppHolder, build_app
from trustmilter.daemon.metrics import NullMetrics
from trustmilter.daemon.session import SmtpSession
from trustmilter.daemon.verdictlog import parse_verdict_line
from trustmilter.model import Message
from trustmilter.state.memory import MemoryStore
from zones import GOOD_SENDER

ZONE = GOOD_SENDER + """
example.org.               300 IN MX  10 mx.example.org.
example.org.               300 IN A   192.0.2.20
$NXDOMAIN nowhere.example.net.
$NXDOMAIN gone.example.net.
"""
VOLATILE = ("ms",)


@dataclass(frozen=True)
class Case:
    name: str
    ip: str
    sender: str
    rcpts: tuple[str, ...]
    signed: bool = True
    helo: str = "mail.example.com"
    auth: str | None = None
    extra_headers: tuple[str, ...] = field(default=())
    # What both must say (a sanity check that the case tests what it claims).
    stage: str = "eom"
    action: str = "accept"


CASES = [
    Case("authenticated sender, one recipient", "192.0.2.10", "alice@example.com",
         ("support@example.org",)),
    Case("trusted network, forged sender, forged A-R", "127.0.0.1", "x@nowhere.example.net",
         ("support@example.org",), signed=False, helo="localhost",
         extra_headers=("Authentication-Results: mx.example.org; dmarc=pass",)),
    Case("SASL user from an outside address", "203.0.113.5", "alice@example.com",
         ("a@example.org", "b@example.org"), signed=False, helo="laptop", auth="alice"),
    Case("several recipients, one refused at RCPT", "192.0.2.10", "alice@example.com",
         ("a@example.org", "b@gone.example.net", "c@example.org")),
    Case("nonexistent sender domain: refused early at RCPT", "192.0.2.10",
         "x@nowhere.example.net", ("a@example.org", "b@example.org"),
         stage="rcpt", action="reject"),
    Case("the null sender", "192.0.2.10", "", ("postmaster@example.org",), action="quarantine"),
    Case("spoofed From under p=reject", "203.0.113.5", "alice@example.com",
         ("support@example.org",), signed=False, helo="spoofer.example.net", action="reject"),
]


@pytest.fixture
def policy_file(tmp_path: Path, dns_server) -> Path:
    """The shipped rules plus one that refuses a recipient whose domain does not exist."""
    base = parse_settings(
        "authserv_id: mx.example.org\n"
        f"dns: {{nameservers: ['{dns_server.nameserver}'], timeout: 0.5, lifetime: 1.0}}\n"
        "checks: {names: {check_recipients: true}}\n",
        "base.yaml",
    )
    refuse_gone = parse_settings(
        "rules:\n  - {name: rcpt-gone, when: [names.rcpt_nonexistent], action: reject,"
        " reply: {code: 550, dsn: 5.1.2, text: No such domain}}\n",
        "rule.yaml",
    ).policy.rules
    policy = replace(base.policy, rules=(*base.policy.rules, *refuse_gone))
    path = tmp_path / "policy.yaml"
    path.write_text(settings_to_yaml(replace(base, policy=policy)))
    return path


def raw_message(case: Case) -> bytes:
    raw = message(extra_headers=case.extra_headers)
    return sign(raw, rsa_key(1024), "example.com") if case.signed else raw


def through_the_daemon(case: Case, policy_file: Path, raw: bytes, caplog) -> tuple[list, list]:
    """(answers of each step, verdict lines) as the milter gives them over libmilter."""
    with ThreadPoolExecutor(8) as pool:
        holder = AppHolder(build_app(load_settings(policy_file), pool, state=MemoryStore()),
                           None, pool)
        metrics = NullMetrics()
        Milter.factory = lambda: TrustMilter(SmtpSession(holder, metrics), metrics)
        ctx = RecordingCtx()
        if case.auth:
            ctx._setsymval("{auth_authen}", case.auth)
        ctx._connect(host="unknown", helo=case.helo, ip=case.ip)
        caplog.clear()
        answers = []
        with caplog.at_level(logging.INFO, logger="trustmilter.verdict"):
            code = ctx._envfrom(f"<{case.sender}>")
            answers.append(_answer(code, ctx))
            accepted = 0
            if code == Milter.CONTINUE:
                for rcpt in case.rcpts:
                    ctx._reply = None
                    code = ctx._envrcpt(f"<{rcpt}>")
                    answers.append(_answer(code, ctx))
                    accepted += code == Milter.CONTINUE
            if accepted:
                parsed = Message(raw)
                for name, value in parsed.headers:
                    ctx._header(name, " " + value)
                ctx._eoh()
                ctx._priv.body(parsed.body)
                ctx._reply = None
                answers.append(_answer(ctx._eom(), ctx, end=True))
        lines = [parse_verdict_line(r.getMessage())[1]
                 for r in caplog.records if r.name == "trustmilter.verdict"]
    return answers, lines


def _answer(code: int, ctx, end: bool = False) -> str:
    if code == Milter.CONTINUE and end:
        return "quarantine" if ctx.quarantined else "accept"
    if code == Milter.CONTINUE:
        return "continue"
    return " ".join(ctx._reply) if ctx._reply else str(code)


def through_check(case: Case, policy_file: Path, raw: bytes, tmp_path: Path, capsys
                  ) -> tuple[list, list]:
    eml = tmp_path / "m.eml"
    eml.write_bytes(raw)
    argv = ["check", str(eml), "--policy", str(policy_file), "--json", "--ip", case.ip,
            "--helo", case.helo, "--mail-from", case.sender]
    for rcpt in case.rcpts:
        argv += ["--rcpt", rcpt]
    if case.auth:
        argv += ["--auth", case.auth]
    capsys.readouterr()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    answers = [step["answer"] for step in out["steps"]]
    assert out["stage"] == case.stage and out["action"] == case.action
    return answers, out["verdict_lines"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_and_the_daemon_agree(case, policy_file, dns_server, tmp_path, capsys, caplog):
    dns_server.load(ZONE + key_zone(rsa_key(1024), "sel", "example.com"))
    raw = raw_message(case)
    daemon_answers, daemon_lines = through_the_daemon(case, policy_file, raw, caplog)
    check_answers, check_lines = through_check(case, policy_file, raw, tmp_path, capsys)
    assert check_answers == daemon_answers
    for line in (*daemon_lines, *check_lines):
        for key in VOLATILE:
            line.pop(key, None)
    assert [dict(sorted(line.items())) for line in check_lines] == [
        {key: value for key, value in sorted(line.items())} for line in daemon_lines
    ]
    assert daemon_lines[-1]["stage"] == case.stage
