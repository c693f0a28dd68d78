"""Where upstream objects come from. Every source offers the same two calls:

- `list_objects()` yields `UpstreamObject`s lazily (listing pages are fetched as needed);
- `fetch(obj)` returns the object's file content as bytes, or raises `UpstreamError`.

A source may also offer `complete(obj)`, called only for listed objects the ledger did not skip:
it may list objects with just what identifies them and leave the rest (URL, date, checks) to
`complete`, because a routine run lists many more objects than it fetches.

Sources know nothing of the ledger or the sinks.
"""
from typing import Iterator, Optional, Protocol

from kcing.records import UpstreamObject
from kcing.sources.storagepaths import lab_in_storage_path


class Source(Protocol):
    name: str

    def list_objects(self) -> Iterator[UpstreamObject]:
        ...

    def fetch(self, obj: UpstreamObject) -> bytes:
        ...


def completed(source, obj: UpstreamObject) -> UpstreamObject:
    """`obj` ready to fetch: finished by the source's `complete` when it has one."""
    complete = getattr(source, "complete", None)
    return obj if complete is None or obj.problem else complete(obj)


def listed_lab(obj: UpstreamObject) -> Optional[str]:
    """The lab that listed `obj` names, for files that may not name their own (raw LAVA
    callbacks): the listing item's `lab_name`, else the lab directory of its storage URL."""
    listing = obj.facts.get("listing")
    lab = listing.get("lab_name") if isinstance(listing, dict) else None
    if isinstance(lab, str) and lab.strip():
        return lab
    return lab_in_storage_path(obj.facts.get("url") or obj.url)
