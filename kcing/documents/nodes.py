"""KernelCI API nodes -> the same `build`, `boot`, `test` and `log` documents as the legacy files,
and `regression` documents, which legacy had not.

The content of a node object (made by sources/api.py, and what gen_samples saves) is a JSON
envelope around the node as `/nodes` lists it:

    {"node": {...},                          # artifact URLs already absolute
     "viewer_url": "https://api.kernelci.org/latest/viewer?node_id=...",
     "callback_data": "<JSON text>",         # a lab job's LAVA callback, with --with-logs
     "build_log": "<text>",                  # a kbuild's build.log, with --with-logs
     "build_log_bytes": 1804231,             # and its size (the text replaced bytes not UTF-8)
     "artifact_errors": {"callback_data": "HTTP 404"},   # asked for, but not to be had
     "job_node": {...},                      # a test's job: its LAVA job id and device
     "fail_node": {...}, "fail_job_node": {...}, "pass_node": {...},   # a regression's runs
     "viewer_urls": {"fail_node": "...", "pass_node": "..."}}          # and links to them

(the related nodes are extracts: sources/api_related.py).

Which node gives which document (docs/api-source.md has the table of fields):

- kbuild: one `build` document;
- a job that is the root of its group and ran in a lab (`runtime` lava-* or pull-labs-*): one
  `boot` document, plus, with its callback, one `log` document per LAVA log line;
- any other job (sub-groups such as `setup`, container jobs such as KUnit) and every test:
  one `test` document;
- checkout: none (legacy had no such document; its revision is on every node below it);
- node (the generic kind of older data: the checkouts of early 2023, KUnit cases): as a job
  or test, by its place in the tree; none for a root, which was a checkout;
- regression: one `regression` document (nodes_regression.py).

Ids hash the node id alone and indices are dated by the node's `created`, which never changes,
so every version of a node (a test `running`, later `done`) lands on the same document. Legacy
field names hold what they held in legacy documents; the rest of the node goes under
`kernelci_api` (fields.KERNELCI_API) instead of being dropped. Only a node without an id or a
date is refused: a missing field leaves the field out, and an unusable log is noted in
`kernelci_api.artifact_errors` while the node's own documents are still made.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable, List, Mapping, Optional, Tuple

from kcing.documents import nodes_api, nodes_lava, nodes_regression
from kcing.documents.coerce import as_date, as_float, as_int, as_keyword, as_verdict, as_text
from kcing.documents.fields import LAVA_COMMON
from kcing.documents.identity import document_id, index_name, iso_timestamp
from kcing.documents.lava import LogLines, log_parts, repetition_problem, shared_bytes
from kcing.documents.lava_log import LogText
from kcing.documents.lava_results import INFRASTRUCTURE_FAILURE, KERNEL_FAILURE, LAB_ERROR_TYPES
from kcing.documents.typed import without_missing
from kcing.digits import ascii_digits
from kcing.documents.validate import check_all
from kcing.errors import RejectedInput, shown
from kcing.objectid import is_object_id
from kcing.records import CHECKOUT, JOB, KBUILD, NODE, REGRESSION, Document

# Runtimes that boot a kernel on a lab's board (LAVA labs, pull labs); the others run in containers.
LAB_RUNTIMES = ("lava", "pull-labs")
# A compiler as the API names it: gcc-12, clang-17.
_COMPILER = re.compile(r"^(?P<name>.*?)-(?P<version>[0-9][0-9.]*)$")
# A compiler's diagnostic line in build.log ("file.c:1:2: warning: ...", "error: ...").
_WARNING = re.compile(r"(?:^|: )warning: ", re.MULTILINE)
_ERROR = re.compile(r"(?:^|: )error: ", re.MULTILINE)
# Identity namespace: keeps these ids apart from the legacy ones even for equal inputs.
NAMESPACE = "kernelci_api"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)


def node_documents(kind: str) -> Callable[[Mapping[str, Any], Optional[datetime]], List[Document]]:
    """The documents_for builder for objects of node `kind` (records.NODE_KINDS)."""
    return partial(_documents, kind)


def node_parts(kind: str) -> Callable[[Mapping[str, Any], Optional[datetime]],
                                      Tuple[List[Document], Optional[LogLines]]]:
    """`node_documents`, with a lab job's log documents, which come last, still to be made
    (see `lava.lava_parts`)."""
    return partial(_parts, kind)


def _documents(kind: str, envelope: Mapping[str, Any], created: Optional[datetime]) -> List[Document]:
    documents, lines = _parts(kind, envelope, created)
    if lines is not None:
        documents.extend(lines.documents())
    return documents


def _parts(kind: str, envelope: Mapping[str, Any], created: Optional[datetime]) -> tuple:
    node = _node(envelope, kind)
    if kind == CHECKOUT or (kind == NODE and _is_root(node)):
        return [], None
    documents, lines = _node_parts(kind, node, envelope, created)
    version = node_version(node)
    for document in documents:
        document.version = version
    if lines is not None:
        lines.version = version
    return documents, lines


def node_version(node: Mapping[str, Any]) -> Optional[int]:
    """The version of the node's documents (records.Document.version): its `updated` time in
    microseconds since 1970, which every update of a node raises; None without a usable one."""
    updated = as_date(node.get("updated"))
    return None if updated is None else (updated - EPOCH) // ONE_MICROSECOND


def _node_parts(kind: str, node: Mapping[str, Any], envelope: Mapping[str, Any], created: Optional[datetime]) -> tuple:
    node_id = nodes_api.node_id(node)
    when = as_date(node.get("created")) or (as_date(created) if created is not None else None)
    if when is None:
        raise RejectedInput("node %s has no created date" % node_id)
    # A regression names its failing revision, not `kernel_revision` (nodes_regression.REVISION_KEYS).
    revision = nodes_regression.failed_revision(nodes_api.data_of(node)) if kind == REGRESSION else None
    api = nodes_api.kernelci_api_fields(node, envelope, revision)
    if kind == REGRESSION:
        return [_document("regression", node_id, when, nodes_regression.regression_fields(node, envelope), api)], None
    if kind == KBUILD:
        fields = _build_fields(node, envelope.get("build_log"), envelope.get("build_log_bytes"))
        return [_document("build", node_id, when, fields, api)], None
    if kind in (JOB, NODE) and is_lab_job(node):
        return _boot_parts(node_id, node, envelope, when, api)
    job = nodes_api.mapping(envelope.get("job_node"))
    if nodes_api.node_id(job):
        api["job_node_id"] = nodes_api.node_id(job)
    return [_document("test", node_id, when, _test_fields(node, when, job), api)], None


def _node(envelope: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    node = envelope.get("node")
    if not isinstance(node, dict):
        raise RejectedInput("not a KernelCI API node envelope (no \"node\" object)")
    if nodes_api.node_id(node) is None:
        raise RejectedInput("node has no valid id")
    if node.get("kind") != kind:
        raise RejectedInput("node %s is %s, not %r" % (nodes_api.node_id(node), shown(node.get("kind")), kind))
    return node


def _is_root(node: Mapping[str, Any]) -> bool:
    # A node without a parent heads a tree: of the generic kind, a checkout of early 2023.
    return not is_object_id(node.get("parent"))


def is_lab_job(node: Mapping[str, Any]) -> bool:
    """A job that booted a kernel on a board: the root of its group, run by a lab runtime."""
    runtime = as_keyword(nodes_api.data_of(node).get("runtime")) or ""
    return runtime.startswith(LAB_RUNTIMES) and _is_group_root(node)


def _is_group_root(node: Mapping[str, Any]) -> bool:
    # Nodes below a job get the job's name as `group`; the job itself is the first node so named.
    group, path = node.get("group"), node.get("path")
    return not isinstance(group, str) or not isinstance(path, list) or group not in path[:-1]


def _document(kind: str, node_id: str, when: datetime, fields: Mapping[str, Any], api: dict) -> Document:
    body = without_missing(fields)
    body["kernelci_api"] = api
    return Document(kind, index=index_name(kind, when), doc_id=document_id(kind, NAMESPACE, node_id),
                    timestamp=iso_timestamp(when), body=body)


# Fields in legacy terms -----------------------------------------------------------------------

def revision_fields(data: Mapping[str, Any]) -> dict:
    """The kernel and configuration fields every legacy document has, from a node's `data`."""
    revision = nodes_api.mapping(data.get("kernel_revision"))
    describe = as_keyword(revision.get("describe"))
    defconfig = as_keyword(data.get("defconfig"))
    config_full = as_keyword(data.get("config_full"))
    # Jobs and tests copy only the fragments part ("+lab-setup+..."); legacy spelled it whole.
    if config_full and config_full.startswith("+") and defconfig:
        config_full = defconfig + config_full
    # A kbuild whose data has no config_full (KernelCI's first kbuild model had none) still
    # names its fragments: its full name is the defconfig with them, as config_full spells it.
    fragments = nodes_api.keywords(data.get("fragments"))
    if not config_full and defconfig and fragments:
        config_full = "+".join([defconfig, *fragments])
    return {
        "job": as_keyword(revision.get("tree")),
        "git_branch": as_keyword(revision.get("branch")),
        "git_commit": as_keyword(revision.get("commit")),
        "git_url": as_keyword(revision.get("url")),
        "git_describe": describe,
        "kernel": describe,
        "arch": as_keyword(data.get("arch")),
        "defconfig": defconfig,
        "defconfig_full": config_full or defconfig,
        "build_environment": as_keyword(data.get("compiler")),
    }


def _lab_fields(node: Mapping[str, Any], data: Mapping[str, Any],
                job: Mapping[str, Any] = nodes_api.EMPTY) -> dict:
    """Board, lab and LAVA job of a job node, or of a test node and `job`, the job it ran in.

    Nodes below a job hold only what the callback handler copied from it (the platform and the
    runtime); the LAVA job id and the device are on the job alone.
    """
    job_data = nodes_api.data_of(job)

    def own_or_job(name: str) -> Any:
        value = as_keyword(data.get(name))
        return value if value is not None else as_keyword(job_data.get(name))

    return {
        "board": own_or_job("platform"),
        "board_instance": own_or_job("device"),
        "lab_name": own_or_job("runtime"),
        "plan": as_keyword(node.get("group")),  # the job: baseline-arm64-mediatek, kselftest-exec
        "lava_job_id": lava_job_number(own_or_job("job_id")),
    }


# Error codes of a lab job that blame the lab or KernelCI's pipeline, never the kernel: LAVA's
# (lava_results.LAB_ERROR_TYPES) and the API's own (upstream.md §2.5: the job could not be made,
# submitted or run, or no lab answered in time; `RequestBodyTooLarge`: its callback was too
# large for the pipeline to take).
NOT_THE_KERNEL = LAB_ERROR_TYPES | frozenset((
    "invalid_job_params", "submit_error", "node_timeout", "job_generation_error", "kbuild_internal_error",
    "RequestBodyTooLarge"))


def lava_job_number(job_id: Optional[str]) -> Optional[int]:
    """A LAVA job id as a number; Kubernetes job names stay in kernelci_api.job_id."""
    return as_int(job_id) if job_id and ascii_digits(job_id) else None


def _build_fields(node: Mapping[str, Any], build_log: Any, build_log_bytes: Any = None) -> dict:
    data = nodes_api.data_of(node)
    artifacts = nodes_api.mapping(node.get("artifacts"))
    fields = revision_fields(data)
    result = as_verdict(node.get("result"))
    compiler = _COMPILER.match(fields["build_environment"] or "")
    fields.update({
        "build_result": kbuild_result(result, as_keyword(data.get("error_code"))),
        "compiler": compiler.group("name") if compiler else fields["build_environment"],
        "compiler_version": compiler.group("version") if compiler else None,
        "kconfig_fragments": "+".join(nodes_api.keywords(data.get("fragments")) or ()) or None,
        # Legacy held file names beside the build's directory; the URLs are in kernelci_api.
        "build_log": nodes_api.file_name(artifacts.get("build_log")),
        "kernel_config": nodes_api.file_name(artifacts.get("_config")),
        "kernel_image": nodes_api.file_name(artifacts.get("kernel")),
        "modules": nodes_api.file_name(artifacts.get("modules")),
    })
    if isinstance(build_log, str):
        fields.update(build_log_summary(build_log, as_int(build_log_bytes)))
    return fields


def kbuild_result(result: Optional[str], error_code: Optional[str]) -> str:
    """A kbuild's `build_result`: its result in upper case, as legacy builds (`UNKNOWN` while
    null), except that a build that failed for the pipeline's or the runner's reason (an error
    code of NOT_THE_KERNEL: `kbuild_internal_error`, `node_timeout`, ...) is `ERROR`: none of them
    the kernel's, as KCIDB reads them (upstream.md §3.6: ERROR, MISS for `node_timeout`), and
    "Failed builds" are the kernel's to fix."""
    if result == "fail" and error_code in NOT_THE_KERNEL:
        return "ERROR"
    return result.upper() if result else "UNKNOWN"


def build_log_summary(text: str, size: Optional[int] = None) -> dict:
    """Compiler warnings and errors counted in a build log, and its size in bytes: `size`, the
    file's as the source counted it, else the text's in UTF-8 (an envelope saved before the source
    counted it), which is the file's unless it held bytes that are not UTF-8."""
    if size is None or size < 0:
        size = len(text.encode("utf-8", "replace"))
    return {"warnings": len(_WARNING.findall(text)), "errors": len(_ERROR.findall(text)), "build_log_size": size}


def _test_fields(node: Mapping[str, Any], when: datetime, job: Mapping[str, Any]) -> dict:
    data = nodes_api.data_of(node)
    suite = _suite(node)
    measurement, unit = _measurement(nodes_api.mapping(data.get("misc")).get("measurement"))
    fields = revision_fields(data)
    fields.update(_lab_fields(node, data, job))
    fields.update({
        "suite": suite,
        "suite_name": suite,  # the API already dropped LAVA's run-order prefix ("0_dmesg")
        "name": as_keyword(node.get("name")),
        "result": as_verdict(node.get("result")),
        "measurement": measurement,
        "unit": unit,
        "logged": iso_timestamp(when),
        "error_type": as_keyword(data.get("error_code")),
        "error_msg": as_text(data.get("error_msg")),
    })
    fields.update(job_boot_verdict(job))
    return fields


def job_boot_verdict(job: Mapping[str, Any]) -> dict:
    """boot_result and boot_failure of the lab job a test ran in, as its boot document reads them
    from the job node: every document of a legacy LAVA job carries its boot's verdict, so that a
    filter such as `boot_result : pass` finds the tests of boots that passed from either source.
    Nothing for a test of a container job (no board booted) or whose job is not known."""
    if not nodes_api.node_id(job) or not is_lab_job(job):
        return {}
    error_code = as_keyword(nodes_api.data_of(job).get("error_code"))
    boot_result, boot_failure = node_boot_result(as_verdict(job.get("result")), error_code)
    return {"boot_result": boot_result, "boot_failure": boot_failure}


def _suite(node: Mapping[str, Any]) -> Optional[str]:
    """The suite a test or job node belongs to: its parent (`path[-2]`), except that the job at
    the root of its group is its own suite, since above it are only its kbuild and checkout."""
    path = nodes_api.keywords(node.get("path")) or []
    group = as_keyword(node.get("group"))
    if len(path) >= 2 and (group is None or group in path[:-1]):
        return path[-2]
    return group


def _measurement(value: Any) -> tuple:
    if isinstance(value, dict):
        return as_float(value.get("value")), as_keyword(value.get("unit"))
    return as_float(value), None


# Boot documents (and their log) --------------------------------------------------------------

def node_boot_result(result: Optional[str], error_code: Optional[str]) -> Tuple[str, Optional[str]]:
    """(boot_result, boot_failure) a lab job's own result and error code imply, without its
    callback, read as the legacy verdict reads a callback (lava_results.boot_outcome).

    The API's job result (upstream.md §2.6): `pass`; `fail` without an error code when a test
    suite failed after the board booted; `fail` with one when a baseline job's `setup` failed for
    a reason that is not the lab's; `incomplete` with the error of LAVA's `job` step when LAVA
    gave up (`Infrastructure` when it did not say), and without one when LAVA completed the job
    but `setup` failed. So: an error code that blames the lab or the pipeline (and older nodes
    carry `fail` with `Infrastructure`) gives `unknown`, an infrastructure failure; any other
    error code a kernel failure, `fail`, as a legacy job that ended incomplete; a failed setup
    without a code says neither (it may be the kernel messages, not the login): `unknown`.
    """
    if error_code in NOT_THE_KERNEL:
        return "unknown", INFRASTRUCTURE_FAILURE
    if result == "pass":
        return "pass", None
    if result == "fail" and not error_code:
        return "pass", None
    if result in ("fail", "incomplete") and error_code:
        return "fail", KERNEL_FAILURE
    return "unknown", None


def callback_boot_verdict(callback_fields: Mapping[str, Any], error_code: Optional[str]) -> Tuple[str, Optional[str]]:
    """(boot_result, boot_failure) of a lab job read with its callback: the callback's, as the
    legacy verdict reads it, but for a failure the callback names no error for (no `job` step
    error type, or no `lava` results at all) on a job whose node carries a LAVA error code that
    blames the lab: KernelCI's pipeline records `Infrastructure` for just such a callback, and the
    document, which says that error, must not call the boot a kernel failure. A code of the
    pipeline's own (`node_timeout`, ...) says nothing of what the callback shows."""
    result, failure = callback_fields.get("boot_result"), callback_fields.get("boot_failure")
    if result == "fail" and callback_fields.get("error_type") is None and error_code in LAB_ERROR_TYPES:
        return "unknown", INFRASTRUCTURE_FAILURE
    return result, failure


def _boot_parts(node_id: str, node: Mapping[str, Any], envelope: Mapping[str, Any], when: datetime,
                api: dict) -> tuple:
    data = nodes_api.data_of(node)
    fields = revision_fields(data)
    fields.update(_lab_fields(node, data))
    error_code = as_keyword(data.get("error_code"))
    fields.update({
        "plan": fields["plan"] or as_keyword(node.get("name")),
        "device_type": fields["board"],
        "error_type": error_code,
        "error_msg": as_text(data.get("error_msg")),
        "boot_time": None,
    })
    fields["boot_result"], fields["boot_failure"] = node_boot_result(as_verdict(node.get("result")), error_code)
    callback = nodes_lava.read_callback(envelope.get("callback_data"))
    if callback.problem:
        api.setdefault("artifact_errors", []).append("callback_data: %s" % callback.problem)
    for name, value in callback.boot_fields.items():
        if value is not None or name not in fields:
            fields[name] = value
    if "boot_result" in callback.boot_fields:  # the callback's verdict replaces the node's whole
        fields["boot_result"], fields["boot_failure"] = callback_boot_verdict(callback.boot_fields, error_code)
    common = without_missing({name: fields.get(name) for name in LAVA_COMMON})
    common["kernelci_api"] = {name: api[name] for name in nodes_api.LOG_API_FIELDS if name in api}
    log = callback.log
    problem = repetition_problem(shared_bytes(common), {}, len(log)) if len(log) else None
    if problem is not None:  # the node's fields are too long to repeat in each line: its log is left out
        api.setdefault("artifact_errors", []).append("callback_data: log left out: %s" % problem)
        log = LogText.of_items([])
    documents = [_document("boot", node_id, when, fields, api)]
    if not len(log):
        return documents, None
    # The boot document is checked first, as when every document is checked in turn: its
    # reason for a refusal comes before any a log line would give while its parts are made.
    check_all(documents)
    made, lines = log_parts((NAMESPACE, node_id), when, common, log)
    return documents + made, lines
