"""Every place trustmilter changes how its libraries behave, installed by one call.

pyspf asks DNS through a module-level function; dkimpy, pyspf and the
email package have functions and patterns that are slow or super-linear
on what a sender writes. Each module below replaces them by name, with
equivalents tested against the originals. They are process globals, so
every entry point that runs those libraries on mail or DNS data (App.build,
`explain-bounce`, the doctor) calls `install_library_seams()` once; each
install is idempotent.
"""

from __future__ import annotations

from trustmilter import mimeparams
from trustmilter.checks import canonicalization, dkimcrypto, dkimlinear, spflinear
from trustmilter.lookup.shims import install_spf_hook


def install_library_seams() -> None:
    """pyspf's DNS hook and domain-spec patterns; dkimpy's canonicalization, RSA
    byte conversions, key parsing and header-field parsing; the email
    package's parameter split."""
    install_spf_hook()
    spflinear.install()
    canonicalization.install()
    dkimcrypto.install()
    dkimlinear.install()
    mimeparams.install()
