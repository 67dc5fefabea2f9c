"""remembered_when: short inputs remembered, long ones computed every time."""

from __future__ import annotations

from trustmilter.memo import remembered_when


def test_only_calls_the_predicate_accepts_are_remembered() -> None:
    calls: list[str] = []

    @remembered_when(lambda text: len(text) <= 4, maxsize=2)
    def shout(text: str) -> str:
        """Upper case."""
        calls.append(text)
        return text.upper()

    assert [shout("ab"), shout("ab"), shout("abcdef"), shout("abcdef")] == ["AB", "AB"] + [
        "ABCDEF"] * 2
    assert calls == ["ab", "abcdef", "abcdef"]  # the long one each time
    assert shout.cache_info().currsize == 1 and shout.cache_info().hits == 1
    shout("cd")
    shout("ef")  # maxsize 2: "ab" is dropped
    shout("ab")
    assert calls[-1] == "ab"
    shout.cache_clear()
    assert shout.cache_info().currsize == 0
    assert shout.__doc__ == "Upper case." and shout.__name__ == "shout"
