"""systemd's readiness protocol (sd_notify(3)), spoken by `trustmilter run`.

With ``Type=notify`` systemd waits for ``READY=1`` before it counts the
service as started (so ``systemctl start`` returns, and Postfix ordered
after it starts, only once mail can flow), and shows ``RELOADING=1`` ...
``READY=1`` around a reload and ``STOPPING=1`` while it stops.

The protocol is one datagram of ``KEY=VALUE`` lines to the unix socket
named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
A dozen lines here instead of a dependency: python-systemd needs
libsystemd's headers to build, and the small pure-Python packages add
nothing over this. Without ``$NOTIFY_SOCKET`` (not under systemd, or
``Type=simple``) nothing is sent. A failure to send is never fatal:
systemd then times the start out, which says more than a crash would.
"""

from __future__ import annotations

import os
import socket
import time

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify(*assignments: str) -> bool:
    """Send ``KEY=VALUE`` assignments to systemd; True if they were sent."""
    address = os.environ.get(NOTIFY_SOCKET, "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a kind of address (vsock:) a service on this host never gets
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError:
        return False
    return True


def reloading() -> tuple[str, ...]:
    """The assignments that start a reload: systemd 253+ also wants the clock
    (CLOCK_MONOTONIC in microseconds) to match it with its own request."""
    return ("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
