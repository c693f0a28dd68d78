"""Every field a document body can hold, per document kind, with its Elasticsearch type.

Index templates can be generated from `FIELDS`; tests check every document the builders make
(from real files, the samples and fuzzed input) against it with `field_problems`. Besides these, each posted document gets `@timestamp` (a date) on the wire.

Types: keyword (exact strings: names, ids, results), text (free text: messages), long,
float, boolean, date (ISO 8601 strings with a zone). A value is never a nested object, except
the one-level `SUB_OBJECTS` whose own fields are typed the same way; only `KEYWORD_ARRAYS` (and
`SUB_OBJECT_ARRAYS` inside a sub-object) hold lists of strings. `None` (JSON null) appears only in `NULLABLE` fields,
where "not measured" is worth showing; other missing values are left out.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

from kcing.documents.coerce import FLOAT_MAX, LONG_MAX, LONG_MIN
from kcing.documents.validate import TIMESTAMP

KEYWORD, TEXT, LONG, FLOAT, BOOLEAN, DATE = "keyword", "text", "long", "float", "boolean", "date"
TYPES = (KEYWORD, TEXT, LONG, FLOAT, BOOLEAN, DATE)

# On every document made from one LAVA callback (boot, test and log alike).
LAVA_COMMON = {
    "job": KEYWORD,  # the kernel tree: mainline, next, stable, ...
    "git_branch": KEYWORD,
    "kernel": KEYWORD,
    "git_describe": KEYWORD,
    "git_commit": KEYWORD,
    "git_url": KEYWORD,
    "arch": KEYWORD,
    "defconfig": KEYWORD,
    "defconfig_full": KEYWORD,
    "build_environment": KEYWORD,
    "board": KEYWORD,  # LAVA device type (metadata device.type)
    "board_instance": KEYWORD,  # LAVA actual_device_id
    "lab_name": KEYWORD,
    "mach": KEYWORD,
    "endian": KEYWORD,
    "platform_name": KEYWORD,
    "file_server_resource": KEYWORD,  # storage path of the build
    "plan": KEYWORD,
    "boot_result": KEYWORD,  # pass, fail, unknown, ... (lowercase)
    # Who failed, when a boot did not pass: `kernel` (boot_result fail: the job ended
    # incomplete for a reason that is not the lab's, or the login failed; a boot report's FAIL) or
    # `infrastructure` (boot_result unknown: a LAVA error type of the lab's (lava_results.LAB_ERROR_TYPES),
    # or the job was canceled; from the API without the callback, also its own error codes,
    # documents/nodes.py; a boot report's OFFLINE board, or the UNKNOWN the backend wrote into a LAVA
    # lab's report). Absent when the boot passed or nobody is known to have failed (a boot report's
    # UNTRIED or no result).
    "boot_failure": KEYWORD,
    "boot_time": FLOAT,  # seconds to the login prompt
    "lava_job_id": LONG,
}

BUILD = {
    "job": KEYWORD,
    "git_branch": KEYWORD,
    "kernel": KEYWORD,
    "git_describe": KEYWORD,
    "git_describe_v": KEYWORD,
    "git_commit": KEYWORD,
    "git_url": KEYWORD,
    "arch": KEYWORD,
    "defconfig": KEYWORD,
    "defconfig_full": KEYWORD,
    "kconfig_fragments": KEYWORD,
    "build_environment": KEYWORD,
    "build_result": KEYWORD,  # PASS, FAIL, UNKNOWN (uppercase, as upstream); API: INCOMPLETE, ERROR, SKIP
    "build_type": KEYWORD,
    "build_platform": KEYWORD,  # platform.uname() of the builder, a list
    "build_threads": LONG,
    "build_time": FLOAT,  # seconds
    "build_log": KEYWORD,
    "build_log_size": LONG,
    "compiler": KEYWORD,
    "compiler_version": KEYWORD,
    "compiler_version_ext": KEYWORD,
    "compiler_version_full": KEYWORD,
    "cross_compile": KEYWORD,
    "errors": LONG,
    "warnings": LONG,
    "mismatches": LONG,
    "dtb_dir": KEYWORD,
    "kernel_config": KEYWORD,
    "kernel_config_size": LONG,
    "kernel_image": KEYWORD,
    "kernel_image_size": LONG,
    "modules": KEYWORD,
    "modules_size": LONG,
    "system_map": KEYWORD,
    "system_map_size": LONG,
    "text_offset": KEYWORD,
    "vmlinux_bss_size": LONG,
    "vmlinux_data_size": LONG,
    "vmlinux_file_size": LONG,
    "vmlinux_text_size": LONG,
    "file_server_resource": KEYWORD,
}

BOOT = {
    **LAVA_COMMON,
    # From LAVA callbacks only.
    "plan_variant": KEYWORD,
    "job_status": KEYWORD,  # complete, incomplete, canceled
    "error_type": KEYWORD,  # the `job` step's error: Infrastructure, Job, Test, ...
    "error_msg": TEXT,
    "lava_job_name": KEYWORD,
    "priority": LONG,  # the LAVA job's priority (0 to 100), as the original boot index had it
    "submit_time": DATE,
    "start_time": DATE,
    "end_time": DATE,
    # From LAVA callbacks and boot reports alike.
    "device_type": KEYWORD,  # for LAVA its own device type: `qemu` for every QEMU board
    "dtb": KEYWORD,
    "dtb_addr": KEYWORD,
    "kernel_image": KEYWORD,
    "loadaddr": KEYWORD,
    "initrd": KEYWORD,
    "initrd_addr": KEYWORD,
    "boot_log_html": KEYWORD,
    "version": KEYWORD,
    # From boot-<board>.json reports (labs without LAVA) only.
    "boot_log": KEYWORD,
    "boot_result_description": TEXT,
    "boot_retries": LONG,
    "boot_warnings": LONG,
    "dtb_append": BOOLEAN,
    "fastboot": BOOLEAN,
}

TEST = {
    **LAVA_COMMON,
    "suite": KEYWORD,  # as in the callback: lava, 0_dmesg, 1_bootrr
    "suite_name": KEYWORD,  # without the run-order prefix: lava, dmesg, bootrr
    "name": KEYWORD,
    "result": KEYWORD,  # pass, fail, skip, unknown (LAVA); pass, fail, skip, incomplete (API)
    "measurement": FLOAT,
    "unit": KEYWORD,
    "level": KEYWORD,  # LAVA pipeline level, e.g. 2.4.4.1
    "logged": DATE,
    # LAVA's own numbers, as the callback writes them: from 0, an index into the job's log.
    "log_start_line": LONG,
    "log_end_line": LONG,
    # The same lines as the log documents number them (their `lineno`, from 1): LAVA's plus one.
    "log_start_lineno": LONG,
    "log_end_lineno": LONG,
    "test_case_id": KEYWORD,  # LAVA test case id
    "test_set": KEYWORD,  # LAVA test set (metadata.set): a suite may repeat a case name in each set
    "error_type": KEYWORD,
    "error_msg": TEXT,
}

LOG = {
    **LAVA_COMMON,
    "lineno": LONG,  # 1-based
    "level": KEYWORD,  # target, debug, info, input, results, warning, error, exception, feedback
    "message": TEXT,  # a non-string message is its compact JSON
}

# One per KernelCI API `regression` node (documents/nodes_regression.py): a test, boot or build
# that passed on one kernel revision and failed on the next of the same tree, branch,
# configuration and platform. The legacy names hold the failing side, as in the other kinds.
REGRESSION = {
    "job": KEYWORD,  # the kernel tree
    "git_branch": KEYWORD,
    "git_commit": KEYWORD,  # the first failing revision
    "git_url": KEYWORD,
    "git_describe": KEYWORD,
    "kernel": KEYWORD,
    "arch": KEYWORD,
    "defconfig": KEYWORD,
    "defconfig_full": KEYWORD,
    "build_environment": KEYWORD,
    "board": KEYWORD,  # the platform (LAVA device type)
    "board_instance": KEYWORD,  # the device of the failing run, when the API names it
    "lab_name": KEYWORD,  # the runtime of the failing run (from the failing node)
    "lava_job_id": LONG,  # the LAVA job of the failing run (from the failing node or its job)
    "plan": KEYWORD,  # the job (group): baseline-arm64-mediatek, kselftest-exec, kbuild-gcc-12-x86
    "name": KEYWORD,  # the failing test case (or job, or build)
    "test_path": KEYWORD,  # from the job down, dotted: baseline-arm64-mediatek.setup.login
    "status": KEYWORD,  # active (still failing), inactive (passed again), unknown
    "error_type": KEYWORD,  # the failing run's error code
    "error_msg": TEXT,
    "fail_node": KEYWORD,  # node id of the first failing run
    "pass_node": KEYWORD,  # node id of the last passing run before it
    "fail_node_url": KEYWORD,  # the API's view of those nodes
    "pass_node_url": KEYWORD,
    "pass_git_commit": KEYWORD,  # the last passing revision (from the passing node)
    "pass_git_describe": KEYWORD,
    "pass_kernel": KEYWORD,
    "pass_time": DATE,  # when the last passing run was created
    "runs_since": LONG,  # runs of the same test recorded after the first failure
    "node_sequence": KEYWORD,  # their node ids, oldest first (a list)
}

FIELDS: Dict[str, Dict[str, str]] = {"build": BUILD, "boot": BOOT, "test": TEST, "log": LOG,
                                     "regression": REGRESSION}

KEYWORD_ARRAYS = frozenset(("build_platform", "node_sequence"))
NULLABLE = frozenset(("boot_time", "measurement", "log_start_line", "log_end_line", "log_start_lineno",
                      "log_end_lineno"))

# Documents made from KernelCI API nodes (documents/nodes.py) carry one sub-object beside the
# fields above: what the node says that no legacy field holds, kept rather than dropped. It is
# indexed as `kernelci_api.<name>`, the same in every document kind.
KERNELCI_API = {
    "node_id": KEYWORD,  # the node's 24-hex id: one document per node, whatever its versions
    "kind": KEYWORD,  # checkout, kbuild, job, test, node, regression
    "name": KEYWORD,
    "path": KEYWORD,  # node names from the checkout down (a list)
    "test_path": KEYWORD,  # the path from the job down, dotted: baseline-arm64.setup.login
    "group": KEYWORD,
    "parent": KEYWORD,
    "state": KEYWORD,  # running, available, closing, done
    "result": KEYWORD,  # pass, fail, skip, incomplete (absent while unknown)
    "created": DATE,
    "updated": DATE,
    "timeout": DATE,
    "holdoff": DATE,
    "owner": KEYWORD,
    "submitter": KEYWORD,
    "treeid": KEYWORD,
    "user_groups": KEYWORD,
    "retry_counter": LONG,
    "processed_by_kcidb_bridge": BOOLEAN,
    "jobfilter": KEYWORD,
    "platform_filter": KEYWORD,
    "runtime": KEYWORD,  # the lab or runtime: lava-collabora, k8s-all, shell
    "platform": KEYWORD,
    "device": KEYWORD,
    "job_id": KEYWORD,  # as the API gives it: a LAVA job number or a Kubernetes job name
    "job_node_id": KEYWORD,  # a test's job: the node at the root of its group (its LAVA job)
    "job_context": KEYWORD,
    "kernel_type": KEYWORD,
    "fragments": KEYWORD,
    "error_code": KEYWORD,
    "error_msg": TEXT,
    "test_source": KEYWORD,
    "test_revision": KEYWORD,  # the commit of the tests' revision (an object upstream)
    "regression": KEYWORD,
    "architecture_filter": KEYWORD,
    "kernel_version": KEYWORD,  # version.patchlevel[.sublevel], e.g. 6.12
    "patchset": KEYWORD,
    "commit_tags": KEYWORD,
    "commit_message": TEXT,
    "tip_of_branch": BOOLEAN,
    "artifacts": KEYWORD,  # the names of the node's artifacts
    "log_url": KEYWORD,  # the node's main log: build_log, lava_log or test_log
    "build_log_url": KEYWORD,
    "config_url": KEYWORD,
    "kernel_url": KEYWORD,
    "modules_url": KEYWORD,
    "metadata_url": KEYWORD,
    "tarball_url": KEYWORD,
    "lava_log_url": KEYWORD,
    "lava_logs_url": KEYWORD,
    "callback_data_url": KEYWORD,
    "test_log_url": KEYWORD,
    "viewer_url": KEYWORD,  # the API's HTML view of the node
    "artifact_errors": KEYWORD,  # "<artifact>: <why>" for a log asked for but not usable
}
SUB_OBJECTS: Dict[str, Dict[str, str]] = {"kernelci_api": KERNELCI_API}
SUB_OBJECT_ARRAYS = frozenset(("path", "user_groups", "jobfilter", "platform_filter", "fragments",
                               "architecture_filter", "commit_tags", "artifacts", "artifact_errors"))


def field_problems(kind: str, body: Mapping[str, Any]) -> List[str]:
    """What in `body` breaks the `FIELDS` contract for `kind` (an empty list when nothing does)."""
    known = FIELDS.get(kind)
    if known is None:
        return ["unknown document kind %r" % (kind,)]
    problems = []
    for name, value in body.items():
        if name not in known and name in SUB_OBJECTS:
            problems.extend(_sub_object_problems(name, value))
        elif name not in known:
            problems.append("%s: not listed in FIELDS[%r]" % (name, kind))
        elif not _has_type(name, value, known[name]):
            problems.append("%s: %r is not a %s" % (name, value, known[name]))
    return problems


def _sub_object_problems(name: str, value: Any) -> List[str]:
    if not isinstance(value, dict):
        return ["%s: %r is not an object" % (name, value)]
    known = SUB_OBJECTS[name]
    problems = []
    for inner, item in value.items():
        qualified = "%s.%s" % (name, inner)
        if inner not in known:
            problems.append("%s: not listed in SUB_OBJECTS[%r]" % (qualified, name))
        elif inner in SUB_OBJECT_ARRAYS:
            if not (isinstance(item, list) and all(isinstance(element, str) for element in item)):
                problems.append("%s: %r is not a list of keywords" % (qualified, item))
        elif item is None or not _PYTHON_CHECKS[known[inner]](item):
            problems.append("%s: %r is not a %s" % (qualified, item, known[inner]))
    return problems


def _has_type(name: str, value: Any, field_type: str) -> bool:
    if value is None:
        return name in NULLABLE
    if field_type == KEYWORD and name in KEYWORD_ARRAYS:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return _PYTHON_CHECKS[field_type](value)


def _is_iso_date(value: Any) -> bool:
    return isinstance(value, str) and TIMESTAMP.match(value) is not None


_PYTHON_CHECKS = {
    KEYWORD: lambda value: isinstance(value, str),
    TEXT: lambda value: isinstance(value, str),
    LONG: lambda value: isinstance(value, int) and not isinstance(value, bool) and LONG_MIN <= value <= LONG_MAX,
    FLOAT: lambda value: isinstance(value, float) and -FLOAT_MAX <= value <= FLOAT_MAX,
    BOOLEAN: lambda value: isinstance(value, bool),
    DATE: _is_iso_date,
}
