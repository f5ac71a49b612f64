"""Counts in words for every one-line message: `counted(1, "row")` is "1 row",
`counted(2048, "GPU")` "2,048 GPUs". The one helper of its kind; bench/ and reports/ use it too."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular when n is 1; `plural` where adding "s" is wrong."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def are(n: int) -> str:
    """The verb that agrees with a count: "1 row is", "2 rows are"."""
    return "is" if n == 1 else "are"


def was(n: int) -> str:
    """The past tense that agrees with a count: "1 row was", "2 rows were"."""
    return "was" if n == 1 else "were"
