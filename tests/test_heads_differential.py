"""A listing page read only as far as a routine run needs (sources/heads.py) answers what the page
decoded whole answers, or None (the caller then decodes it whole): never another id, lab, kind,
time or job extract, and never an error of its own."""
from __future__ import annotations

import sys

import pytest
import requests

from kcing.errors import UpstreamError
from kcing.sources import heads
from kcing.sources.api import KernelCIApi
from kcing.sources.legacy import LegacyKernelCI

OID = "5cf0b1c259b5140d3b1f2a10"


def _response(body: bytes, encoding="utf-8") -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = body
    response.encoding = encoding
    return response


def _legacy_read_whole(response) -> bool:
    try:
        LegacyKernelCI._items("http://frontend.invalid/_ajax/build", response, 0)
    except UpstreamError:
        return False
    return True


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
    limit = sys.getrecursionlimit()
    for levels in range(limit - 100, limit + 10):
        page = _response(template % _nested(levels))
        assert read(page) is None or read_whole(page), levels
    assert read(_response(template % _nested(5 * limit))) is None


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
