"""A flat `build.json` (kernelci-core, 2017 to 2021-04) or a nested `bmeta.json` (2020-09 on, see
`bmeta`) -> one `build` document, the same for the same build whichever file it comes from.

Needed: `job` (the tree), `arch`, a kernel name (`kernel`, else `git_describe`, which is what
the backend stored as `kernel`) and a defconfig (`defconfig_full`, else `defconfig`), plus the
listing date, since build.json carries no date of its own.

Both historical spellings are read: `build_result` (or `status`, from 2019-10) becomes
`build_result` in uppercase (`UNKNOWN` when absent), and `git_describe_v` (or `git_describe_verbose`, 2019-05 to
2019-11) becomes `git_describe_v`. Numbers written as strings are read as numbers. Fields not
in `fields.BUILD` (for example the backend's `dtb_dir_data`) are left out.

A JSON object in neither shape is refused with a reason naming the two formats expected, and so
is a boot's file (a boot report names its lab and board), whose build identity would replace the
document of the build it booted.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, List, Mapping, Optional

from kcing.documents.bmeta import bmeta_fields, is_bmeta, missing_names
from kcing.documents.coerce import as_keyword, as_verdict
from kcing.documents.fields import BUILD
from kcing.documents.identity import document_id, index_name, iso_timestamp
from kcing.documents.typed import listing_date, typed_fields, without_missing
from kcing.errors import RejectedInput
from kcing.records import Document

REQUIRED = ("job", "arch", "kernel", "defconfig_full")
# Top-level names by which a flat build.json is recognised: one of them as a string (a bmeta.json
# nests them; a LAVA callback has none, only a `status` number).
FLAT_KEYS = ("job", "arch", "kernel", "git_describe", "defconfig", "defconfig_full", "file_server_resource")
# Top-level names only a boot's file has (a boot report; a LAVA callback as the backend stored it):
# such a file names the storage directory of the build it booted, the build document's identity,
# and taken for a build.json it would replace that build's document.
BOOT_KEYS = ("lab_name", "board", "boot_result")
BOOT_NOT_BUILD = ("a boot's file, not a build.json or bmeta.json: it names a lab_name, board or boot_result "
                  "(a boot-<board>.json is fed with --boots, a lava-json-<board>.json with --lavas)")
NEITHER_FORMAT = ("neither a build.json (flat: job, arch, kernel, defconfig_full, ... at the top level) nor a "
                  "bmeta.json (build, environment, kernel and revision sections)")
# What a LAVA callback (its job definition tells it: see documents/__init__.py) given to --builds
# is told besides: the option that feeds it.
LAVA_NOT_BUILD = ": it is a LAVA callback (it holds a job definition), which is fed with --lavas"
# The fields that name a build's storage directory when file_server_resource is missing.
PATH_FIELDS = ("job", "git_branch", "kernel", "arch", "defconfig_full", "build_environment")


def build_documents(build: Mapping[str, Any], created: Optional[datetime]) -> List[Document]:
    if is_bmeta(build):
        fields = bmeta_fields(build)
        fields["defconfig_full"] = fields.get("defconfig_full") or fields.get("defconfig")
        missing = missing_names(fields, REQUIRED)
        if missing:
            raise RejectedInput("bmeta.json lacks %s" % ", ".join(missing))
        when = listing_date(created, "bmeta.json")
    elif any(build.get(key) is not None for key in BOOT_KEYS):
        raise RejectedInput(BOOT_NOT_BUILD)
    elif any(isinstance(build.get(key), str) for key in FLAT_KEYS):
        fields = _flat_fields(build)
        _require(fields)
        when = listing_date(created, "build.json")
    else:
        raise RejectedInput(NEITHER_FORMAT + (LAVA_NOT_BUILD if "definition" in build else ""))
    fields = without_missing(fields)
    return [Document(
        "build",
        index=index_name("build", when),
        doc_id=document_id("build", *_identity(fields)),
        timestamp=iso_timestamp(when),
        body=fields,
    )]


def is_build_file(record: Mapping[str, Any]) -> bool:
    """Whether `record` is read as a build's file: a bmeta.json, or a flat build.json (a build
    name at its top level as text, and none of a boot's file's names)."""
    if is_bmeta(record):
        return True
    return (not any(record.get(key) is not None for key in BOOT_KEYS)
            and any(isinstance(record.get(key), str) for key in FLAT_KEYS))


def _flat_fields(build: Mapping[str, Any]) -> dict:
    fields = typed_fields(build, BUILD)
    fields["kernel"] = fields.get("kernel") or fields.get("git_describe")
    fields["defconfig_full"] = fields.get("defconfig_full") or fields.get("defconfig")
    fields["build_result"] = _build_result(build)
    fields["git_describe_v"] = fields.get("git_describe_v") or as_keyword(build.get("git_describe_verbose"))
    return fields


def _build_result(build: Mapping[str, Any]) -> str:
    result = as_verdict(build.get("build_result")) or as_verdict(build.get("status"))
    return result.upper() if result else "UNKNOWN"


def _require(fields: Mapping[str, Any]) -> None:
    missing = [name for name in REQUIRED if not fields.get(name)]
    if missing:
        raise RejectedInput("build.json lacks %s" % ", ".join(missing))


def _identity(fields: Mapping[str, Any]) -> tuple:
    """The storage directory: file_server_resource, or the fields it is made of."""
    resource = fields.get("file_server_resource")
    if resource:
        return (resource,)
    return tuple(fields.get(name) or "" for name in PATH_FIELDS)

