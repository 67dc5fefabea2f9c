"""The checks: one module each, one interface (see base.py).

`SECTIONS` is the explicit registry: policy section name -> module. Each
module exposes its `Config` and `CHECKS` (the check classes it provides,
one per SMTP stage it works at). No import magic: adding a check means
adding it here and to the policy model.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from trustmilter.checks import (
    arc,
    automation,
    bounce,
    dkim,
    dmarc,
    dnsbl,
    headers,
    helo,
    iprev,
    loops,
    names,
    rate,
    reputation,
    spf,
    uribl,
)
from trustmilter.startup import StartupError

__all__ = ["SECTIONS", "StartupError", "all_check_names", "build_checks"]

if TYPE_CHECKING:
    from trustmilter.checks.base import Check
    from trustmilter.policy.model import ChecksConfig

SECTIONS: dict[str, ModuleType] = {
    "iprev": iprev,
    "helo": helo,
    "dnsbl": dnsbl,
    "spf": spf,
    "names": names,
    "headers": headers,
    "dkim": dkim,
    "arc": arc,
    "dmarc": dmarc,
    "uribl": uribl,
    # Loops, automation, rate tiers and learned reputation (SEED-RULES §5, §7).
    "loops": loops,
    "automation": automation,
    "rate": rate,
    "reputation": reputation,
    # Inbound bounces read, and our own hard bounces recorded (SEED-RULES §6).
    "bounce": bounce,
}


def all_check_names() -> frozenset[str]:
    """The name of every check there is, enabled or not."""
    return frozenset(c.name for module in SECTIONS.values() for c in module.CHECKS)


def build_checks(config: ChecksConfig) -> Iterator[Check]:
    """Instances of every enabled check; raises StartupError for one that cannot run."""
    for section, module in SECTIONS.items():
        section_config = getattr(config, section)
        if not section_config.enabled:
            continue
        preflight = getattr(module, "preflight", None)
        if preflight is not None:
            try:
                preflight(section_config)
            except Exception as error:
                raise StartupError(f"checks.{section}: cannot run: {error}") from error
        for check_class in module.CHECKS:
            yield check_class(section_config)
