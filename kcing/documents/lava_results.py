"""The `results` of a LAVA callback: test suites, the boot outcome, and test case fields.

`results` maps a suite name (`lava`, `0_dmesg`, `1_bootrr`, ...) to the YAML text of a list of
test cases whose scalars are all strings (upstream.md §1.9.4).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from kcing.documents import yamlsafe
from kcing.documents.coerce import LONG_MAX, as_date, as_float, as_int, as_keyword, as_verdict, as_text
from kcing.documents.identity import iso_timestamp
from kcing.errors import RejectedInput

# The step that logs in once the kernel booted. Older jobs have `auto-login-action`, newer
# ones (and the meson sample) `login-action`; the original kcing only knew the first.
LOGIN_STEPS = ("auto-login-action", "login-action")
# LAVA job error types (the `job` step's `error_type`) that blame the lab rather than the kernel:
# its infrastructure, LAVA's own bugs, a job LAVA could not run as configured, an operator's
# cancellation, and the errors of LAVA's server itself (django-guardian's `ObjectNotPersisted`
# and "Unexisting permission codename.", raised while it records the job's objects). KernelCI's
# backend turned `Infrastructure` into UNKNOWN; the others are no more the kernel's fault (KCIDB
# counts them all as missed tests, the harness having failed, except `Canceled`, an error).
LAB_ERROR_TYPES = frozenset(("Infrastructure", "Configuration", "Bug", "Canceled", "ObjectNotPersisted",
                             "Unexisting permission codename."))
# Job statuses that say nothing about the kernel (KernelCI's backend: UNKNOWN).
CANCELED_STATUSES = frozenset(("canceled", "canceling"))
# Statuses of a job LAVA has finished with (or is finishing, canceling).
FINAL_STATUSES = CANCELED_STATUSES | {"complete", "incomplete"}
# `boot_failure` values: who failed when the boot did not pass.
KERNEL_FAILURE = "kernel"
INFRASTRUCTURE_FAILURE = "infrastructure"
# Boot document field <- key in the `bootloader-overlay` step's `metadata.extra` list.
BOOTLOADER_ADDRESSES = {"dtb_addr": "dtb_addr", "loadaddr": "kernel_addr", "initrd_addr": "ramdisk_addr"}
# Test definitions are numbered in the order the job runs them: `0_dmesg`, `1_bootrr`.
_SUITE_POSITION = re.compile(r"^[0-9]+_")

Case = Mapping[str, Any]


def read_suites(results: Any) -> Dict[str, List[Case]]:
    """Suite name -> list of test case mappings; no `results` at all means no suites."""
    if results is None:
        return {}
    if not isinstance(results, dict):
        raise RejectedInput("results is not an object of suite YAML texts")
    suites = {}
    for suite, text in results.items():
        if not isinstance(text, str):
            raise RejectedInput("results[%r] is not YAML text" % suite[:60])
        # Quoted, as every reason quotes an upstream name: its control characters escaped, so that
        # the reason stays one line on a terminal and in the ledger.
        cases = yamlsafe.load(text, "results[%r]" % suite[:60])
        if cases is None:
            cases = []
        if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
            raise RejectedInput("results[%r] is not a list of test cases" % suite[:60])
        suites[suite] = cases
    return suites


def boot_outcome(lava_suite: List[Case], job_status: Optional[str]) -> dict:
    """boot_result, boot_failure and boot_time of a job, plus the `job` step's error, if any.

    The verdict follows what KernelCI's backend reported for LAVA callbacks:

    - the lab failed (an error type in LAB_ERROR_TYPES) or the job was canceled: `unknown`,
      with `boot_failure: infrastructure`, whatever the login step says;
    - the job ended incomplete: `fail`. The login step passes as soon as a prompt shows, and a
      kernel that faults after it (the shell never answers, LAVA times out) leaves the job
      incomplete with a login step that passed: the login step alone is not to be trusted;
    - the job completed: the login step's result (`auto-login-action` or `login-action`), `pass`
      for a job without one (LAVA completes a job only when every action passed). When it
      logged in more than once, as a job LAVA retried after a failed boot (`failure_retry`), a
      login that passed counts: the board booted, as KernelCI's own callback handler reads it;
    - any other status (none, submitted, running): as `incomplete` when LAVA's `job` step failed
      (LAVA fails that step exactly when the job ends incomplete, and a login that passed is not
      to be trusted alone), else the login step's result, else `unknown`.

    `boot_failure` is `kernel` for every other `fail`. boot_time is the time of the login step
    that counts (the first that passed, else the first).
    """
    error = _job_error(lava_suite)
    login = _login_step(lava_suite)
    if job_status not in FINAL_STATUSES and _job_step_failed(lava_suite):
        job_status = "incomplete"
    login_result = as_verdict(login.get("result")) if login is not None else None
    if error["error_type"] in LAB_ERROR_TYPES or job_status in CANCELED_STATUSES:
        result, failure = "unknown", INFRASTRUCTURE_FAILURE
    else:
        if job_status == "incomplete":
            result = "fail"
        elif job_status == "complete":
            result = login_result or "pass"
        else:
            result = login_result or "unknown"
        failure = KERNEL_FAILURE if result == "fail" else None
    boot_time = _seconds(login) if login is not None else None
    return {"boot_result": result, "boot_failure": failure, "boot_time": boot_time, **error}


def bootloader_addresses(lava_suite: List[Case]) -> dict:
    """dtb_addr, loadaddr and initrd_addr from the `bootloader-overlay` step, as the backend took them.

    A job that booted more than once (a boot LAVA retried, several boot actions) has one such step
    per boot. The backend read every one in the order the suite lists them, each address it names
    replacing the one before: so does this. LAVA lists a suite's cases newest first, so an address
    comes from the earliest boot that names it."""
    extras = {}
    for case in lava_suite:
        if case.get("name") == "bootloader-overlay":
            listed = _metadata(case).get("extra")
            for extra in listed if isinstance(listed, list) else ():
                if isinstance(extra, dict):
                    extras.update(extra)
    return {field: as_keyword(extras.get(key)) for field, key in BOOTLOADER_ADDRESSES.items()}


def _login_step(lava_suite: List[Case]) -> Optional[Case]:
    """The login step that says whether the job booted: of a job that logged in more than once,
    the first (lowest LAVA case id) that passed, else the first."""
    steps = [(position, case) for position, case in enumerate(lava_suite) if case.get("name") in LOGIN_STEPS]
    if not steps:
        return None
    steps.sort(key=lambda step: _case_order(step[1], step[0]))
    passed = [case for _, case in steps if as_verdict(case.get("result")) == "pass"]
    return passed[0] if passed else steps[0][1]


def _case_order(case: Case, position: int) -> tuple:
    case_id = as_int(case.get("id"))
    return (case_id is None, case_id or 0, position)


def _seconds(step: Case) -> Optional[float]:
    # `measurement` is "None" when LAVA did not time the step; `metadata.duration` may still be there.
    seconds = as_float(step.get("measurement"))
    if seconds is None:
        seconds = as_float(_metadata(step).get("duration"))
    return seconds


def _job_step_failed(lava_suite: List[Case]) -> bool:
    return any(case.get("name") == "job" and as_verdict(case.get("result")) == "fail" for case in lava_suite)


def _job_error(lava_suite: List[Case]) -> dict:
    for case in lava_suite:
        if case.get("name") == "job":
            return case_error(case)
    return {"error_type": None, "error_msg": None}


def case_error(case: Case) -> dict:
    metadata = _metadata(case)
    return {"error_type": as_keyword(metadata.get("error_type")), "error_msg": as_text(metadata.get("error_msg"))}


def _metadata(case: Case) -> Mapping[str, Any]:
    metadata = case.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def case_fields(suite: str, case: Case) -> dict:
    """The fields of one test document (`url`, `job` and `metadata` are left out)."""
    logged = as_date(case.get("logged"))
    return {
        "suite": suite,
        "suite_name": _SUITE_POSITION.sub("", suite),
        "name": as_keyword(case.get("name")),
        "result": as_verdict(case.get("result")),
        "measurement": as_float(case.get("measurement")),
        "unit": as_keyword(case.get("unit")),
        "level": as_keyword(case.get("level")),
        "logged": iso_timestamp(logged) if logged is not None else None,
        "log_start_line": as_int(case.get("log_start_line")),
        "log_end_line": as_int(case.get("log_end_line")),
        "log_start_lineno": log_lineno(case.get("log_start_line")),
        "log_end_lineno": log_lineno(case.get("log_end_line")),
        "test_case_id": as_keyword(case.get("id")),
        # A suite such as v4l2-compliance or LTP repeats case names across its sets.
        "test_set": as_keyword(_metadata(case).get("set")),
        **case_error(case),
    }


def log_lineno(index: Any) -> Optional[int]:
    """A case's line in the job's log as the log documents number it (`lineno`, from 1). LAVA
    counts `log_start_line` and `log_end_line` from 0, an index into the callback's `log`: in
    the real files, that index is the line where the dispatcher received the case's result."""
    number = as_int(index)
    return number + 1 if number is not None and 0 <= number < LONG_MAX else None
