"""gzip files as upstream stores them, inflated within a limit.

KernelCI API logs are stored gzip-compressed, a mirror may hold legacy files so, and an archive
of samples `.json.gz` files: storage hosts serve them as their bytes, without a Content-Encoding,
so the HTTP layer leaves them compressed and each source inflates them here. Such a file may be
several members one after another, and is untrusted: what it inflates to is bounded while
inflating, so a small file that would inflate to gigabytes stops at the limit.
"""
from __future__ import annotations

import re
import zlib
from typing import List, Tuple

# KernelCI API artifacts (logs) are tens of megabytes at most: no artifact is inflated beyond this.
MAX_ARTIFACT_BYTES = 256 << 20
GZIP_MAGIC = b"\x1f\x8b"
# Members in one gzip file at most. bgzip, the writer making the most, puts 64 KiB of content
# in each: 4,096 for the largest artifact. Far more are empty members, which cost time each.
MAX_GZIP_MEMBERS = 100_000
# Compressed bytes handed to zlib at once. A member's first slice is small and each next one
# twice the last: zlib copies out what it did not take after a member's end, which is so never
# much more than the member itself, and a file of many small members costs linear time.
FIRST_GZIP_SLICE = 256
LAST_GZIP_SLICE = 1 << 20
_NOT_ZERO = re.compile(rb"[^\x00]")


class InflatedTooLarge(ValueError):
    """A gzip file whose content is larger than the limit it is held to."""


class GzipCutShort(ValueError):
    """A gzip file that stops before the end of its stream."""


def gunzip(data: bytes, limit: int) -> bytes:
    """The content of a gzip file, all of its members, or ValueError when it is broken, cut
    short, too large, or followed by data that is not gzip.

    A gzip file may hold members one after another (`cat a.gz b.gz`, bgzip, a log appended to
    in pieces): its content is theirs joined, as `gzip.decompress` reads it, zero bytes between
    or after members skipped as there. `limit` bounds the content of all members together,
    checked while inflating: a bomb stops at `limit` bytes.
    """
    parts: List[bytes] = []
    size = members = position = 0
    while not members or position < len(data):
        if data[position:position + 2] != GZIP_MAGIC:
            raise ValueError("not valid gzip (%s)" % ("data after its last member is not gzip" if members
                                                      else "no gzip header"))
        if members == MAX_GZIP_MEMBERS:
            raise ValueError("more than %d gzip members" % MAX_GZIP_MEMBERS)
        member, position = _inflate_member(data, position, limit - size, limit)
        parts.extend(member)
        size += sum(map(len, member))
        members += 1
        position = _after_padding(data, position)
    return b"".join(parts)


def gzip_problem(name: str, error: ValueError) -> str:
    """Why a gzip-compressed file held to KCI_MAX_OBJECT_BYTES is rejected: a file too large once
    decompressed names the setting, as one too large as it is does."""
    if isinstance(error, InflatedTooLarge):
        return "%s: gzip-compressed, and %s: raise KCI_MAX_OBJECT_BYTES to take it" % (name, error)
    return "%s: gzip-compressed, and %s" % (name, error)


def _inflate_member(data: bytes, start: int, room: int, limit: int) -> Tuple[List[bytes], int]:
    """The content of the gzip member at `start` in pieces, and where the member ends; ValueError
    when it is broken, cut short, or holds more than `room` bytes (of the file's `limit`)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    view = memoryview(data)
    pieces: List[bytes] = []
    produced, position, slice_size = 0, start, FIRST_GZIP_SLICE
    while not inflater.eof:
        if position >= len(data):
            raise GzipCutShort("gzip data cut short")
        chunk = view[position:position + slice_size]
        try:
            piece = inflater.decompress(chunk, room - produced + 1)
        except zlib.error as error:
            raise ValueError("not valid gzip (%s)" % error) from None
        produced += len(piece)
        if produced > room or inflater.unconsumed_tail:
            # In bytes, as the limit is set: "0 MB" said nothing of a KCI_MAX_OBJECT_BYTES of 1024.
            raise InflatedTooLarge("larger than %d bytes once decompressed" % limit)
        if piece:
            pieces.append(piece)
        # What zlib did not take is the start of the next member (or padding, or garbage).
        position += len(chunk) - len(inflater.unused_data)
        slice_size = min(2 * slice_size, LAST_GZIP_SLICE)
    return pieces, position


def _after_padding(data: bytes, position: int) -> int:
    """The first position from `position` on that holds no zero byte, or the end of `data`."""
    found = _NOT_ZERO.search(data, position)
    return found.start() if found else len(data)
