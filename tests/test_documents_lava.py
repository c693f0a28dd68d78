"""LAVA callbacks become one boot document, a test document per case and a log document per line.

The cases use the real stored callbacks in shared/data/upstream/legacy (see PROVENANCE.md there).
"""
import json
import os
import random
import time
import tracemalloc
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for, yamlsafe
from kcing.documents.fields import field_problems
from kcing.documents import lava_log
from kcing.documents.lava_log import parse_log, parse_log_marked
from kcing.errors import RejectedInput
from kcing.records import LAVA

LEGACY = Path(__file__).resolve().parents[2] / "shared" / "data" / "upstream" / "legacy"
MESON = "lava-json-meson-gxbb-p200.json"
JETSON = "lava-json-jetson-tk1.json"
RAW_QEMU = "lava-callback-raw-incomplete-qemu.json"
REAL_FILES = (MESON, JETSON, RAW_QEMU)
LISTED = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)  # far from every file's own dates


def real_bytes(name: str) -> bytes:
    path = LEGACY / name
    if not path.is_file():
        pytest.skip("real upstream file %s is absent (the shared/ folder sits beside the repository)" % path)
    return path.read_bytes()


def real_callback(name: str) -> dict:
    return json.loads(real_bytes(name))


def encode(callback: dict) -> bytes:
    return json.dumps(callback).encode("utf-8")


def documents(name: str, created=LISTED):
    return documents_for(LAVA, real_bytes(name), created)


def of_kind(docs, kind):
    return [doc for doc in docs if doc.kind == kind]


def boot_of(docs):
    (boot,) = of_kind(docs, "boot")
    return boot


# -- the boot outcome ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, step, seconds", [
    pytest.param(MESON, "login-action", 14.74, id="meson-login-action"),
    pytest.param(JETSON, "auto-login-action", 23.94, id="jetson-auto-login-action"),
    pytest.param(RAW_QEMU, "login-action", 2.05, id="raw-qemu-login-action"),
])
def test_boot_time_comes_from_the_login_step(name, step, seconds):
    docs = documents(name)
    assert boot_of(docs).body["boot_time"] == seconds
    (login,) = [doc.body for doc in of_kind(docs, "test") if doc.body["name"] == step]
    assert login["measurement"] == seconds and login["suite"] == "lava"


# The boot verdict of the real files, as KernelCI reported them: the raw QEMU job logged in, then
# the kernel faulted and the job ended incomplete; KernelCI's own tests assert FAIL for it.
@pytest.mark.parametrize("name, result, failure", [
    pytest.param(MESON, "pass", None, id="meson-complete"),
    pytest.param(JETSON, "pass", None, id="jetson-complete"),
    pytest.param(RAW_QEMU, "fail", "kernel", id="raw-qemu-kernel-fault-after-login"),
])
def test_the_boot_verdict_of_the_real_files(name, result, failure):
    for doc in documents(name):  # boot, test and log documents alike
        assert doc.body["boot_result"] == result
        assert doc.body.get("boot_failure") == failure


def lava_suite(login=None, login_step="login-action", error_type=None):
    """The `lava` suite YAML of a job: its `job` step, and a login step when `login` is a result."""
    steps = "- id: '1'\n  name: job\n  result: %s\n  metadata: {error_type: %s, error_msg: boom}\n" % (
        "fail" if error_type else "pass", error_type or "''")
    if login is not None:
        steps += "- {id: '2', name: %s, result: %s, measurement: '4.5000000000'}\n" % (login_step, login)
    return steps


def verdict(status, suite):
    """(boot_result, boot_failure) of the meson callback with its status and `lava` suite replaced."""
    callback = real_callback(MESON)
    callback["status"] = status
    callback["status_string"] = {2: "complete", 3: "incomplete", 4: "canceled"}[status]
    callback["results"] = dict(callback["results"], lava=suite)
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    return boot["boot_result"], boot.get("boot_failure")


VERDICTS = [
    # (job status, the job's lava suite, expected boot_result, expected boot_failure)
    pytest.param(2, lava_suite("pass"), "pass", None, id="login-pass-job-complete"),
    pytest.param(3, lava_suite("pass", error_type="Job"), "fail", "kernel", id="login-pass-kernel-fault"),
    pytest.param(3, lava_suite("pass", error_type="Test"), "fail", "kernel", id="login-pass-test-error"),
    pytest.param(3, lava_suite("fail", error_type="Job"), "fail", "kernel", id="login-fail"),
    pytest.param(2, lava_suite("fail"), "fail", "kernel", id="login-fail-job-complete"),
    pytest.param(3, lava_suite(None, error_type="Job"), "fail", "kernel", id="no-login-step-job-error"),
    pytest.param(3, lava_suite(None, error_type="LAVATimeout"), "fail", "kernel", id="no-login-step-timeout"),
    pytest.param(2, lava_suite(None), "pass", None, id="no-login-step-job-complete"),
    # A login step that says neither pass nor fail blames nobody: no boot_failure.
    pytest.param(2, lava_suite("skip"), "skip", None, id="login-skip-job-complete"),
    pytest.param(2, lava_suite("unknown"), "unknown", None, id="login-unknown-job-complete"),
    pytest.param(3, lava_suite("pass", error_type="Infrastructure"), "unknown", "infrastructure",
                 id="infrastructure-error-after-login"),
    pytest.param(3, lava_suite("fail", error_type="Infrastructure"), "unknown", "infrastructure",
                 id="infrastructure-error-login-fail"),
    pytest.param(3, lava_suite(None, error_type="Infrastructure"), "unknown", "infrastructure",
                 id="infrastructure-error-no-login-step"),
    pytest.param(3, lava_suite(None, error_type="Bug"), "unknown", "infrastructure", id="lava-bug"),
    pytest.param(3, lava_suite(None, error_type="Configuration"), "unknown", "infrastructure",
                 id="configuration-error"),
    pytest.param(4, lava_suite("pass", error_type="Canceled"), "unknown", "infrastructure", id="canceled"),
]


@pytest.mark.parametrize("login_step", ["login-action", "auto-login-action"])
@pytest.mark.parametrize("status, suite, result, failure", VERDICTS)
def test_the_boot_verdict_is_the_same_for_both_login_step_names(status, suite, result, failure, login_step):
    assert verdict(status, suite.replace("login-action", login_step)) == (result, failure)


@pytest.mark.parametrize("error_type", ["ObjectNotPersisted", "Unexisting permission codename."])
def test_an_error_of_the_lava_server_is_the_lab_s_failure_not_the_kernel_s(error_type):
    # Errors LAVA's server raises (django-guardian's, when it records a job's objects and their
    # permissions): the lab failed, whatever the login step said; KCIDB counts them as missed.
    for login in ("pass", "fail", None):
        suite = lava_suite(login, error_type="'%s'" % error_type)
        assert verdict(3, suite) == ("unknown", "infrastructure")


def test_a_job_without_status_takes_the_login_step_else_unknown():
    callback = real_callback(MESON)
    del callback["status"], callback["status_string"]
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert boot["boot_result"] == "pass"
    callback["results"] = {"lava": lava_suite(None)}
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["boot_result"], boot.get("boot_failure")) == ("unknown", None)



# KernelCI read the job's outcome from the number `status` (kernelci-backend's LAVA_JOB_RESULT,
# kernelci-core's Callback.get_job_status); `status_string` is its text, read only without it.
@pytest.mark.parametrize("status, status_string, expected", [
    pytest.param(3, "complete", ("incomplete", "fail", "kernel"), id="number-incomplete-text-complete"),
    pytest.param(2, "incomplete", ("complete", "pass", None), id="number-complete-text-incomplete"),
    pytest.param(4, "complete", ("canceled", "unknown", "infrastructure"), id="number-canceled"),
    pytest.param("3", "complete", ("incomplete", "fail", "kernel"), id="number-as-text"),
    pytest.param(None, "Incomplete", ("incomplete", "fail", "kernel"), id="text-only"),
    pytest.param(99, "incomplete", ("incomplete", "fail", "kernel"), id="unknown-number-text-used"),
])
def test_the_job_status_number_is_what_kernelci_read(status, status_string, expected):
    callback = real_callback(RAW_QEMU)
    callback["status"], callback["status_string"] = status, status_string
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["job_status"], boot["boot_result"], boot.get("boot_failure")) == expected


@pytest.mark.parametrize("health_string, expected", [
    ("Incomplete", ("incomplete", "fail", "kernel")), ("Complete", ("complete", "pass", None)),
    ("Canceled", ("canceled", "unknown", "infrastructure")),
])
def test_a_newer_lava_callback_without_status_is_read_by_its_health(health_string, expected):
    callback = real_callback(RAW_QEMU)
    del callback["status"], callback["status_string"]
    callback["health_string"] = health_string
    callback["results"] = dict(callback["results"], lava=lava_suite("pass", error_type=(
        "Job" if health_string == "Incomplete" else None)))
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["job_status"], boot["boot_result"], boot.get("boot_failure")) == expected


@pytest.mark.parametrize("error_type, expected", [
    ("Job", ("fail", "kernel")), ("LAVATimeout", ("fail", "kernel")),
    ("Infrastructure", ("unknown", "infrastructure")),
])
def test_without_any_status_a_failed_job_step_outweighs_a_login_that_passed(error_type, expected):
    # The raw QEMU job logged in, then its kernel faulted: LAVA's `job` step failed. The login
    # step alone is not trusted (kernelci-backend, 2020-10: it passes even when the kernel panics).
    callback = real_callback(RAW_QEMU)
    for key in ("status", "status_string", "health", "health_string", "state", "state_string"):
        callback.pop(key, None)
    if error_type != "Job":
        callback["results"] = dict(callback["results"], lava=lava_suite("pass", error_type=error_type))
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert boot.get("job_status") is None
    assert (boot["boot_result"], boot.get("boot_failure")) == expected
def test_without_any_status_a_boot_retried_until_it_passed_is_a_pass():
    # Only LAVA's `job` step says the job gave up: a login that failed once and passed on
    # LAVA's retry (failure_retry) leaves the job step passed and the board booted.
    callback = real_callback(RAW_QEMU)
    for key in ("status", "status_string", "health", "health_string", "state", "state_string"):
        callback.pop(key, None)
    suite = lava_suite("fail") + "- {id: '3', name: login-action, result: pass, measurement: '6.0'}\n"
    callback["results"] = dict(callback["results"], lava=suite)
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["boot_result"], boot.get("boot_failure"), boot["boot_time"]) == ("pass", None, 6.0)


def test_test_case_results_are_lower_case_and_an_empty_suite_has_no_cases():
    callback = real_callback(MESON)
    callback["results"] = {"lava": lava_suite("pass"), "1_bootrr": "- {id: '9', name: probe, result: PASS}\n",
                           "2_empty": ""}
    tests = of_kind(documents_for(LAVA, encode(callback), LISTED), "test")
    assert {(doc.body["suite"], doc.body["name"], doc.body["result"]) for doc in tests} >= {("1_bootrr", "probe", "pass")}
    assert not [doc for doc in tests if doc.body["suite"] == "2_empty"]


def test_the_raw_incomplete_callback_carries_the_job_error():
    boot = boot_of(documents(RAW_QEMU)).body
    assert boot["job_status"] == "incomplete"
    assert boot["error_type"] == "Job"
    assert boot["error_msg"] == "expect-shell-connection timed out after 297 seconds"
    # The raw body has no lab_name; the callback URL it was sent to names the lab.
    assert boot["lab_name"] == "mgalka-lava-local"
    assert (boot["board"], boot["device_type"], boot["board_instance"]) == ("qemu_arm-virt-gicv3", "qemu", "qemu01")
    assert "dtb" not in boot  # platform.dtb is the string "None"


def test_a_stored_callback_names_its_lab_and_build():
    boot = boot_of(documents(MESON)).body
    assert boot["lab_name"] == "lab-baylibre"
    assert boot["file_server_resource"] == "next/master/next-20201119/arm64/defconfig/gcc-8"
    assert (boot["job"], boot["kernel"], boot["git_branch"]) == ("next", "next-20201119", "master")
    assert boot["arch"] == "arm64"
    assert (boot["defconfig"], boot["defconfig_full"], boot["build_environment"]) == ("defconfig", "defconfig", "gcc-8")
    assert (boot["plan"], boot["lava_job_id"], boot["job_status"]) == ("baseline", 370874, "complete")
    assert "platform_name" not in boot  # dropped from job metadata in 2020-09
    assert "error_type" not in boot
    # From the bootloader-overlay step, as the backend took them.
    assert (boot["dtb_addr"], boot["loadaddr"], boot["initrd_addr"]) == ("0x1000000", "0x1080000", "0x13000000")


@pytest.mark.parametrize("priority, expected", [(50, 50), ("75", 75), (None, None), ("absent", None), ("high", None)])
def test_the_boot_document_keeps_the_job_s_priority_as_the_original_boot_index_did(priority, expected):
    # upstream.md §1.9.2: an int (50 in every real file); §1.8: the original boot index had it.
    assert boot_of(documents(MESON)).body["priority"] == 50
    callback = real_callback(RAW_QEMU)
    if priority == "absent":
        del callback["priority"]
    else:
        callback["priority"] = priority
    docs = documents_for(LAVA, encode(callback), LISTED)
    assert boot_of(docs).body.get("priority") == expected
    assert all("priority" not in doc.body for doc in docs if doc.kind != "boot")
    assert field_problems("boot", boot_of(docs).body) == []


@pytest.mark.parametrize("steps, expected", [
    pytest.param([("20", "fail", "30"), ("10", "pass", "9.5")], ("pass", 9.5), id="the first passed, a later failed"),
    # LAVA retried the boot (failure_retry) and the second attempt logged in: the job completed.
    pytest.param([("10", "fail", "120"), ("20", "pass", "11.5")], ("pass", 11.5), id="retried after a failed login"),
    pytest.param([("10", "pass", "9"), ("20", "pass", "8")], ("pass", 9.0), id="booted twice"),
    pytest.param([("20", "fail", "30"), ("10", "fail", "40")], ("fail", 40.0), id="every login failed"),
])
def test_of_a_complete_job_that_logged_in_more_than_once_a_passed_login_counts(steps, expected):
    callback = real_callback(MESON)
    callback["results"] = {"lava": "".join(
        "- {id: '%s', name: login-action, result: %s, measurement: '%s'}\n" % step for step in steps)}
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert boot["job_status"] == "complete"
    assert (boot["boot_result"], boot["boot_time"]) == expected
    assert boot.get("boot_failure") == ("kernel" if expected[0] == "fail" else None)


def test_cases_of_the_same_name_in_two_test_sets_are_told_apart():
    callback = real_callback(MESON)
    cases = [{"id": str(9000000 + number), "name": "VIDIOC_EXPBUF", "result": result, "suite": "2_v4l2",
              "metadata": {"case": "VIDIOC_EXPBUF", "result": result, "set": test_set}}
             for number, (result, test_set) in enumerate((("pass", "Input-0"), ("fail", "Input-1")))]
    callback["results"] = {**callback["results"], "2_v4l2": json.dumps(cases)}  # JSON is YAML
    tests = [doc for doc in documents_for(LAVA, encode(callback), LISTED) if doc.kind == "test" and doc.body["suite"] == "2_v4l2"]
    assert sorted((doc.body["test_set"], doc.body["result"]) for doc in tests) == [("Input-0", "pass"), ("Input-1", "fail")]
    assert len({doc.doc_id for doc in tests}) == 2
    others = [doc for doc in documents_for(LAVA, encode(real_callback(MESON)), LISTED) if doc.kind == "test"]
    assert others and all("test_set" not in doc.body for doc in others)  # the real file has no sets


def test_an_untimed_login_step_falls_back_to_its_duration():
    callback = real_callback(MESON)
    callback["results"] = {"lava": "- {id: '1', name: login-action, result: PASS, measurement: None,"
                                   " metadata: {duration: '12.5'}}\n"}
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["boot_result"], boot["boot_time"]) == ("pass", 12.5)


# -- test and log documents ---------------------------------------------------------------------

@pytest.mark.parametrize("name, cases, lines", [
    pytest.param(MESON, 23, 1009, id="meson"),
    pytest.param(JETSON, 25, 1394, id="jetson"),
    pytest.param(RAW_QEMU, 16, 540, id="raw-qemu"),
])
def test_one_test_document_per_case_and_one_log_document_per_line(name, cases, lines):
    callback = real_callback(name)
    counted_cases = sum(len(yamlsafe.load(text, suite)) for suite, text in callback["results"].items())
    counted_lines = len(callback["log"].splitlines())
    assert (counted_cases, counted_lines) == (cases, lines)
    kinds = Counter(doc.kind for doc in documents(name))
    assert kinds == {"boot": 1, "test": cases, "log": lines}


def test_test_documents_keep_what_a_user_filters_on():
    tests = {(doc.body["suite"], doc.body["name"]): doc for doc in of_kind(documents(MESON), "test")}
    emerg = tests[("0_dmesg", "emerg")]
    assert emerg.body["suite_name"] == "dmesg"
    assert (emerg.body["result"], emerg.body["measurement"], emerg.body["unit"]) == ("fail", 2.0, "lines")
    assert (emerg.body["log_start_line"], emerg.body["log_end_line"]) == (930, 930)  # LAVA's, from 0
    assert (emerg.body["log_start_lineno"], emerg.body["log_end_lineno"]) == (931, 931)  # the log's lineno
    assert emerg.body["test_case_id"] == "7782929"
    assert emerg.body["logged"] == emerg.timestamp == "2020-11-19T07:06:12.073Z"
    assert emerg.body["job"] == "next" and emerg.body["lava_job_id"] == 370874
    assert not {"url", "metadata", "id"} & set(emerg.body)
    job = tests[("lava", "job")]
    assert job.body["measurement"] is None and job.body["log_start_line"] is None
    assert job.body["log_start_lineno"] is None and job.body["log_end_lineno"] is None
    assert "level" not in job.body and "unit" not in job.body  # empty strings upstream


def test_measurement_zero_written_as_0e_minus_10_is_zero():
    (overlay,) = [doc.body for doc in of_kind(documents(JETSON), "test") if doc.body["name"] == "bootloader-overlay"]
    assert overlay["measurement"] == 0.0


@pytest.mark.parametrize("name", (MESON, JETSON))
def test_a_test_cases_log_linenos_are_those_of_the_log_line_that_recorded_it(name):
    # LAVA counts a case's log_start_line and log_end_line from 0, an index into the callback's
    # `log`; log documents count lineno from 1. In the real files the line LAVA names is, for every
    # case, the one where the dispatcher received that case's result.
    docs = documents(name)
    logs = {doc.body["lineno"]: doc.body.get("message") for doc in of_kind(docs, "log")}
    cases = [doc.body for doc in of_kind(docs, "test") if doc.body["log_start_line"] is not None]
    assert len(cases) >= 4
    for case in cases:
        received = "Received signal: <TESTCASE> TEST_CASE_ID=%s " % case["name"]
        assert (case["log_start_lineno"], case["log_end_lineno"]) == (case["log_start_line"] + 1,
                                                                      case["log_end_line"] + 1)
        assert logs[case["log_start_lineno"]].startswith(received), (case["name"], case["log_start_lineno"])
        assert logs[case["log_end_lineno"]].startswith(received), (case["name"], case["log_end_lineno"])


@pytest.mark.parametrize("name", (MESON, JETSON))
def test_test_case_log_lines_fall_within_the_log(name):
    docs = documents(name)
    line_count = len(of_kind(docs, "log"))
    cases = [doc.body for doc in of_kind(docs, "test") if doc.body["log_start_line"] is not None]
    assert cases and all(0 <= case["log_start_line"] <= case["log_end_line"] < line_count for case in cases)
    assert all(1 <= case["log_start_lineno"] <= case["log_end_lineno"] <= line_count for case in cases)


def test_log_documents_number_lines_from_one_and_take_their_time():
    logs = of_kind(documents(MESON), "log")
    assert [doc.body["lineno"] for doc in logs] == list(range(1, len(logs) + 1))
    first = logs[0]
    assert first.timestamp == "2020-11-19T07:03:25.393Z"
    assert (first.body["level"], first.body["message"]) == ("info", "lava-dispatcher, installed at version: 2020.07")
    assert all(isinstance(doc.body["message"], str) for doc in logs)


def test_lines_with_decimal_tags_parse_to_their_argument():
    text = real_callback(MESON)["log"]
    tagged = [number for number, line in enumerate(text.splitlines(), 1) if "decimal.Decimal" in line]
    assert len(tagged) == 3
    logs = {doc.body["lineno"]: doc.body for doc in of_kind(documents(MESON), "log")}
    messages = [json.loads(logs[number]["message"]) for number in tagged]
    assert [(message["case"], message["measurement"]) for message in messages] == [
        ("crit", "0"), ("alert", "0"), ("emerg", "2")]


# -- identity, index and dates ------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL_FILES)
def test_ids_are_stable_across_calls_and_distinct_within_a_job(name):
    first, second = documents(name), documents(name, created=None)
    assert [doc.doc_id for doc in first] == [doc.doc_id for doc in second]
    assert len({doc.doc_id for doc in first}) == len(first)


def test_ids_follow_the_job_not_the_position_of_other_cases():
    callback = real_callback(MESON)
    before = {doc.body["test_case_id"]: doc.doc_id for doc in of_kind(documents_for(LAVA, encode(callback)), "test")}
    callback["results"] = dict(reversed(list(callback["results"].items())))
    after = {doc.body["test_case_id"]: doc.doc_id for doc in of_kind(documents_for(LAVA, encode(callback)), "test")}
    assert before == after
    callback["id"] = 370875
    rerun = {doc.body["test_case_id"]: doc.doc_id for doc in of_kind(documents_for(LAVA, encode(callback)), "test")}
    assert not set(rerun.values()) & set(before.values())


def test_a_case_id_repeated_in_a_suite_makes_two_test_documents_not_one_overwriting_the_other():
    """A case's id is its suite's LAVA case id; a file that repeats one (a case written twice, a
    file edited by hand) still has two cases, and neither document may replace the other."""
    callback = real_callback(MESON)
    cases = yamlsafe.load(callback["results"]["0_dmesg"], "0_dmesg")
    twin = dict(cases[0], name="emerg-again", result="pass")
    callback["results"]["0_dmesg"] = json.dumps(cases + [twin])  # JSON is YAML
    tests = [doc for doc in of_kind(documents_for(LAVA, encode(callback)), "test") if doc.body["suite"] == "0_dmesg"]
    assert len(tests) == len(cases) + 1
    assert len({doc.doc_id for doc in tests}) == len(tests)
    assert {doc.body["name"] for doc in tests if doc.body["test_case_id"] == cases[0]["id"]} == {
        cases[0]["name"], "emerg-again"}


@pytest.mark.parametrize("name, day", [
    pytest.param(MESON, "2020.11.19", id="meson"),
    pytest.param(JETSON, "2020.11.04", id="jetson"),
    pytest.param(RAW_QEMU, "2020.10.23", id="raw-qemu"),
])
def test_every_index_is_dated_by_the_job_not_by_the_listing_or_today(name, day):
    docs = documents(name)
    assert {doc.index for doc in docs} == {"%s-%s" % (kind, day) for kind in ("boot", "test", "log")}
    assert boot_of(docs).timestamp.startswith(day.replace(".", "-"))


@pytest.mark.parametrize("removed, expected_index", [
    pytest.param(("end_time",), "boot-2020.11.19", id="start-time"),
    pytest.param(("end_time", "start_time", "submit_time"), "boot-2030.01.02", id="listing-date"),
])
def test_a_job_without_its_own_dates_falls_back(removed, expected_index):
    callback = real_callback(MESON)
    for key in removed:
        callback[key] = "not a date"
    assert boot_of(documents_for(LAVA, encode(callback), LISTED)).index == expected_index


@pytest.mark.parametrize("end_time", ["2020-11", "2020", "2020-100"], ids=["year-and-month", "year", "ordinal"])
def test_an_end_time_that_is_no_whole_date_and_time_is_no_date_as_in_every_upstream_time(end_time):
    """python-dateutil, which read the times Python's fromisoformat does not, filled a month or a
    year with its first day: "2020" dated a job 1 January, where a listing's `created_on` or a
    node's `updated` so written was no date. The job is dated by its start time instead."""
    callback = real_callback(MESON)
    callback["end_time"] = end_time
    assert boot_of(documents_for(LAVA, encode(callback), LISTED)).index == "boot-2020.11.19"


def test_a_job_that_ran_past_midnight_is_dated_by_its_end():
    callback = real_callback(MESON)
    callback["submit_time"] = callback["start_time"] = "2020-11-18T23:55:00.000000Z"
    callback["end_time"] = "2020-11-19T00:05:00.000000Z"
    assert boot_of(documents_for(LAVA, encode(callback), LISTED)).index == "boot-2020.11.19"


def test_no_date_at_all_is_refused():
    callback = real_callback(MESON)
    for key in ("end_time", "start_time", "submit_time"):
        del callback[key]
    with pytest.raises(RejectedInput, match="no date"):
        documents_for(LAVA, encode(callback), None)


# -- other shapes -------------------------------------------------------------------------------

def test_a_2019_definition_names_defconfigs_the_old_way():
    callback = real_callback(MESON)
    callback["definition"] = callback["definition"].replace(
        "kernel.defconfig: defconfig, kernel.defconfig_full: defconfig",
        "kernel.defconfig: defconfig+CONFIG_RANDOMIZE_BASE=y, kernel.defconfig_base: defconfig, "
        "platform.name: meson-gxbb-p200")
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["defconfig"], boot["defconfig_full"]) == ("defconfig", "defconfig+CONFIG_RANDOMIZE_BASE=y")
    assert boot["platform_name"] == "meson-gxbb-p200"


def test_a_2019_definition_without_a_base_defconfig_takes_it_from_the_full_name():
    callback = real_callback(MESON)
    callback["definition"] = callback["definition"].replace(
        "kernel.defconfig: defconfig, kernel.defconfig_full: defconfig",
        "kernel.defconfig: defconfig+CONFIG_RANDOMIZE_BASE=y")
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["defconfig"], boot["defconfig_full"]) == ("defconfig", "defconfig+CONFIG_RANDOMIZE_BASE=y")


def test_a_definition_without_device_type_metadata_names_the_board_by_its_device_type():
    callback = real_callback(MESON)
    callback["definition"] = callback["definition"].replace("metadata: {device.type: meson-gxbb-p200, ", "metadata: {")
    assert "device.type" not in callback["definition"]
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert boot["board"] == "meson-gxbb-p200"


@pytest.mark.parametrize("status, health_string, health, expected", [
    pytest.param(5, None, None, "canceling", id="canceling"),
    pytest.param(None, "Unknown", 0, None, id="health-unknown"),
])
def test_the_job_status_keeps_lavas_own_word(status, health_string, health, expected):
    callback = real_callback(RAW_QEMU)
    del callback["status_string"]
    callback["status"], callback["health_string"], callback["health"] = status, health_string, health
    assert boot_of(documents_for(LAVA, encode(callback), LISTED)).body.get("job_status") == expected


def test_a_minimal_dataset_callback_makes_one_boot_document():
    callback = real_callback(RAW_QEMU)
    del callback["results"], callback["log"]
    docs = documents_for(LAVA, encode(callback), LISTED)
    assert [doc.kind for doc in docs] == ["boot"]
    assert docs[0].body["boot_result"] == "fail"  # incomplete, error on the kernel side


def without(key):
    def change(callback):
        del callback[key]
    return change


def setting(key, value):
    def change(callback):
        callback[key] = value
    return change


def metadata_without(key):
    def change(callback):
        callback["definition"] = "\n".join(
            line for line in callback["definition"].replace(", ", ",\n  ").splitlines() if key + ":" not in line)
    return change


@pytest.mark.parametrize("change, reason", [
    pytest.param(without("id"), "no integer job id", id="no-job-id"),
    pytest.param(setting("id", "three"), "no integer job id: 'three'$", id="job-id-not-a-number"),
    pytest.param(setting("id", True), "no integer job id: True$", id="job-id-boolean"),
    pytest.param(setting("id", 2 ** 70), "job id 1180591620717411303424 is beyond a 64-bit integer$",
                 id="job-id-beyond-a-long"),
    pytest.param(setting("id", "-%d" % 2 ** 64), "job id '-18446744073709551616' is beyond a 64-bit integer$",
                 id="job-id-text-beyond-a-long"),
    pytest.param(setting("id", 370874.5), "no integer job id: 370874.5$", id="job-id-a-fraction"),
    pytest.param(setting("id", "--5"), "no integer job id: '--5'$", id="job-id-two-signs"),
    pytest.param(setting("id", "+-%d" % 2 ** 64), "no integer job id: '\\+-18446744073709551616'$",
                 id="job-id-two-signs-beyond-a-long"),
    pytest.param(setting("id", "\t%d " % 2 ** 64), "job id '\\\\t18446744073709551616 ' is beyond a 64-bit integer$",
                 id="job-id-text-with-spaces-beyond-a-long"),
    pytest.param(setting("id", "-"), "no integer job id: '-'$", id="job-id-a-sign-alone"),
    pytest.param(setting("id", "%dx" % 2 ** 64), "no integer job id: '18446744073709551616x'$",
                 id="job-id-digits-then-text"),
    pytest.param(setting("id", "9" * 5000), r"job id '9+\.\.\. is beyond a 64-bit integer$",
                 id="job-id-thousands-of-digits"),
    pytest.param(without("definition"), "no definition text", id="no-definition"),
    pytest.param(setting("definition", "metadata: [unclosed"), "definition is not valid YAML", id="definition-not-yaml"),
    pytest.param(setting("definition", "device_type: x\n"), "no metadata mapping", id="definition-without-metadata"),
    pytest.param(metadata_without("kernel.tree"), "lacks job", id="metadata-without-tree"),
    pytest.param(setting("results", ["lava"]), "results is not an object", id="results-a-list"),
    pytest.param(setting("results", {"lava": 7}), "is not YAML text", id="suite-not-text"),
    pytest.param(setting("results", {"lava": "{a: b}"}), "not a list of test cases", id="suite-not-a-list"),
    pytest.param(setting("results", {"lava": "- [1, 2]"}), "not a list of test cases", id="case-not-a-mapping"),
    pytest.param(setting("log", {"a": 1}), "log is not YAML text", id="log-not-text"),
    pytest.param(setting("log", '- {"dt": "x"\n- ]'), "log is not valid YAML", id="log-not-yaml"),
    pytest.param(setting("log", "a: b\n"), "log is not a YAML list", id="log-not-a-list"),
    pytest.param(setting("log", "- " * 5000 + "x\n"), "nests deeper", id="log-nested-too-deep"),
])
def test_malformed_callbacks_are_refused_with_a_reason(change, reason):
    callback = real_callback(MESON)
    change(callback)
    with pytest.raises(RejectedInput, match=reason):
        documents_for(LAVA, encode(callback), LISTED)


@pytest.mark.parametrize("suite", ["smoke\x1b[2K\rfake: delivered", "a\u2028b", "nul\x00", "\x85"])
@pytest.mark.parametrize("text", ["- id: 1\n  name: \x01\n", "- [unclosed"])
def test_a_suite_whose_results_are_no_yaml_is_named_quoted_on_one_printable_line(suite, text):
    """The name is the file's: its control characters and line breaks, raw in a reason, would
    move the cursor on a terminal or split the line the ledger and the log hold."""
    callback = real_callback(MESON)
    callback["results"] = {suite: text}
    with pytest.raises(RejectedInput) as refused:
        documents_for(LAVA, encode(callback), LISTED)
    assert str(refused.value).startswith("results[%r] is not valid YAML: " % suite)
    assert str(refused.value).isprintable()
    # The parser's reason spans lines ("while parsing ...\n  in ..."): they are joined by spaces.
    assert "\\n" not in str(refused.value)[len("results[%r]" % suite):]


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_field_is_declared_with_its_type(name):
    problems = [(doc.kind, problem) for doc in documents(name) for problem in field_problems(doc.kind, doc.body)]
    assert problems == []


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_document_carries_the_job_fields(name):
    docs = documents(name)
    shared = ("job", "kernel", "arch", "board", "lab_name", "lava_job_id", "boot_result", "boot_time", "plan")
    expected = {key: boot_of(docs).body[key] for key in shared}
    for doc in docs:
        assert {key: doc.body[key] for key in shared} == expected


# -- the log fast path gives what the YAML loader gives -----------------------------------------

@pytest.mark.parametrize("name", REAL_FILES)
def test_log_fast_path_equals_the_safe_yaml_loader_on_real_logs(name):
    text = real_callback(name)["log"]
    assert parse_log(text) == yamlsafe.load(text, "log")


TRICKY_LOGS = {
    "json": '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "hello"}\n',
    "floats-yaml-reads-as-text": '- {"msg": [1e5, 1.5e3, 1.5E+3, -0.5, 2.0e-3, 10]}\n',
    "nan-and-infinity": '- {"msg": [NaN, Infinity, -Infinity]}\n',
    "escaped-slash-and-controls": '- {"msg": "a\\/b \\b\\f\\n\\r\\t \\u0000 \\u001b"}\n',
    "escaped-surrogate-pair": '- {"msg": "\\ud83d\\ude00"}\n',
    "escaped-low-surrogate": '- {"msg": "a\\udc00b"}\n',
    "escaped-low-surrogate-upper-case": '- {"msg": "a\\uDFFFb"}\n',
    "raw-non-ascii": '- {"msg": "caf\u00e9 \u2013 \U0001f600"}\n',
    "raw-line-separator": '- {"msg": "a\u2028b"}\n',
    "raw-next-line": '- {"msg": "a\u0085b"}\n',
    "raw-tab": '- {"msg": "a\tb"}\n',
    "raw-delete": '- {"msg": "a\x7fb"}\n',
    "raw-delete-in-a-usual-line": '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "a\x7fb"}\n',
    "crlf": '- {"msg": "a"}\r\n- {"msg": "b"}\r\n',
    "yaml-escapes": '- {"msg": "\\0\\x03\\e"}\n',
    "decimal-tag": '- {"msg": {"measurement": !!python/object/apply:decimal.Decimal ["2"]}}\n',
    "non-specific-tag": '- {"msg": {"size": ! "4984326"}}\n',
    "plain-yaml-item": "- {dt: 2020-11-19T07:03:25.393174, lvl: info, msg: plain words}\n",
    "alias-across-lines": '- &shared {"msg": "x"}\n- *shared\n',
    "same-anchor-on-two-lines": '- &a {"msg": "x"}\n- &a {"msg": "y"}\n',
    "same-anchor-on-a-repeated-line": '- &a x\n- &a x\n',
    "multi-line-item": '- {"msg": "a",\n   "lvl": "info"}\n',
    # A block text that keeps its trailing line breaks (`+`) holds the blank lines after it.
    "literal-text-keeping-blank-lines": '- |+\n\n- {"msg": "a"}\n',
    "folded-text-keeping-blank-lines-at-the-end": '- >2+\n\n\n',
    # A block text whose lines are within one line of the log (YAML also breaks lines at CR, NEL,
    # U+2028 and U+2029) ends with that line's own line break.
    "literal-text-within-a-line": '- |\r  a\n- {"msg": "b"}\n',
    "folded-text-within-a-line": '- {"msg": "a"}\n- k: >\x85    b\u2028    c\n',
    "comment-line": '# a comment\n- {"msg": "a"}\n',
    "blank-lines": '\n- {"msg": "a"}\n\n\n- {"msg": "b"}',
    "scalars-and-lists": '- "text"\n- 5\n- true\n- null\n- [1, {"a": []}]\n- {}\n',
    "duplicate-keys": '- {"msg": "a", "msg": "b"}\n',
    "huge-integer": '- {"msg": %s}\n' % ("9" * 5000),
    "deep-json": '- {"msg": %s}\n' % ("[" * 150 + "]" * 150),
    "depth-at-the-limit": '- %s\n' % ("[" * 99 + "]" * 99),
    "depth-over-the-limit": '- %s\n' % ("[" * 100 + "]" * 100),
    # Each line alone stays under the loader's alias expansion limit; all 30 together do not.
    "aliases-on-many-lines": "".join(
        "- [&a{n} [x,x,x,x,x,x,x,x,x,x], &b{n} [{a}], &c{n} [{b}], [{c}]]\n".format(
            n=n, a=",".join(["*a%d" % n] * 10), b=",".join(["*b%d" % n] * 10), c=",".join(["*c%d" % n] * 6))
        for n in range(30)),
    "empty": "",
    "long-key": '- {"msg": {"%s": 1}}\n' % ("k" * 1100),
    "key-just-over-the-limit": '- {"%s": 1}\n' % ("k" * 1023),  # 1025 characters to its ":", a line of 1032
    "long-escaped-key": '- {"msg": {"%s": 1}}\n' % ("\\u00e9" * 200),
    "long-line-short-keys": '- {"msg": {"k": "%s", "j": [{"i": 1}]}}\n' % ("v" * 3000),
    "long-line-spaced-colon": '- {"msg"%s: "%s"}\n' % (" " * 1100, "v" * 10),
    # The Decimal tag of measurements, read by JSON once replaced by its quoted text, and lines
    # where that replacement would read differently from the YAML loader.
    "decimal-tags": '- {"measurement": !!python/object/apply:decimal.Decimal ["0E-10"], "units": "lines", '
                    '"n": !!python/object/apply:decimal.Decimal ["2.50"]}\n',
    "decimal-tag-in-a-text": '- [{"m": !!python/object/apply:decimal.Decimal ["2"]}, "a", '
                             '": !!python/object/apply:decimal.Decimal [", 1, "]"]\n',
    "decimal-tag-in-a-text-after-an-escaped-quote": '- [{"m": !!python/object/apply:decimal.Decimal ["2"]}, "\\"", '
                                                    '": !!python/object/apply:decimal.Decimal [", 1, "]"]\n',
    "decimal-tag-and-backslash": '- {"m": !!python/object/apply:decimal.Decimal ["2"], "t": "\\""}\n',
    "decimal-tag-two-arguments": '- {"m": !!python/object/apply:decimal.Decimal ["2", "3"]}\n',
    "decimal-tag-unquoted": '- {"m": !!python/object/apply:decimal.Decimal [2.5]}\n',
    "decimal-tag-empty": '- {"m": !!python/object/apply:decimal.Decimal [""]}\n',
    "decimal-tag-without-space": '- {"m":!!python/object/apply:decimal.Decimal ["2"]}\n',
    "decimal-tag-key": '- {!!python/object/apply:decimal.Decimal ["2"]: "v"}\n',
    "decimal-tag-tab": '- {"m": !!python/object/apply:decimal.Decimal ["2\t"]}\n',
    # The tag's own list is a level of nesting to the loader, gone once the tag is replaced.
    "decimal-tag-at-the-depth-limit": '- %s{"m": !!python/object/apply:decimal.Decimal ["2"]}%s\n' % ("[" * 97, "]" * 97),
    "decimal-tag-over-the-depth-limit": '- %s{"m": !!python/object/apply:decimal.Decimal ["2"]}%s\n' % ("[" * 98, "]" * 98),
    "decimal-tag-then-float": '- {"m": !!python/object/apply:decimal.Decimal ["2"], "f": 1e5}\n',
}


@pytest.mark.parametrize("text", TRICKY_LOGS.values(), ids=TRICKY_LOGS.keys())
def test_log_fast_path_equals_the_safe_yaml_loader_on_tricky_lines(text):
    assert outcome(parse_log, text) == outcome(lambda whole: yamlsafe.load(whole, "log") or [], text)


USUAL_LINES = ['- {"dt": "2020-11-19T07:03:%02d.393174", "lvl": "info", "msg": "line %d"}' % (n, n) for n in range(4)]


@pytest.mark.parametrize("text", TRICKY_LOGS.values(), ids=TRICKY_LOGS.keys())
def test_a_tricky_line_among_usual_ones_reads_as_the_yaml_loader_reads_it(text):
    # Usual lines around it: a log read at once must set the tricky line apart or give up.
    mixed = "\n".join(USUAL_LINES[:2]) + "\n" + text + ("\n" if text and not text.endswith("\n") else "") \
        + "\n".join(USUAL_LINES[2:]) + "\n"
    assert outcome(parse_log, mixed) == outcome(lambda whole: yamlsafe.load(whole, "log") or [], mixed)


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_logs_are_read_line_by_line_with_their_usual_lines_cut_as_texts(name):
    text = real_callback(name)["log"]
    log = lava_log.read_log_text(text)
    assert log.lines is not None, "a real log went to the YAML loader whole"
    usual = [line for line in log.lines if not line[3]]
    assert len(usual) >= 0.85 * len(log.lines)  # the quick way takes nearly every real line
    items, plain = log.marked()
    assert items == yamlsafe.load(text, "log")
    assert len(plain) == len(items)
    for item, plain_line in zip(items, plain):  # a plain item's texts need no JSON escaping
        if plain_line:
            assert json.dumps(item, ensure_ascii=False).count("\\") == 0


@pytest.mark.parametrize("line, line_by_line", [
    ('- {"msg": "done!"}', True),  # a "!" in a text: set apart, read by the line loop
    ('- {"msg": {"measurement": !!python/object/apply:decimal.Decimal ["4.5"]}}', True),
    ('- {"msg": "caf\\u00e9"}', True),  # a \u escape: set apart
    ('- {"msg": "a \\"quoted\\" word"}', True),
    ('- {"msg": "x"}   ', True),
    ('- {"msg": "x"}, {"msg": "y"}', False),  # two values on a line: not YAML, refused whole
    ('- {"msg": "x"} # a comment', True),
    ('- {"msg": 1.5e3}', True),  # text to YAML: JSON's reading differs, so YAML reads the line
    ('- {"msg": NaN}', True),
    ('- "text"', True),
    ('- {"msg": "caf\u00e9"}', True),  # not ASCII
    ('- {"msg": "x", "msg": "y"}', True),
    ('- {"msg": &a "x"}', True),
    ('- {"msg": &a "x"}\n- {"msg": "a & b"}', True),  # one anchor: "&" in a JSON text is no anchor
    ('- {"msg": &a "x"}\n- {"msg": &b "y"}', False),  # anchors on two lines may repeat a name: read whole
    ('- {"msg": *a}', False),  # an alias may name another line's anchor: read whole
    ('- {"msg": "continued', False),  # a text continued on the next line
    ('- {"msg": %s}' % ("[" * 40 + "]" * 40), True),
    ('- {"msg": [%s, %s]}' % ("[" * 60 + "]" * 60, "[" * 60 + "]" * 60), True),  # many brackets, not deep
    ('- {"msg": %s}' % ("[" * 120 + "]" * 120), False),
])
def test_a_log_is_read_line_by_line_only_when_that_reads_it_alike(line, line_by_line):
    text = "\n".join(USUAL_LINES[:2] + [line] + USUAL_LINES[2:]) + "\n"
    log = read_or_refused(text)
    assert (log.lines is not None) == line_by_line
    assert outcome(parse_log, text) == outcome(lambda whole: yamlsafe.load(whole, "log") or [], text)
    if log.lines is not None:
        items, plain = log.marked()
        assert len(plain) == len(items)
        for item, plain_line in zip(items, plain):  # a plain item's texts need no JSON escaping
            if plain_line:
                assert json.dumps(item, ensure_ascii=False).count("\\") == 0


def test_many_set_apart_lines_keep_their_places():
    lines = ['- {"n": %d, "msg": "%s"}' % (n, "!" if n % 3 else "") for n in range(3000)]
    items, plain = parse_log_marked("\n".join(lines))
    assert [item["n"] for item in items] == list(range(3000)) and all(plain)


def test_a_line_of_many_decimal_tags_is_read_in_linear_time():
    """The quotes before each tag were once counted from the line's start: a megabyte of results
    took four seconds of CPU before the loader said what is wrong with the line."""
    tagged = '{"m": !!python/object/apply:decimal.Decimal ["2"]}'
    text = '- {"a": 1}} [' + ", ".join([tagged] * 20_000) + "]\n"  # 1 MB, not YAML from the 11th character
    started = time.process_time()
    assert outcome(parse_log, text) == ("rejected",)
    assert time.process_time() - started < 1


def read_or_refused(text):
    """`lava_log.read_log_text(text)`, or a log read whole when the text is refused whole."""
    try:
        return lava_log.read_log_text(text)
    except RejectedInput:
        return lava_log.LogText(None, {})


def outcome(parse, text):
    try:
        return ("items", parse(text))
    except RejectedInput:
        return ("rejected",)


def property_seed() -> int:
    chosen = os.environ.get("KCING_FUZZ_SEED", "")
    if chosen == "random":
        return random.SystemRandom().randrange(2 ** 32)
    return int(chosen) if chosen else 20201119


CHARACTERS = ['a', ' ', '"', "\\", "/", "#", ":", "\t", "\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\xa0", "\u00e9",
              "\u2028", "\u2029", "\ufeff", "\ufffe", "\U0001f600", "\ud800", "{", "]"]
NUMBERS = [0, -1, 10 ** 30, 1.5, -0.0, 1e100, 1e-05, 2.5e-300, float("nan"), float("inf")]


def random_text(rng, longest):
    return "".join(rng.choice(CHARACTERS) for _ in range(rng.choice([0, 1, 5, longest])))


def random_value(rng, depth=0):
    choice = rng.randrange(6 if depth < 3 else 3)
    if choice == 0:
        return random_text(rng, 40)
    if choice == 1:
        return rng.choice(NUMBERS + [True, False, None])
    if choice == 2:
        return rng.randrange(-10 ** 6, 10 ** 6)
    if choice == 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {random_text(rng, rng.choice([3, 1100])): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_log_fast_path_equals_the_safe_yaml_loader_on_random_json_lines():
    seed = property_seed()
    print("log line seed:", seed, "(KCING_FUZZ_SEED)")
    rng = random.Random(seed)
    for _ in range(400):
        lines = []
        for _ in range(rng.randint(1, 3)):
            value = {"dt": "2020-11-19T07:03:25.393174", "lvl": "debug", "msg": random_value(rng)}
            separators = rng.choice([None, (",", ":")])
            lines.append("- " + json.dumps(value, ensure_ascii=rng.random() < 0.5, separators=separators))
        text = "\n".join(lines) + "\n"
        expected = outcome(lambda whole: yamlsafe.load(whole, "log") or [], text)
        assert repr(outcome(parse_log, text)) == repr(expected), (seed, text[:300])


LOG_BREAKERS = str.maketrans("", "", "\x7f\ud800\U0001f600")


def test_logs_of_many_random_ascii_lines_read_line_by_line_as_the_yaml_loader_reads_them():
    # Printable ASCII with escapes: usual lines, cut by the quick way, among lines read alone.
    seed = property_seed()
    rng = random.Random(seed)
    quick_and_other = 0
    for _ in range(150):
        lines = []
        for _ in range(rng.randint(2, 30)):
            # Mostly texts: one NaN or 1e100 among the lines sends the whole log to the loop, as
            # do a raw DEL (json.dumps leaves it unescaped) and escaped surrogates (YAML refuses).
            message = random_value(rng) if rng.random() < 0.2 else random_text(rng, 40).translate(LOG_BREAKERS)
            value = {"dt": "2020-11-19T07:03:25.393174", "lvl": "debug", "msg": message}
            line = "- " + json.dumps(value, ensure_ascii=True)
            if rng.random() < 0.1:
                line = line.replace('"lvl"', '"tag": !!python/object/apply:decimal.Decimal ["2"], "lvl"')
            lines.append(line)
        text = "\n".join(lines) + "\n"
        log = read_or_refused(text)
        quick_and_other += log.lines is not None and len({bool(other) for *_, other in log.lines}) == 2
        expected = outcome(lambda whole: yamlsafe.load(whole, "log") or [], text)
        assert repr(outcome(parse_log, text)) == repr(expected), (seed, text[:300])
    assert quick_and_other >= 20  # the property covers logs of usual lines among others


# -- log lines: the shortcuts give what the general path gives ---------------------------------

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _lava_files():
    return sorted((SAMPLES / "lava").rglob("*.json"))


@pytest.mark.parametrize("path", _lava_files(), ids=lambda path: path.parent.name + "/" + path.name)
def test_log_bodies_serialised_once_per_job_equal_a_full_encoding(path):
    from kcing.records import _ENCODER

    docs = documents_for(LAVA, path.read_bytes(), LISTED)
    logs = of_kind(docs, "log")
    assert logs, "the sample should have log lines"
    for doc in logs:
        assert doc.body_json == _ENCODER.encode(dict(doc.body))


@pytest.mark.parametrize("dt", [
    "2020-11-04T16:44:34.082427", "2020-11-04T16:44:34", "2020-11-04T16:44:34.1", "2020-11-04T16:44:34.999999",
    "2020-11-04T16:44:34.082427+02:00", "2020-11-04T16:44:34Z", "2020-13-04T16:44:34.082427",
    "2020-02-30T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59", "1970-01-01T00:00:00.000001",
    "٢٠٢٠-11-04T16:44:34", "2020-11-04 16:44:34", "", "yesterday", None, 17, 1.5, ["2020-11-04T16:44:34"],
    "2020-11-04T24:00:00", "2020-11-04T24:00:00.000000", "2020-11-04T24:00:00.5",
])
def test_a_log_line_timestamp_read_by_string_equals_the_general_reading(dt):
    from kcing.documents.coerce import as_date
    from kcing.documents.identity import iso_timestamp
    from kcing.documents.lava import line_timestamp

    when = as_date(dt)
    assert line_timestamp(dt) == (iso_timestamp(when) if when is not None else None)


@pytest.mark.parametrize("dt", ["2020-11-04T24:00:00.000", "2020-11-04T24:00:00.000000", "2020-11-04T24:00:00.500",
                                "2020-13-04T16:44:34.082", "2020-11-04T16:44:34.082427"])
def test_a_usual_log_line_is_timed_by_the_general_reading_of_its_dt(dt):
    """A line of the usual shape, read by the regular expression, is timed as any other line:
    hour 24 at the next midnight (a timestamp of hour 24 is none to Elasticsearch or Logstash),
    no time the job's time."""
    from kcing.documents.lava import line_timestamp

    callback = real_callback(MESON)
    callback["log"] = ('- {"dt": "%s", "lvl": "target", "msg": "a line"}\n' % dt) * 2
    logs = of_kind(documents_for(LAVA, encode(callback), LISTED), "log")
    boot = of_kind(documents_for(LAVA, encode(callback), LISTED), "boot")[0]
    assert [doc.timestamp for doc in logs] == [line_timestamp(dt) or boot.timestamp] * 2


def _every_upstream_time_reader():
    from kcing.documents.coerce import as_date, iso_time
    from kcing.sources.api import _time
    from kcing.sources.legacy import _created_on
    from kcing.sources.localfiles import _parse_date

    return {"iso_time": iso_time, "as_date": as_date, "node": _time, "manifest": _parse_date,
            "listing": lambda text: _created_on({"created_on": {"$date": text}})}


@pytest.mark.parametrize("text, expected", [
    ("2020-11-04T24:00:00", "2020-11-05T00:00:00"), ("2020-11-04 24:00:00", "2020-11-05T00:00:00"),
    ("2020-11-04T24:00", "2020-11-05T00:00:00"), ("2020-11-04T24:00:00.000000Z", "2020-11-05T00:00:00"),
    ("2020-11-04T24:00:00z", "2020-11-05T00:00:00"), ("2020-11-04T16:44:34.5z", "2020-11-04T16:44:34.500000"),
    # The next midnight where it is written, then in UTC: a day earlier or later than the date.
    ("2020-11-04T24:00:00+05:00", "2020-11-04T19:00:00"), ("2020-11-04T24:00-05:00", "2020-11-05T05:00:00"),
    # Hour 24 is the end of a day, nothing after it: no time at all past it.
    ("2020-11-04T24:00:00.5", None), ("2020-11-04T24:00:00.000001", None), ("2020-11-04T24:00:01", None),
    ("2020-11-04T24:01", None), ("2020-11-04T24:00:00+05:00 ", None), ("2020-11-04T25:00:00", None),
    (" 2020-11-04T16:44:34", None), ("2020-11-04T16:44:34 ", None), ("2020-11-04T16:44:34Z\n", None),
    (" 2020-11-04T24:00:00", None),
], ids=repr)
def test_every_upstream_time_is_read_by_one_rule(text, expected):
    """A listing's created_on, a node's created and updated, a manifest's date and a LAVA job's
    times: one text is one time (or none) to each, so no object is listed under one day and
    delivered under another."""
    readings = {name: read(text) for name, read in _every_upstream_time_reader().items()}
    assert readings == {name: expected and datetime.fromisoformat(expected).replace(tzinfo=timezone.utc)
                        for name in readings}


@pytest.mark.parametrize("text, dated", [
    ("1970-01-01T00:00:00", True), ("1969-12-31T24:00:00", True), ("9998-12-31T23:59:59.999999", True),
    ("1969-12-31T23:59:59.999999", False), ("1970-01-01T00:30:00+01:00", False), ("9998-12-31T24:00:00", False),
    ("9999-01-01T00:00:00", False),
])
def test_a_document_is_dated_only_in_the_years_an_index_is_named_after_as_its_time_is_in_utc(text, dated):
    from kcing.documents.coerce import as_date

    assert (as_date(text) is not None) is dated


def test_a_lone_surrogate_in_a_log_message_rejects_the_file():
    callback = real_callback(MESON)
    callback["log"] = '- {"dt": "2020-11-04T16:44:34.0", "lvl": "target", "msg": "bad \\udc80 byte"}\n'
    with pytest.raises(RejectedInput):
        documents_for(LAVA, json.dumps(callback).encode("utf-8"), LISTED)


# -- the lab ----------------------------------------------------------------------------------------

def without_any_lab(callback: dict) -> dict:
    """A raw callback that names no lab: no `lab_name`, and a notify URL without `lab_name=`."""
    callback = dict(callback)
    callback.pop("lab_name", None)
    callback["definition"] = callback["definition"].replace("lab_name=mgalka-lava-local&", "")
    assert "lab_name" not in callback["definition"]
    return callback


def test_a_callback_without_a_lab_takes_the_listed_lab():
    raw = encode(without_any_lab(real_callback(RAW_QEMU)))
    docs = documents_for(LAVA, raw, LISTED, "lab-collabora")
    assert {doc.body["lab_name"] for doc in docs} == {"lab-collabora"}


def test_the_file_own_lab_wins_over_the_listed_one():
    docs = documents_for(LAVA, real_bytes(RAW_QEMU), LISTED, "lab-elsewhere")
    assert boot_of(docs).body["lab_name"] == "mgalka-lava-local"  # from its notify URL
    docs = documents_for(LAVA, real_bytes(MESON), LISTED, "lab-elsewhere")
    assert boot_of(docs).body["lab_name"] == "lab-baylibre"


def test_two_labs_with_the_same_job_id_and_board_never_share_a_document():
    raw = encode(without_any_lab(real_callback(RAW_QEMU)))
    first = documents_for(LAVA, raw, LISTED, "lab-a")
    second = documents_for(LAVA, raw, LISTED, "lab-b")
    assert len(first) == len(second) > 1
    assert not {doc.doc_id for doc in first} & {doc.doc_id for doc in second}


@pytest.mark.parametrize("listed_lab", [None, "", "   "])
def test_a_callback_naming_no_lab_anywhere_is_refused(listed_lab):
    raw = encode(without_any_lab(real_callback(RAW_QEMU)))
    with pytest.raises(RejectedInput, match="LAVA job 577 names no lab"):
        documents_for(LAVA, raw, LISTED, listed_lab)


def test_a_raw_callback_sent_by_a_notify_callbacks_list_names_its_lab():
    # LAVA takes `notify: {callbacks: [...]}` (a list, one callback per entry) beside the single
    # `callback:` KernelCI's templates used; the callback whose URL names a lab names the job's.
    callback = real_callback(RAW_QEMU)
    single = "  callback: {content-type: json, dataset: all, method: POST, token: mgalka-local-callback,\n"
    assert single in callback["definition"]
    callback["definition"] = callback["definition"].replace(
        single, "  callbacks:\n  - {url: 'https://example.invalid/hook', method: POST}\n"
                "  - {content-type: json, dataset: all, method: POST, token: mgalka-local-callback,\n")
    import yaml
    notify = yaml.safe_load(callback["definition"])["notify"]
    assert "callback" not in notify and len(notify["callbacks"]) == 2
    raw = encode(callback)
    assert {doc.body["lab_name"] for doc in documents_for(LAVA, raw, LISTED)} == {"mgalka-lava-local"}
    # The same documents and ids as the job's body sent by a single callback.
    assert [(doc.index, doc.doc_id) for doc in documents_for(LAVA, raw, LISTED)] == \
        [(doc.index, doc.doc_id) for doc in documents(RAW_QEMU)]


def test_of_several_bootloader_overlay_steps_each_address_comes_from_the_last_listed_as_the_backend_read_them():
    # kernelci-backend's callback handler updated the boot's addresses step after step, in the
    # suite's order (LAVA lists the newest case first: the last listed is the first boot).
    callback = real_callback(MESON)
    callback["results"] = {"lava": (
        "- {id: '30', name: login-action, result: pass, measurement: '9'}\n"
        "- {id: '20', name: bootloader-overlay, result: pass,"
        " metadata: {extra: [{dtb_addr: '0x2000000'}, {kernel_addr: '0x2080000'}]}}\n"
        "- {id: '10', name: bootloader-overlay, result: pass,"
        " metadata: {extra: [{dtb_addr: '0x1000000'}, {ramdisk_addr: '0x13000000'}]}}\n")}
    boot = boot_of(documents_for(LAVA, encode(callback), LISTED)).body
    assert (boot["dtb_addr"], boot["loadaddr"], boot["initrd_addr"]) == ("0x1000000", "0x2080000", "0x13000000")


# -- what a job's documents repeat ----------------------------------------------------------------

def with_long_tree_and_lines(tree_characters: int, lines: int) -> bytes:
    """The real callback with a kernel tree name of `tree_characters` more, which every document
    of the job repeats, and a log of `lines` short lines."""
    callback = real_callback(MESON)
    tree = "kernel.tree: next"
    callback["definition"] = callback["definition"].replace(tree, tree + "x" * tree_characters, 1)
    callback["log"] = "\n".join(['- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "m"}'] * lines)
    return encode(callback)


def test_shared_fields_too_long_to_repeat_in_each_document_refuse_the_job_before_its_documents_are_made():
    """Each document holds the job's fields whole: a kernel tree name of 60,000 characters and
    8,000 log lines, a file of 700 kB, made 486 MB of documents and took 1.9 GB of memory to build
    (a file twice as large, four times that). Refused at once, in memory of the file's order; the
    same name with a few lines, or a long log with the usual names, is still made as before."""
    content = with_long_tree_and_lines(60_000, 8_000)
    tracemalloc.start()
    try:
        with pytest.raises(RejectedInput, match=r"^LAVA job 370874: its \d+ test and log documents would each "
                                                r"repeat up to 60\d\d\d bytes of the job's fields .* more than 64 MiB$"):
            documents_for(LAVA, content, LISTED)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(content)
    few_lines = documents_for(LAVA, with_long_tree_and_lines(60_000, 500), LISTED)
    assert len(of_kind(few_lines, "log")) == 500 and boot_of(few_lines).body["job"] == "next" + "x" * 60_000
    assert len(of_kind(documents_for(LAVA, with_long_tree_and_lines(0, 80_000), LISTED), "log")) == 80_000


def test_a_suite_name_too_long_to_repeat_in_each_of_its_tests_refuses_the_job():
    callback = real_callback(MESON)
    cases = yamlsafe.load(callback["results"]["0_dmesg"], "0_dmesg")
    callback["results"] = {"0_" + "s" * 50_000: json.dumps(cases * 400)}
    with pytest.raises(RejectedInput, match=r"each repeat up to 10\d\d\d\d bytes of the job's fields"):
        documents_for(LAVA, encode(callback), LISTED)
    callback["results"] = {"0_" + "s" * 50_000: json.dumps(cases)}
    assert {doc.body["suite"] for doc in of_kind(documents_for(LAVA, encode(callback), LISTED), "test")} == {
        "0_" + "s" * 50_000}
