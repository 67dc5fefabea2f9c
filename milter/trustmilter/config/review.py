"""The `review:` section of policy.yaml: the help desk's review page.

`trustmilter review serve` (the page, as an unprivileged user), `trustmilter
review helper` (the privileged helper: the only part that runs Postfix's queue
commands, as root) and `trustmilter review digest` (the daily mail to the help
desk) read it. The milter itself never does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from trustmilter.config.errors import InvalidField

LANGUAGES = ("en", "de", "fr", "ja")


def _host_port(text: str) -> bool:
    """HOST:PORT, the host an IPv4 address, a name, or an IPv6 address in brackets."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    if ":" in host:
        return host.startswith("[") and host.endswith("]")
    return True


@dataclass(frozen=True, slots=True)
class DigestConfig:
    # One mail a day to the help desk listing what was held since the last
    # one, with links to the page; never to the senders. Off by default.
    enabled: bool = False
    # The help-desk team's addresses (required when enabled).
    recipients: tuple[str, ...] = ()
    # The digest's From and envelope sender.
    sender: str = "postmaster"

    def __post_init__(self) -> None:
        if self.enabled and not self.recipients:
            raise InvalidField(("recipients",), "at least one address when enabled", [])
        for index, address in enumerate(self.recipients):
            if "@" not in address or any(c.isspace() or c in "<>,;" for c in address):
                raise InvalidField(("recipients", index), "an address like help@example.com",
                                   address)


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    # Where the page listens, HOST:PORT. Loopback by default: publish it
    # through the operator's TLS reverse proxy, never directly.
    listen: str = "127.0.0.1:9426"
    # The address people open (the proxy's https:// URL), for the digest's
    # links and to know the page is behind TLS (Secure cookies). Empty:
    # http://<listen>/.
    url: str = ""
    # The account the page runs as; the privileged helper answers only this
    # user (and root). Nothing that serves HTTP runs as root.
    user: str = "trustmilter"
    # The privileged helper's unix socket (created by the helper, mode 0660,
    # owned by root and the group of `user`).
    helper_socket: str = "/run/trustmilter-review/helper.sock"
    # Postfix's configuration directory (postsuper -c); empty: Postfix's default.
    postfix_config: str = ""
    # The page's own data: accounts, the audit log, the session key.
    data_dir: str = "/var/lib/trustmilter/review"
    # The language when the browser asks for none of en, de, fr, ja.
    default_language: Literal["en", "de", "fr", "ja"] = "en"
    # Accounts from a trusted reverse proxy: the request header naming the
    # logged-in user (e.g. X-Remote-User), believed only from these networks.
    # Empty: off; people log in with a local account (`review adduser`).
    proxy_user_header: str = ""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    # Failed logins per account and per client address before waiting.
    login_attempts: int = field(default=5, metadata={"min": 1, "max": 1000})
    # The window, in seconds, those attempts are counted in.
    login_window: int = field(default=900, metadata={"min": 1, "max": 86400})
    # A session ends after this many seconds.
    session_lifetime: int = field(default=28800, metadata={"min": 60, "max": 2592000})
    # Messages per page in the list.
    page_size: int = field(default=50, metadata={"min": 5, "max": 1000})
    digest: DigestConfig = field(default_factory=DigestConfig)

    def __post_init__(self) -> None:
        if not _host_port(self.listen):
            raise InvalidField(("listen",), "HOST:PORT, e.g. 127.0.0.1:9426", self.listen)
        if self.url and not self.url.startswith(("https://", "http://")):
            raise InvalidField(("url",), "an http:// or https:// address", self.url)
        for key in ("helper_socket", "data_dir"):
            if not getattr(self, key).startswith("/"):
                raise InvalidField((key,), "an absolute path", getattr(self, key))
        if self.postfix_config and not self.postfix_config.startswith("/"):
            raise InvalidField(("postfix_config",), "an absolute path", self.postfix_config)
        if self.proxy_user_header and not self.proxy_user_header.replace("-", "").isalnum():
            raise InvalidField(("proxy_user_header",), "a header name like X-Remote-User",
                               self.proxy_user_header)
        for index, network in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise InvalidField(("trusted_proxies", index), "a network like 127.0.0.1/32",
                                   network) from None
