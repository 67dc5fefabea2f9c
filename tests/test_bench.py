"""`trustmilter bench`: the load generator's parts, and one tiny run end to end.

Not a speed test: nothing asserts a throughput. What is asserted is that
the milter-protocol client completes whole conversations, honouring what
each milter negotiated (a null milter that asked for no replies to
headers/body, one that asked for a reply to each, and trustmilter itself),
that the corpus and its zone make trustmilter give the verdicts they are
built for (DKIM and SPF pass, DMARC failure, nonexistent sender at RCPT),
and that a bench run reports figures for every point, logs one verdict per
message and leaves no process behind. Everything listens on unix sockets
under tmp_path; DNS comes only from the bench's own test server.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from miltertest import constants as c
from trustmilter.authresults import parse_header_value
from trustmilter.bench.client import MilterClient, split_message
from trustmilter.bench.corpus import BenchMessage, Corpus, make_corpus
from trustmilter.bench.run import (
    AUTHSERV_ID,
    MilterProcess,
    _running,
    measure,
    policy_text,
    tree_pids,
)
from trustmilter.cli import main
from trustmilter.config.socket import parse_socket
from trustmilter.testing.dnsserver import DnsTestServer

# No reply to headers, end of headers and body; no DATA or unknown-command events.
NR_SHAPE = (c.SMFIP_NR_HDR | c.SMFIP_NR_EOH | c.SMFIP_NR_BODY | c.SMFIP_NODATA
            | c.SMFIP_NOUNKNOWN | c.SMFIP_SKIP)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """Small but with every kind (seed 1): 1024-bit keys keep generation quick."""
    return make_corpus(seed=1, messages=30, domains=6, keys=1, key_bits=1024)


@pytest.fixture(scope="module")
def milters(corpus: Corpus, tmp_path_factory) -> Iterator[dict[str, tuple[MilterProcess, MilterClient]]]:
    """trustmilter (with the corpus zone), a no-reply null milter and a reply-to-all one."""
    workdir = tmp_path_factory.mktemp("bench")
    dns = DnsTestServer()
    dns.start()
    dns.load(corpus.zone)
    specs = {name: parse_socket(f"unix:{workdir / name}.sock")
             for name in ("trustmilter", "null-nr", "null-all")}
    policy = workdir / "policy.yaml"
    policy.write_text(policy_text(dns.nameserver, specs["trustmilter"], workdir))
    argv = {
        "trustmilter": [sys.executable, "-m", "trustmilter", "run", "--policy", str(policy),
                        "--socket", str(specs["trustmilter"]), "--foreground-log"],
        "null-nr": [sys.executable, "-m", "trustmilter.bench.nullmilter", "--socket",
                    str(specs["null-nr"]), "--protocol", hex(NR_SHAPE), "--actions", "0x1"],
        "null-all": [sys.executable, "-m", "trustmilter.bench.nullmilter", "--socket",
                     str(specs["null-all"])],
    }
    processes = {name: MilterProcess(name, argv[name], specs[name], workdir / f"{name}.log")
                 for name in argv}
    try:
        with _running(list(processes.values())):
            ready = {}
            for process in processes.values():
                process.start()
            for name, process in processes.items():
                client = MilterClient(specs[name], timeout=10)
                process.wait_ready(client)
                ready[name] = (process, client)
            yield ready
    finally:
        dns.close()


def first(corpus: Corpus, kind: str) -> BenchMessage:
    return next(m for m in corpus.messages if m.kind == kind)


def test_corpus_is_deterministic_and_in_the_documented_ranges(corpus):
    again = make_corpus(seed=1, messages=30, domains=6, keys=1, key_bits=1024)
    assert [(m.kind, m.mail_from, m.client_ip, m.rcpts) for m in again.messages] == [
        (m.kind, m.mail_from, m.client_ip, m.rcpts) for m in corpus.messages]
    assert set(corpus.kinds()) == {"signed", "unsigned", "forged", "nxdomain"}
    for m in corpus.messages:
        body = m.raw.partition(b"\r\n\r\n")[2]
        assert 2 * 1024 - 600 <= len(body) <= 100 * 1024 + 600, len(body)
        assert m.client_ip.startswith(("198.51.100.", "203.0.113."))
        assert m.raw.startswith(b"DKIM-Signature:") == (m.kind == "signed")
    assert "_domainkey.d0.example.com. 3600 IN TXT" in corpus.zone


def test_headers_are_sent_as_postfix_sends_them():
    raw = b"Received: from a\r\n\tby b;\r\n\tdate\r\nSubject:  two spaces\r\n\r\nbody\r\n"
    headers, body = split_message(raw, leading_space=False)
    assert headers == [("Received", "from a\n\tby b;\n\tdate"), ("Subject", " two spaces")]
    assert body == "body\r\n"
    assert split_message(raw, leading_space=True)[0][1] == ("Subject", "  two spaces")


@pytest.mark.parametrize("name", ["null-nr", "null-all"])
def test_client_completes_conversations_with_a_null_milter(milters, corpus, name):
    _process, client = milters[name]
    negotiated = client.negotiate()
    if name == "null-nr":
        # The client waits for no reply where none was negotiated; had it
        # waited, the conversation would have hit the 10 s timeout.
        assert negotiated.protocol & NR_SHAPE == NR_SHAPE
    else:
        assert negotiated.protocol & c.SMFIP_NR_HDR == 0
    for message in corpus.messages[:10]:
        outcome = client.converse(message)
        assert (outcome.action, outcome.stage, outcome.modifications) == ("accept", "eom", ())
        # Every reply is recorded: one per step the milter answers, the final one last.
        stages = [stage for stage, _cmd, _fields in outcome.replies]
        if name == "null-all":
            assert stages.count("header") == len(split_message(message.raw, False)[0])
            assert stages.count("rcpt") == len(message.rcpts)
        else:
            assert "header" not in stages and "body" not in stages
        assert outcome.replies[-1][:2] == ("eom", c.SMFIR_ACCEPT)


def test_trustmilter_gives_the_verdicts_the_corpus_is_built_for(milters, corpus):
    _process, client = milters["trustmilter"]
    signed = client.converse(first(corpus, "signed"))
    assert signed.action == "accept" and not signed.quarantine
    (header,) = signed.headers("Authentication-Results")
    parsed = parse_header_value(header)
    assert parsed.authserv_id == AUTHSERV_ID
    found = {(r.method, r.result) for r in parsed.results}
    assert {("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass"), ("iprev", "pass")} <= found

    unsigned = client.converse(first(corpus, "unsigned"))
    assert unsigned.action == "accept"
    results = {(r.method, r.result)
               for r in parse_header_value(unsigned.headers("Authentication-Results")[0]).results}
    assert ("spf", "pass") in results and ("dmarc", "pass") in results

    forged = client.converse(first(corpus, "forged"))
    assert forged.stage == "eom"
    assert forged.quarantine or forged.action == "reject", forged

    gone_message = first(corpus, "nxdomain")
    gone = client.converse(gone_message)
    assert (gone.action, gone.stage) == ("reject", "rcpt")
    assert gone.reply.startswith("550 5.1.8"), gone.reply
    # Each recipient's refusal is in the replies, not only the first one.
    refusals = [fields["smtpcode"] for stage, cmd, fields in gone.replies
                if stage == "rcpt" and cmd == c.SMFIR_REPLYCODE]
    assert refusals == ["550"] * len(gone_message.rcpts)


def test_measure_reports_figures_for_both_milters(milters, corpus):
    stop = threading.Event()
    for name in ("null-nr", "trustmilter"):
        process, client = milters[name]
        point = measure(client, process, corpus, milter=name, concurrency=4, messages=12,
                        seconds=30, stop=stop)
        assert point.errors == 0, point.first_error
        assert point.messages == 12 and point.per_second > 0
        assert 0 < point.p50_ms <= point.p95_ms <= point.p99_ms
        assert point.peak_rss_mb > 5
        assert sum(point.actions.values()) == 12
    assert point.cpu_ms_per_message > 0  # trustmilter does measurable work per message


def test_bench_command_end_to_end(tmp_path, capsys):
    """`trustmilter bench`, tiny: the table, the JSON, a verdict per message, nothing left."""
    before = set(tree_pids(os.getpid()))
    out = tmp_path / "bench.json"
    code = main(["bench", "--concurrency", "1,2", "--messages", "6", "--seconds", "30",
                 "--corpus", "8", "--domains", "4", "--socket-kind", "unix", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| trustmilter | 2 | 6 | 0 |" in printed and "| null | 1 | 6 | 0 |" in printed
    report = json.loads(out.read_text())
    trust_points = [p for p in report["points"] if p["milter"] == "trustmilter"]
    assert [(p["concurrency"], p["label"]) for p in trust_points] == [
        (8, "cold"), (1, "warm"), (2, "warm")]
    for point in report["points"]:
        assert point["errors"] == 0 and point["per_second"] > 0 and point["p99_ms"] > 0
    sent = sum(p["messages"] for p in trust_points)
    assert sum(report["verdict_lines"].values()) == sent == 8 + 6 + 6
    assert report["negotiated"]["null"]["protocol"] == report["negotiated"]["trustmilter"]["protocol"]
    left = set(tree_pids(os.getpid())) - before
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes() for p in left]
