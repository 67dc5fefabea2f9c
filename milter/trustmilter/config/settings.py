"""Everything policy.yaml says, as typed, frozen values: the configuration and the policy.

`Settings()` is the built-in configuration and equals the shipped
policy.yaml. Each section is a frozen dataclass whose fields are the YAML
keys; the loader (load.py) builds them generically from their type hints.
The policy proper (scores, rules, thresholds, actions, headers:
policy/model.py) is read *inline*, from the same top-level keys, so the
file stays one flat document while the evaluator sees only the policy.

What is checked here and not in the policy: that every signal the policy
names is one some check (or a trusted gateway) can produce — the
configuration knows the checks (the signal catalogue, signals.py), the
policy knows none. Once loaded, settings are never rewritten: values
derived from them (the authserv-id when empty, the loop marker's id) live
on the App.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trustmilter.checks.forwarded import parse_forwarders
from trustmilter.config.checks import ChecksConfig
from trustmilter.config.daemon import LoggingConfig, MetricsConfig, MilterConfig
from trustmilter.config.dns import DnsConfig
from trustmilter.config.errors import InvalidField
from trustmilter.config.gateways import AUTHSERV_ID, GatewayConfig
from trustmilter.config.review import ReviewConfig
from trustmilter.config.state import StateConfig
from trustmilter.mail.identity import DEFAULT_SEPARATORS
from trustmilter.policy.model import Policy
from trustmilter.signals import WILDCARD, is_known_pattern, is_known_signal, suggestion


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything policy.yaml says. `Settings()` is the built-in default."""

    # Our RFC 8601 authserv-id; empty means this host's name (App.build).
    authserv_id: str = ""
    # Upstream gateways whose Authentication-Results we believe (RFC 8601 §5),
    # each only on mail from itself: {id, networks}, or a plain id believed
    # from the client the MTA verified by that name (config/gateways.py).
    trusted_authserv_ids: tuple[str | GatewayConfig, ...] = ()
    # Hosts that forward mail to us (networks, host names, ".domain" for every
    # host under it): the hop before them is authenticated in their place.
    trusted_forwarders: tuple[str, ...] = ()
    # Characters that start a sub-address in a local part (Postfix's
    # recipient_delimiter): "alice+news@" and "alice-news@" are alice@ for
    # rate limits, support addresses and the allow-list (mail/identity.py).
    address_separators: str = DEFAULT_SEPARATORS
    dns: DnsConfig = field(default_factory=DnsConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    # scores, rules, thresholds, actions, headers: top-level keys of the file.
    policy: Policy = field(default_factory=Policy, metadata={"inline": True})
    milter: MilterConfig = field(default_factory=MilterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    state: StateConfig = field(default_factory=StateConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)

    def __post_init__(self) -> None:
        if any(c.isalnum() or c.isspace() or c in '@"<>' or not c.isprintable()
               for c in self.address_separators):
            raise InvalidField(
                ("address_separators",), 'punctuation characters like "+-" (or "")',
                self.address_separators,
            )
        if self.authserv_id and AUTHSERV_ID.match(self.authserv_id) is None:
            raise InvalidField(
                ("authserv_id",), "a host name like mx.example.com", self.authserv_id
            )
        for index, trusted in enumerate(self.trusted_authserv_ids):
            if isinstance(trusted, str) and AUTHSERV_ID.match(trusted) is None:
                raise InvalidField(
                    ("trusted_authserv_ids", index), "a host name like mx.example.com", trusted
                )
        try:
            parse_forwarders(self.trusted_forwarders)
        except ValueError as error:
            index = int(error.args[0])
            raise InvalidField(
                ("trusted_forwarders", index),
                "a network like 192.0.2.0/24, a host name, or .example.com",
                self.trusted_forwarders[index],
            ) from None
        for place, pattern in self.policy.signal_patterns():
            # A score names one signal; rules and headers may name a prefix with "*".
            known = (
                not pattern.endswith(WILDCARD) and is_known_signal(pattern)
                if place[0] == "scores" else is_known_pattern(pattern)
            )
            if not known:
                close = suggestion(pattern)
                hint = f" (did you mean {close!r}?)" if close else ""
                raise InvalidField(place, f"a known signal name{hint}", pattern)
