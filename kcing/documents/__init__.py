"""Upstream files -> Elasticsearch documents: pure functions, no I/O.

`documents_for(kind, content, created)` is the only entry point the pipeline needs. It either
returns documents that passed `validate.check`, or raises RejectedInput with a one-line reason;
bad input never raises anything else. What each kind of file must contain is described in
`build`, `lava`, `boot` and (KernelCI API nodes) `nodes`; every field a document can hold is
listed in `fields.FIELDS`.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Tuple

from kcing.documents.boot import boot_report_documents, is_boot_report
from kcing.documents.build import build_documents, is_build_file
from kcing.documents.lava import LogLines, lava_documents, lava_parts
from kcing.documents.nodes import node_documents, node_parts
from kcing.documents.validate import check_all, routing_fine
from kcing.errors import RejectedInput, one_line
from kcing.records import BOOT, BUILD, LAVA, NODE_KINDS, Document
from kcing.surrogates import lone_surrogates_replaced

BUILDERS: Dict[str, Callable[[Dict[str, Any], Optional[datetime]], List[Document]]] = {
    BUILD: build_documents,
    LAVA: lava_documents,
    BOOT: boot_report_documents,
    **{kind: node_documents(kind) for kind in NODE_KINDS},  # KernelCI API nodes (nodes.py)
}


# Kinds whose files belong to a lab, which the listing or the storage path can name when the
# file does not.
LAB_BUILDERS = {LAVA: lava_documents, BOOT: boot_report_documents}
# Kinds whose files can hold a LAVA log: their builders that leave its documents to be made.
PARTS_BUILDERS = {kind: node_parts(kind) for kind in NODE_KINDS}


def documents_for(kind: str, content: bytes, created: Optional[datetime] = None,
                  listed_lab: Optional[str] = None) -> List[Document]:
    """The documents made from one upstream file of `kind` (records.OBJECT_KINDS).

    `created` is the object's listing date (UTC); it dates documents whose file has no date of
    its own. `listed_lab` is the lab the listing item or the storage path names, for LAVA files
    and boot reports that do not name their own. Raises RejectedInput when the file cannot
    become documents, ValueError for an unknown `kind` (a caller's mistake, not bad input).
    """
    documents, lines = parts_for(kind, content, created, listed_lab)
    if lines is not None:
        documents.extend(lines.documents())
    return documents


def parts_for(kind: str, content: bytes, created: Optional[datetime] = None,
              listed_lab: Optional[str] = None) -> Tuple[List[Document], Optional[LogLines]]:
    """`documents_for`, with the log documents of a LAVA job (a legacy LAVA file, an API lab
    job's callback), which come last, still to be made: (the other documents, the log's
    LogLines or None). Everything is checked as documents_for checks it: what this returns can
    be posted."""
    try:
        builder = BUILDERS[kind]
    except (KeyError, TypeError):
        raise ValueError("unknown object kind %r" % (kind,)) from None
    record = json_object(content)
    _check_file_kind(kind, record)
    lines = None
    if kind == LAVA and is_boot_report(record):
        # A LAVA lab's boot from before the backend stored LAVA callbacks: its boot report
        # (sources/legacy.py fetches it where the lava-json file is missing).
        documents = boot_report_documents(record, created, listed_lab)
    elif kind == LAVA:
        documents, lines = lava_parts(record, created, listed_lab)
    elif kind in PARTS_BUILDERS:
        documents, lines = PARTS_BUILDERS[kind](record, created)
    elif kind in LAB_BUILDERS:
        documents = LAB_BUILDERS[kind](record, created, listed_lab)
    else:
        documents = builder(record, created)
    check_all(documents)
    if lines is not None:
        check_lines(lines)
    return documents, lines


# What a LAVA object or a boot report is told apart by: a LAVA callback always carries its job
# definition, a build's file never does.
WRONG_KIND_REASONS = {
    (BOOT, LAVA): "a LAVA callback (it holds a job definition), not a boot report: a lava-json-<board>.json is "
                  "fed with --lavas",
    (BOOT, BUILD): "a build's file, not a boot report: a build.json or bmeta.json is fed with --builds",
    (LAVA, BUILD): "a build's file, not a LAVA callback: a build.json or bmeta.json is fed with --builds",
}


def _check_file_kind(kind: str, record: Dict[str, Any]) -> None:
    """Refuse, saying what it is, a build's file or a LAVA callback read as another kind of file
    (a local file given to the wrong option): read as that kind, it would be refused for lacking
    what that kind holds, which says nothing of the mistake. (build.py says so of a boot's file
    read as a build's.)"""
    if kind not in (LAVA, BOOT):
        return
    if "definition" in record:
        found = LAVA
    elif is_build_file(record):
        found = BUILD
    else:
        return
    reason = WRONG_KIND_REASONS.get((kind, found))
    if reason is not None:
        raise RejectedInput(reason)


def check_lines(lines: LogLines) -> None:
    """`check_all` of the documents `lines` makes, mostly without making them: the first one
    is checked whole, the timestamps and ids of the others all at once (the index and bodies
    are theirs too); when that finds anything, all are made and checked one by one, for the
    reason."""
    if not len(lines):
        return
    first = Document("log", lines.index, lines.ids[0], lines.timestamps[0], {}, lines.prefix + lines.own_json[0] + "}")
    check_all([first])
    if not routing_fine(lines.timestamps, lines.ids):
        check_all(lines.documents())


def json_object(content: bytes) -> Dict[str, Any]:
    """The JSON object in `content` (UTF-8, an optional BOM), or RejectedInput saying what it is instead."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError("content must be bytes, not %s" % type(content).__name__)
    try:
        text = bytes(content).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RejectedInput("not UTF-8 text (byte %d)" % error.start) from None
    if not text.strip():
        raise RejectedInput("empty file")
    text = lone_surrogates_replaced(text)
    try:
        value = json.loads(text)
    except RecursionError:
        raise RejectedInput("not valid JSON: nested too deeply") from None
    except ValueError as error:
        raise RejectedInput("not valid JSON: %s" % (markup_instead(text) or _json_problem(error))) from None
    if not isinstance(value, dict):
        raise RejectedInput("not a JSON object but %s" % _json_type_name(value))
    return value


def _json_problem(error: ValueError) -> str:
    """What the JSON decoder found wrong, said of the file: an integer longer than Python reads
    is no JSONDecodeError, and its message tells how to lift Python's limit, which a user of
    kcing cannot do."""
    if not isinstance(error, json.JSONDecodeError) and "integer string conversion" in str(error):
        return "an integer of more than the %d decimal digits an integer may have" % sys.get_int_max_str_digits()
    return one_line(error)


def markup_instead(text: str) -> Optional[str]:
    """What a text that is markup is, for a file that should be JSON: the page a web server or a
    proxy answered in place of the file (its 502 or login page, sent with 200), shown by its
    start; None for anything else, whose JSON error says more."""
    start = text.lstrip()
    if not start.startswith("<"):
        return None
    kind = "an XML document" if start.startswith("<?xml") else "an HTML or XML page"
    return "%s, a server's or a proxy's answer in place of the file (%s)" % (kind, one_line(start, 60))


def page_instead(content: bytes) -> Optional[str]:
    """`markup_instead` of a download by its start: what it is when a web page (a proxy's 502 or
    login page answered with 200) came instead of the JSON asked for; None for anything else."""
    return markup_instead(bytes(content[:512]).decode("utf-8-sig", "replace"))


def _json_type_name(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
