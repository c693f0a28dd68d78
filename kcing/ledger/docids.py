"""The compact form in which the ledger keeps the ids of the documents an object produced.

A document id is 40 hex digits (`documents.identity.document_id`); kept as its 20 raw bytes,
one index's ids are their concatenation, sorted and without repeats, so every object needs
20 bytes per document and nothing per id besides. Pure functions, no I/O.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Mapping

ID_BYTES = 20


def pack(hex_ids: Iterable[str]) -> bytes:
    """The ids (40 hex digits each) as sorted, distinct 20-byte values, concatenated."""
    if isinstance(hex_ids, list):
        # An object's ids, all at once (a LAVA job has thousands); the first wrong one, if
        # any, is named by the loop below.
        try:
            raw = set(map(bytes.fromhex, hex_ids))
        except ValueError:
            raw = None
        if raw and min(map(len, raw)) == max(map(len, raw)) == ID_BYTES:
            return b"".join(sorted(raw))
    raw = set()
    for hex_id in hex_ids:
        value = bytes.fromhex(hex_id)
        if len(value) != ID_BYTES:
            raise ValueError("a document id is %d hex digits, not %d: %r" % (2 * ID_BYTES, len(hex_id), hex_id))
        raw.add(value)
    return b"".join(sorted(raw))


def unpack(blob: bytes) -> Iterator[str]:
    """The hex ids in a packed blob, in order; a blob that is not whole ids is a ValueError."""
    if len(blob) % ID_BYTES:
        raise ValueError("%d bytes are not a whole number of %d-byte ids" % (len(blob), ID_BYTES))
    view = memoryview(blob)
    for start in range(0, len(blob), ID_BYTES):
        yield view[start:start + ID_BYTES].hex()


def count(blob: bytes) -> int:
    return len(blob) // ID_BYTES


def by_index(documents: Iterable) -> Dict[str, bytes]:
    """{index: packed ids} for documents (anything with `.index` and `.doc_id`)."""
    grouped: Dict[str, List[str]] = {}
    for document in documents:
        grouped.setdefault(document.index, []).append(document.doc_id)
    return {index: pack(ids) for index, ids in grouped.items()}


def total(packed: Mapping[str, bytes]) -> int:
    """How many ids `{index: packed ids}` holds."""
    return sum(count(blob) for blob in packed.values())
