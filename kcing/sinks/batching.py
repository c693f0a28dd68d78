"""Pack serialized documents into batches bounded by count and by bytes (pure, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

# A batch body is a JSON array: "[" + items joined by "," + "]".
ARRAY_OVERHEAD = 2


@dataclass
class Batch:
    """Serialized documents for one Logstash input, with the objects they came from."""

    route: str
    items: List[bytes] = field(default_factory=list)
    owners: List[tuple] = field(default_factory=list)  # object key of each item, same order
    size: int = ARRAY_OVERHEAD

    def body(self) -> bytes:
        return b"[" + b",".join(self.items) + b"]"

    def __len__(self) -> int:
        return len(self.items)

    def split(self) -> Tuple["Batch", "Batch"]:
        """Return two halves (used when a batch is too large for the receiver)."""
        middle = len(self.items) // 2
        return (_batch_of(self.route, self.items[:middle], self.owners[:middle]),
                _batch_of(self.route, self.items[middle:], self.owners[middle:]))


def _batch_of(route: str, items: List[bytes], owners: List[tuple]) -> Batch:
    size = ARRAY_OVERHEAD + sum(len(item) for item in items) + max(0, len(items) - 1)
    return Batch(route, list(items), list(owners), size)


class Batcher:
    """Collects items for one route; `add` returns a full batch when the next item would overflow.

    A single item larger than `max_bytes` still forms a batch of its own: the receiver decides
    whether it is too large, and the sender splits or rejects it then.
    """

    def __init__(self, route: str, max_docs: int, max_bytes: int):
        self.route = route
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.current = Batch(route)

    def add(self, item: bytes, owner: tuple) -> Optional[Batch]:
        added = len(item) + (1 if self.current.items else 0)
        full = None
        if self.current.items and (len(self.current) >= self.max_docs
                                   or self.current.size + added > self.max_bytes):
            full = self.flush()
            added = len(item)
        self.current.items.append(item)
        self.current.owners.append(owner)
        self.current.size += added
        return full

    def flush(self) -> Optional[Batch]:
        """Return the batch being filled (None if empty) and start a new one."""
        if not self.current.items:
            return None
        full, self.current = self.current, Batch(self.route)
        return full
