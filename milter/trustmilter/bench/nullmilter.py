"""A null milter on pymilter: accepts every message, checks nothing.

It is the benchmark's floor: what pymilter and libmilter cost by
themselves for the same conversations, so that trustmilter's figures can
be read as "what the checks add". To compare like with like it negotiates
the same protocol steps and actions as the milter it stands beside:
``--protocol 0x...`` and ``--actions 0x...`` are the values that milter
answered in its SMFIC_OPTNEG (the benchmark asks trustmilter first and
passes them on), so the MTA skips the same steps and waits for the same
replies. Without them it takes pymilter's defaults (every step, a reply
to each).

Every callback returns at once (NOREPLY where the step was negotiated as
no-reply, which libmilter requires); end of message accepts.

    python -m trustmilter.bench.nullmilter --socket inet:9000@127.0.0.1 \
        [--protocol 0x1ff6c0] [--actions 0x31]

Runs in the foreground until SIGTERM or SIGINT (libmilter stops on both).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import Milter

from trustmilter.config.socket import parse_socket


@dataclass(frozen=True, slots=True)
class Shape:
    """The negotiation to copy: SMFIF_* actions and SMFIP_* protocol bits."""

    actions: int
    protocol: int


class NullMilter(Milter.Base):  # type: ignore[misc]  # pymilter is untyped
    """Continue (or stay silent) everywhere, accept at end of message."""

    def __init__(self, shape: Shape | None) -> None:
        self._shape = shape

    def negotiate(self, opts: list[int]) -> Any:
        if self._shape is None:
            return super().negotiate(opts)
        offered_actions, offered_protocol = opts[0], opts[1]
        self._actions = opts[0] = offered_actions & self._shape.actions
        self._protocol = opts[1] = offered_protocol & self._shape.protocol
        opts[2] = opts[3] = 0
        return Milter.CONTINUE

    def _done(self, no_reply_bit: int) -> Any:
        """CONTINUE, or NOREPLY where the MTA was told not to wait for a reply."""
        return Milter.NOREPLY if self._protocol & no_reply_bit else Milter.CONTINUE

    def connect(self, hostname: str, family: int, hostaddr: Any) -> Any:
        return self._done(Milter.P_NR_CONN)

    def hello(self, hostname: str) -> Any:
        return self._done(Milter.P_NR_HELO)

    def envfrom(self, mail_from: str, *params: str) -> Any:
        return self._done(Milter.P_NR_MAIL)

    def envrcpt(self, rcpt: str, *params: str) -> Any:
        return self._done(Milter.P_NR_RCPT)

    def data(self) -> Any:
        return self._done(Milter.P_NR_DATA)

    def unknown(self, command: str) -> Any:
        return self._done(Milter.P_NR_UNKN)

    def header_bytes(self, name: str, value: bytes) -> Any:
        # What libmilter calls: skips pymilter's decoding, which a null milter
        # has no use for.
        return self._done(Milter.P_NR_HDR)

    def header(self, name: str, value: str) -> Any:
        # Defined (never called) so pymilter's default negotiation asks for
        # headers: its base class marks header() @nocallback.
        return self._done(Milter.P_NR_HDR)

    def eoh(self) -> Any:
        return self._done(Milter.P_NR_EOH)

    def body(self, chunk: bytes) -> Any:
        return self._done(Milter.P_NR_BODY)

    def eom(self) -> Any:
        return Milter.ACCEPT

    def abort(self) -> Any:
        return Milter.CONTINUE

    def close(self) -> Any:
        return Milter.CONTINUE


def _hex(text: str) -> int:
    return int(text, 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trustmilter.bench.nullmilter",
                                     description="A milter that accepts everything.")
    parser.add_argument("--socket", required=True, help="unix:/path or inet:PORT@HOST")
    parser.add_argument("--protocol", type=_hex, help="SMFIP_* bits to negotiate (copy)")
    parser.add_argument("--actions", type=_hex, help="SMFIF_* bits to negotiate (copy)")
    parser.add_argument("--timeout", type=int, default=60, help="libmilter I/O timeout, s")
    args = parser.parse_args(argv)
    try:
        parse_socket(args.socket)
    except ValueError as error:
        parser.error(f"--socket: {error}")
    if (args.protocol is None) != (args.actions is None):
        parser.error("--protocol and --actions go together")
    shape = None if args.protocol is None else Shape(args.actions, args.protocol)
    # pymilter calls the factory with no arguments, once per connection.
    Milter.factory = functools.partial(NullMilter, shape)
    Milter.set_flags(shape.actions if shape else Milter.ADDHDRS)
    print(f"null milter listening on {args.socket}", file=sys.stderr, flush=True)
    Milter.runmilter("trustmilter-bench-null", args.socket, timeout=args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
