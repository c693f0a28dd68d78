"""Listing pages read only as far as a routine run needs them: each item's identity, not its body.

A run that lists results it delivered before needs only what identifies each: a KernelCI API
node's id, kind and update time, a legacy item's `_id` and lab. The API has no field projection
(a page of a thousand nodes is about 1.3 MB of JSON), and even the legacy backend's projected
items carry more than that. msgspec reads those few fields in one pass without building the rest
of the page (for an API job, also what its tests' documents use of it). A page with an item
that is wanted is then decoded whole by the standard library's decoder as before, so what a
result becomes does not depend on this module.

A page msgspec does not read (JSON the standard library accepts and msgspec refuses, such as
`NaN`; text declared in another charset than UTF-8, or starting with a byte order mark; an item
that is not an object, or a job whose `data` is neither an object nor null; not the expected
envelope; nesting within a few dozen levels of what the interpreter's recursion limit lets a
decoder go, or deeper; an integer of more digits than Python reads, anywhere) makes these
functions answer None, and the caller decodes the page whole, which also judges it.
"""
from __future__ import annotations

import sys
from typing import Any, List, Optional, Tuple

import msgspec

from kcing.objectid import node_id
from kcing.sources.api_related import RELATED_DATA, RELATED_FIELDS, REVISION_FIELDS

# A field absent from the item (as opposed to present with the value null).
ABSENT = msgspec.UNSET


# Heads are not tracked by the cyclic collector (`gc=False`): made by decoding and never changed,
# they hold JSON values only and cannot be part of a cycle, and a routine run keeps tens of
# thousands of job heads (api_related) that collections would otherwise walk again and again.
class NodeHead(msgspec.Struct, gc=False):
    """What identifies a listed node version: its id (`_id` before 2023), kind and update time."""

    id: Any = ABSENT
    object_id: Any = msgspec.field(default=ABSENT, name="_id")
    kind: Any = None
    updated: Any = None

    @property
    def node_id(self) -> Any:
        """The id as the API's node documents name it: `id`, else the older `_id`."""
        return self.id if self.id is not ABSENT else (None if self.object_id is ABSENT else self.object_id)


# A job's head also holds what other nodes' documents use of it (api_related.related_node): its
# RELATED_FIELDS, and of its `data` the RELATED_DATA, the revision without its message and tags.
_Revision = msgspec.defstruct("_Revision", [(name, Any, ABSENT) for name in REVISION_FIELDS], gc=False)
_JobData = msgspec.defstruct("_JobData", [(name, Optional[_Revision] if name == "kernel_revision" else Any, None)
                                          for name in RELATED_DATA], gc=False)
JobHead = msgspec.defstruct("JobHead", [(name, Any, None) for name in RELATED_FIELDS if name not in NodeHead.__struct_fields__]
                            + [("data", Optional[_JobData], None)], bases=(NodeHead,), gc=False)


class _HeadPage(msgspec.Struct):
    items: List[NodeHead]
    total: Any = None
    limit: Any = None
    offset: Any = None


class _JobHeadPage(msgspec.Struct):
    items: List[JobHead]
    total: Any = None
    limit: Any = None
    offset: Any = None


class _LegacyHead(msgspec.Struct, gc=False):
    object_id: Any = msgspec.field(default=None, name="_id")
    lab_name: Any = None


class _LegacyPage(msgspec.Struct):
    result: List[_LegacyHead]
    skip: Any = None


_HEAD_PAGE = msgspec.json.Decoder(_HeadPage)
_JOB_HEAD_PAGE = msgspec.json.Decoder(_JobHeadPage)
_LEGACY_PAGE = msgspec.json.Decoder(_LegacyPage)


def node_heads(response, jobs: bool = False):
    """An API page's items as heads (`JobHead`s with `jobs`), with its `total`, `limit` and `offset`;
    None when msgspec cannot read it as an object with an `items` list of objects (a job's
    `data` and revision objects or null)."""
    return _decoded(response, _JOB_HEAD_PAGE if jobs else _HEAD_PAGE)


def legacy_heads(response) -> Optional[Tuple[list, list, Any]]:
    """A legacy listing page's `_id` and `lab_name` values, item by item (None where an item
    has none), and the `skip` it says it answers: what sources/legacy.py reads to skip a
    delivered item. None when msgspec cannot read the page as an object with a `result` list of
    objects."""
    page = _decoded(response, _LEGACY_PAGE)
    if page is None:
        return None
    return [head.object_id for head in page.result], [head.lab_name for head in page.result], page.skip


# Calls made before msgspec decodes a page. Both decoders recurse once per level of nesting and
# give up (RecursionError) where the interpreter's recursion limit, which counts every call on
# the stack, leaves no room: the whole decoding then refuses the page as not JSON (json_of).
# It decodes a few calls further down than these functions (json_of, json.loads and its
# decoder's methods), so a page nested to within those few levels of the limit was read here
# and refused there. From this many calls further down, msgspec has less room than the
# standard library's decoder will have: what it reads, that reads too, and a page nested
# deeper is left to the whole decoding. From Python 3.12 on, both decoders count their depth
# against the C recursion limit instead, which these calls do not reach: there msgspec may read
# a page nested a level or two deeper than the whole decoding does (some 1,500 levels on 3.12,
# 10,000 on 3.13, where real pages nest fewer than ten); its RecursionError is caught either way.
HEADROOM_CALLS = 32


def _decoded(response, decoder):
    if response.encoding is not None and response.encoding.lower().replace("-", "").replace("_", "") != "utf8":
        return None  # declared in another charset: the whole decoding (json_of) judges the page
    content = response.content
    try:
        page = _decoded_further_down(decoder, content, HEADROOM_CALLS)
    except (msgspec.DecodeError, RecursionError):  # DecodeError: its ValidationError too
        return None
    # msgspec skips the fields it does not read without making their numbers ints.
    return None if _may_hold_an_integer_python_refuses(content) else page


def _may_hold_an_integer_python_refuses(content: bytes) -> bool:
    """Whether `content` may hold an integer of more digits than Python makes an int of
    (sys.get_int_max_str_digits: 4300 unless set, 0 for no limit), which the standard library's
    decoder refuses (ValueError): yes for any run of more digits than that, and perhaps for one
    of half as many. Such a run holds a whole block of half as many digits that starts at a
    multiple of that size, so only those blocks are looked at: about 500 in a megabyte, most
    given up at their first byte."""
    limit = sys.get_int_max_str_digits()
    if not limit:
        return False
    block = (limit + 2) // 2  # a run of limit + 1 digits holds one whole
    return any(content[start:start + block].isdigit() for start in range(0, len(content), block)
               if content[start] in _DIGITS)


_DIGITS = frozenset(b"0123456789")


def _decoded_further_down(decoder, content: bytes, calls: int):
    """`decoder.decode(content)`, from `calls` calls further down the stack (HEADROOM_CALLS)."""
    if calls:
        return _decoded_further_down(decoder, content, calls - 1)
    return decoder.decode(content)


def job_extract(job) -> dict:
    """What api_related.related_node makes of the whole job, from its head (`JobHead`)."""
    extract = {name: getattr(job, name) for name in RELATED_FIELDS}
    extract["id"] = node_id({"id": job.node_id})  # as related_node reads it: `id`, else `_id`
    related = {}
    data = job.data
    if data is not None:
        for name in RELATED_DATA:
            value = getattr(data, name)
            if value is not None:
                related[name] = value
        revision = related.get("kernel_revision")
        if revision is not None:
            related["kernel_revision"] = {name: value for name in REVISION_FIELDS
                                          if (value := getattr(revision, name)) is not ABSENT}
    extract["data"] = related
    return extract
