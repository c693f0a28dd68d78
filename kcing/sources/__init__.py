"""Where upstream objects come from. Every source offers the same two calls:

- `list_objects()` yields `UpstreamObject`s lazily (listing pages are fetched as needed);
- `fetch(obj)` returns the object's file content as bytes, or raises `UpstreamError`.

Sources know nothing of the ledger or the sinks.
"""
from typing import Iterator, Protocol

from kcing.records import UpstreamObject


class Source(Protocol):
    name: str

    def list_objects(self) -> Iterator[UpstreamObject]:
        ...

    def fetch(self, obj: UpstreamObject) -> bytes:
        ...
