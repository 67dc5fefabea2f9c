"""Run independent DNS lookups of one check at the same time.

A check that needs several unrelated answers (the forward lookups of each
PTR name, one query per blocklist, one per linked domain) should not wait
for them one after the other. `query_many` asks them concurrently on a
short-lived thread pool and returns the answers in the order asked.

There is deliberately no shared, module-level executor (no global mutable
state): each call makes its own small pool and closes it before returning.
Identical (name, type) pairs are asked once. Nothing here caches; the
resolver does (and the daemon's resolver also asks a question once for all
concurrent callers, and turns away the extra callers of a domain that does
not answer: lookup/fairshare.py). It raises only what the resolver raises, which by the
`Resolver` contract is nothing for DNS conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trustmilter.lookup.answer import DnsAnswer, Resolver

# Enough to ask every list and every linked domain of one message at once,
# few enough not to flood a local recursive resolver.
MAX_WORKERS = 16


def query_many(
    resolver: Resolver,
    queries: Sequence[tuple[str, str]],
    max_workers: int = MAX_WORKERS,
) -> list[DnsAnswer]:
    """The answer to each (name, rdtype) in `queries`, in order, asked concurrently."""
    unique = list(dict.fromkeys(queries))
    # Cache hits are answered here and now: a thread only pays for itself
    # when it waits on the network (with a warm cache, most lookups never do).
    by_query: dict[tuple[str, str], DnsAnswer] = {}
    waiting = []
    for query in unique:
        answer = resolver.query_cached(*query)
        if answer is None:
            waiting.append(query)
        else:
            by_query[query] = answer
    if len(waiting) == 1:
        by_query[waiting[0]] = resolver.query(*waiting[0])
    elif waiting:
        workers = max(1, min(max_workers, len(waiting)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dns") as pool:
            answers = pool.map(lambda q: resolver.query(q[0], q[1]), waiting)
            by_query.update(zip(waiting, answers, strict=True))
    return [by_query[q] for q in queries]
