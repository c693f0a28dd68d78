"""The upstream ids one listing has taken (handed on, or skipped as delivered), so that an item
listed again is taken once: pages shift while new results arrive, and a listing that runs past
UTC midnight lists its window again from the start.

A listing holds every id it took until it ends: 100,000 of them for a backlog of 100,000
objects. Each ObjectId (24 lowercase hexadecimal digits, which every usable legacy item has) is
kept as the number it spells, 40 bytes where its text takes 73 (65 from Python 3.12): with the
set's own 42 bytes or so an id, a listing's ids take 23 to 29% less memory (8 MB for 100,000).
Any other id (a bad item's, named by its content) is kept as text; a number and a text are never
equal, and no two ObjectIds spell one number.
"""
from itertools import compress, repeat
from operator import not_
from typing import Iterable, List, Optional, Set, Union

_LOWER_HEX_DIGITS = "0123456789abcdef"


def _kept(upstream_id: str) -> Union[int, str]:
    if len(upstream_id) == 24 and not upstream_id.strip(_LOWER_HEX_DIGITS):
        return int(upstream_id, 16)
    return upstream_id


def _all_kept(upstream_ids: List[str]) -> List[Union[int, str]]:
    """`_kept` of each of `upstream_ids`. A page of ObjectIds alone, a listing's usual page (and
    every page of a run over what was delivered), is checked and converted without a Python call
    per id: a re-run's listing of 100,000 delivered items asks this twice for each."""
    if _object_ids_alone(upstream_ids):
        return list(map(int, upstream_ids, repeat(16)))
    return list(map(_kept, upstream_ids))


def _object_ids_alone(upstream_ids: List[str]) -> bool:
    """Whether each of `upstream_ids` is 24 lowercase hexadecimal digits: 24 characters each,
    which as one text are hexadecimal digits alone (`bytes.fromhex` skips whitespace, which
    would make fewer bytes) and lowercase."""
    try:
        if not set(map(len, upstream_ids)) <= {24}:
            return False
        joined = "".join(upstream_ids)
        return len(bytes.fromhex(joined)) * 2 == len(joined) and joined.lower() == joined
    except (TypeError, ValueError):  # not all texts; a character that is no hexadecimal digit
        return False


class ListedIds:
    """A set of upstream ids (text) that keeps ObjectIds compact; None is never among them."""

    def __init__(self) -> None:
        self._kept: Set[Union[int, str]] = set()

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, upstream_id: Optional[str]) -> bool:
        return upstream_id is not None and _kept(upstream_id) in self._kept

    def add(self, upstream_id: str) -> None:
        self._kept.add(_kept(upstream_id))

    def update(self, upstream_ids: Iterable[str]) -> None:
        self._kept.update(_all_kept(list(upstream_ids)))

    def holds_all(self, upstream_ids: Iterable[Optional[str]]) -> bool:
        """Whether every one of `upstream_ids` was taken (a None, an item without an id, never was)."""
        upstream_ids = list(upstream_ids)
        return None not in upstream_ids and self._kept.issuperset(_all_kept(upstream_ids))

    def not_taken(self, upstream_ids: Set[str]) -> Set[str]:
        """Those of `upstream_ids` not taken yet."""
        upstream_ids = list(upstream_ids)
        return set(compress(upstream_ids, map(not_, map(self._kept.__contains__, _all_kept(upstream_ids)))))
