"""Hand the digest to the MTA: ``sendmail -i -f SENDER -- RECIPIENTS...``.

An argv list, no shell: the recipients come from the policy, and even so
none of them can become an option (they follow ``--``), nor can the sender
(it is the value of ``-f``). ``-i``: a line with a single dot is text, not
the end of the message. With review.postfix_config the Postfix instance
whose hold queue is reviewed also sends the digest (``-C DIR``, Postfix's
sendmail(1)). sendmail(1) exits 0 once the message is in the queue: that
is the handover after which the digest counts as sent.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

DEFAULT_SENDMAIL = "/usr/sbin/sendmail"
SEND_TIMEOUT = 60.0  # seconds; sendmail only queues the message
# Debian puts sendmail(1) and postdrop in /usr/sbin, which a service's PATH may lack.
SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class SendError(Exception):
    """sendmail did not take the message; one line, with its own words."""


def sendmail_argv(sendmail: str, sender: str, recipients: Sequence[str],
                  postfix_config: Path | None) -> list[str]:
    config = ["-C", str(postfix_config)] if postfix_config is not None else []
    return [sendmail, *config, "-i", "-f", sender, "--", *recipients]


def send(message: bytes, argv: Sequence[str], timeout: float = SEND_TIMEOUT) -> None:
    """Run `argv` with `message` on its standard input; SendError unless it exits 0."""
    env = dict(os.environ)
    env["PATH"] = SBIN_PATH + ":" + env.get("PATH", "")
    try:
        done = subprocess.run(list(argv), input=message, capture_output=True, env=env,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise SendError(f"{argv[0]}: not found (is an MTA installed?)") from None
    except PermissionError:
        raise SendError(f"{argv[0]}: not allowed to run it") from None
    except subprocess.TimeoutExpired:
        raise SendError(f"{argv[0]}: no answer after {timeout:g}s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise SendError(f"{argv[0]} exited {done.returncode}: "
                        f"{said[-1] if said else 'without a word'}")
