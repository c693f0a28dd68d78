"""How the feed's own process gives large blocks of memory back to the system.

glibc's malloc serves a block of 128 KiB or more with a mapping of its own, given back as soon
as the block is freed, but it raises that threshold to the size of each such block freed (up to
32 MiB): after a few large downloads and batches, blocks of their size come from its arenas
instead, one per thread, and what the arenas hold once they are freed stays with the process.
The feed frees such blocks all the time (each file downloaded, each object's documents, each
batch posted) from several threads, and over a long backlog its memory kept growing that way:
the threshold stays at 128 KiB instead. The worker processes, which take a block of this size
and free it again for every object, keep theirs high for the opposite reason
(kcing/building.py: WORKER_MALLOC_BYTES).

A user's own malloc settings in the environment (`MALLOC_*_` or `GLIBC_TUNABLES`) are kept;
other C libraries than glibc are left alone.
"""
import ctypes
import os

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's own starting value
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD_BYTES in this process; whether it was."""
    if any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        return ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    except (AttributeError, OSError, TypeError, ValueError):  # no glibc, no mallopt, no confstr name
        return False
