"""The transaction engine: one message, MAIL FROM to end of message, with no pymilter.

The pymilter adapter (daemon/), `trustmilter check`, the benchmark's
in-process path and the tests all drive the same `Transaction`; see
transaction.py for the contract and docs/design.md for the picture.
"""

from trustmilter.engine.client import Client, ClientKind
from trustmilter.engine.outcome import Disposition, MessageOutcome, Refusal
from trustmilter.engine.record import VerdictRecord
from trustmilter.engine.transaction import Transaction

__all__ = [
    "Client",
    "ClientKind",
    "Disposition",
    "MessageOutcome",
    "Refusal",
    "Transaction",
    "VerdictRecord",
]
