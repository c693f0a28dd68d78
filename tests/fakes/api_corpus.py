"""What a KernelCI API replica serves: nodes in insertion order, and artifact files.

`ApiCorpus` is thread-safe: tests change it while a crawl runs (a node that moves from
`running` to `done`, nodes inserted between two pages). Node times are stored as the API
stores them: naive UTC, six fraction digits, millisecond precision.
"""
from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Union

Content = Union[bytes, Callable[[], bytes]]


def api_time(when: datetime) -> str:
    """`2024-10-16T00:43:19.079000`: naive UTC, millisecond precision padded to six digits."""
    utc = when.astimezone(timezone.utc) if when.tzinfo else when
    utc = utc.replace(tzinfo=None, microsecond=(utc.microsecond // 1000) * 1000)
    return utc.isoformat(timespec="microseconds")


def parse_api_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


class ApiCorpus:
    """Nodes (kept in the order they were added, as MongoDB's natural order) and files by path."""

    def __init__(self):
        self._lock = threading.Lock()
        self._nodes: List[dict] = []
        self._index: Dict[str, int] = {}
        self._files: Dict[str, Content] = {}
        self.version = 0  # moves on every change of a node, so listings can be cached

    # Nodes -------------------------------------------------------------------------------------

    def add(self, node: dict) -> dict:
        """Append a copy of `node` (a new id only; use `update` to change one)."""
        stored = copy.deepcopy(node)
        with self._lock:
            key = stored.get("id") or stored.get("_id")
            if key in self._index:
                raise ValueError("node %s is already in the corpus" % key)
            self._index[key] = len(self._nodes)
            self._nodes.append(stored)
            self.version += 1
        return copy.deepcopy(stored)

    def update(self, node_id: str, when: Optional[datetime] = None, relocate: bool = False, **changes: Any) -> dict:
        """Change a node in place (it keeps its position) and move its `updated` time.

        `changes` name top-level fields; `data` is merged key by key. Without `when`, the new
        `updated` is one millisecond after the old one. With `relocate`, the node moves to the end
        of the natural order, as MongoDB moves a document an update made grow beyond its record
        (or a replica set's resync re-inserts): the nodes after it then come one place earlier,
        and an offset paging past it skips one of them (upstream.md §2.4).
        """
        with self._lock:
            node = self._nodes[self._index[node_id]]
            if relocate:
                del self._nodes[self._index[node_id]]
                self._nodes.append(node)
                self._index = {(item.get("id") or item.get("_id")): position
                               for position, item in enumerate(self._nodes)}
            data = changes.pop("data", None)
            node.update(copy.deepcopy(changes))
            if data:
                node.setdefault("data", {}).update(copy.deepcopy(data))
            before = parse_api_time(node["updated"])
            node["updated"] = api_time(when or before + timedelta(milliseconds=1))
            self.version += 1
            return copy.deepcopy(node)

    def remove(self, node_id: str) -> None:
        """Delete a node, as the API's maintenance purges nodes created long ago (upstream.md
        §2.4): the nodes after it come one place earlier in the natural order."""
        with self._lock:
            del self._nodes[self._index[node_id]]
            self._index = {(item.get("id") or item.get("_id")): position for position, item in enumerate(self._nodes)}
            self.version += 1

    def get(self, node_id: str) -> Optional[dict]:
        with self._lock:
            position = self._index.get(node_id)
            return None if position is None else self._nodes[position]

    def nodes(self) -> List[dict]:
        """The nodes in natural order (the stored dicts: read them, do not change them)."""
        with self._lock:
            return list(self._nodes)

    def versioned_nodes(self) -> tuple:
        """(version, nodes) read together."""
        with self._lock:
            return self.version, list(self._nodes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._nodes)

    # Files -------------------------------------------------------------------------------------

    def add_file(self, path: str, content: Content) -> None:
        """Serve `content` (bytes, or a function making them on each GET) at files/<path>."""
        with self._lock:
            self._files[path.lstrip("/")] = content

    def remove_file(self, path: str) -> None:
        with self._lock:
            self._files.pop(path.lstrip("/"), None)

    def materialise(self) -> None:
        """Make every file produced on demand once and keep its bytes (benchmarks: serving then
        costs a lookup, not the CPU the measured program needs)."""
        with self._lock:
            lazy = [(path, content) for path, content in self._files.items() if callable(content)]
        for path, content in lazy:
            self.add_file(path, content())

    def read(self, path: str) -> Optional[bytes]:
        with self._lock:
            content = self._files.get(path.lstrip("/"))
        return content() if callable(content) else content
