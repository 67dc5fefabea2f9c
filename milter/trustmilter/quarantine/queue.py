"""What the quarantine review needs from a hold queue, as a type.

`QuarantineReview` reads and changes Postfix's hold queue through these
five methods only. `PostfixQueue` (postfix.py) runs Postfix's tools
itself and so needs root; the review page, which never runs as root,
reaches the same queue through the privileged helper's client
(review/helper/client.py). Both raise the same two errors:
`PostfixCommandError` and `InvalidQueueId`, each one line.
"""

from __future__ import annotations

from typing import Protocol

from trustmilter.quarantine.postfix import QueueEntry, QueueFile


class HoldQueue(Protocol):
    """Postfix's hold queue: list, read, release, delete."""

    def held(self) -> list[QueueEntry]:
        """The messages in the hold queue, oldest first."""
        ...

    def read(self, queue_id: str) -> QueueFile:
        """The envelope sender and header section of a queued message."""
        ...

    def read_message(self, queue_id: str, limit: int) -> tuple[bytes, bool]:
        """The message's first `limit` bytes, and whether there was more."""
        ...

    def release(self, queue_id: str) -> None:
        """Release a held message for delivery."""
        ...

    def delete(self, queue_id: str) -> None:
        """Delete a held message."""
        ...
