"""KernelCI API nodes become the same build, boot, test and log documents as the legacy files.

The cases use the real nodes in shared/data/upstream/maestro, synthesized trees shaped as
upstream.md §2.6 shows, and, for the comparison with the legacy source, the real stored LAVA
callbacks in shared/data/upstream/legacy.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.documents.fields import FIELDS, KERNELCI_API, field_problems
from kcing.building import encoded_documents
from kcing.documents.identity import document_id, iso_timestamp
from kcing.documents import yamlsafe
from kcing.documents.lava import log_line_fields
from kcing.documents.nodes import build_log_summary, is_lab_job, node_boot_result
from kcing.documents.validate import check, serialised
from kcing.ledger import docids
from kcing.sinks.encoding import logstash_json, ndjson_record
from kcing.errors import RejectedInput
from kcing.records import BUILD, LAVA
from kcing.sources.api_related import related_node
from tests.fakes.api_corpus import ApiCorpus
from tests.fakes.api_data import LEGACY, MAESTRO, REAL_JOB, checkout_tree
from tests.fakes.legacy_data import build_item, build_json

UTC = timezone.utc
BASE = datetime(2024, 10, 16, tzinfo=UTC)
FILES = "https://files.example"
MESON = "lava-json-meson-gxbb-p200.json"
RAW_QEMU = "lava-callback-raw-incomplete-qemu.json"


def real_text(directory: Path, name: str) -> str:
    path = directory / name
    if not path.is_file():
        pytest.skip("real upstream file %s is absent (the shared/ folder sits beside the repository)" % path)
    return path.read_text()


@pytest.fixture(scope="module")
def tree() -> dict:
    return checkout_tree(ApiCorpus(), FILES, BASE)


def docs(node: dict, **envelope):
    return documents_for(node["kind"], json.dumps(dict(envelope, node=node)).encode())


def only(documents):
    (document,) = documents
    return document


def without_api(body) -> dict:
    return {name: value for name, value in body.items() if name != "kernelci_api"}


# Versions ---------------------------------------------------------------------------------------

def test_every_document_of_a_node_carries_its_updated_time_as_its_version(tree):
    """Elasticsearch keeps the newest version of a node whatever order its documents come in
    (the pipeline's external versioning): each document's version is the node's `updated`, in
    microseconds, which every update raises; a legacy file's documents have none."""
    callback = json.dumps(json.loads(real_text(LEGACY, MESON)))
    for name in ("kbuild-arm64", "baseline", "login", "regression"):
        node = dict(tree[name], updated="2024-10-16T02:22:58.113000")
        documents = docs(node, callback_data=callback) if name == "baseline" else docs(node)
        assert documents and {document.version for document in documents} == {1729045378113000}, name
        later = docs(dict(node, updated="2024-10-16T02:22:58.113001"))
        assert {document.version for document in later} == {1729045378113001}
    encoded = encoded_documents("job", json.dumps({"node": dict(tree["baseline"], updated="2024-10-16T02:22:58Z"),
                                                   "callback_data": callback}).encode(),
                                None, None, logstash_json)
    assert len(encoded.items) > 100  # the boot document and the log lines, made from their parts
    assert {json.loads(item)["@metadata"]["version"] for item in encoded.items} == {"1729045378000000"}
    assert {document.version for document in documents_for(LAVA, callback.encode(), BASE)} == {None}
    assert {document.version for document in docs(dict(tree["login"], updated=None))} == {None}


# Which node gives which document --------------------------------------------------------------

@pytest.mark.parametrize("name, kinds", [
    ("checkout", []), ("kbuild-arm64", ["build"]), ("kbuild-x86", ["build"]), ("baseline", ["boot"]),
    ("kselftest", ["boot"]), ("setup", ["test"]), ("suite", ["test"]), ("login", ["test"]),
    ("kunit", ["test"]), ("kunit-case-0", ["test"]), ("running", ["test"]), ("regression", ["regression"]),
])
def test_each_node_kind_maps_to_the_legacy_document_kinds(tree, name, kinds):
    documents = docs(tree[name])
    assert [document.kind for document in documents] == kinds
    for document in documents:
        check(document)


@pytest.mark.parametrize("name, kinds", [
    ("checkout", []), ("baseline", ["boot"]), ("setup", ["test"]), ("login", ["test"]), ("kunit", ["test"]),
    ("kunit-case-0", ["test"]), ("running", ["test"]),
])
def test_a_generic_node_reads_as_the_job_or_test_in_its_place_and_a_root_gives_none(tree, name, kinds):
    # Older data has nodes of the generic kind `node` (upstream.md §2.5: KUnit cases; the real
    # 2023 listing: checkouts): what one is shows by its place in the tree, as for jobs and tests.
    related = {"job_node": related_node(tree["kunit"])} if name.startswith("kunit-") else {}
    generic = docs(dict(tree[name], kind="node"), **related)
    assert [document.kind for document in generic] == kinds
    as_named = docs(tree[name], **related) if kinds else []
    for document, twin in zip(generic, as_named, strict=True):
        check(document)
        assert (document.index, document.doc_id) == (twin.index, twin.doc_id)
        assert without_api(document.body) == without_api(twin.body)
        assert document.body["kernelci_api"]["kind"] == "node"
        assert field_problems(document.kind, document.body) == []
        assert document.doc_id == document_id(document.kind, "kernelci_api", tree[name]["id"])
        assert document.index == "%s-2024.10.16" % document.kind


def test_a_lab_job_is_the_root_of_its_group_run_by_a_lab(tree):
    assert is_lab_job(tree["baseline"]) and is_lab_job(tree["kselftest"])
    # The suite below kselftest-exec has the same name as its job, but its job is above it.
    assert not is_lab_job(tree["suite"]) and not is_lab_job(tree["setup"])
    assert not is_lab_job(tree["kunit"])  # Kubernetes boots no board



@pytest.mark.parametrize("runtime, kind", [("pull-labs-demo", "boot"), ("lava-baylibre", "boot"), ("k8s-all", "test"),
                                           ("shell", "test"), (None, "test")])
def test_a_job_a_pull_lab_ran_is_a_boot_as_a_lava_job_is_and_its_tests_carry_its_verdict(tree, runtime, kind):
    # README: a job at the root of its group that ran in a lab, `data.runtime` lava-* or
    # pull-labs-*, is one boot; any other job one test.
    job = copy.deepcopy(tree["kselftest"])
    job["data"]["runtime"] = runtime
    document = only(docs(job))
    assert document.kind == kind and field_problems(kind, document.body) == []
    case = only(docs(tree["case-1"], job_node=related_node(job))).body
    assert ("boot_result" in case) == (kind == "boot")


@pytest.mark.parametrize("spelling", ["jobfilter", "job-filter"])
def test_a_node_s_filters_are_kept_whichever_way_the_node_spells_the_job_filter(spelling):
    # docs/api-source.md: jobfilter, platform_filter (the node) and architecture_filter (its data)
    # go under kernelci_api; the real staging job spells the first `job-filter`.
    node = json.loads(real_text(MAESTRO, REAL_JOB))
    assert "job-filter" in node  # as the real node has it (null there)
    del node["job-filter"]
    node.update({spelling: ["baseline-arm64"], "platform_filter": ["sc7180-trogdor-lazor-limozeen"]})
    node["data"]["architecture_filter"] = ["arm64"]
    api = only(docs(node)).body["kernelci_api"]
    assert (api["jobfilter"], api["platform_filter"], api["architecture_filter"]) == (
        ["baseline-arm64"], ["sc7180-trogdor-lazor-limozeen"], ["arm64"])

def test_every_version_of_a_node_lands_on_one_document(tree):
    running = tree["running"]
    done = dict(running, state="done", result="pass", updated="2024-10-16T09:00:00.000000")
    before, after = only(docs(running)), only(docs(done))
    assert (before.index, before.doc_id) == (after.index, after.doc_id)
    assert "result" not in before.body and after.body["result"] == "pass"
    assert after.body["kernelci_api"]["state"] == "done"


def test_a_kbuild_gives_the_legacy_build_fields(tree):
    body = only(docs(tree["kbuild-x86"])).body
    assert without_api(body) == {
        "job": "mainline", "git_branch": "master", "git_commit": tree["kbuild-x86"]["data"]["kernel_revision"]["commit"],
        "git_url": "https://git.kernel.org/pub/scm/linux/kernel/git/mainline/linux.git",
        "git_describe": "v6.12-rc3-45-gc862449c840a", "kernel": "v6.12-rc3-45-gc862449c840a", "arch": "x86_64",
        "defconfig": "defconfig", "defconfig_full": "defconfig+lab-setup", "build_environment": "clang-17",
        "build_result": "FAIL", "compiler": "clang", "compiler_version": "17", "kconfig_fragments": "lab-setup",
        "build_log": "build.log", "kernel_config": ".config", "kernel_image": "Image", "modules": "modules.tar.xz",
    }
    api = body["kernelci_api"]
    assert api["log_url"] == api["build_log_url"] == tree["kbuild-x86"]["artifacts"]["build_log"]
    assert api["artifacts"] == ["_config", "build_log", "kernel", "modules"]
    assert (api["runtime"], api["job_id"], api["kernel_version"]) == ("k8s-all", "kci-tree-1-kbuild", "6.12")


@pytest.mark.parametrize("config_full, fragments, expected", [
    ("defconfig+lab-setup", ["lab-setup"], "defconfig+lab-setup"),  # as today's kbuilds
    (None, ["lab-setup", "arm64-chromebook"], "defconfig+lab-setup+arm64-chromebook"),  # KernelCI's first model
    ("absent", ["lab-setup"], "defconfig+lab-setup"),
    ("absent", [], "defconfig"),
    ("absent", None, "defconfig"),
    # config_full names the build whatever data.fragments lists.
    ("defconfig+lab-setup+kselftest", ["lab-setup"], "defconfig+lab-setup+kselftest"),
    # Items that are no fragment name are left out, as from kernelci_api.fragments: no "++".
    ("absent", ["lab-setup", "", None, {"name": "x"}, "kselftest"], "defconfig+lab-setup+kselftest"),
    ("absent", ["", None], "defconfig"),
])
def test_a_kbuild_without_config_full_is_named_by_its_defconfig_and_fragments(tree, config_full, fragments, expected):
    node = copy.deepcopy(tree["kbuild-arm64"])
    node["data"]["fragments"] = fragments
    if config_full == "absent":
        del node["data"]["config_full"]
    else:
        node["data"]["config_full"] = config_full
    body = only(docs(node)).body
    assert (body["defconfig"], body["defconfig_full"]) == ("defconfig", expected)


def test_a_kbuild_without_defconfig_or_config_full_gets_no_defconfig_full_from_its_fragments(tree):
    node = copy.deepcopy(tree["kbuild-arm64"])
    del node["data"]["config_full"], node["data"]["defconfig"]
    node["data"]["fragments"] = ["lab-setup"]
    body = only(docs(node)).body
    assert "defconfig" not in body and "defconfig_full" not in body
    assert body["kernelci_api"]["fragments"] == ["lab-setup"]


@pytest.mark.parametrize("result, error_code, expected", [
    ("pass", None, "PASS"), ("fail", None, "FAIL"), (None, None, "UNKNOWN"), ("incomplete", "node_timeout", "INCOMPLETE"),
    ("fail", "kbuild_internal_error", "ERROR"), ("fail", "node_timeout", "ERROR"), ("fail", "Infrastructure", "ERROR"),
])
def test_a_build_that_failed_for_the_pipelines_reason_is_an_error_not_a_failure(result, error_code, expected):
    node = {**_minimal("kbuild"), "result": result}
    node["data"] = {**node.get("data", {}), "error_code": error_code}
    assert only(docs(node)).body["build_result"] == expected


def test_a_build_log_gives_warning_and_error_counts():
    text = "CC a.o\nfs/x.c:1:2: warning: unused\nerror: no rule\nfs/y.c:3:4: error: undeclared\nwarnings: 0\n"
    assert build_log_summary(text) == {"warnings": 1, "errors": 2, "build_log_size": len(text)}
    body = only(docs({**_minimal("kbuild"), "result": None}, build_log=text)).body
    assert (body["warnings"], body["errors"], body["build_result"]) == (1, 2, "UNKNOWN")


def test_a_build_log_s_size_is_the_one_the_source_counted_in_the_file():
    # The text replaced the file's bytes that are not UTF-8 (two Latin-1 "é", one byte each) by
    # U+FFFD, three bytes each in UTF-8: the file held len(text) bytes, the text's UTF-8 four more.
    text = "fs/x.c:1:2: warning: unused 'r\ufffdsum\ufffd'\n"
    body = only(docs(_minimal("kbuild"), build_log=text, build_log_bytes=len(text))).body
    assert (body["build_log_size"], body["warnings"]) == (len(text), 1)
    # An envelope saved before the source counted it: the text's size, as before.
    assert only(docs(_minimal("kbuild"), build_log=text)).body["build_log_size"] == len(text.encode())
    assert only(docs(_minimal("kbuild"), build_log=text, build_log_bytes="x")).body["build_log_size"] == len(
        text.encode())
    # A size no file has (an envelope edited by hand) is not taken either.
    assert only(docs(_minimal("kbuild"), build_log=text, build_log_bytes=-1)).body["build_log_size"] == len(
        text.encode())


def test_a_test_gives_the_legacy_test_fields(tree):
    body = only(docs(tree["case-1"])).body
    assert (body["suite"], body["suite_name"], body["name"], body["result"]) == (
        "kselftest-exec", "kselftest-exec", "exec_execveat_1", "fail")
    assert body["measurement"] == 1.5 and body["logged"] == "2024-10-16T00:13:06.000Z"
    assert (body["board"], body["lab_name"], body["plan"]) == ("qemu-arm64", "lava-baylibre", "kselftest-exec")
    assert body["kernelci_api"]["test_path"] == "kselftest-exec.kselftest-exec.exec_execveat_1"
    login = only(docs(tree["login"])).body
    assert (login["suite"], login["name"], login["result"]) == ("setup", "login", "pass")
    assert login["kernelci_api"]["test_path"] == "baseline-arm64-meson.setup.login"



def test_a_test_without_a_measurement_holds_a_null_one_as_legacy_and_no_unit(tree):
    plain = only(docs(tree["case-0"])).body
    assert plain["measurement"] is None and "unit" not in plain
    misc = {"measurement": {"value": "2.5", "unit": "ms"}}
    measured = {**tree["case-0"], "data": {**tree["case-0"]["data"], "misc": misc}}
    body = only(docs(measured)).body
    assert (body["measurement"], body["unit"]) == (2.5, "ms")

@pytest.mark.parametrize("result, error_code, expected", [
    ("pass", None, ("pass", None)),
    ("fail", None, ("pass", None)),  # a test suite failed after the board booted
    ("fail", "Test", ("fail", "kernel")),  # a baseline job's setup failed, not the lab's fault
    ("fail", "Infrastructure", ("unknown", "infrastructure")),  # older nodes: fail for every incomplete job
    ("incomplete", "Job", ("fail", "kernel")),  # LAVA gave up on the kernel (the qemu fault file)
    ("incomplete", "LAVATimeout", ("fail", "kernel")),  # as a legacy job that timed out
    ("incomplete", "Infrastructure", ("unknown", "infrastructure")),
    ("incomplete", "Canceled", ("unknown", "infrastructure")),
    ("incomplete", "node_timeout", ("unknown", "infrastructure")),  # no lab answered in time
    ("incomplete", "submit_error", ("unknown", "infrastructure")),
    ("incomplete", None, ("unknown", None)),  # setup failed: the login or the kernel messages
    (None, None, ("unknown", None)), ("skip", None, ("unknown", None)),
])
def test_without_its_callback_a_lab_job_says_what_its_result_implies_about_the_boot(result, error_code, expected):
    assert node_boot_result(result, error_code) == expected


@pytest.mark.parametrize("error_code", ["ObjectNotPersisted", "Unexisting permission codename.", "RequestBodyTooLarge"])
def test_a_job_the_lab_or_the_pipeline_failed_is_no_kernel_failure(tree, error_code):
    # KCIDB's bridge counts these as missed tests (the harness failed): the LAVA server's own
    # errors, and a callback too large for the pipeline to take.
    for result in ("incomplete", "fail"):
        node = {**tree["baseline"], "result": result}
        node["data"] = {**node["data"], "error_code": error_code}
        boot = only(docs(node)).body
        assert (boot["boot_result"], boot["boot_failure"], boot["error_type"]) == (
            "unknown", "infrastructure", error_code)
    kbuild = {**tree["kbuild-x86"], "result": "fail"}
    kbuild["data"] = {**kbuild["data"], "error_code": error_code}
    assert only(docs(kbuild)).body["build_result"] == "ERROR"


def test_a_job_at_the_root_of_its_group_is_its_own_suite(tree):
    # A KUnit job hangs off the checkout, a job in a runtime that boots no board off its kbuild:
    # neither the checkout nor the build is a test suite.
    kunit = only(docs(tree["kunit"])).body
    assert (kunit["suite"], kunit["suite_name"], kunit["name"], kunit["plan"]) == (
        "kunit-x86_64", "kunit-x86_64", "kunit-x86_64", "kunit-x86_64")
    case = only(docs(tree["kunit-case-0"])).body
    assert (case["suite"], case["name"]) == ("kunit-x86_64", "kunit-case-0")
    shell = {**tree["kselftest"], "data": {**tree["kselftest"]["data"], "runtime": "shell"}}
    body = only(docs(shell)).body
    assert (body["suite"], body["name"]) == ("kselftest-exec", "kselftest-exec")
    assert only(docs(tree["suite"])).body["suite"] == "kselftest-exec"  # below its job: the parent
    assert only(docs(tree["setup"])).body["suite"] == "baseline-arm64-meson"


@pytest.mark.parametrize("with_callback", [False, True], ids=["node alone", "with its callback"])
def test_a_kernel_fault_after_login_is_the_same_verdict_from_the_api_as_from_legacy_storage(tree, with_callback):
    # The job of lava-callback-raw-incomplete-qemu.json as the API stores it: LAVA said
    # incomplete, the `job` step's error type Job; its setup (login) passed.
    callback = real_text(LEGACY, RAW_QEMU)
    legacy = next(document for document in documents_for(LAVA, callback.encode(), BASE) if document.kind == "boot").body
    node = {**tree["baseline"], "result": "incomplete"}
    node["data"] = {**node["data"], "error_code": "Job", "error_msg": legacy["error_msg"]}
    boot = docs(node, callback_data=callback if with_callback else None)[0].body
    verdict = ("boot_result", "boot_failure", "error_type")
    assert [boot.get(name) for name in verdict] == [legacy.get(name) for name in verdict] == ["fail", "kernel", "Job"]


@pytest.mark.parametrize("results", ["no job step", "no results"])
def test_a_failure_its_callback_names_no_error_for_stays_the_lab_s_as_kernelci_classified_it(tree, results):
    # LAVA ended the job incomplete, and its callback names no error: KernelCI's pipeline then
    # records `Infrastructure` on the job node. Read with its callback, the boot document must
    # not call it a kernel failure while it says `error_type: Infrastructure`.
    callback = json.loads(real_text(LEGACY, RAW_QEMU))
    if results == "no job step":
        lava = yamlsafe.load(callback["results"]["lava"], "lava")
        callback["results"] = {"lava": json.dumps([case for case in lava if case["name"] != "job"])}
    else:
        callback["results"] = {}
    node = {**tree["baseline"], "result": "incomplete"}
    node["data"] = {**node["data"], "error_code": "Infrastructure", "error_msg": "Unknown infrastructure error"}
    verdict = ("boot_result", "boot_failure", "error_type")
    alone = docs(node)[0].body
    boot = docs(node, callback_data=json.dumps(callback))[0].body
    assert [boot.get(name) for name in verdict] == [alone.get(name) for name in verdict] == [
        "unknown", "infrastructure", "Infrastructure"]
    assert boot["job_status"] == "incomplete"  # the rest of the callback is still read
    assert all(log.body["boot_failure"] == "infrastructure" for log in docs(node, callback_data=json.dumps(callback))[1:])


def test_a_callback_that_names_its_error_decides_over_the_node_s_code(tree):
    # The callback's own job-step error is what the document says: LAVA's `Job` error on a
    # kernel that faulted is the kernel's, whatever code the node was left with.
    node = {**tree["baseline"], "result": "incomplete"}
    node["data"] = {**node["data"], "error_code": "Infrastructure"}
    boot = docs(node, callback_data=real_text(LEGACY, RAW_QEMU))[0].body
    assert (boot["boot_result"], boot["boot_failure"], boot["error_type"]) == ("fail", "kernel", "Job")


def test_a_failed_login_its_callback_shows_is_the_kernel_s_whatever_the_pipeline_s_own_code(tree):
    # A code of the pipeline (the job timed out there) says nothing of what LAVA saw: the
    # callback of a job LAVA completed whose login failed is a kernel failure.
    callback = json.loads(real_text(LEGACY, MESON))
    lava = yamlsafe.load(callback["results"]["lava"], "lava")
    for case in lava:
        if case["name"] == "login-action":
            case["result"] = "fail"
    callback["results"] = dict(callback["results"], lava=json.dumps(lava))
    node = {**tree["baseline"], "result": "incomplete"}
    node["data"] = {**node["data"], "error_code": "node_timeout"}
    boot = docs(node, callback_data=json.dumps(callback))[0].body
    assert (boot["boot_result"], boot["boot_failure"], boot["job_status"]) == ("fail", "kernel", "complete")


def test_a_callback_that_passed_clears_the_failure_its_node_implied(tree):
    node = {**tree["baseline"], "result": "fail"}
    node["data"] = {**node["data"], "error_code": "Test"}
    assert (only(docs(node)).body["boot_failure"]) == "kernel"
    boot = docs(node, callback_data=real_text(LEGACY, MESON))[0].body  # a complete job, login passed
    assert boot["boot_result"] == "pass" and "boot_failure" not in boot


def test_a_lab_job_gives_a_boot_document_and_with_its_callback_its_log(tree):
    node = tree["baseline"]
    plain = only(docs(node)).body
    assert (plain["boot_result"], plain["boot_time"], plain["lava_job_id"]) == ("pass", None, 7700001)
    assert (plain["board"], plain["board_instance"], plain["lab_name"]) == (
        "meson-gxbb-p200", "meson-gxbb-p200-cbg-1", "lava-collabora")
    callback = real_text(LEGACY, MESON)
    documents = docs(node, callback_data=callback)
    boot, logs = documents[0], documents[1:]
    assert boot.doc_id == only(docs(node)).doc_id
    assert (boot.body["boot_time"], boot.body["job_status"]) == (14.74, "complete")
    assert [log.body["lineno"] for log in logs] == list(range(1, len(logs) + 1))
    assert {log.index for log in logs} == {"log-2024.10.16"}  # the node's day, not the callback's
    assert len({log.doc_id for log in logs}) == len(logs)
    assert set(logs[0].body["kernelci_api"]) <= set(KERNELCI_API) and logs[0].body["kernelci_api"]["node_id"] == node["id"]


def test_what_a_callback_does_not_say_is_kept_from_the_node(tree):
    # A callback without the device LAVA picked or its job id leaves the node's own in place.
    node = tree["baseline"]
    callback = json.loads(real_text(LEGACY, MESON))
    for name in ("actual_device_id", "id"):
        callback.pop(name, None)
    boot = docs(node, callback_data=json.dumps(callback))[0].body
    assert (boot["board_instance"], boot["lava_job_id"], boot["job_status"]) == (
        "meson-gxbb-p200-cbg-1", 7700001, "complete")


def test_a_boot_s_device_type_is_its_platform_and_with_its_callback_the_lava_device_type(tree):
    """As the README's table says: the node's platform, and with `--with-logs` the device type
    LAVA ran the job on, as legacy boot documents held it (`qemu` for every QEMU board); test
    documents have no device type, as legacy test documents."""
    node = tree["baseline"]
    assert only(docs(node)).body["device_type"] == "meson-gxbb-p200"
    boot = docs(node, callback_data=real_text(LEGACY, RAW_QEMU))[0].body
    assert (boot["device_type"], boot["board"], boot["lava_job_id"]) == ("qemu", "meson-gxbb-p200", 577)
    assert "device_type" not in only(docs(tree["login"], job_node=related_node(node))).body


@pytest.mark.parametrize("callback, problem", [
    ("{\"id\": 1, ", "callback_data: not valid JSON"),
    ("[1]", "callback_data: not a JSON object"),
    (json.dumps({"id": 5, "results": {"lava": "- [unclosed"}}), "callback_data: results['lava']"),
    (json.dumps({"id": 5, "log": 7}), "callback_data: log: log is not YAML text"),
])
def test_an_unreadable_callback_is_noted_and_the_boot_document_still_made(tree, callback, problem):
    documents = docs(tree["baseline"], callback_data=callback)
    boot = documents[0]
    assert [document.kind for document in documents] == ["boot"]
    (note,) = boot.body["kernelci_api"]["artifact_errors"]
    assert note.startswith(problem)
    assert field_problems("boot", boot.body) == []


def test_artifact_errors_from_the_source_are_kept(tree):
    body = only(docs(tree["baseline"], artifact_errors={"callback_data": "HTTP 404"})).body
    assert body["kernelci_api"]["artifact_errors"] == ["callback_data: HTTP 404"]


def _minimal(kind: str) -> dict:
    return {"id": "ab" * 12, "kind": kind, "name": kind, "created": "2024-10-16T01:02:03.004000",
            "updated": "2024-10-16T01:02:03.004000", "data": {}}


@pytest.mark.parametrize("envelope, reason", [
    ({"nodes": {}}, "no \"node\" object"),
    ({"node": {"kind": "test"}}, "no valid id"),
    ({"node": dict(_minimal("test"), id="ab" * 12 + "\n")}, "no valid id"),
    ({"node": dict(_minimal("test"), kind="job")}, "not 'test'"),
    ({"node": dict(_minimal("test"), created=None)}, "no created date"),
])
def test_a_node_without_an_id_a_date_or_its_kind_is_refused(envelope, reason):
    with pytest.raises(RejectedInput, match=reason):
        documents_for("test", json.dumps(envelope).encode())


def test_a_bare_node_has_no_optional_fields_and_old_string_versions_read():
    node = dict(_minimal("test"), data={"kernel_revision": {"version": {"version": "6", "patchlevel": "1"}}})
    body = only(docs(node)).body
    assert body["kernelci_api"] == {"node_id": "ab" * 12, "kind": "test", "name": "test",
                                    "created": "2024-10-16T01:02:03.004Z", "updated": "2024-10-16T01:02:03.004Z",
                                    "kernel_version": "6.1"}
    assert without_api(body) == {"name": "test", "logged": "2024-10-16T01:02:03.004Z", "measurement": None}
    assert field_problems("test", body) == []
    assert only(docs(node)).timestamp == "2024-10-16T01:02:03.004Z"


@pytest.mark.parametrize("version, expected", [
    ({"version": 6, "patchlevel": 12, "sublevel": None}, "6.12"),  # as the real node
    ({"version": "6", "patchlevel": "12", "sublevel": "3"}, "6.12.3"),  # before 2023
    ({"version": 6.0, "patchlevel": 12.0, "sublevel": 3.0}, "6.12.3"),
    ({"version": True, "patchlevel": False, "sublevel": None}, None),
    ({"version": "six", "patchlevel": "12", "sublevel": None}, None),
    ({"version": -6, "patchlevel": 12, "sublevel": None}, None),
    ({"version": 6, "patchlevel": 12, "sublevel": "-rc3"}, "6.12"),
    ({"version": 6, "patchlevel": 0, "sublevel": None}, "6.0"),  # v6.0: zero is a number
    ({"version": 6, "patchlevel": 1, "sublevel": 0}, "6.1.0"),
    ({"version": 6, "patchlevel": None, "sublevel": 3}, None),  # no patchlevel: no version to name
])
def test_kernel_version_is_made_of_the_revision_s_numbers_only(version, expected):
    # upstream.md §2.5: version, patchlevel and sublevel are integers (strings of them before
    # 2023); a float's text ("6.0") or a boolean's ("true") named no kernel.
    node = json.loads(real_text(MAESTRO, REAL_JOB))
    node["data"]["kernel_revision"]["version"] = version
    api = only(docs(node)).body["kernelci_api"]
    assert api.get("kernel_version") == expected


@pytest.mark.parametrize("test_revision, expected", [
    # KernelCI's models make it a revision object, as kernel_revision: its commit names it.
    ({"tree": "ltp", "url": "https://github.com/linux-test-project/ltp.git", "branch": "master",
      "commit": "4bd6f9fd0f65a2b7e1e3d0cbbb6f1c8e0e5ac0de", "describe": "20240930-29-g4bd6f9fd0"},
     "4bd6f9fd0f65a2b7e1e3d0cbbb6f1c8e0e5ac0de"),
    ({"tree": "ltp", "describe": "20240930"}, "20240930"),
    ("4bd6f9fd0f65", "4bd6f9fd0f65"),
    (None, None),  # as the real node
    ({"commit": None}, None),
    # Neither commit nor describe: the tree and the branch name no revision of it.
    ({"tree": "ltp", "url": "https://github.com/linux-test-project/ltp.git", "branch": "master"}, None),
])
def test_a_node_s_test_revision_is_kept_whether_an_object_or_a_name(test_revision, expected):
    node = json.loads(real_text(MAESTRO, REAL_JOB))
    node["data"]["test_source"] = "https://github.com/linux-test-project/ltp.git"
    node["data"]["test_revision"] = test_revision
    body = only(docs(node)).body
    assert body["kernelci_api"].get("test_revision") == expected
    assert body["kernelci_api"]["test_source"] == "https://github.com/linux-test-project/ltp.git"
    assert field_problems("boot", body) == []


def test_the_real_job_node_gives_a_boot_document():
    node = json.loads(real_text(MAESTRO, REAL_JOB))
    body = only(docs(node)).body
    assert (body["board"], body["board_instance"], body["lava_job_id"], body["boot_result"]) == (
        "sc7180-trogdor-lazor-limozeen", "sc7180-trogdor-lazor-limozeen-cbg-7", 16081547, "pass")
    assert body["defconfig_full"].startswith(body["defconfig"] + "+lab-setup")
    assert body["kernelci_api"]["callback_data_url"] == node["artifacts"]["callback_data"]  # SAS query kept
    assert field_problems("boot", body) == []


# The same shapes as the legacy source ----------------------------------------------------------

def test_a_kbuild_and_its_legacy_build_json_give_the_same_build_fields():
    item = build_item("next", "next-20190531", "arm64", "defconfig", BASE, build_env="gcc-8")
    legacy = only(documents_for(BUILD, build_json(item), BASE)).body
    node = dict(_minimal("kbuild"), result="pass", artifacts={
        name: "%s/kbuild-gcc-8-arm64-%s/%s" % (FILES, "ab" * 12, file) for name, file in
        (("build_log", "build.log"), ("kernel", "Image"), ("modules", "modules.tar.xz"))})
    node["data"] = {"kernel_revision": {"tree": "next", "branch": "master", "commit": item["git_commit"],
                                        "describe": "next-20190531", "url": json.loads(build_json(item))["git_url"]},
                    "arch": "arm64", "defconfig": "defconfig", "config_full": "defconfig", "compiler": "gcc-8"}
    api = without_api(only(docs(node)).body)
    assert set(api) <= set(FIELDS["build"])
    shared = set(api) & set(legacy)
    assert shared == set(api) - {"kconfig_fragments"}  # legacy's is "": not a value, so not kept
    assert {name: api[name] for name in shared} == {name: legacy[name] for name in shared}


def test_a_lab_jobs_log_documents_are_those_made_one_by_one_and_encode_alike():
    """Its log documents are made from one loop's parts (documents.lava.LogLines), as a legacy
    file's are: each is what the fields, id and time of its line make, with its body's JSON."""
    callback = json.loads(real_text(LEGACY, MESON))
    callback["log"] += '- {"dt": "1960-01-01T00:00:00.5", "lvl": 7, "msg": {"case": "x"}}\n- "a plain line"\n'
    node = dict(_minimal("job"), name="baseline", group="baseline", path=["checkout", "kbuild", "baseline"],
                result="pass", data={"platform": "meson-gxbb-p200", "runtime": "lava-baylibre", "job_id": "370874"})
    content = json.dumps({"node": node, "callback_data": json.dumps(callback)}).encode()
    documents = documents_for("job", content)
    logs = [document for document in documents if document.kind == "log"]
    assert len(logs) == len(yamlsafe.load(callback["log"], "log")) > 1000
    shared = {name: value for name, value in logs[0].body.items() if name not in ("lineno", "level", "message")}
    for lineno, (document, item) in enumerate(zip(logs, yamlsafe.load(callback["log"], "log")), 1):
        fields, line_time = log_line_fields(lineno, item)
        assert document.body == dict(shared, **{name: value for name, value in fields.items() if value is not None})
        assert document.body_json == serialised(document.body)
        assert document.doc_id == document_id("log", "kernelci_api", node["id"], lineno)
        assert document.timestamp == iso_timestamp(line_time or datetime(2024, 10, 16, 1, 2, 3, 4000, tzinfo=UTC))
    for encode, separator in ((logstash_json, b","), (ndjson_record, b"")):
        built = encoded_documents("job", content, None, None, encode, separator)
        assert built.items == [encode(document) for document in documents]
        assert built.kept == docids.by_index(documents)


def test_a_lab_job_with_its_callback_and_the_legacy_lava_json_give_the_same_boot_and_log_documents():
    text = real_text(LEGACY, MESON)
    legacy = documents_for(LAVA, text.encode())
    legacy_boot = [document for document in legacy if document.kind == "boot"][0].body
    node = dict(_minimal("job"), name="baseline", group="baseline", path=["checkout", "kbuild", "baseline"],
                result="pass", data={
                    "kernel_revision": {"tree": "next", "branch": "master", "commit": legacy_boot["git_commit"],
                                        "describe": "next-20201119", "url": legacy_boot["git_url"]},
                    "arch": "arm64", "defconfig": "defconfig", "config_full": "defconfig", "compiler": "gcc-8",
                    "platform": "meson-gxbb-p200", "device": "meson-gxbb-p200-01", "runtime": "lava-baylibre",
                    "job_id": "370874"})
    documents = docs(node, callback_data=text)
    boot = without_api(documents[0].body)
    assert set(boot) <= set(FIELDS["boot"])
    differing = {name for name in set(boot) & set(legacy_boot) if boot[name] != legacy_boot[name]}
    assert differing == {"lab_name"}  # lava-baylibre: Maestro names the runtime, legacy the lab
    # What only the legacy file had came from the backend or the legacy job metadata.
    assert set(legacy_boot) - set(boot) == {"mach", "endian", "file_server_resource"}
    legacy_logs = [document for document in legacy if document.kind == "log"]
    logs = documents[1:]
    assert len(logs) == len(legacy_logs)
    for mine, theirs in zip(logs, legacy_logs):
        assert mine.timestamp == theirs.timestamp
        assert {name: mine.body[name] for name in ("lineno", "level", "message")} == \
            {name: theirs.body.get(name) for name in ("lineno", "level", "message")}
        assert set(without_api(mine.body)) <= set(FIELDS["log"])


def test_test_nodes_use_the_legacy_test_fields_with_their_types(tree):
    legacy_types = {}
    for document in documents_for(LAVA, real_text(LEGACY, MESON).encode()):
        if document.kind == "test":
            legacy_types.update({name: type(value) for name, value in document.body.items() if value is not None})
    for name in ("login", "case-0", "case-1", "kunit-case-0", "setup"):
        body = without_api(only(docs(tree[name])).body)
        assert set(body) <= set(FIELDS["test"])
        assert {field: type(value) for field, value in body.items() if value is not None and field in legacy_types} \
            == {field: legacy_types[field] for field, value in body.items() if value is not None and field in legacy_types}


# Tests and the job they ran in (the source adds the job to the envelope) --------------------------

def test_a_test_takes_the_lava_job_id_and_device_from_its_job(tree):
    job = {"id": tree["baseline"]["id"], "data": {"job_id": "7700001", "device": "meson-cbg-1",
                                                  "platform": "meson-gxbb-p200", "runtime": "lava-collabora"}}
    bare = only(docs(tree["login"])).body
    assert "lava_job_id" not in bare and "board_instance" not in bare  # the test node alone does not say
    body = only(docs(tree["login"], job_node=job)).body
    assert (body["lava_job_id"], body["board_instance"], body["board"], body["lab_name"]) == \
        (7700001, "meson-cbg-1", "meson-gxbb-p200", "lava-collabora")
    assert body["kernelci_api"]["job_node_id"] == tree["baseline"]["id"]
    assert field_problems("test", body) == []


@pytest.mark.parametrize("result, error_code, verdict", [
    ("pass", None, ("pass", None)),
    ("fail", None, ("pass", None)),  # a suite failed after the board booted
    ("fail", "Job", ("fail", "kernel")),
    ("incomplete", "Infrastructure", ("unknown", "infrastructure")),
    (None, None, ("unknown", None)),
])
def test_a_test_of_a_lab_job_carries_its_boot_s_verdict_as_legacy_test_documents_do(tree, result, error_code,
                                                                                   verdict):
    # Every document of a legacy LAVA job carries boot_result and boot_failure: so do the tests
    # of an API lab job, from the job node as its boot document reads them.
    job = copy.deepcopy(tree["kselftest"])
    job.update(result=result)
    job["data"]["error_code"] = error_code
    boot = only(docs(job)).body
    for name in ("case-1", "suite"):
        body = only(docs(tree[name], job_node=related_node(job))).body
        assert (body["boot_result"], body.get("boot_failure")) == verdict == (boot["boot_result"],
                                                                              boot.get("boot_failure"))
        assert field_problems("test", body) == []


@pytest.mark.parametrize("name, related", [("kunit-case-0", "kunit"), ("case-1", None)])
def test_a_test_of_a_container_job_or_of_no_known_job_says_nothing_of_a_boot(tree, name, related):
    envelope = {"job_node": related_node(tree[related])} if related else {}
    body = only(docs(tree[name], **envelope)).body
    assert "boot_result" not in body and "boot_failure" not in body


@pytest.mark.parametrize("job_node, expected", [
    ({"id": "cd" * 12, "data": {"job_id": "kci-kunit-x86", "platform": "other"}}, (None, "qemu-arm64")),
    ({"id": "cd" * 12, "data": {"job_id": 12}}, (12, "qemu-arm64")),  # a number is a LAVA job number too
    ("not a node", (None, "qemu-arm64")),
    ({"data": {"job_id": "5"}}, (5, "qemu-arm64")),  # no id: still its data
    ({"data": {"job_id": "\u0661\u0662"}}, (None, "qemu-arm64")),  # digits LAVA never writes: no job number
])
def test_a_test_keeps_its_own_fields_and_reads_only_lava_job_numbers_from_its_job(tree, job_node, expected):
    body = only(docs(tree["case-1"], job_node=job_node)).body
    assert (body.get("lava_job_id"), body["board"]) == expected
    assert field_problems("test", body) == []



def test_a_kubernetes_job_name_is_on_the_container_jobs_own_document_and_its_tests_name_the_job(tree):
    job = only(docs(tree["kunit"])).body
    assert "lava_job_id" not in job and job["kernelci_api"]["job_id"] == "kci-kunit"
    case = only(docs(tree["kunit-case-0"], job_node=related_node(tree["kunit"]))).body
    assert "lava_job_id" not in case and "job_id" not in case["kernelci_api"]
    assert case["kernelci_api"]["job_node_id"] == tree["kunit"]["id"]

# Regressions --------------------------------------------------------------------------------------

def test_a_regression_gives_the_failing_revision_and_test_and_what_its_runs_add(tree):
    node = tree["regression"]
    failed, job = tree["case-1"], tree["kselftest"]
    passed = {"id": node["data"]["pass_node"], "created": "2024-10-15T09:00:00.000000",
              "data": {"kernel_revision": {"commit": "1" * 40, "describe": "v6.12-rc2"}}}
    body = only(docs(node, fail_node=failed, fail_job_node=job, pass_node=passed,
                     viewer_urls={"fail_node": "https://api/viewer?node_id=" + failed["id"]})).body
    assert without_api(body) == {
        "job": "mainline", "git_branch": "master", "git_commit": failed["data"]["kernel_revision"]["commit"],
        "git_url": "https://git.kernel.org/pub/scm/linux/kernel/git/mainline/linux.git",
        "git_describe": "v6.12-rc3-45-gc862449c840a", "kernel": "v6.12-rc3-45-gc862449c840a",
        "arch": "arm64", "defconfig": "defconfig", "defconfig_full": "defconfig+lab-setup",
        "build_environment": "gcc-12", "board": "qemu-arm64", "board_instance": "qemu-arm64-cbg-1",
        "lab_name": "lava-baylibre", "lava_job_id": 7700002, "plan": "kselftest-exec", "name": "exec_execveat_1",
        "test_path": "kselftest-exec.kselftest-exec.exec_execveat_1", "status": "active",
        "fail_node": failed["id"], "pass_node": passed["id"],
        "fail_node_url": "https://api/viewer?node_id=" + failed["id"],
        "pass_git_commit": "1" * 40, "pass_git_describe": "v6.12-rc2", "pass_kernel": "v6.12-rc2",
        "pass_time": "2024-10-15T09:00:00.000Z", "runs_since": 0,
    }
    assert field_problems("regression", body) == []
    document = only(docs(node))
    assert (document.kind, document.index) == ("regression", "regression-2024.10.16")
    assert document.timestamp == "2024-10-16T00:20:00.000Z"  # the regression node's own date


@pytest.mark.parametrize("key", ["failed_kernel_revision", "kernel_revision", "failed_kernel_version"])
def test_the_failing_revision_is_read_under_each_name_the_api_gave_it(tree, key):
    node = copy.deepcopy(tree["regression"])
    data = node["data"]
    data[key] = data.pop("failed_kernel_revision")
    body = only(docs(node)).body
    assert (body["job"], body["git_describe"]) == ("mainline", "v6.12-rc3-45-gc862449c840a")


@pytest.mark.parametrize("older", ["kernel_revision", "failed_kernel_version"])
def test_a_regression_holding_an_older_name_too_is_described_by_failed_kernel_revision(tree, older):
    # The README: the fields come from data.failed_kernel_revision; the older names are read
    # only in its place.
    node = copy.deepcopy(tree["regression"])
    node["data"][older] = {"tree": "next", "branch": "master", "commit": "2" * 40, "describe": "next-20241016"}
    body = only(docs(node)).body
    assert (body["job"], body["git_describe"]) == ("mainline", "v6.12-rc3-45-gc862449c840a")


@pytest.mark.parametrize("key", ["failed_kernel_revision", "kernel_revision", "failed_kernel_version"])
def test_a_regression_s_kernelci_api_describes_the_failing_revision_under_each_name(tree, key):
    # docs/api-source.md: kernel_version, patchset, commit_tags, commit_message and tip_of_branch
    # come from the node's kernel revision, which a regression node names `failed_kernel_revision`
    # (upstream.md §2.5): they were kept only for the older name `kernel_revision`.
    revision = json.loads(real_text(MAESTRO, REAL_JOB))["data"]["kernel_revision"]
    node = copy.deepcopy(tree["regression"])
    del node["data"]["failed_kernel_revision"]
    node["data"][key] = revision
    api = only(docs(node)).body["kernelci_api"]
    assert {name: api.get(name) for name in ("kernel_version", "commit_tags", "commit_message", "tip_of_branch")} == {
        "kernel_version": "6.12", "commit_tags": ["staging-mainline-20241016.0"],
        "commit_message": "staging-mainline-20241016.0", "tip_of_branch": False}
    assert only(docs(node)).body["git_describe"] == "staging-mainline-20241016.0"


@pytest.mark.parametrize("missing", [None, "absent", {}])
def test_a_regression_without_its_own_revision_and_configuration_takes_the_failing_run_s(tree, missing):
    # The failing run is what the tracker copied them from (Regression.create_regression); the
    # source fetches it for its lab and job, as the small extract related_node keeps.
    node = copy.deepcopy(tree["regression"])
    for name in ("failed_kernel_revision", "arch", "defconfig", "config_full", "compiler"):
        if missing == "absent":
            node["data"].pop(name)
        else:
            node["data"][name] = copy.deepcopy(missing) if name == "failed_kernel_revision" else None
    failed = tree["case-1"]
    body = only(docs(node, fail_node=related_node(failed), fail_job_node=related_node(tree["kselftest"]))).body
    revision = failed["data"]["kernel_revision"]
    assert {name: body.get(name) for name in (
        "job", "git_branch", "git_commit", "git_url", "git_describe", "kernel", "arch", "defconfig",
        "defconfig_full", "build_environment")} == {
        "job": revision["tree"], "git_branch": revision["branch"], "git_commit": revision["commit"],
        "git_url": revision["url"], "git_describe": revision["describe"], "kernel": revision["describe"],
        "arch": "arm64", "defconfig": "defconfig", "defconfig_full": "defconfig+lab-setup",
        "build_environment": "gcc-12"}
    assert field_problems("regression", body) == []


def test_a_regression_moved_from_the_2023_collection_names_its_failing_run_s_kernel_and_board(tree):
    # kernelci-api's 2023-12 migration made nodes of the old `regression` collection with only
    # the ids of their runs in `data` (and no result).
    node = {name: copy.deepcopy(value) for name, value in tree["regression"].items() if name != "result"}
    node["data"] = {name: node["data"][name] for name in ("pass_node", "fail_node")}
    failed, passed = tree["case-1"], tree["case-0"]
    body = only(docs(node, fail_node=related_node(failed), fail_job_node=related_node(tree["kselftest"]),
                     pass_node=related_node(passed))).body
    assert (body["job"], body["git_commit"], body["kernel"], body["arch"], body["board"], body["lab_name"]) == (
        "mainline", failed["data"]["kernel_revision"]["commit"], failed["data"]["kernel_revision"]["describe"],
        "arm64", "qemu-arm64", "lava-baylibre")
    assert (body["status"], body["fail_node"], body["pass_node"]) == ("unknown", failed["id"], node["data"]["pass_node"])
    assert field_problems("regression", body) == []


def test_a_regression_s_own_revision_wins_over_its_failing_run_s(tree):
    failed = copy.deepcopy(tree["case-1"])
    failed["data"]["kernel_revision"] = {"tree": "other", "commit": "2" * 40, "describe": "v0"}
    failed["data"]["arch"] = "x86_64"
    body = only(docs(tree["regression"], fail_node=related_node(failed))).body
    assert (body["job"], body["git_describe"], body["arch"]) == ("mainline", "v6.12-rc3-45-gc862449c840a", "arm64")


@pytest.mark.parametrize("own, failing, job, expected", [
    # The tracker copied the failing run's error into the regression node: its own comes first.
    ({"error_code": "Test", "error_msg": "own"}, {"error_code": "Job", "error_msg": "run's"}, {},
     ("Test", "own", "lava-baylibre")),
    ({"error_code": None, "error_msg": None}, {"error_code": "Job", "error_msg": "run's"}, {},
     ("Job", "run's", "lava-baylibre")),
    # Code and message come from one node: the run's message is about the run's own error.
    ({"error_code": "Test", "error_msg": None}, {"error_code": "Job", "error_msg": "run's"}, {},
     ("Test", None, "lava-baylibre")),
    ({"error_code": None, "error_msg": "own"}, {"error_code": "Job", "error_msg": "run's"}, {},
     (None, "own", "lava-baylibre")),
    # A regression node names no runtime: the failing run's, else its job's.
    ({}, {"runtime": None}, {"runtime": "lava-collabora"}, (None, None, "lava-collabora")),
    ({}, {"runtime": "lava-broonie"}, {"runtime": "lava-collabora"}, (None, None, "lava-broonie")),
])
def test_a_regression_takes_its_error_from_itself_first_and_its_lab_from_its_failing_run_first(
        tree, own, failing, job, expected):
    node = copy.deepcopy(tree["regression"])
    node["data"].update(own)
    failed, failed_job = copy.deepcopy(tree["case-1"]), copy.deepcopy(tree["kselftest"])
    failed["data"].update(failing)
    failed_job["data"].update(job)
    body = only(docs(node, fail_node=related_node(failed), fail_job_node=related_node(failed_job))).body
    assert (body.get("error_type"), body.get("error_msg"), body.get("lab_name")) == expected
    assert field_problems("regression", body) == []


def test_a_regression_and_its_failing_test_name_each_other(tree):
    # upstream.md §2.5: the regression node names its first failing run (data.fail_node) and the
    # failing test node its regression (data.regression): both ids are kept, in the fields a
    # Kibana filter on one document finds the other with.
    regression = tree["regression"]
    failed = copy.deepcopy(tree["case-1"])
    failed["data"]["regression"] = regression["id"]
    test = only(docs(failed, job_node=related_node(tree["kselftest"])))
    found = only(docs(regression, fail_node=related_node(failed)))
    assert found.body["fail_node"] == test.body["kernelci_api"]["node_id"] == failed["id"]
    assert test.body["kernelci_api"]["regression"] == found.body["kernelci_api"]["node_id"] == regression["id"]
    assert test.body["result"] == "fail" and found.body["status"] == "active"


@pytest.mark.parametrize("result, sequence, status, runs", [
    ("fail", [], "active", 0), ("fail", ["ef" * 12], "active", 1), ("pass", ["ef" * 12, "fe" * 12], "inactive", 2),
    (None, None, "unknown", None), ("incomplete", "not a list", "unknown", None),
])
def test_a_regression_says_whether_it_is_still_failing_and_how_many_runs_followed(tree, result, sequence, status,
                                                                                   runs):
    node = copy.deepcopy(tree["regression"])
    node.update(result=result)
    node["data"]["node_sequence"] = sequence
    document = only(docs(node))
    assert (document.body["status"], document.body.get("runs_since")) == (status, runs)
    assert document.doc_id == document_id("regression", "kernelci_api", node["id"])  # one id, every version
    assert field_problems("regression", document.body) == []


@pytest.mark.parametrize("related", [
    {"fail_node": "text", "pass_node": ["a"], "fail_job_node": 3, "viewer_urls": "x"},
    {"fail_node": {"data": "x"}, "pass_node": {"data": {"kernel_revision": "v6"}, "created": "not a date"}},
    {"viewer_urls": {"fail_node": 5, "pass_node": None}},
])
def test_unusable_related_nodes_leave_their_fields_out(tree, related):
    node = copy.deepcopy(tree["regression"])
    node["data"].update(fail_node="not an id", pass_node=None, platform=None)
    body = only(docs(node, **related)).body
    assert field_problems("regression", body) == []
    for name in ("fail_node", "pass_node", "pass_git_describe", "pass_time", "fail_node_url", "lab_name"):
        assert name not in body


JUNK = [None, 7, 2.5, True, "", "x" * 20000, [], [1, {"a": None}], {"nested": {"deep": [None]}}, "\u0000\ud7ff"]


@pytest.mark.parametrize("where", ["node", "data", "related"])
def test_a_regression_with_junk_in_any_field_gives_a_valid_document_or_a_reason(tree, where):
    regression = tree["regression"]
    targets = {"node": sorted(regression), "data": sorted(regression["data"]),
               "related": ["fail_node", "fail_job_node", "pass_node", "viewer_urls"]}[where]
    for name in targets:
        for junk in JUNK:
            node = copy.deepcopy(regression)
            envelope = {"fail_node": tree["case-1"], "fail_job_node": tree["kselftest"], "pass_node": tree["case-0"]}
            {"node": node, "data": node["data"], "related": envelope}[where][name] = junk
            try:
                documents = documents_for("regression", json.dumps(dict(envelope, node=node)).encode())
            except RejectedInput as refusal:
                assert str(refusal) and "\n" not in str(refusal)
                continue
            for document in documents:
                check(document)
                assert field_problems(document.kind, document.body) == [], (where, name, junk)


def test_a_test_with_junk_in_its_job_gives_a_valid_document(tree):
    for name in ("id", "data", "job_id", "device", "platform", "runtime"):
        for junk in JUNK:
            job = {"id": tree["kselftest"]["id"], "data": dict(tree["kselftest"]["data"])}
            (job if name in ("id", "data") else job["data"])[name] = junk
            document = only(docs(tree["case-1"], job_node=job))
            check(document)
            assert field_problems("test", document.body) == [], (name, junk)


def test_a_lab_job_whose_fields_are_too_long_to_repeat_in_each_log_line_is_made_without_its_log(tree):
    # Each log document holds the job's fields whole: a platform name of 60,000 characters and
    # 8,000 log lines would make half a gigabyte of documents from a node of 700 kB. The node's
    # own document is made, saying why its log is left out; with a few lines, the log is made.
    callback = json.loads(real_text(LEGACY, MESON))
    node = copy.deepcopy(tree["baseline"])
    node["data"]["platform"] = "p" * 60_000

    def with_lines(lines: int) -> list:
        callback["log"] = "\n".join(['- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "m"}'] * lines)
        return docs(node, callback_data=json.dumps(callback))

    (boot,) = with_lines(8_000)
    (left_out,) = boot.body["kernelci_api"]["artifact_errors"]
    assert left_out.startswith("callback_data: log left out: its 8000 test and log documents would each repeat "
                               "up to 60")
    assert boot.body["board"] == "p" * 60_000 and boot.body["job_status"] == "complete"
    boot, *logs = with_lines(500)
    assert len(logs) == 500 and "artifact_errors" not in boot.body["kernelci_api"]
    assert {log.body["board"] for log in logs} == {"p" * 60_000}
