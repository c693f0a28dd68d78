"""The legacy KernelCI data a replica serves: listing items per collection and storage files."""
from __future__ import annotations

import json
import os
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

from tests.fakes.legacy_listing import ListingItem

COLLECTIONS = ("build", "boot")
KIND_TO_COLLECTION = {"build": "build", "lava": "boot", "boot": "boot"}

# A file's bytes, a file to read on each GET (keeps big corpora out of memory), or a producer.
Content = Union[bytes, "os.PathLike[str]", Callable[[], bytes]]


def storage_path(path: str) -> str:
    """Normalise a storage path: percent-decoded (a `+` stays a `+`), no leading slash."""
    return unquote(path).lstrip("/")


class LegacyCorpus:
    """Listing items per collection plus storage files; safe to mutate while servers run."""

    def __init__(self):
        self._lock = threading.RLock()
        self._items: Dict[str, List[ListingItem]] = {name: [] for name in COLLECTIONS}
        self._oids: Dict[str, Dict[str, ListingItem]] = {name: {} for name in COLLECTIONS}
        self._files: Dict[str, Content] = {}
        self._snapshots: Dict[str, List[ListingItem]] = {}

    @classmethod
    def from_samples(cls, samples_dir: Union[str, os.PathLike]) -> "LegacyCorpus":
        """Build a corpus from `samples_dir/manifest.json` (format 1, source legacy).

        Files are read from disk on each GET rather than held in memory.
        """
        root = Path(samples_dir)
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != 1:
            raise ValueError("unsupported manifest format %r" % manifest.get("format"))
        corpus = cls()
        for obj in manifest.get("objects", []):
            corpus._add_manifest_object(root, obj)
        return corpus

    def _add_manifest_object(self, root: Path, obj: Dict[str, Any]) -> None:
        collection = KIND_TO_COLLECTION[obj["kind"]]
        local = root / obj["path"]
        if not local.is_file():
            raise FileNotFoundError("manifest names a missing sample: %s" % local)
        self.add_file(urlsplit(obj["url"]).path, local)
        if obj.get("listing") is not None:
            self._add_or_confirm(collection, obj["listing"])

    def _add_or_confirm(self, collection: str, item: Dict[str, Any]) -> None:
        # Several manifest objects may share one listing item; two different items may not.
        oid = item["_id"]["$oid"]
        with self._lock:
            existing = self._oids[collection].get(oid)
            if existing is None:
                self.add_item(collection, item)
            elif existing.doc != item:
                raise ValueError("two different %s items share _id %s" % (collection, oid))

    # -- building --------------------------------------------------------------------------

    def add_item(self, collection: str, item: Dict[str, Any]) -> ListingItem:
        """Add a listing item (BSON style `_id`/`created_on`); the dict must not change later."""
        entry = ListingItem.from_doc(item)
        with self._lock:
            if entry.oid in self._oids[collection]:
                raise ValueError("duplicate %s _id %s" % (collection, entry.oid))
            self._items[collection].append(entry)
            self._oids[collection][entry.oid] = entry
        return entry

    def add_file(self, path: str, content: Content) -> str:
        key = storage_path(path)
        with self._lock:
            self._files[key] = content
        return key

    def add_build(self, item: Dict[str, Any], build_json: Content, path: Optional[str] = None) -> str:
        """Add a build item and its `<file_server_resource>/build.json`; return the storage path."""
        if path is None:
            resource = item.get("file_server_resource")
            if not resource:
                raise ValueError("item has no file_server_resource: pass path=")
            path = "%s/build.json" % resource
        self.add_item("build", item)
        return self.add_file(path, build_json)

    def add_bmeta_build(self, item: Dict[str, Any], bmeta_json: Content) -> str:
        """Add a build item whose directory holds only `bmeta.json` (storage from 2021-04), no
        `build.json`; return the storage path."""
        resource = item.get("file_server_resource")
        if not resource:
            raise ValueError("item has no file_server_resource")
        self.add_item("build", item)
        return self.add_file("%s/bmeta.json" % resource, bmeta_json)

    def add_boot(self, item: Dict[str, Any], path: str, content: Content) -> str:
        """Add a boot item and its lava-json-/boot- file at `path`; return the storage path."""
        self.add_item("boot", item)
        return self.add_file(path, content)

    def remove_file(self, path: str) -> None:
        with self._lock:
            self._files.pop(storage_path(path), None)

    # -- reading ---------------------------------------------------------------------------

    def items(self, collection: str) -> List[ListingItem]:
        """A snapshot of the collection; the same list object until an item is added."""
        with self._lock:
            snapshot = self._snapshots.get(collection)
            if snapshot is None or len(snapshot) != len(self._items[collection]):
                snapshot = self._snapshots[collection] = list(self._items[collection])
            return snapshot

    def count(self, collection: str) -> int:
        with self._lock:
            return len(self._items[collection])

    def latest_day(self) -> Optional[date]:
        """The UTC day of the newest `created_on` of any item (a natural `today` for samples)."""
        with self._lock:
            stamps = [item.created_ms for items in self._items.values() for item in items
                      if item.created_ms is not None]
        if not stamps:
            return None
        return datetime.fromtimestamp(max(stamps) / 1000, tz=timezone.utc).date()

    def paths(self) -> List[str]:
        with self._lock:
            return sorted(self._files)

    def has_file(self, path: str) -> bool:
        with self._lock:
            return storage_path(path) in self._files

    def read(self, path: str) -> Optional[bytes]:
        """Return the bytes stored at `path`, or None if there is no such file."""
        with self._lock:
            content = self._files.get(storage_path(path))
        if content is None:
            return None
        if isinstance(content, bytes):
            return content
        if callable(content):
            return content()
        return Path(content).read_bytes()

    def directory(self, path: str) -> Optional[List[Tuple[str, bool]]]:
        """Return sorted (name, is_directory) children of a directory, or None if it is not one."""
        prefix = storage_path(path).rstrip("/")
        prefix = prefix + "/" if prefix else ""
        with self._lock:
            below = [name[len(prefix):] for name in self._files if name.startswith(prefix)]
        if not below and prefix:
            return None
        children = {}
        for rest in below:
            head, slash, _ = rest.partition("/")
            children[head] = children.get(head, False) or bool(slash)
        return sorted(children.items())
