"""A legacy listing page's ids, read at once for a page in the backend's own form, are the ids
each item gives alone, whatever the page holds; and read from the page's raw JSON (only `_id`
and `lab_name`, sources/heads.py), they are those of the page decoded whole."""
import json

import pytest
import requests

from kcing.sources import heads
from kcing.sources.legacy import LegacyKernelCI, _ids_and_labs, _object_id, _object_ids

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
    _page(GOOD[0], GOOD[1] + "\n" + GOOD[2]),  # two ids in one, line break between
    _page(GOOD[0] + "\n" + GOOD[1], GOOD[2]),
    _page("63c549319fb3b62c7626e7f963c549319fb3b62c7626e7f9"),  # 48 digits
], ids=["empty", "good", "bad digit", "short", "line break", "space", "number", "null", "plain string", "no id",
        "empty oid", "list id", "not objects", "two in one", "two in the first", "double length"])
def test_ids_read_at_once_are_the_ids_read_one_by_one(items):
    id_values, _ = _ids_and_labs(items)
    assert _object_ids(id_values) == [_object_id(item) if isinstance(item, dict) else None for item in items]


def _answer(items, encoding="utf-8", body=None):
    response = requests.Response()
    response.status_code = 200
    response._content = body if body is not None else json.dumps({"code": 200, "result": items}).encode()
    response.encoding = encoding
    return response


LABS = [{"lab_name": "lab-collabora"}, {"lab_name": "lab-baylibre-seattle"}, {"lab_name": None}, {"lab_name": 7},
        {"lab_name": ["lab-x"]}, {"lab_name": "lab-été"}, {}]


@pytest.mark.parametrize("collection", ["build", "boot"])
@pytest.mark.parametrize("items", [
    _page(*GOOD),
    _page(GOOD[0], "63c549329fb3b62c7626e7fg", GOOD[2]),
    _page(GOOD[0], GOOD[1] + "\n"),
    _page(GOOD[0], 12345),
    _page(GOOD[0]) + [{"_id": GOOD[1]}],
    _page(GOOD[0]) + [{"created_on": 1}],
    _page(GOOD[0]) + [{"_id": {}}],
    [dict(item, **{"_id": {"$oid": GOOD[n % 3]}}) for n, item in enumerate(LABS)],
    [dict(item, _id={"$oid": GOOD[0]}, _id_again=1) for item in LABS],
], ids=["good", "bad digit", "line break", "number", "plain string", "no id", "empty oid", "labs", "extra fields"])
def test_a_pages_identities_read_from_its_raw_json_are_those_of_the_whole_page(collection, items):
    source = LegacyKernelCI(None, "http://frontend.invalid", "http://storage.invalid", non_lava_labs=["lab-baylibre-seattle"])
    read = heads.legacy_heads(_answer(items))
    assert read is not None
    one_by_one = ([source._kind(collection, item) for item in items], [_object_id(item) for item in items])
    assert source._identities(collection, *read[:2]) == source._identities(collection, *_ids_and_labs(items)) == one_by_one


@pytest.mark.parametrize("answer", [
    _answer(_page(GOOD[0]) + ["not an object"]),
    _answer([], body=b'{"code": 200, "result": [{"_id": {"$oid": "%s"}, "x": NaN}]}' % GOOD[0].encode()),
    _answer(_page(GOOD[0]), encoding="ISO-8859-1"),
    _answer([], body=b'{"code": 200}'),
    _answer([], body=b'{"code": 200, "result": {}}'),
    _answer([], body=b"<html>busy</html>"),
], ids=["not an object", "NaN", "declared latin-1", "no result", "result not a list", "not JSON"])
def test_a_page_the_raw_reading_cannot_take_is_left_to_the_whole_decoding(answer):
    assert heads.legacy_heads(answer) is None


def test_ids_read_at_once_are_lowercase_and_keep_the_page_order():
    assert _object_ids(_ids_and_labs(_page(*GOOD))[0]) == [oid.lower() for oid in GOOD]
