"""trustmilter driven by Debian's `miltertest`, an independent milter client.

Issue 3 asks for a test through Sendmail or, where a real Sendmail cannot run
in CI, through `miltertest`: Debian's sendmail and postfix packages conflict
(both are the MTA), and the suite needs Postfix. miltertest (OpenDKIM's
Lua-scripted MTA simulator, package `miltertest`) speaks the milter protocol
as Sendmail's libmilter peer does, so it checks what Sendmail would see:
negotiated options, each stage's reply, SMFIR_REPLYCODE texts, header
inserts and deletes, quarantine.

The module starts one `trustmilter run` on a free loopback port, its policy
pointing at the DNS test server, and runs each script of tests/miltertest/
with `miltertest -s`; a script fails by raising a Lua error, and the test
then fails with miltertest's output and the daemon's log. After each script
the verdict lines of its queue IDs are read back from the daemon's log, and
after all of them the Prometheus endpoint must have counted the messages.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trustmilter.policy.model import Policy
from trustmilter.testing.daemon import DaemonProcess, free_port, write_policy
from trustmilter.testing.dnsserver import DnsTestServer
from zones import GOOD_SENDER

MILTERTEST = shutil.which("miltertest")
pytestmark = pytest.mark.skipif(
    MILTERTEST is None, reason="miltertest not installed (bash packaging/install.sh --test)"
)

SCRIPTS = Path(__file__).parent / "miltertest"
AUTHSERV_ID = "mx.example.org"
SCRIPT_TIMEOUT = 60.0

ZONE = GOOD_SENDER + """
example.net.               300 IN TXT "v=spf1 ip4:192.0.2.20 -all"
example.net.               300 IN A   192.0.2.20
_dmarc.example.net.        300 IN TXT "v=DMARC1; p=quarantine"
example.org.               300 IN MX  10 mx.example.org.
mx.example.org.            300 IN A   198.51.100.25
sender.test.               300 IN TXT "v=spf1 ip4:203.0.113.5 -all"
sender.test.               300 IN A   203.0.113.5
spoofer.sender.test.       300 IN A   203.0.113.5
$NXDOMAIN nowhere.example.net.
"""


def verdicts_by_queue_id(daemon: DaemonProcess) -> dict[str, dict[str, str]]:
    """Verdict lines in the log so far, by queue ID (NOQUEUE: the last one)."""
    return dict(daemon.verdicts())


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Where the daemon serves Prometheus metrics (metrics.listen)."""
    return free_port()


@pytest.fixture(scope="module")
def daemon(
    _dns_test_server: DnsTestServer, tmp_path_factory: pytest.TempPathFactory, metrics_port: int
) -> Iterator[DaemonProcess]:
    """`trustmilter run` on 127.0.0.1, stopped (whole process group) at the end."""
    _dns_test_server.reset()
    _dns_test_server.load(ZONE)
    work = tmp_path_factory.mktemp("miltertest")
    policy = write_policy(work / "policy.yaml", AUTHSERV_ID, _dns_test_server.nameserver,
                          metrics={"listen": f"127.0.0.1:{metrics_port}"})
    try:
        running = DaemonProcess.start(policy, work / "trustmilter.log")
        yield running
        running.stop()
    finally:
        _dns_test_server.reset()


def run_script(daemon: DaemonProcess, name: str, **defines: str) -> str:
    """Run tests/miltertest/NAME with -D defines; fail with its output on a non-zero exit."""
    assert MILTERTEST is not None
    args = [MILTERTEST, "-s", str(SCRIPTS / name),  # an absolute name stays as it is
            "-D", f"lib={SCRIPTS / 'lib.lua'}", "-D", f"socket={daemon.spec}",
            "-D", f"authserv_id={AUTHSERV_ID}"]
    for key, value in defines.items():
        args += ["-D", f"{key}={value}"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"miltertest {name} still running after {SCRIPT_TIMEOUT}s: {error.output!r}")
    if done.returncode != 0:
        pytest.fail(
            f"miltertest {name} exited {done.returncode}\n--- miltertest ---\n"
            f"{done.stdout}{done.stderr}\n--- trustmilter log ---\n{daemon.log_text()}"
        )
    return done.stdout


def test_accepted_mail_gets_our_authentication_results(daemon: DaemonProcess) -> None:
    run_script(daemon, "accept.lua")
    line = verdicts_by_queue_id(daemon)["MTACCEPT1"]
    assert line["action"] == "accept"
    assert line["client"] == "192.0.2.10" and line["from"] == "<alice@example.com>"
    assert line["dmarc"] == "pass" and line["spf.mailfrom"] == "pass"


def test_dmarc_reject_then_rcpt_reject_then_a_fresh_transaction(daemon: DaemonProcess) -> None:
    rule = next(r for r in Policy().rules if r.name == "dmarc-reject")
    assert rule.reply is not None
    run_script(daemon, "reject.lua", reject_code=str(rule.reply.code),
               reject_dsn=rule.reply.dsn, reject_text=rule.reply.text)
    verdicts = verdicts_by_queue_id(daemon)
    assert verdicts["MTREJECT1"]["action"] == "reject"
    # No PTR for the client: p=reject with more against it (RFC 9989 §7.4).
    assert verdicts["MTREJECT1"]["rules"] == "dmarc-reject,dmarc-reject-held"
    assert verdicts["MTREJECT1"]["stage"] == "eom"
    # Refused at RCPT TO, before Postfix would have a queue file: NOQUEUE.
    early = verdicts["NOQUEUE"]
    assert early["from"] == "<x@nowhere.example.net>"
    assert early["reply"].startswith("550 5.1.8 ") and early["stage"] == "rcpt"
    assert verdicts["MTREJECT3"]["action"] != "reject"
    assert verdicts["MTREJECT3"]["from"] == "<bob@sender.test>"


def test_quarantine_and_the_clients_that_skip_the_checks(daemon: DaemonProcess) -> None:
    run_script(daemon, "quarantine.lua")
    verdicts = verdicts_by_queue_id(daemon)
    assert verdicts["MTQUAR1"]["action"] == "quarantine"
    assert verdicts["MTQUAR1"]["dmarc"] == "fail"
    # The same message, but the client skips the trust checks.
    assert verdicts["MTQUAR2"]["action"] == "accept"
    assert verdicts["MTQUAR2"]["client_kind"] == "authenticated"
    assert verdicts["MTQUAR3"]["action"] == "accept"
    assert verdicts["MTQUAR3"]["client_kind"] == "trusted"


def test_a_failing_script_fails_the_test(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The harness itself: a failed expectation exits non-zero and says which stage."""
    script = tmp_path / "fails.lua"
    script.write_text(
        "dofile(lib)\n"
        "main(function()\n"
        '    local conn = open("mail.example.com", "192.0.2.10", "mail.example.com")\n'
        '    mail_from(conn, "MTFAIL1", "alice@example.com")\n'
        '    expect(conn, "MAIL FROM (deliberately wrong)", SMFIR_REJECT)\n'
        "end)\n"
    )
    with pytest.raises(pytest.fail.Exception) as failed:
        run_script(daemon, str(script))
    assert "MAIL FROM (deliberately wrong): milter replied continue, expected reject" in str(
        failed.value
    )


def test_metrics_endpoint_counted_the_conversations(
    daemon: DaemonProcess, metrics_port: int
) -> None:
    """The daemon's Prometheus endpoint (metrics.listen) saw real milter traffic."""
    run_script(daemon, "accept.lua")
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    deadline = time.monotonic() + 5
    while True:  # the connection's close may be counted just after miltertest exits
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        if "trustmilter_transactions_in_flight 0.0" in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 'trustmilter_messages_total{action="accept"}' in text
    assert 'trustmilter_check_results_total{method="dmarc",result="pass"}' in text
    assert "trustmilter_transactions_in_flight 0.0" in text  # every +1 had its -1
    # The daemon's resolver reports its network lookups (SPF and DMARC TXT, iprev PTR).
    dns = {
        (sample.name, sample.labels.get("rdtype")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("trustmilter_dns_query_seconds_count", "trustmilter_dns_query_seconds_sum")
    }
    timed = [rdtype for rdtype in ("TXT", "PTR")
             if dns.get(("trustmilter_dns_query_seconds_count", rdtype), 0) > 0
             and dns.get(("trustmilter_dns_query_seconds_sum", rdtype), 0) > 0]
    assert timed, f"no DNS lookup latency in /metrics: {dns}"
