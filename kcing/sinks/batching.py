"""Pack serialized documents into batches bounded by count and by bytes (pure, no I/O).

An object's documents travel as one `Encoded`: their bytes joined by the sink's separator, and
each one's length. A batch holds runs of consecutive documents of such objects (`Part`s) and
never copies a document until its body is made, so a backlog of hundreds of thousands of
documents costs a few operations per object and per batch, not per document.

The bounds count bytes as the Logstash body does, whatever the sink: "[" + documents joined by
"," + "]". Batches are cut at the same documents for every sink.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Iterator, List, Optional, Sequence, Tuple

# A batch body is a JSON array: "[" + items joined by "," + "]".
ARRAY_OVERHEAD = 2
LOGSTASH_SEPARATOR = b","


class Encoded:
    """The encoded documents of one object: `data` is them joined by `separator`."""

    __slots__ = ("data", "sizes", "separator", "_sums")

    def __init__(self, data: bytes, sizes: Sequence[int], separator: bytes = LOGSTASH_SEPARATOR):
        self.data = data
        self.sizes = sizes
        self.separator = separator
        self._sums: Optional[List[int]] = None

    @classmethod
    def of(cls, items: Sequence[bytes], separator: bytes = LOGSTASH_SEPARATOR) -> "Encoded":
        return cls(separator.join(items), [len(item) for item in items], separator)

    def __len__(self) -> int:
        return len(self.sizes)

    def sums(self) -> List[int]:
        """Bytes of the first k documents themselves, for k = 0..len. Offsets and bounds are read
        from it with an addition each: a table of bounds of its own cost the feed more than the
        rest of batching an object (thousands of documents for a LAVA job)."""
        if self._sums is None:
            self._sums = list(accumulate(self.sizes, initial=0))
        return self._sums

    def start(self, number: int) -> int:
        """Where document `number` starts in `data` (for len: where one after the last would)."""
        return self.sums()[number] + len(self.separator) * number

    def bound(self, count: int) -> int:
        """Body bytes of the first `count` documents and the comma after each."""
        return self.sums()[count] + count

    def span(self, first: int, stop: int) -> memoryview:
        """Documents first..stop-1 as they lie in `data`, separators between them."""
        return memoryview(self.data)[self.start(first):self.start(stop) - len(self.separator)]

    def items(self) -> List[bytes]:
        return [bytes(self.span(number, number + 1)) for number in range(len(self))]


def _array_of(documents: Sequence) -> List:
    """The pieces of the JSON array of `documents` (bytes-like), to be joined with nothing."""
    pieces = [b"["]
    for document in documents:
        pieces.append(document)
        pieces.append(LOGSTASH_SEPARATOR)
    if documents:
        pieces.pop()  # no comma after the last
    pieces.append(b"]")
    return pieces


@dataclass
class Part:
    """Documents first..stop-1 of one object's `Encoded`."""

    encoded: Encoded
    first: int
    stop: int
    owner: tuple

    def __len__(self) -> int:
        return self.stop - self.first


@dataclass
class Batch:
    """Serialized documents for one Logstash input, with the objects they came from."""

    route: str
    parts: List[Part] = field(default_factory=list)
    count: int = 0
    size: int = ARRAY_OVERHEAD

    @classmethod
    def of_items(cls, route: str, items: Sequence[bytes], owners: Sequence[tuple],
                 separator: bytes = LOGSTASH_SEPARATOR) -> "Batch":
        """A batch of single documents, each with its owner."""
        batch = cls(route)
        for item, owner in zip(items, owners):
            batch._append(Part(Encoded.of([item], separator), 0, 1, owner))
        return batch

    def body(self) -> bytes:
        """The JSON array Logstash takes, made by a single join: `b"[" + ... + b"]"` copied the
        whole batch twice more, hundreds of kilobytes into fresh memory each time."""
        if all(part.encoded.separator == LOGSTASH_SEPARATOR for part in self.parts):
            documents = [part.encoded.span(part.first, part.stop) for part in self.parts]
        else:
            documents = self.items
        return b"".join(_array_of(documents))

    def joined(self) -> bytes:
        """The documents joined by their separator (for NDJSON, one record after the other)."""
        if not self.parts:
            return b""
        separator = self.parts[0].encoded.separator
        return separator.join(part.encoded.span(part.first, part.stop) for part in self.parts)

    def __len__(self) -> int:
        return self.count

    @property
    def documents_size(self) -> int:
        """Bytes of its documents alone, without the array's brackets and the commas between
        them: what an NDJSON file takes of it (a record ends with its own newline)."""
        return self.size - ARRAY_OVERHEAD - max(self.count - 1, 0)

    @property
    def items(self) -> List[bytes]:
        return [item for part in self.parts for item in part.encoded.items()[part.first:part.stop]]

    @property
    def owners(self) -> List[tuple]:
        """The object of each document, in order."""
        return [part.owner for part in self.parts for _ in range(len(part))]

    def owner_keys(self) -> List[tuple]:
        """The objects of its documents, each once."""
        return list(dict.fromkeys(part.owner for part in self.parts))

    def owner_counts(self) -> Iterator[Tuple[tuple, int]]:
        """(object, documents of it in this batch), a part at a time."""
        for part in self.parts:
            yield part.owner, len(part)

    def split(self) -> Tuple["Batch", "Batch"]:
        """Return two halves (used when a batch is too large for the receiver)."""
        middle = self.count // 2
        left, right = Batch(self.route), Batch(self.route)
        for part in self.parts:
            room = middle - left.count
            if room >= len(part):
                left._append(part)
            elif room > 0:
                left._append(Part(part.encoded, part.first, part.first + room, part.owner))
                right._append(Part(part.encoded, part.first + room, part.stop, part.owner))
            else:
                right._append(part)
        return left, right

    def _append(self, part: Part) -> None:
        encoded = part.encoded
        self.size += encoded.bound(part.stop) - encoded.bound(part.first) - (0 if self.count else 1)
        self.parts.append(part)
        self.count += len(part)


class Batcher:
    """Collects documents for one route and hands back each batch as it fills.

    A batch is full when the next document would take it past `max_docs` or `max_bytes`. A
    single document larger than `max_bytes` still forms a batch of its own: the receiver decides
    whether it is too large, and the sender splits or rejects it then.
    """

    def __init__(self, route: str, max_docs: int, max_bytes: int):
        self.route = route
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.current = Batch(route)

    def add_encoded(self, encoded: Encoded, owner: tuple) -> List[Batch]:
        """Add an object's documents; return the batches they filled (the last stays open)."""
        full = []
        first, count = 0, len(encoded)
        while first < count:
            current = self.current
            if current.count >= self.max_docs:
                full.append(self.flush())
                continue
            stop = min(count, first + self.max_docs - current.count)
            # Bytes of documents first..k-1 added here: bound(k) - bound(first), less the comma
            # before the first one when the batch is empty.
            room = self.max_bytes - current.size + encoded.bound(first) + (0 if current.count else 1)
            if encoded.bound(stop) <= room:
                fits = stop  # the count ends them, as it mostly does: no search
            else:
                fits = bisect_right(range(count + 1), room, first, stop + 1, key=encoded.bound) - 1
            if fits <= first:
                if current.count:
                    full.append(self.flush())
                    continue
                fits = first + 1  # too large alone: a batch of its own
            current._append(Part(encoded, first, fits, owner))
            first = fits
        self._own_tail(encoded)
        return full

    def _own_tail(self, encoded: Encoded) -> None:
        """Give the open batch its own copy of the object's last documents when they are the tail
        of an object the full batches took the rest of (at most `max_bytes`): pointing into the
        object's whole buffer, it kept every byte of it alive, outside ES_QUEUE_MAX_BYTES, until
        it filled, which for a route seldom used is the end of the run."""
        parts = self.current.parts
        if not parts or parts[-1].encoded is not encoded or parts[-1].first == 0:
            return
        tail = parts[-1]
        copy = Encoded(bytes(encoded.span(tail.first, tail.stop)), list(encoded.sizes[tail.first:tail.stop]),
                       encoded.separator)
        parts[-1] = Part(copy, 0, len(copy), tail.owner)

    def add(self, item: bytes, owner: tuple) -> Optional[Batch]:
        """Add one document; return the batch it filled, if any."""
        full = self.add_encoded(Encoded.of([item]), owner)
        return full[0] if full else None

    def flush(self) -> Optional[Batch]:
        """Return the batch being filled (None if empty) and start a new one."""
        if not self.current.count:
            return None
        full, self.current = self.current, Batch(self.route)
        return full

