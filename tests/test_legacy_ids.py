"""A legacy listing page's ids, read at once for a page in the backend's own form, are the ids
each item gives alone, whatever the page holds."""
import pytest

from kcing.sources.legacy import _object_id, _object_ids

GOOD = ["63c549319fb3b62c7626e7f9", "63C549329FB3B62C7626E7FA", "63c549339fb3b62c7626e7fb"]


def _page(*oids):
    return [{"_id": {"$oid": oid}, "created_on": {"$date": 1673873713000}} for oid in oids]


@pytest.mark.parametrize("items", [
    [],
    _page(*GOOD),
    _page(GOOD[0], "63c549329fb3b62c7626e7fg", GOOD[2]),  # one letter past f, mid-page
    _page(GOOD[0], "63c549329fb3b62c7626e7f", GOOD[2]),  # 23 digits
    _page(GOOD[0], GOOD[1] + "\n"),  # a line break after the id
    _page(GOOD[0], " " + GOOD[1][1:]),
    _page(GOOD[0], 12345),
    _page(GOOD[0], None),
    _page(GOOD[0]) + [{"_id": GOOD[1]}],  # a plain string, as some answers give it
    _page(GOOD[0]) + [{"created_on": 1}],  # no _id
    _page(GOOD[0]) + [{"_id": {}}],
    _page(GOOD[0]) + [{"_id": [GOOD[1]]}],
    _page(GOOD[0]) + ["not an object", None, [GOOD[1]]],
], ids=["empty", "good", "bad digit", "short", "line break", "space", "number", "null", "plain string", "no id",
        "empty oid", "list id", "not objects"])
def test_ids_read_at_once_are_the_ids_read_one_by_one(items):
    assert _object_ids(items) == [_object_id(item) if isinstance(item, dict) else None for item in items]


def test_ids_read_at_once_are_lowercase_and_keep_the_page_order():
    assert _object_ids(_page(*GOOD)) == [oid.lower() for oid in GOOD]
