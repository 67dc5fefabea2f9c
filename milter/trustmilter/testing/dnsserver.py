"""A real authoritative DNS server on 127.0.0.1 (or ::1), serving a fixture (tests, benchmarks).

`DnsTestServer` listens on one random port for both UDP and TCP. dnslib's
threaded socketservers do the sockets and the TCP length framing; the
replies are built with dnspython from `trustmilter.lookup.fixture`, so the
test server and offline replay share one parser and one semantics.

- ANSWER: the CNAME chain (if any) and the records, AA set.
- NXDOMAIN / NODATA: an SOA in the authority section, so resolvers can
  cache them negatively (RFC 2308 §3).
- $SERVFAIL: rcode SERVFAIL. $TIMEOUT: no reply at all.
- UDP replies larger than the client's EDNS buffer (512 without EDNS,
  RFC 1035 §4.2.1; RFC 6891 §6.2.5) come back empty with TC set, and the
  client retries over TCP (RFC 7766 §5).

Every query packet is logged as (name lower-case without trailing dot,
type text) in `queries`; a UDP query retried over TCP, or retried after a
timeout, appears once per packet. TCP packets are also in `tcp_queries`.
It does not do DNSSEC, zone transfers, or anything but class IN.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dnslib.dns import DNSError
from dnslib.server import DNSHandler, DNSLogger, TCPServer, UDPServer

from trustmilter.lookup.answer import DnsStatus
from trustmilter.lookup.fixture import TIMEOUT, Fixture, RecordSet

HOST = "127.0.0.1"
NO_EDNS_UDP_LIMIT = 512  # RFC 1035 §4.2.1
TCP_LIMIT = 65535


class _Handler(DNSHandler):  # type: ignore[misc]  # dnslib is untyped
    """dnslib's handler with the reply built by `DnsTestServer.reply`."""

    def get_reply(self, data: bytes) -> bytes:
        server: DnsTestServer = self.server.resolver  # dnslib's slot for "what answers"
        reply = server.reply(data, tcp=self.protocol == "tcp")
        if reply is None:
            # dnslib's handle() sends nothing when get_reply raises DNSError.
            raise DNSError("no reply ($TIMEOUT or unreadable query)")
        return reply


class DnsTestServer:
    """UDP+TCP DNS server for one test session; `load()` swaps the zone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fixture = Fixture()
        self._queries: list[tuple[str, str]] = []
        self._tcp_queries: list[tuple[str, str]] = []
        self._servers: list[Any] = []
        self.port = 0

    @property
    def nameserver(self) -> str:
        """The "host:port" string a DnsConfig takes."""
        return f"{HOST}:{self.port}"

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Every (name, type) asked since the last reset, one entry per packet."""
        with self._lock:
            return list(self._queries)

    @property
    def tcp_queries(self) -> list[tuple[str, str]]:
        """The (name, type) asked over TCP since the last reset."""
        with self._lock:
            return list(self._tcp_queries)

    def load(self, zone_text: str) -> None:
        """Serve `zone_text` (fixture format) from now on, replacing the old zone."""
        fixture = Fixture.parse(zone_text, source="dns_server.load")
        with self._lock:
            self._fixture = fixture

    def reset(self) -> None:
        """Forget the zone and the query log."""
        with self._lock:
            self._fixture = Fixture()
            self._queries.clear()
            self._tcp_queries.clear()

    def start(self) -> None:
        """Bind UDP and TCP on one free port and serve in daemon threads."""
        for _ in range(20):
            udp = UDPServer((HOST, 0), _Handler)
            port = udp.server_address[1]
            try:
                tcp = TCPServer((HOST, port), _Handler)
            except OSError as error:
                udp.server_close()
                if error.errno == errno.EADDRINUSE:
                    continue
                raise
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        self.port = port
        for server in (udp, tcp):
            server.resolver = self
            server.logger = DNSLogger(logf=lambda _text: None)
            threading.Thread(target=server.serve_forever, daemon=True, name="dns-test").start()
            self._servers.append(server)

    def close(self) -> None:
        """Stop serving and free the port."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def reply(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The wire reply to one query packet, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = question.name.canonicalize().to_text(omit_final_dot=True)
        kind = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            fixture = self._fixture
            self._queries.append((name, kind))
            if tcp:
                self._tcp_queries.append((name, kind))
        if question.rdclass != dns.rdataclass.IN or dns.rdatatype.is_metatype(question.rdtype):
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        resolution = fixture.resolve(name + ".", kind)
        if resolution.status is DnsStatus.TEMPERROR:
            if resolution.error == TIMEOUT:
                return None
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        response.flags |= dns.flags.AA
        for index, records in enumerate(resolution.chain):
            # The first owner keeps the question's spelling (0x20 case randomisation).
            owner = question.name if index == 0 else _name(records.owner)
            response.answer.append(_rrset(owner, records))
        if resolution.status is DnsStatus.NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if resolution.soa is not None:
            response.authority.append(_rrset(_name(resolution.soa.owner), resolution.soa))
        return _sized(query, response, tcp=tcp)


def _name(text: str) -> dns.name.Name:
    """An answer-name-form string back as an absolute dnspython name."""
    return dns.name.from_text(text, origin=dns.name.root)


def _rrset(owner: dns.name.Name, records: RecordSet) -> dns.rrset.RRset:
    """One answer or authority RRset."""
    return dns.rrset.from_rdata_list(owner, records.ttl, list(records.rdatas))


def _sized(query: dns.message.Message, response: dns.message.Message, *, tcp: bool) -> bytes:
    """`response` on the wire, or an empty TC reply when it does not fit in UDP."""
    if tcp:
        limit = TCP_LIMIT
    elif query.edns >= 0:
        limit = max(NO_EDNS_UDP_LIMIT, query.payload)
    else:
        limit = NO_EDNS_UDP_LIMIT
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire(max_size=limit)
