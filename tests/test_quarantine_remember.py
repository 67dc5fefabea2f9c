"""QuarantineReview(remember=True): the review page lists the hold queue on every
request; a held message's queue file does not change, so it is read once while
it stays held (its age still counts up), and a queue ID reused for another
message is read anew. Plain unit tests on an in-memory queue that counts reads."""

from __future__ import annotations

from trustmilter.quarantine.postfix import PostfixQueue, QueueEntry, QueueFile
from trustmilter.quarantine.review import QuarantineReview


class CountingQueue(PostfixQueue):
    def __init__(self) -> None:
        super().__init__(None)
        self.entries_held: list[QueueEntry] = []
        self.reads: list[str] = []

    def held(self) -> list[QueueEntry]:
        return list(self.entries_held)

    def read(self, queue_id: str) -> QueueFile:
        self.reads.append(queue_id)
        return QueueFile("a@example.com", f"Subject: {queue_id}\r\n".encode())


def entry(queue_id: str, arrival: float = 1000.0) -> QueueEntry:
    return QueueEntry(queue_id, "hold", arrival, 100, "a@example.com", ("b@example.org",))


def test_each_held_message_is_read_once_while_it_stays_held() -> None:
    queue, now = CountingQueue(), [1010.0]
    review = QuarantineReview(queue, clock=lambda: now[0], remember=True)
    queue.entries_held = [entry("AB12CD3"), entry("AB12CD4")]
    first = review.held()
    now[0] = 1070.0
    second = review.held()
    assert queue.reads == ["AB12CD3", "AB12CD4"]
    assert [m.subject for m in second] == ["AB12CD3", "AB12CD4"]
    assert [m.age for m in first] == [10.0, 10.0] and [m.age for m in second] == [70.0, 70.0]


def test_a_reused_queue_id_is_read_again_and_what_left_is_forgotten() -> None:
    queue = CountingQueue()
    review = QuarantineReview(queue, clock=lambda: 2000.0, remember=True)
    queue.entries_held = [entry("AB12CD3")]
    review.held()
    queue.entries_held = [entry("AB12CD3", arrival=1500.0)]  # another message, same ID
    review.held()
    assert queue.reads == ["AB12CD3", "AB12CD3"]
    queue.entries_held = []
    assert review.held() == []
    queue.entries_held = [entry("AB12CD3", arrival=1500.0)]
    review.held()
    assert queue.reads == ["AB12CD3"] * 3  # forgotten once it left the hold queue


def test_without_remember_every_listing_reads_every_message() -> None:
    queue = CountingQueue()
    review = QuarantineReview(queue, clock=lambda: 2000.0)
    queue.entries_held = [entry("AB12CD3")]
    review.held()
    review.held()
    assert queue.reads == ["AB12CD3", "AB12CD3"]
