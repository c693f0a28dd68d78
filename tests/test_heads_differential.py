"""A listing page read only as far as a routine run needs (sources/heads.py) answers what the page
decoded whole answers, or None (the caller then decodes it whole): never another id, lab, kind,
time or job extract, and never an error of its own."""
from __future__ import annotations

import json
import random
import sys
from datetime import datetime

import pytest
import requests

from kcing.errors import UpstreamError
from kcing.sources import api as api_module, heads
from kcing.sources.api import KernelCIApi
from kcing.sources.api_related import RELATED_DATA, RELATED_FIELDS, related_node
from kcing.sources.legacy import LISTING_FIELDS, LegacyKernelCI, _check_skip, _ids_and_labs
from kcing.sources.requester import json_of
from tests.fakes.api_data import MAESTRO, REAL_JOB, real_files_present
from tests.fakes.legacy_data import boot_item, build_item

OID = "5cf0b1c259b5140d3b1f2a10"
# A real job node (upstream.md §2.5), or one of its shape when the shared data is absent.
_REAL_JOB = json.loads((MAESTRO / REAL_JOB).read_text()) if real_files_present() else {
    "id": "670f0c27493b6b8188c7667c", "kind": "job", "name": "baseline-arm64", "group": "baseline-arm64",
    "path": ["checkout", "kbuild-gcc-12-arm64", "baseline-arm64"], "parent": "670f0782493b6b8188c7621c",
    "state": "done", "result": "pass", "artifacts": {"lava_log": "https://storage.invalid/log.txt"},
    "created": "2024-10-16T00:01:00.000000", "updated": "2024-10-16T00:05:00.000000",
    "data": {"kernel_revision": {"tree": "mainline", "branch": "master", "commit": "f" * 40, "describe": "v6.12",
                                 "url": "https://git.invalid/linux.git", "commit_message": "a message",
                                 "tags": ["v6.12"]},
             "platform": "rk3399-gru-kevin", "runtime": "lava-collabora", "job_id": "15851917", "device": None,
             "error_code": None, "arch": "arm64"}}


def _response(body: bytes, encoding="utf-8") -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.encoding = encoding
    return response


def _legacy_read_whole(response) -> bool:
    """Whether the whole decoding takes the page (LegacyKernelCI._items), whatever its `skip`."""
    try:
        envelope = json_of(response)
    except ValueError:
        return False
    return isinstance(envelope, dict) and isinstance(envelope.get("result"), list)


def _api_read_whole(response) -> bool:
    return isinstance(KernelCIApi._envelope(response)[0], list)


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


# Where a page nests: the envelope, an item, a field the heads read, a job's data and revision.
LEGACY_NESTING = [b'{"result": [{"_id": {"$oid": "%s"}}], "x": %%s}' % OID.encode(),
                  b'{"result": [{"_id": {"$oid": "%s"}, "x": %%s}]}' % OID.encode(),
                  b'{"result": [{"_id": {"$oid": "%s"}, "lab_name": %%s}]}' % OID.encode(),
                  b'{"result": [{"_id": %s}]}']
API_NESTING = [b'{"items": [{"id": "%s", "kind": "job"}], "total": 1, "x": %%s}' % OID.encode(),
               b'{"items": [{"id": "%s", "kind": "job", "data": {"platform": %%s}}], "total": 1}' % OID.encode(),
               b'{"items": [{"id": "%s", "kind": "job", "data": {"kernel_revision": {"x": %%s}}}], "total": 1}'
               % OID.encode()]


def _job_heads(response):
    return heads.node_heads(response, jobs=True)


@pytest.mark.parametrize("template, read, read_whole", [
    *[(template, heads.legacy_heads, _legacy_read_whole) for template in LEGACY_NESTING],
    *[(template, _job_heads, _api_read_whole) for template in API_NESTING],
], ids=["legacy envelope", "legacy item", "legacy lab_name", "legacy _id", "api envelope", "api data",
        "api kernel_revision"])
def test_a_page_nested_too_deep_for_the_whole_decoding_is_left_to_it(template, read, read_whole):
    """Both decoders recurse once per level and give up where the recursion limit leaves no room,
    the standard library's a few calls further down: a page nested just short of where it gives
    up was read as far as its ids and skipped, where decoded whole it stops the run as not JSON;
    nested further, msgspec's RecursionError stopped the run as an internal error."""
    refused_from = _first_depth_refused(template, read_whole)
    for levels in range(refused_from - 100, refused_from + 10):
        if levels in unguarded_depths(refused_from):
            continue
        page = _response(template % _nested(levels))
        assert read(page) is None or read_whole(page), levels
    assert read(_response(template % _nested(5 * refused_from))) is None


def _first_depth_refused(template: bytes, read_whole) -> int:
    """The least nesting at which the whole decoding refuses the page, on this interpreter."""
    low, high = 1, 1 << 16
    while low < high:
        middle = (low + high) // 2
        if read_whole(_response(template % _nested(middle))):
            low = middle + 1
        else:
            high = middle
    return low


# From Python 3.12 on, both decoders count their depth against the C recursion limit, which the
# calls heads.HEADROOM_CALLS adds do not reach: msgspec may still read a page one or two levels
# deeper than the whole decoding does (never crashing the run). On 3.11, which CI runs, none.
def unguarded_depths(refused_from: int) -> range:
    return range(refused_from, refused_from + 2) if sys.version_info >= (3, 12) else range(0)


@pytest.fixture(params=[None, 640, 0], ids=["default digit limit", "lowest digit limit", "no digit limit"])
def digit_limit(request):
    before = sys.get_int_max_str_digits()
    if request.param is not None:
        sys.set_int_max_str_digits(request.param)
    yield sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(before)


@pytest.mark.parametrize("template, read, read_whole", [
    *[(template, heads.legacy_heads, _legacy_read_whole) for template in LEGACY_NESTING],
    *[(template, _job_heads, _api_read_whole) for template in API_NESTING],
], ids=["legacy envelope", "legacy item", "legacy lab_name", "legacy _id", "api envelope", "api data",
        "api kernel_revision"])
def test_a_page_with_an_integer_python_refuses_is_left_to_the_whole_decoding(template, read, read_whole, digit_limit):
    """The standard library's decoder refuses an integer of more digits than Python makes an int
    of (sys.get_int_max_str_digits), as no JSON; msgspec skips one in a field it does not read,
    and the page was read as far as its ids and skipped."""
    digits = digit_limit or 4300
    for length in (1, digits // 2, digits, digits + 1, 3 * digits):
        for number in (b"1" * length, b"-" + b"9" * length, b"1" * length + b".5"):
            page = _response(template % number)
            assert read(page) is None or read_whole(page), (length, number[:1])
    if digit_limit:
        assert not _legacy_read_whole(_response(LEGACY_NESTING[0] % (b"1" * (digit_limit + 1))))
    assert read(_response(template % b"1")) is not None


@pytest.mark.parametrize("template, read, read_whole", [
    (LEGACY_NESTING[0], heads.legacy_heads, _legacy_read_whole), (API_NESTING[0], _job_heads, _api_read_whole),
], ids=["legacy", "api"])
def test_an_integer_python_refuses_is_left_to_the_whole_decoding_wherever_it_starts(template, read, read_whole,
                                                                                     digit_limit):
    """The shortest integer Python refuses, one digit past its limit, put at every place on the
    page within half the limit (spaces before it): each is left to the whole decoding."""
    digits = (digit_limit or 4300) + 1
    for spaces in range(digits // 2 + 2):
        page = _response(template % (b" " * spaces + b"7" * digits))
        assert read(page) is None or read_whole(page), spaces


# Differential fuzzing: real-shaped pages written many ways -----------------------------------

class _Pairs(list):
    """An object's members as written, in this order, a key perhaps twice."""


class _Raw(str):
    """JSON text written as it is."""


class _EscapedKey(str):
    """A key written with every character escaped (`"\\u005fid"`)."""


# Values put where a page has others, or added beside them: other types, numbers at and past
# what decoders take, escapes, ids in other forms, labs, and objects nesting `_id` and `lab_name`.
_ODD_VALUES = [
    None, True, False, 0, -1, 2 ** 64, -(2 ** 63) - 1, 10 ** 30, 1.5, "", "job", "test",
    _Raw("-0"), _Raw("-0.0"), _Raw("1E2"), _Raw("1e400"), _Raw("-1e400"), _Raw("1e-400"),
    _Raw("NaN"), _Raw("Infinity"), _Raw("-Infinity"),
    OID, OID.upper(), OID + "\n", " " + OID[1:], [OID], {"$oid": OID}, {"$oid": OID, "x": 1}, {"$oid": 5},
    {"$oid": [OID]}, {"$oid": None}, {}, _Pairs([("$oid", "x"), ("$oid", OID)]), _Pairs([("$oid", OID), ("$oid", "x")]),
    "2024-10-16T00:05:00.000000", "2024-10-16T00:05:00", "2024-13-16T00:05:00.000000",
    "lab-baylibre-seattle", "lab-collabora", "lab-été", "é😀", _Raw('"lab-\\u00e9"'), _Raw('"\\ud83d\\ude00"'),
    _Raw('"\\ud800"'), _Raw('"\\udc80x"'), _Raw('"\\\\udc80"'), _Raw('"\\u0000"'), _Raw('"a\\u000ab"'),
    {"_id": {"$oid": OID}, "lab_name": "lab-baylibre-seattle", "id": OID}, [{"_id": OID, "kind": "job"}],
    _Raw("1" + "0" * 4400), _Raw("[" * 300 + "]" * 300), _Raw("[" * 2000 + "]" * 2000),
]
_LABS = ["lab-collabora", "lab-baylibre-seattle", "lab-été"]
_ENCODINGS = ["utf-8"] * 8 + [None, "UTF8", "utf_8", "ISO-8859-1", "utf-8-sig", "utf-16"]


class _Writer:
    """JSON text of a value, written one of the many ways JSON allows: whitespace between tokens,
    members in any order, characters escaped as `\\uXXXX` (a pair for one beyond the BMP)."""

    def __init__(self, rng):
        self.rng = rng

    def text(self, value) -> str:
        if isinstance(value, _Raw):
            return str(value)
        if isinstance(value, str):
            return self._string(value)
        if isinstance(value, list) and not isinstance(value, _Pairs):
            return "[%s]" % self._joined(self.text(element) for element in value)
        if isinstance(value, (dict, _Pairs)):
            members = list(value.items()) if isinstance(value, dict) else list(value)
            if isinstance(value, dict) and self.rng.random() < 0.5:
                self.rng.shuffle(members)
            return "{%s}" % self._joined("%s%s:%s%s" % (self._string(key), self._space(), self._space(),
                                                         self.text(item)) for key, item in members)
        return json.dumps(value)

    def _joined(self, texts) -> str:
        return self._space() + ("," + self._space()).join(text + self._space() for text in texts)

    def _space(self) -> str:
        if self.rng.random() < 0.7:
            return ""
        return "".join(self.rng.choice(" \t\n\r") for _ in range(self.rng.randint(1, 3)))

    def _string(self, text: str) -> str:
        share = 1.0 if isinstance(text, _EscapedKey) else self.rng.choice([0.0, 0.0, 0.3])
        written = []
        for char in text:
            if char in '"\\' or char < " " or self.rng.random() < share:
                code = ord(char)
                if code > 0xFFFF:
                    code -= 0x10000
                    written.append("\\u%04X\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)))
                else:
                    written.append(self.rng.choice(["\\u%04x", "\\u%04X"]) % code)
            else:
                written.append(char)
        return '"%s"' % "".join(written)


def _varied(rng, obj: dict, wanted: list, share: float) -> _Pairs:
    """`obj` with some of its values replaced, the `wanted` keys more often, some written twice
    (the odd one first or last), some keys escaped, and a key added."""
    members = _Pairs()
    for key, value in obj.items():
        weight = 2 if key in wanted else 0.3
        if rng.random() < share * weight:
            value = _odd(rng, value)
        if key in wanted and rng.random() < share * 0.3:
            twice = [(key, value), (key, _odd(rng, value))]
            members.extend(twice if rng.random() < 0.5 else twice[::-1])
            continue
        members.append((_EscapedKey(key) if rng.random() < share * 0.2 else key, value))
    if rng.random() < share:
        members.insert(rng.randint(0, len(members)), (rng.choice(wanted + ["x", "object_id", "ID"]), _odd(rng, None)))
    if rng.random() < 0.5:
        rng.shuffle(members)
    return members


def _odd(rng, value):
    """Another value for `value`: an odd one, or, for an object or a list, a variant of it."""
    if isinstance(value, dict) and value and rng.random() < 0.5:
        return _varied(rng, value, list(value), 0.5)
    if isinstance(value, list) and value and rng.random() < 0.5:
        return [_odd(rng, element) for element in value[:rng.randint(0, len(value))]]
    return rng.choice(_ODD_VALUES)


def _page_bytes(rng, envelope) -> bytes:
    """The page as bytes, now and then with a byte order mark, cut short, with bytes that are not
    UTF-8, with something after it, or in UTF-16."""
    data = _Writer(rng).text(envelope).encode("utf-8")
    fault = rng.randrange(40)
    if fault == 0:
        data = b"\xef\xbb\xbf" + data
    elif fault == 1:
        data = data[:rng.randint(0, len(data))]
    elif fault == 2:
        cut = rng.randint(0, len(data))
        data = data[:cut] + rng.choice([b"\xff", b"\xc0\x80", b"\xed\xb2\x80", b"\xe2", b"\x00"]) + data[cut:]
    elif fault == 3:
        data += rng.choice([b" \n", b"x", b"\x0c", b"{}"])
    elif fault == 4:
        data = data.decode("utf-8").encode("utf-16")
    return data


def _typed(value):
    """`value` with the type of each part: 1, 1.0 and True are not the same answer. Walked with
    a stack of its own: on Python 3.13 both decoders read nesting deeper than a recursive walk
    could go."""
    typed: list = []
    stack = [(value, typed.append)]
    while stack:
        part, put = stack.pop()
        if isinstance(part, (list, tuple)):
            members: list = []
            put(("list", members))
            stack.extend((item, members.append) for item in reversed(part))
        elif isinstance(part, dict):
            members = []
            put(("dict", members))
            for key, item in reversed(list(part.items())):
                pair: list = [key]
                members.append(pair)
                stack.append((item, pair.append))
            members.reverse()
        else:
            put((type(part).__name__, part))
    return typed[0]


# Legacy pages --------------------------------------------------------------------------------

_LEGACY = LegacyKernelCI(None, "http://frontend.invalid", "http://storage.invalid",
                         non_lava_labs=["lab-baylibre-seattle", "lab-été", "lab-\ufffd"])


def _legacy_page(rng) -> _Pairs:
    share = rng.choice([0.0, 0.05, 0.3, 0.8])
    result = []
    for number in range(rng.randint(0, 5)):
        build = build_item("next", "next-20190531", "arm64", "defconfig", datetime(2019, 5, 31, 4, number))
        item = build if rng.random() < 0.5 else boot_item(build, rng.choice(_LABS), "meson-gxbb-p200",
                                                          datetime(2019, 5, 31, 5, number))
        item = {key: item[key] for key in LISTING_FIELDS if key in item}
        result.append(_varied(rng, item, ["_id", "lab_name"], share) if rng.random() < 0.7 else item)
    if rng.random() < share * 0.2:
        result.insert(rng.randint(0, len(result)), _odd(rng, None))
    envelope = {"code": 200, "count": len(result), "limit": 1000, "skip": 0, "result": result}
    return _varied(rng, envelope, ["result", "skip", "count"], share / 2)


def _legacy_answer(collection: str, id_values: list, labs: list, skip) -> tuple:
    """What the listing makes of a page's ids, labs and skip: how many items, their kinds and ids,
    and whether the page is the one asked for."""
    try:
        _check_skip("http://frontend.invalid/_ajax/" + collection, skip, 0)
    except UpstreamError:
        return "another page"
    return (len(id_values),) + _LEGACY._identities(collection, id_values, labs)


def _legacy_differs(rng):
    collection = rng.choice(["build", "boot"])
    page = _response(_page_bytes(rng, _legacy_page(rng)), rng.choice(_ENCODINGS))
    read = heads.legacy_heads(page)
    if read is None:
        return None
    assert _legacy_read_whole(page), page.content
    items = json_of(page)["result"]
    whole = _legacy_answer(collection, *_ids_and_labs(items), json_of(page).get("skip"))
    assert _legacy_answer(collection, *read) == whole, page.content
    return read


# API pages -----------------------------------------------------------------------------------

def _node(rng, number: int, kind: str) -> dict:
    node = json.loads(json.dumps(_REAL_JOB))
    node.update(id="%024x" % (0x670f0c27493b6b8188c7667c + number), kind=kind)
    if rng.random() < 0.2:  # as the API named it before 2023
        node["_id"] = node.pop("id")
    if rng.random() < 0.3:  # a time without microseconds (they were 0)
        node["updated"] = "2024-10-16T00:05:00"
    return node


def _api_page(rng, kind: str) -> _Pairs:
    share = rng.choice([0.0, 0.05, 0.3, 0.8])
    items = []
    for number in range(rng.randint(0, 4)):
        node = _node(rng, number, kind)
        if rng.random() < 0.6:
            data = node["data"]
            if rng.random() < 0.5:
                revision = _varied(rng, data["kernel_revision"], list(data["kernel_revision"]), share)
                data = _varied(rng, dict(data, kernel_revision=revision), list(RELATED_DATA), share)
            node = _varied(rng, dict(node, data=data), list(RELATED_FIELDS) + ["_id", "updated", "data"], share)
        items.append(node)
    if rng.random() < share * 0.2:
        items.insert(rng.randint(0, len(items)), _odd(rng, None))
    envelope = {"items": items, "total": len(items), "limit": 1000, "offset": 0}
    return _varied(rng, envelope, ["items", "total", "limit", "offset"], share / 2)


def _api_answer(kind: str, items: list, total, limit, offset, extracts: list) -> tuple:
    """What the listing makes of a page: its counts, each item's version (node id, time, version
    id) and the page's at once, and for jobs what their tests' documents use of them."""
    if not isinstance(items, list) or not api_module._is_count(total):
        return "malformed"
    as_heads = [item if isinstance(item, heads.NodeHead) else api_module._head_of(item) for item in items]
    return (_typed(total), _typed(limit), _typed(offset), [api_module._version_of(head, kind) for head in as_heads],
            api_module._page_versions(as_heads, kind), _typed(extracts) if kind == "job" else None)


def _api_differs(rng):
    kind = rng.choice(["job", "test"])
    page = _response(_page_bytes(rng, _api_page(rng, kind)), rng.choice(_ENCODINGS))
    read = heads.node_heads(page, jobs=kind == "job")
    if read is None:
        return None
    items, total, limit, offset = KernelCIApi._envelope(page)
    assert isinstance(items, list) and len(items) == len(read.items), page.content
    whole = _api_answer(kind, items, total, limit, offset, [related_node(item) for item in items])
    extracts = [heads.job_extract(head) for head in read.items] if kind == "job" else []
    assert _api_answer(kind, read.items, read.total, read.limit, read.offset, extracts) == whole, page.content
    return read


@pytest.mark.parametrize("differs", [_legacy_differs, _api_differs], ids=["legacy", "api"])
def test_pages_read_as_far_as_their_heads_answer_as_the_whole_decoding(differs):
    """Thousands of real-shaped pages, each written another way: every one the heads read gives
    the identities (and for the API the counts, versions and job extracts) of the page decoded
    whole. A good share of them is read (the rest is left to the whole decoding)."""
    rng = random.Random(20261206)
    read = [differs(rng) is not None for _ in range(2000)]
    assert sum(read) > len(read) // 5
