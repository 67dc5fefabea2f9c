"""Memos of pure functions over what senders write, bounded in size.

Senders repeat themselves (one From, one DMARC record, one DKIM key for
thousands of messages), so remembering a parse pays; but they also choose
the size of what they send, and a memo keyed by 64 KB texts fills memory.
`remembered_when(small)` remembers a call only when `small` says its
arguments are short, at most `maxsize` of them; other calls are computed
each time. The wrapped function must return values nobody changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class Remembered(Generic[P, R]):
    """`function`, through an LRU memo for the calls `small` accepts."""

    def __init__(self, function: Callable[P, R], small: Callable[P, bool], maxsize: int) -> None:
        self._function = function
        self._small = small
        self._memo: Any = functools.lru_cache(maxsize=maxsize)(function)
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._small(*args, **kwargs):
            result: R = self._memo(*args, **kwargs)
            return result
        return self._function(*args, **kwargs)

    def cache_info(self) -> Any:
        return self._memo.cache_info()

    def cache_clear(self) -> None:
        self._memo.cache_clear()


def remembered_when(
    small: Callable[P, bool], maxsize: int = 4096
) -> Callable[[Callable[P, R]], Remembered[P, R]]:
    """Decorate a pure function: remember its calls whose arguments `small` accepts."""

    def decorate(function: Callable[P, R]) -> Remembered[P, R]:
        return Remembered(function, small, maxsize)

    return decorate
