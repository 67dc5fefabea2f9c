"""What we register with pymilter's C module, and what it cannot decode.

pymilter's `Milter.runmilter` would register callbacks that decode the
envelope through `Milter.Base`'s private ``envfrom_bytes`` and friends. We
register our own: they hand libmilter's bytes to `TrustMilter.envfrom_raw`
and `envrcpt_raw`, header values as bytes to `header`, and decode nothing
themselves (adapter.py says how the adapter does).

Three arguments pymilter's C module decodes itself, as strict UTF-8, before
calling any Python code (pymilter 1.0.5 builds them with
``Py_BuildValue("s")``): the HELO name, the client's host name at connect and
each header field *name*. For bytes that are not UTF-8 the build fails;
pymilter then prints the exception through `sys.excepthook` and answers
libmilter with its "exception policy" without calling us. Its default
policy, TEMPFAIL, in a no-reply callback made libmilter abandon the rest of
the message (the end of message was never answered; the MTA waited for its
timeout), and an 8-bit HELO was silently judged as no HELO.

So: the exception policy is CONTINUE, and our `sys.excepthook` hands the
bytes (`UnicodeDecodeError.object`) to the connection's adapter, which
decides (`TrustMilter.undecodable`). The hook finds that adapter through a
`threading.local`: pymilter gives every milter connection its own Python
thread state (its C context holds it) and runs the failed build and the hook
in it, and `threading.local` is per thread state. Any other exception that
reaches the hook during a connection is logged and answered with on_error at
end of message; outside a connection the previous hook prints it as before.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import Milter

from trustmilter.daemon.adapter import ACTIONS, TrustMilter

log = logging.getLogger("trustmilter")

MILTER_NAME = "trustmilter"
# pymilter's C module, as pymilter itself imports it (our source root is also
# called milter/, so we never import it by that name).
libmilter = Milter.milter

_connection = threading.local()  # .milter: this connection's TrustMilter, while open

# One plain function per callback, registered once. Each finds the
# connection's adapter with getpriv(); without one (the factory failed, which
# was logged) a callback the MTA need not wait for carries on, and one that
# answers says 451: nothing was checked. The thread-local for the hook is set
# at negotiate and connect only: the connection keeps its thread state, and
# so that value, until close.


def _negotiate(ctx: Any, options: list[int]) -> int:
    result: int = Milter.negotiate_callback(ctx, options)
    _connection.milter = ctx.getpriv()
    return result


def _connect(ctx: Any, hostname: str, family: int, hostaddr: Any) -> int:
    result: int = Milter.connect_callback(ctx, hostname, family, hostaddr)
    _connection.milter = ctx.getpriv()
    return result


def _hello(ctx: Any, name: str) -> Any:  # NOREPLY or CONTINUE (Milter.noreply)
    milter: TrustMilter | None = ctx.getpriv()
    return milter.hello(name) if milter is not None else Milter.CONTINUE


def _envfrom(ctx: Any, sender: bytes, *params: bytes) -> int:
    milter: TrustMilter | None = ctx.getpriv()
    return milter.envfrom_raw(sender, *params) if milter is not None else _unchecked(ctx)


def _envrcpt(ctx: Any, recipient: bytes, *params: bytes) -> int:
    milter: TrustMilter | None = ctx.getpriv()
    return milter.envrcpt_raw(recipient, *params) if milter is not None else _unchecked(ctx)


def _header(ctx: Any, name: str, value: bytes) -> Any:  # NOREPLY or CONTINUE (Milter.noreply)
    milter: TrustMilter | None = ctx.getpriv()
    return milter.header(name, value) if milter is not None else Milter.CONTINUE


def _eoh(ctx: Any) -> Any:  # NOREPLY or CONTINUE (Milter.noreply)
    milter: TrustMilter | None = ctx.getpriv()
    return milter.eoh() if milter is not None else Milter.CONTINUE


def _body(ctx: Any, chunk: bytes) -> Any:  # NOREPLY or CONTINUE (Milter.noreply)
    milter: TrustMilter | None = ctx.getpriv()
    return milter.body(chunk) if milter is not None else Milter.CONTINUE


def _eom(ctx: Any) -> int:
    milter: TrustMilter | None = ctx.getpriv()
    return milter.eom() if milter is not None else _unchecked(ctx)


def _abort(ctx: Any) -> int:
    milter: TrustMilter | None = ctx.getpriv()
    return milter.abort() if milter is not None else Milter.CONTINUE


def _close(ctx: Any) -> int:
    _connection.milter = None
    result: int = Milter.close_callback(ctx)
    return result


def _unchecked(ctx: Any) -> int:
    """The answer of a replying callback without an adapter."""
    ctx.setreply("451", "4.3.0", "Temporary local problem")
    return int(Milter.TEMPFAIL)


def _not_asked_for(ctx: Any, *args: Any) -> int:
    """DATA and unknown commands: negotiated away (P_NODATA, P_NOUNKNOWN)."""
    return int(Milter.CONTINUE)


def register(spec: str) -> None:
    """Wire our callbacks into libmilter, with our action flags."""
    libmilter.set_flags(ACTIONS)
    libmilter.set_exception_policy(Milter.CONTINUE)
    libmilter.set_connect_callback(_connect)
    libmilter.set_helo_callback(_hello)
    libmilter.set_envfrom_callback(_envfrom)
    libmilter.set_envrcpt_callback(_envrcpt)
    libmilter.set_header_callback(_header)
    libmilter.set_eoh_callback(_eoh)
    libmilter.set_body_callback(_body)
    libmilter.set_eom_callback(_eom)
    libmilter.set_abort_callback(_abort)
    libmilter.set_close_callback(_close)
    libmilter.setconn(spec)
    libmilter.register(MILTER_NAME, data=_not_asked_for, unknown=_not_asked_for,
                       negotiate=_negotiate)
    sys.excepthook = _Hook(sys.excepthook)


class _Hook:
    """`sys.excepthook` for exceptions pymilter's C layer reports (see the module docstring)."""

    def __init__(self, previous: Callable[..., Any]) -> None:
        self.previous = previous

    def __call__(
        self, kind: type[BaseException], error: BaseException, traceback: TracebackType | None
    ) -> None:
        milter: TrustMilter | None = getattr(_connection, "milter", None)
        if milter is None:
            self.previous(kind, error, traceback)
            return
        try:
            # No traceback: raised in C, building a callback's arguments.
            if isinstance(error, UnicodeDecodeError) and traceback is None:
                milter.undecodable(error.object)
                return
            log.error("pymilter failed around a callback for client %s",
                      milter.session.ip, exc_info=(kind, error, traceback))
            milter.session.record_failure(milter.stage or "connect")
        except Exception:  # never let the hook itself fail inside libmilter's thread
            log.exception("handling a failed pymilter callback failed")
