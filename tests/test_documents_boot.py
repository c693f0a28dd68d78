"""A boot-<board>.json report (labs without LAVA) becomes one boot document with proper types."""
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.documents.fields import field_problems
from kcing.errors import RejectedInput
from kcing.records import BOOT
from tests.feedrun import clean_environ, kcing

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# A LAVA lab's boot report as the backend wrote it (upstream.md §1.8, flavour (b)).
LAVA_LAB_REPORT = Path(__file__).resolve().parent / "data" / "upstream_shapes" / "boot-rk3288-veyron-jaq.json"
LISTED = datetime(2019, 5, 31, 7, 2, 22, 117000, tzinfo=timezone.utc)

# upstream.md §1.8, flavour (a), as lab-baylibre-seattle posted it: numbers and booleans as strings.
SPEC_REPORT = {
    "version": "1.0",
    "lab_name": "lab-baylibre-seattle",
    "job": "mainline", "kernel": "v5.2-rc2-24-gbec7550cca10", "git_branch": "master",
    "git_commit": "bec7550cca10a6fb8a0a9c2a6b6ab2d6e2d8c9a1", "git_describe": "v5.2-rc2-24-gbec7550cca10",
    "arch": "arm", "defconfig": "multi_v7_defconfig", "defconfig_full": "multi_v7_defconfig",
    "build_environment": "gcc-8",
    "board": "am335x-boneblack", "board_instance": "bbb-01", "mach": "omap2",
    "boot_result": "PASS", "boot_time": "7.62", "boot_warnings": 0, "boot_retries": 0,
    "boot_log": "boot-am335x-boneblack.txt", "boot_log_html": "boot-am335x-boneblack.html",
    "dtb": "dtbs/am335x-boneblack.dtb", "dtb_addr": "0x81f00000", "dtb_append": "False",
    "endian": "little", "fastboot": "false",
    "initrd": None, "initrd_addr": "0x82000000", "kernel_image": "zImage", "loadaddr": "0x82000000",
    "file_server_resource": "mainline/master/v5.2-rc2-24-gbec7550cca10/arm/multi_v7_defconfig/gcc-8",
}


def boot_doc(changes=None, created=LISTED, removed=()):
    report = dict(SPEC_REPORT, **(changes or {}))
    for key in removed:
        del report[key]
    (document,) = documents_for(BOOT, json.dumps(report, indent="  ").encode("utf-8"), created)
    return document


def sample_reports():
    manifest = SAMPLES / "manifest.json"
    if not manifest.is_file():
        return []
    objects = json.loads(manifest.read_text(encoding="utf-8"))["objects"]
    return [pytest.param(obj, id=obj["upstream_id"]) for obj in objects if obj["kind"] == BOOT]


def test_the_spec_example_becomes_a_typed_document():
    document = boot_doc()
    body = document.body
    assert (document.kind, document.index) == ("boot", "boot-2019.05.31")
    assert document.timestamp == "2019-05-31T07:02:22.117Z"
    assert (body["boot_result"], body["boot_time"]) == ("pass", 7.62)
    assert (body["fastboot"], body["dtb_append"]) == (False, False)
    assert (body["boot_warnings"], body["boot_retries"]) == (0, 0)
    assert (body["lab_name"], body["board"], body["board_instance"]) == (
        "lab-baylibre-seattle", "am335x-boneblack", "bbb-01")
    assert "initrd" not in body
    assert field_problems("boot", body) == []


@pytest.mark.parametrize("changes, removed, expected", [
    pytest.param({"boot_time": "4.30"}, (), {"boot_time": 4.3}, id="time-string"),
    pytest.param({"boot_time": 4}, (), {"boot_time": 4.0}, id="time-integer"),
    pytest.param({"boot_time": None}, (), {"boot_time": None}, id="time-null"),
    pytest.param({"boot_time": "None"}, (), {"boot_time": None}, id="time-none-word"),
    pytest.param({"fastboot": True, "dtb_append": "True"}, (), {"fastboot": True, "dtb_append": True}, id="booleans"),
    pytest.param({"fastboot": "maybe"}, (), {"fastboot": None}, id="unreadable-boolean"),
    pytest.param({"boot_warnings": None, "boot_retries": "2"}, (), {"boot_warnings": None, "boot_retries": 2},
                 id="counts"),
    pytest.param({"boot_result": "OFFLINE"}, (), {"boot_result": "offline"}, id="result-lowercased"),
    pytest.param({}, ("boot_result",), {"boot_result": "unknown"}, id="no-result"),
    pytest.param({}, ("git_describe",), {"git_describe": "v5.2-rc2-24-gbec7550cca10"}, id="describe-from-kernel"),
    pytest.param({}, ("defconfig_full",), {"defconfig_full": "multi_v7_defconfig"}, id="defconfig-only"),
    pytest.param({"load_addr": "0x80008000"}, ("loadaddr",), {"loadaddr": "0x80008000"}, id="load-addr-spelling"),
    pytest.param({"metadata": {"a": 1}, "qemu": "x", "url": "http://x"}, (), {"metadata": None, "url": None},
                 id="unknown-fields-left-out"),
])
def test_loose_types_are_read_tolerantly(changes, removed, expected):
    body = boot_doc(changes, removed=removed).body
    assert {key: body.get(key) for key in expected} == expected
    assert field_problems("boot", body) == []


@pytest.mark.parametrize("result, expected", [
    pytest.param("PASS", ("pass", None), id="pass"),
    pytest.param("FAIL", ("fail", "kernel"), id="fail-the-kernel-s"),
    pytest.param("OFFLINE", ("offline", "infrastructure"), id="offline-the-lab-s"),
    pytest.param("UNTRIED", ("untried", None), id="untried-nobody-known"),
    # Only the backend wrote UNKNOWN, for a LAVA lab's job canceled or failed by its lab
    # (upstream.md §1.8 (b)); a lab posting its own report knew PASS, FAIL, OFFLINE, UNTRIED.
    pytest.param("UNKNOWN", ("unknown", "infrastructure"), id="unknown-the-lab-s"),
    pytest.param(" Unknown\n", ("unknown", "infrastructure"), id="unknown-any-case"),
    pytest.param(None, ("unknown", None), id="none"),
    pytest.param("", ("unknown", None), id="empty"),
])
def test_a_report_says_who_failed_as_a_lava_boot_does(result, expected):
    # `boot_failure: kernel` is the filter for the boots a kernel developer must look at: a lab
    # without LAVA that reported FAIL is one of them, as a LAVA job that failed is.
    body = boot_doc({"boot_result": result}).body
    assert (body["boot_result"], body.get("boot_failure")) == expected
    assert field_problems("boot", body) == []


def test_a_lava_lab_report_the_backend_wrote_unknown_is_the_lab_s_failure_through_kcing(tmp_path):
    # A LAVA lab's boot report (flavour (b)): the backend wrote UNKNOWN for a job LAVA canceled or
    # that failed for an Infrastructure error, the verdict the job's lava-json file gives as
    # `boot_result: unknown, boot_failure: infrastructure`; the same boot read from its report
    # must say the same, or a `boot_failure : infrastructure` filter misses it.
    out = tmp_path / "out"
    done = kcing(["feed_es", "--output", str(out), "--date", "2019-08-31", "--boots", str(LAVA_LAB_REPORT)],
                 clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("*.ndjson")
    action, source = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(action)["index"]["_index"] == "boot-2019.08.31"
    body = json.loads(source)
    assert (body["boot_result"], body.get("boot_failure")) == ("unknown", "infrastructure")
    assert (body["lab_name"], body["board"], body["board_instance"]) == (
        "lab-collabora", "rk3288-veyron-jaq", "rk3288-veyron-jaq-cbg-0")
    assert body["defconfig_full"] == "multi_v7_defconfig+CONFIG_EFI=y+CONFIG_ARM_LPAE=y"
    assert "directory_path" not in body  # the backend's own file system path
    assert field_problems("boot", {k: v for k, v in body.items() if k != "@timestamp"}) == []


def test_the_id_is_lab_board_and_build():
    first = boot_doc()
    assert first.doc_id == boot_doc({"boot_time": "9.99"}, created=datetime(2022, 1, 1)).doc_id
    assert first.doc_id != boot_doc({"board": "beaglebone-black"}).doc_id
    assert first.doc_id != boot_doc({"lab_name": "lab-baylibre"}).doc_id
    assert first.doc_id != boot_doc({"file_server_resource": "mainline/master/x/arm/multi_v7_defconfig/gcc-8"}).doc_id
    without_path = boot_doc(removed=("file_server_resource",))
    assert without_path.doc_id == boot_doc(removed=("file_server_resource",)).doc_id != first.doc_id


@pytest.mark.parametrize("changes, removed, created, reason", [
    pytest.param({}, ("lab_name",), LISTED, "lacks lab_name", id="no-lab"),
    pytest.param({"board": {"name": "x"}}, (), LISTED, "lacks board", id="board-an-object"),
    pytest.param({}, ("kernel", "job"), LISTED, "lacks job, kernel", id="no-tree-no-kernel"),
    pytest.param({}, ("defconfig", "defconfig_full"), LISTED, "lacks defconfig_full", id="no-defconfig"),
    pytest.param({}, (), None, "no date", id="no-listing-date"),
])
def test_a_report_without_what_identifies_it_is_refused(changes, removed, created, reason):
    with pytest.raises(RejectedInput, match=reason):
        boot_doc(changes, created=created, removed=removed)


@pytest.mark.parametrize("obj", sample_reports())
def test_bundled_sample_reports_become_documents(obj):
    content = (SAMPLES / obj["path"]).read_bytes()
    created = datetime.fromisoformat(obj["date"].replace("Z", "+00:00"))
    (document,) = documents_for(BOOT, content, created)
    listing = obj["listing"]
    for key in ("lab_name", "board", "job", "kernel", "arch", "defconfig_full", "file_server_resource"):
        assert document.body[key] == listing[key]
    assert document.body["boot_result"] in ("pass", "fail")
    assert isinstance(document.body["boot_time"], float)
    assert field_problems("boot", document.body) == []


@pytest.mark.parametrize("changes, removed, expected", [
    pytest.param({"boot_retries": 2}, (), 2, id="boot_retries"),
    pytest.param({"retries": 3}, ("boot_retries",), 3, id="retries-as-lava-ci-wrote-it"),
    pytest.param({"retries": "1"}, ("boot_retries",), 1, id="retries-as-a-string"),
    pytest.param({"boot_retries": 0, "retries": 4}, (), 0, id="boot_retries-wins"),
    pytest.param({}, ("boot_retries",), None, id="neither"),
])
def test_retries_are_read_under_both_names(changes, removed, expected):
    assert boot_doc(changes, removed=removed).body.get("boot_retries") == expected


def test_a_report_without_a_lab_takes_the_listed_lab():
    report = dict(SPEC_REPORT)
    del report["lab_name"]
    (document,) = documents_for(BOOT, json.dumps(report).encode(), LISTED, "lab-baylibre-seattle")
    assert document.body["lab_name"] == "lab-baylibre-seattle"
    assert document.doc_id == boot_doc().doc_id  # the same report naming its lab: the same document
    with pytest.raises(RejectedInput, match="lacks lab_name"):
        documents_for(BOOT, json.dumps(report).encode(), LISTED)


def test_a_report_naming_its_lab_keeps_it_whatever_the_listing_names():
    (document,) = documents_for(BOOT, json.dumps(SPEC_REPORT).encode(), LISTED, "lab-elsewhere")
    assert document.body["lab_name"] == "lab-baylibre-seattle"
    assert document.doc_id == boot_doc().doc_id


def test_a_boot_report_without_its_board_read_as_its_lava_object_is_refused_as_a_boot_report():
    # Its `boot_result` alone says it is a boot report, not a LAVA callback: the reason says what it lacks.
    report = dict(SPEC_REPORT)
    del report["board"]
    with pytest.raises(RejectedInput, match="boot report lacks board"):
        documents_for("lava", json.dumps(report).encode(), LISTED)


def test_a_lava_labs_boot_report_read_as_its_lava_object_gives_the_boot_reports_document():
    # A LAVA lab's boot from before the backend stored LAVA callbacks (2017-12-21) has its boot
    # report alone: the legacy source fetches that for the boot's lava object.
    report = json.dumps(dict(SPEC_REPORT, lab_name=None), indent="  ").encode("utf-8")
    (as_lava,) = documents_for("lava", report, LISTED, listed_lab="lab-collabora")
    (as_boot,) = documents_for(BOOT, report, LISTED, listed_lab="lab-collabora")
    assert (as_lava.kind, as_lava.index, as_lava.doc_id, as_lava.body) == \
        (as_boot.kind, as_boot.index, as_boot.doc_id, as_boot.body)
    assert as_lava.body["lab_name"] == "lab-collabora"


@pytest.mark.parametrize("callback, reason", [
    pytest.param({"id": 370874, "status": 2}, "LAVA job 370874 has no definition text", id="no-definition"),
    pytest.param({"id": 370874, "definition": "device_type: x\n", "board": "x", "boot_result": "PASS"},
                 "definition has no metadata mapping", id="a-callback-with-report-keys-stays-a-callback"),
])
def test_a_lava_callback_is_never_read_as_a_boot_report(callback, reason):
    with pytest.raises(RejectedInput, match=reason):
        documents_for("lava", json.dumps(callback).encode(), LISTED, listed_lab="lab-collabora")
