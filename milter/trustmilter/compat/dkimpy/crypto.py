"""dkimpy's RSA arithmetic glue and key parsing, without per-byte Python loops.

dkimpy 1.1 verifies RSA signatures with Python's own `pow` (fast), but
converts between bytes and integers one byte per loop turn (`int2str`,
`str2int`: 256 turns each way for a 2048-bit key, twice per signature),
and parses the key record (tag list, base64, ASN.1 in Python) anew for
every signature it checks, although a sender signs thousands of messages
with one key.

The registry (compat/dkimpy/__init__.py) replaces, by name:
- ``dkim.crypto.int2str`` / ``str2int`` with `int.to_bytes` /
  `int.from_bytes` versions that return the same values for every input
  (tests/test_compat_dkimcrypto.py compares them);
- ``dkim.evaluate_pk`` with a memo of it: the result depends only on the
  key's name and TXT text, and is never changed by its users. A TXT text
  that changes is a new key; one that fails to parse is not remembered.
  It also refuses RSA keys too large to verify with safely (below).
"""

from __future__ import annotations

from typing import Any

import dkim
import dkim.crypto

from trustmilter.memo import remembered_when

# Distinct (selector name, key text) pairs remembered: keys of busy senders.
KEY_MEMO_SIZE = 4096



def _no_evaluate_pk(name: Any, s: Any) -> tuple[Any, Any, Any, Any]:
    """Stands in for a dkimpy without evaluate_pk, where the registry refuses start-up."""
    raise dkim.KeyFormatError("this dkimpy has no evaluate_pk")


# dkimpy's own, read before anything is installed.
_ORIGINAL_EVALUATE_PK = getattr(dkim, "evaluate_pk", _no_evaluate_pk)


def int2str(n: int, length: int = -1) -> bytearray:
    """dkimpy's int2str: big-endian bytes of n, exactly `length` long when given
    (higher bytes dropped, as dkimpy's loop drops them), else as short as
    possible but at least one byte."""
    if length < 0:
        return bytearray(n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big"))
    return bytearray((n & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))


def str2int(s: bytes | bytearray) -> int:
    """dkimpy's str2int: a big-endian byte string as an integer."""
    return int.from_bytes(s, "big")


# Key texts up to this long are remembered: a 4096-bit RSA record is under
# 800 octets. A sender can publish 64 KB of TXT per selector; those are
# parsed each time rather than filling the memo (4096 of them: 250 MB).
KEY_MEMO_TEXT = 2048

# RFC 8301 §3.2: verifiers MUST handle RSA keys of 1024 to 4096 bits and MAY
# handle larger ones. dkimpy verifies with pow(signature, e, n), whose cost is
# the exponent's bits times the square of the modulus's, and both come from
# the sender's DNS: a 64 KB key record holds a 200 000-bit modulus and
# exponent, hours of CPU with the GIL held (32 768 bits each: 56 s). Larger
# moduli, and exponents over 64 bits (OpenSSL, and so OpenDKIM, refuses those
# for moduli over 3072 bits; real keys use 65537 or 3), are refused: at most
# about 10 ms per signature.
MAX_RSA_MODULUS_BITS = 8192
MAX_RSA_EXPONENT_BITS = 64


def evaluate_pk(name: Any, s: Any) -> tuple[Any, Any, Any, Any]:
    """dkimpy's evaluate_pk, remembered per (name, key text) for ordinary keys;
    raises dkim.KeyFormatError for an RSA key beyond the bounds above."""
    return _bounded(parsed_key(name, s))


def _bounded(key: tuple[Any, Any, Any, Any]) -> tuple[Any, Any, Any, Any]:
    pk, keysize, ktag, _ = key
    if ktag == b"rsa":
        exponent_bits = int(pk["publicExponent"]).bit_length()
        if keysize > MAX_RSA_MODULUS_BITS or exponent_bits > MAX_RSA_EXPONENT_BITS:
            raise dkim.KeyFormatError(
                f"RSA key too large to verify: {keysize}-bit modulus, "
                f"{exponent_bits}-bit exponent"
            )
    return key


# dkimpy's own evaluate_pk, remembered for key texts of ordinary size.
parsed_key = remembered_when(
    lambda name, s: isinstance(s, bytes | str) and len(s) <= KEY_MEMO_TEXT,
    maxsize=KEY_MEMO_SIZE,
)(_ORIGINAL_EVALUATE_PK)

