"""Counts in what the commands print: `1 object`, `2 objects`, `0 indices`."""
from __future__ import annotations

from typing import Optional


def counted(number: int, noun: str, plural: Optional[str] = None) -> str:
    """`number` with `noun`, in the plural unless the number is one (`plural` where an s is not it:
    index, indices; batch, batches)."""
    return "%d %s" % (number, noun if number == 1 else plural or noun + "s")


def verb(number: int, singular: str, plural: str) -> str:
    """The verb that agrees with a count: `1 object has`, `2 objects have`."""
    return singular if number == 1 else plural
