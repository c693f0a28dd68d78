"""Reading upstream listings: their large JSON answers, and the ids in them."""
from __future__ import annotations

import gc
import string
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a listing page is decoded.

    Decoding a page of a thousand API nodes allocates a hundred thousand dicts and lists; each
    few hundred start a collection that walks every young object, and now and then all of
    them. The decoded tree holds no cycles, so those collections free nothing, yet they take
    about half the CPU of decoding. Another thread may pause it too: whoever found it running
    starts it again, and one that was paused by someone else stays paused.
    """
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()



def is_object_id(value) -> bool:
    """A MongoDB ObjectId as text: 24 hexadecimal digits and nothing more. No regular expression
    (`$` would let a line end through), as it runs for every listed item."""
    return isinstance(value, str) and len(value) == 24 and not value.strip(string.hexdigits)
