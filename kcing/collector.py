"""Pausing Python's cyclic garbage collector while large acyclic structures are made."""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block.

    Decoding a listing page of a thousand API nodes, or building the documents of one LAVA
    job, allocates a hundred thousand dicts and lists; each few hundred start a collection
    that walks every young object, and now and then all of them. Those structures hold no
    cycles, so the collections free nothing. A block that drops what it made before it ends
    leaves nothing for the next collection to walk either. Another thread may pause it too:
    whoever found it running starts it again, and one that was paused by someone else stays
    paused.
    """
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()
