"""Verdicts read the same from every source: a result word in another case or with spaces around it
gives the verdict of the word itself, never a value of its own that no dashboard filter finds.

The cases change the result in the real files of ../shared/data/upstream and the bundled samples.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.documents.fields import field_problems
from kcing.records import BOOT, BUILD, JOB, KBUILD, LAVA, REGRESSION, TEST
from tests.fakes.api_data import LEGACY, MAESTRO, REAL_JOB

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LISTED = datetime(2020, 11, 19, tzinfo=timezone.utc)
VARIANTS = ["PASS", " pass", "Pass\n", "\tPASS "]
FAIL_VARIANTS = ["FAIL", " fail ", "Fail\n"]


def real(path: Path) -> dict:
    if not path.is_file():
        pytest.skip("real upstream file %s is absent (the shared/ folder sits beside the repository)" % path)
    return json.loads(path.read_text())


def only_body(kind: str, record: dict, doc_kind: str) -> dict:
    documents = [document for document in documents_for(kind, json.dumps(record).encode(), LISTED)
                 if document.kind == doc_kind]
    (document,) = documents
    assert field_problems(document.kind, document.body) == []
    return document.body


def sample(kind: str) -> dict:
    manifest = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))["objects"]
    path = next(obj["path"] for obj in manifest if obj["kind"] == kind)
    return json.loads((SAMPLES / path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("word", VARIANTS)
def test_a_build_json_result_in_any_case_or_spacing(word):
    build = sample(BUILD)
    build.pop("status", None)
    build["build_result"] = word
    assert only_body(BUILD, build, "build")["build_result"] == "PASS"


@pytest.mark.parametrize("word, verdict", [(word, ("pass", None)) for word in VARIANTS]
                         + [(word, ("fail", "kernel")) for word in FAIL_VARIANTS])
def test_a_boot_report_result_in_any_case_or_spacing(word, verdict):
    report = dict(sample(BOOT), boot_result=word)
    body = only_body(BOOT, report, "boot")
    assert (body["boot_result"], body.get("boot_failure")) == verdict


@pytest.mark.parametrize("word", FAIL_VARIANTS)
def test_a_lava_login_step_and_test_case_result_in_any_case_or_spacing(word):
    callback = real(LEGACY / "lava-json-meson-gxbb-p200.json")
    callback["results"] = {
        "lava": "- {id: '2', name: login-action, result: '%s', measurement: '4.5'}\n" % word,
        "0_dmesg": "- {id: '3', name: emerg, result: '%s'}\n" % word,
    }
    boot = only_body(LAVA, callback, "boot")
    (case,) = [document.body for document in documents_for(LAVA, json.dumps(callback).encode(), LISTED)
               if document.kind == "test" and document.body["name"] == "emerg"]
    assert (boot["job_status"], boot["boot_result"], boot.get("boot_failure")) == ("complete", "fail", "kernel")
    assert case["result"] == "fail"


@pytest.mark.parametrize("word", [" incomplete", "Incomplete", "INCOMPLETE\n"])
def test_a_lava_status_string_in_any_case_or_spacing(word):
    callback = real(LEGACY / "lava-json-meson-gxbb-p200.json")
    del callback["status"]
    callback["status_string"] = word
    boot = only_body(LAVA, callback, "boot")
    assert (boot["job_status"], boot["boot_result"], boot.get("boot_failure")) == ("incomplete", "fail", "kernel")


def real_job(**changes) -> dict:
    node = real(MAESTRO / REAL_JOB)
    node.update(changes)
    return node


@pytest.mark.parametrize("word", VARIANTS)
def test_a_node_result_in_any_case_or_spacing(word):
    job = real_job(result=word)
    assert only_body(JOB, {"node": job}, "boot")["boot_result"] == "pass"
    kbuild = real_job(kind=KBUILD, name="kbuild-gcc-12-arm64", group="kbuild-gcc-12-arm64",
                      path=["checkout", "kbuild-gcc-12-arm64"], result=word)
    assert only_body(KBUILD, {"node": kbuild}, "build")["build_result"] == "PASS"
    test = real_job(kind=TEST, name="login", path=REAL_JOB_PATH + ["setup", "login"], result=word)
    assert only_body(TEST, {"node": test}, "test")["result"] == "pass"


REAL_JOB_PATH = ["checkout", "kbuild-gcc-12-arm64-chromeos-qualcomm", "tast-mm-misc-arm64-qualcomm"]


@pytest.mark.parametrize("word, status", [(" fail", "active"), ("FAIL", "active"), ("Pass\n", "inactive")])
def test_a_regression_result_in_any_case_or_spacing(word, status):
    node = real_job(kind=REGRESSION, result=word)
    node["data"] = copy.deepcopy(node["data"])
    node["data"].update(fail_node="670f0c27493b6b8188c7667c", pass_node="670f0c27493b6b8188c7667d")
    assert only_body(REGRESSION, {"node": node}, "regression")["status"] == status
