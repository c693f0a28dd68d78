"""A build.json becomes one build document, whatever era's spelling it uses.

Also here: what documents_for refuses before any kind-specific work (content that is not a JSON
object), what validate.check refuses, and that the document layer does no I/O.
"""
import ast
import dataclasses
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.documents.fields import field_problems
from kcing.documents.validate import check
from kcing.errors import RejectedInput
from kcing.records import BUILD, Document

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LISTED = datetime(2019, 5, 31, 4, 46, 58, 512000, tzinfo=timezone.utc)

# upstream.md §1.7, the early-2019 form kcing's mapping expects.
SPEC_BUILD = {
    "arch": "arm64",
    "build_environment": "gcc-8",
    "build_log": "build.log",
    "build_platform": ["Linux", "build-j4127-arm64-gcc-8-defconfig-x7k2p", "4.15.0-1040-azure",
                       "#44-Ubuntu SMP Thu Feb 21 14:24:01 UTC 2019", "x86_64", ""],
    "build_result": "PASS",
    "build_threads": 10,
    "build_time": 511.84,
    "compiler": "gcc",
    "compiler_version": "8",
    "compiler_version_full": "aarch64-linux-gnu-gcc (Debian 8.3.0-2) 8.3.0",
    "cross_compile": "aarch64-linux-gnu-",
    "defconfig": "defconfig",
    "defconfig_full": "defconfig",
    "dtb_dir": "dtbs",
    "file_server_resource": "next/master/next-20190531/arm64/defconfig/gcc-8",
    "git_branch": "master",
    "git_commit": "8c5eba9a1a1ce6dc4c1a5c2da3d2c1e25e9dbb43",
    "git_describe": "next-20190531",
    "git_describe_v": "next-20190531",
    "git_url": "https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git",
    "job": "next",
    "kconfig_fragments": "",
    "kernel_config": "kernel.config",
    "kernel_image": "Image",
    "modules": "modules.tar.xz",
    "system_map": "System.map",
    "text_offset": "0x00080000",
    "vmlinux_bss_size": 1019904,
    "vmlinux_data_size": 5259712,
    "vmlinux_file_size": 152362184,
    "vmlinux_text_size": 13369344,
}


def build_doc(changes=None, created=LISTED, removed=()):
    build = dict(SPEC_BUILD, **(changes or {}))
    for key in removed:
        del build[key]
    (document,) = documents_for(BUILD, json.dumps(build).encode("utf-8"), created)
    return document


def sample_builds():
    manifest = SAMPLES / "manifest.json"
    if not manifest.is_file():
        return []
    objects = json.loads(manifest.read_text(encoding="utf-8"))["objects"]
    return [pytest.param(obj, id=obj["upstream_id"]) for obj in objects if obj["kind"] == BUILD]


def test_the_spec_example_becomes_a_typed_document():
    document = build_doc()
    body = document.body
    assert document.kind == "build" and document.index == "build-2019.05.31"
    assert document.timestamp == "2019-05-31T04:46:58.512Z"
    assert body["kernel"] == "next-20190531"  # build.json has no `kernel`: the backend used git_describe
    assert (body["build_result"], body["build_time"], body["build_threads"]) == ("PASS", 511.84, 10)
    assert body["build_platform"][-1] == "" and len(body["build_platform"]) == 6
    assert body["vmlinux_file_size"] == 152362184
    assert "kconfig_fragments" not in body  # empty upstream
    assert field_problems("build", body) == []


@pytest.mark.parametrize("changes, removed, expected", [
    pytest.param({"status": "pass"}, ("build_result",), {"build_result": "PASS"}, id="status-2019-10"),
    pytest.param({"build_result": "fail"}, (), {"build_result": "FAIL"}, id="lowercase-result"),
    pytest.param({}, ("build_result",), {"build_result": "UNKNOWN"}, id="no-result"),
    pytest.param({"git_describe_verbose": "v5.2-rc2-1234-g8c5eba9a1a1c"}, ("git_describe_v",),
                 {"git_describe_v": "v5.2-rc2-1234-g8c5eba9a1a1c"}, id="git-describe-verbose-2019-05"),
    pytest.param({"kernel": "next-20190531-custom"}, (), {"kernel": "next-20190531-custom"}, id="explicit-kernel"),
    pytest.param({}, ("defconfig_full",), {"defconfig_full": "defconfig"}, id="defconfig-only"),
    pytest.param({"build_time": "511.84", "build_threads": "10", "vmlinux_bss_size": "1019904.0"}, (),
                 {"build_time": 511.84, "build_threads": 10, "vmlinux_bss_size": 1019904}, id="numbers-as-strings"),
    pytest.param({"build_time": "fast", "build_threads": True, "vmlinux_bss_size": 1.5}, (),
                 {"build_time": None, "build_threads": None, "vmlinux_bss_size": None}, id="unreadable-numbers"),
    pytest.param({"compiler_version": 8}, (), {"compiler_version": "8"}, id="number-as-keyword"),
    pytest.param({"kernel_image": None, "dtb_dir": None}, (), {"kernel_image": None, "dtb_dir": None},
                 id="nulls-left-out"),
    pytest.param({"_id": "x", "host": "builder", "@timestamp": "now", "dtb_dir_data": ["a"]}, (),
                 {"_id": None, "host": None, "@timestamp": None, "dtb_dir_data": None}, id="unknown-fields-left-out"),
])
def test_spellings_and_types_are_normalised(changes, removed, expected):
    body = build_doc(changes, removed=removed).body
    assert {key: body.get(key) for key in expected} == expected
    assert field_problems("build", body) == []


def test_the_id_is_the_storage_path():
    assert build_doc().doc_id == build_doc({"build_time": 1.0}, created=datetime(2021, 1, 1)).doc_id
    other_path = "next/master/next-20190531/arm64/defconfig/gcc-9"
    assert build_doc().doc_id != build_doc({"file_server_resource": other_path}).doc_id


def test_without_a_storage_path_the_id_comes_from_the_path_fields():
    first = build_doc(removed=("file_server_resource",))
    assert first.doc_id == build_doc(removed=("file_server_resource",)).doc_id
    assert first.doc_id != build_doc({"build_environment": "clang-8"}, removed=("file_server_resource",)).doc_id
    assert first.doc_id != build_doc().doc_id


def test_the_index_is_the_listing_day_not_today():
    assert build_doc(created=datetime(2020, 11, 19, 23, 59, 59, tzinfo=timezone.utc)).index == "build-2020.11.19"
    assert build_doc(created=datetime(2020, 11, 20, 1, 0)).index == "build-2020.11.20"  # naive is UTC


@pytest.mark.parametrize("changes, removed, created, reason", [
    pytest.param({}, ("job",), LISTED, "lacks job", id="no-job"),
    pytest.param({"arch": ["arm64"]}, (), LISTED, "lacks arch", id="arch-a-list"),
    pytest.param({}, ("git_describe",), LISTED, "lacks kernel", id="no-kernel-name"),
    pytest.param({}, ("defconfig", "defconfig_full"), LISTED, "lacks defconfig_full", id="no-defconfig"),
    pytest.param({}, (), None, "no date", id="no-listing-date"),
])
def test_a_build_without_what_identifies_it_is_refused(changes, removed, created, reason):
    with pytest.raises(RejectedInput, match=reason):
        build_doc(changes, created=created, removed=removed)


@pytest.mark.parametrize("content, reason", [
    pytest.param(b"", "empty file", id="empty"),
    pytest.param(b"  \n", "empty file", id="blank"),
    pytest.param(b'{"job": "next"', "not valid JSON", id="truncated"),
    pytest.param(b"[1, 2]", "not a JSON object but an array", id="array"),
    pytest.param(b'"build"', "not a JSON object but a string", id="string"),
    pytest.param(b'{"job": "caf\xe9"}', "not UTF-8", id="latin-1"),
    pytest.param(b"[" * 100000, "nested too deeply", id="deep"),
    pytest.param(b'{"job": "next", "odd": %s}' % (b"9" * 5000), "^not valid JSON: an integer of more than the 4300 "
                 "decimal digits an integer may have$", id="integer-of-5000-digits"),
    # A proxy's or a web server's page sent with 200 in place of the file: said so, and shown.
    pytest.param(b"\n<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                 r"not valid JSON: an HTML or XML page, a server's or a proxy's answer in place of the file "
                 r"\(<html><head><title>502 Bad Gateway</title>", id="html-page"),
    pytest.param(b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code></Error>',
                 "not valid JSON: an XML document, a server's or a proxy's answer", id="xml-error"),
])
def test_content_that_is_not_a_json_object_is_refused(content, reason):
    with pytest.raises(RejectedInput, match=reason):
        documents_for(BUILD, content, LISTED)


def test_an_integer_longer_than_the_digits_python_is_set_to_read_is_said_so_with_that_limit():
    """The limit is the interpreter's (PYTHONINTMAXSTRDIGITS or -X int_max_str_digits sets it)."""
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        with pytest.raises(RejectedInput, match="^not valid JSON: an integer of more than the 640 decimal digits"):
            documents_for(BUILD, b'{"job": "next", "odd": %s}' % (b"9" * 1000), LISTED)
    finally:
        sys.set_int_max_str_digits(before)


def test_a_page_holding_terminal_escapes_is_shown_with_them_escaped():
    """The reason quotes the page's start into the log, the run's problem lines and the ledger:
    an escape sequence there would clear or move the line on a terminal."""
    with pytest.raises(RejectedInput) as refused:
        documents_for(BUILD, b"<html>\x1b[2K\x1b[1Afake: all delivered\x00</html>", LISTED)
    assert str(refused.value).endswith("(<html>\\x1b[2K\\x1b[1Afake: all delivered\\x00</html>)")
    assert str(refused.value).isprintable()


def test_a_utf8_byte_order_mark_is_accepted():
    content = b"\xef\xbb\xbf" + json.dumps(SPEC_BUILD).encode("utf-8")
    assert documents_for(BUILD, content, LISTED)[0].body["job"] == "next"


def test_an_unknown_kind_is_a_caller_error():
    with pytest.raises(ValueError, match="unknown object kind"):
        documents_for("bmeta", b"{}", LISTED)


@pytest.mark.parametrize("obj", sample_builds())
def test_bundled_sample_builds_become_documents(obj):
    content = (SAMPLES / obj["path"]).read_bytes()
    created = datetime.fromisoformat(obj["date"].replace("Z", "+00:00"))
    (document,) = documents_for(BUILD, content, created)
    listing = obj["listing"]
    assert document.index == "build-" + created.strftime("%Y.%m.%d")
    for key in ("job", "kernel", "git_branch", "arch", "defconfig_full", "build_environment", "file_server_resource"):
        assert document.body[key] == listing[key]
    assert document.body["build_result"] in ("PASS", "FAIL")
    assert field_problems("build", document.body) == []


def test_escaped_lone_surrogates_become_replacement_characters():
    text = json.dumps(dict(SPEC_BUILD, compiler_version_full="LONE", build_log="LITERAL", compiler="PAIR"))
    # In the JSON text: a lone surrogate escape, an escaped backslash followed by "udcff", a pair.
    text = text.replace('"LONE"', r'"gcc \udcff"').replace('"LITERAL"', r'"a\\udcff.log"')
    text = text.replace('"PAIR"', r'"\ud83d\ude00"')
    body = documents_for(BUILD, text.encode("utf-8"), LISTED)[0].body
    assert body["compiler_version_full"] == "gcc \ufffd"
    assert body["build_log"] == "a\\udcff.log"
    assert body["compiler"] == "\U0001f600"


def test_an_escaped_lone_surrogate_written_in_upper_case_hex_is_replaced_too():
    # JSON allows either case ("\uDCFF"); a file holding no lower-case escape is read the same.
    text = json.dumps(dict(SPEC_BUILD, compiler_version_full="LONE")).replace('"LONE"', r'"gcc \uDCFF"')
    assert documents_for(BUILD, text.encode("utf-8"), LISTED)[0].body["compiler_version_full"] == "gcc \ufffd"


# -- validate.check: what makes a document unpostable --------------------------------------------

GOOD = Document("log", "log-2020.11.19", "a1", "2020-11-19T07:03:25.393Z", {"lineno": 1, "message": "x"})


@pytest.mark.parametrize("changes, reason", [
    pytest.param({"kind": "lava"}, "unknown document kind", id="kind"),
    pytest.param({"index": "log-2020.11.19-x"}, "bad index name", id="index-suffix"),
    pytest.param({"index": "test-2020.11.19"}, "bad index name", id="index-of-another-kind"),
    pytest.param({"timestamp": "2020-11-19T07:03:25"}, "not ISO 8601 with a zone", id="timestamp-without-zone"),
    pytest.param({"timestamp": 1605769405}, "not ISO 8601 with a zone", id="timestamp-epoch"),
    pytest.param({"doc_id": ""}, "empty document id", id="empty-id"),
    pytest.param({"doc_id": "x" * 513}, "longer than 512 bytes", id="long-id"),
    pytest.param({"body": {"_id": "x"}}, "Elasticsearch metadata field", id="underscore-field"),
    pytest.param({"body": {"@timestamp": "x"}}, "belongs to Logstash", id="timestamp-field"),
    pytest.param({"body": {"@metadata": {}}}, "belongs to Logstash", id="metadata-field"),
    pytest.param({"body": {"": 1}}, "cannot be indexed", id="empty-name"),
    pytest.param({"body": {"a.": 1}}, "cannot be indexed", id="trailing-dot"),
    pytest.param({"body": {1: 1}}, "not a string", id="numeric-name"),
    pytest.param({"body": {"host": "builder-1"}}, "collides with the Logstash http input", id="scalar-host"),
    pytest.param({"body": {"url": "/x"}}, "collides with the Logstash http input", id="scalar-url"),
    pytest.param({"body": {"x": float("nan")}}, "not JSON", id="nan"),
    pytest.param({"body": {"x": {1, 2}}}, "not JSON", id="set"),
    pytest.param({"body": {"x": "\ud800"}}, "lone surrogate", id="surrogate"),
    pytest.param({"body": ["x"]}, "not a mapping", id="body-a-list"),
])
def test_unpostable_documents_are_refused(changes, reason):
    with pytest.raises(RejectedInput, match=reason):
        check(dataclasses.replace(GOOD, **changes))


def test_postable_documents_pass():
    check(GOOD)
    check(dataclasses.replace(GOOD, body={"host": {"name": "x"}, "a.b": 1, "x@timestamp": 2}))
    check(dataclasses.replace(GOOD, body={}, timestamp="2020-11-19T07:03:25+01:00"))


def test_the_document_layer_imports_no_io():
    """documents/* stays pure: no HTTP, database, clock or filesystem modules."""
    forbidden = {"requests", "peewee", "time", "os", "socket", "urllib.request", "subprocess", "pathlib", "io"}
    package = Path(__file__).resolve().parents[1] / "kcing" / "documents"
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            assert not set(names) & forbidden, (module.name, names)


# -- bmeta.json (2020-09 on; alone on storage from 2021-04) -------------------------------------

def next_build_item(status="PASS"):
    from tests.fakes.legacy_data import build_item
    return build_item("next", "next-20210304", "arm64", "defconfig+kselftest", LISTED, status=status)


def test_a_bmeta_json_gives_the_same_build_document_as_its_build_json():
    from tests.fakes.legacy_data import bmeta_json, build_json
    item = next_build_item()
    (flat,) = documents_for(BUILD, build_json(item), LISTED)
    (nested,) = documents_for(BUILD, bmeta_json(item), LISTED)
    assert (nested.index, nested.doc_id, nested.timestamp) == (flat.index, flat.doc_id, flat.timestamp)
    # What only steps.json and artifacts.json say is not in bmeta.json; everything else is equal.
    only_in_build_json = {"build_log", "build_threads", "dtb_dir", "kernel_config", "modules"}
    assert set(flat.body) - set(nested.body) == only_in_build_json
    assert {name: nested.body[name] for name in nested.body} == \
        {name: flat.body[name] for name in nested.body}
    assert field_problems("build", nested.body) == []


def test_a_bmeta_json_in_kernelci_cores_own_shape():
    # The values of kernelci-core's bmeta test sample (next-20210304, defconfig+kselftest).
    bmeta = {
        "build": {"duration": 315.772096157074, "status": "FAIL"},
        "environment": {"arch": "arm64", "compiler": "gcc", "compiler_version": "8",
                        "compiler_version_full": "aarch64-linux-gnu-gcc (Debian 8.3.0-2) 8.3.0",
                        "cross_compile": "aarch64-linux-gnu-", "name": "gcc-8",
                        "platform": {"uname": ["Linux", "3ddfd7c7bfde", "4.19.0-12-amd64", "#1 SMP", "x86_64", ""]}},
        "kernel": {"defconfig": "defconfig", "defconfig_full": "defconfig+kselftest", "fragments": ["kernelci.config"],
                   "image": "Image", "publish_path": "next/master/next-20210304/arm64/defconfig+kselftest/gcc-8",
                   "system_map": "System.map", "text_offset": "0x10000000", "vmlinux_file_size": 573708760},
        "revision": {"branch": "master", "commit": "f5427c2460ebc11b1a66c1742d41077ae5b99796",
                     "describe": "next-20210304", "describe_verbose": "v5.12-rc1-1897-gf5427c2460eb",
                     "tree": "next", "url": "https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git"},
    }
    (document,) = documents_for(BUILD, json.dumps(bmeta).encode(), LISTED)
    body = document.body
    assert (body["job"], body["git_branch"], body["kernel"], body["git_describe_v"]) == \
        ("next", "master", "next-20210304", "v5.12-rc1-1897-gf5427c2460eb")
    assert (body["arch"], body["defconfig"], body["defconfig_full"], body["build_environment"]) == \
        ("arm64", "defconfig", "defconfig+kselftest", "gcc-8")
    assert (body["build_result"], body["build_time"], body["kconfig_fragments"]) == ("FAIL", 315.772096157074,
                                                                                      "kernelci.config")
    assert body["file_server_resource"] == "next/master/next-20210304/arm64/defconfig+kselftest/gcc-8"
    assert body["build_platform"][1] == "3ddfd7c7bfde"
    assert body["vmlinux_file_size"] == 573708760


def test_a_bmeta_json_of_the_first_nested_form_keeps_its_verbose_describe():
    # kernelci-core's first nested bmeta.json (its RevisionData step, late 2020) wrote the verbose
    # describe as `describe_v`; kernelci-backend's reader and later files say `describe_verbose`.
    bmeta = {
        "build": {"duration": 511.84, "status": "PASS"},
        "environment": {"arch": "arm64", "compiler": "gcc", "name": "gcc-8"},
        "kernel": {"defconfig": "defconfig", "defconfig_full": "defconfig", "image": "Image"},
        "revision": {"tree": "next", "url": "https://git.kernel.org/pub/scm/linux/kernel/git/next/linux-next.git",
                     "branch": "master", "describe": "next-20201119", "describe_v": "v5.10-rc4-5866-gf8550c0d35df",
                     "commit": "f8550c0d35df3d027724b250a8c5888dfb2fa749"},
    }
    (document,) = documents_for(BUILD, json.dumps(bmeta).encode(), LISTED)
    assert (document.body["git_describe"], document.body["git_describe_v"]) == \
        ("next-20201119", "v5.10-rc4-5866-gf8550c0d35df")
    # Where both are there, the later name wins, as for build.json's two spellings.
    bmeta["revision"]["describe_verbose"] = "v5.10-rc4-5866-gf8550c0d35df3"
    (document,) = documents_for(BUILD, json.dumps(bmeta).encode(), LISTED)
    assert document.body["git_describe_v"] == "v5.10-rc4-5866-gf8550c0d35df3"


def test_a_flat_bmeta_json_is_read_as_a_build_json():
    # Before the nested form, kernelci-core's install_kernel (2020) wrote the flat build.json
    # fields into bmeta.json (`status`, `git_describe_v`, a `kselftests` tarball name) and
    # uploaded no build.json beside it.
    flat = dict(SPEC_BUILD, status="FAIL", kselftests="kselftest.tar.xz", kconfig_fragments="frag.config")
    del flat["build_result"]
    (document,) = documents_for(BUILD, json.dumps(flat).encode(), LISTED)
    assert document.doc_id == build_doc().doc_id
    assert (document.body["build_result"], document.body["git_describe_v"], document.body["kconfig_fragments"]) == \
        ("FAIL", "next-20190531", "frag.config")
    assert "kselftests" not in document.body and field_problems("build", document.body) == []


@pytest.mark.parametrize("content, reason", [
    pytest.param({"revision": {"tree": "next"}}, "bmeta.json lacks environment.arch, revision.describe, "
                 "kernel.defconfig_full", id="bmeta-missing-fields"),
    pytest.param({"id": 370874, "status": 3, "definition": "device_type: qemu"},
                 "neither a build.json .* nor a bmeta.json",
                 id="a-lava-callback"),
    pytest.param({}, "neither a build.json .* nor a bmeta.json", id="empty-object"),
    pytest.param({"build": "PASS", "kernel": None}, "neither a build.json", id="sections-not-objects"),
])
def test_a_file_in_neither_format_names_the_formats_expected(content, reason):
    with pytest.raises(RejectedInput, match=reason):
        documents_for(BUILD, json.dumps(content).encode(), LISTED)


def test_a_bmeta_json_without_a_date_is_refused():
    from tests.fakes.legacy_data import bmeta_json
    with pytest.raises(RejectedInput, match="no date: bmeta.json carries none"):
        documents_for(BUILD, bmeta_json(next_build_item()), None)
