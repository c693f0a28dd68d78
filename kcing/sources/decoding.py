"""Reading the large JSON answers of upstream listings."""
from __future__ import annotations

import gc
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
