"""What the legacy documents say, end to end: the real `kcing feed_es` against the legacy replica
(or with local files) and the Logstash emulators, on the real upstream files and variants of them.

- the boot verdict of a job whose kernel faulted after the login prompt;
- the lab of files that do not name it (two labs, one LAVA job id and board);
- builds whose storage directory holds only bmeta.json, and bmeta.json given with --builds;
- local files dated by their content or --date, never by their modification time.
"""
from __future__ import annotations

import gzip
import json
import os
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.records import BUILD, LAVA
from tests.fakes.legacy_data import at, bmeta_json, boot_item, boot_json, build_item, build_json
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica
from tests.fakes.serving import ManualClock
from tests.feedrun import SAMPLES, clean_environ, feed_environ, kcing, ledger_rows, sample_objects

LEGACY = Path(__file__).resolve().parents[2] / "shared" / "data" / "upstream" / "legacy"
RAW_QEMU = LEGACY / "lava-callback-raw-incomplete-qemu.json"
TODAY = date(2021, 5, 3)


def raw_callback() -> dict:
    if not RAW_QEMU.is_file():
        pytest.skip("real upstream file %s is absent" % RAW_QEMU)
    return json.loads(RAW_QEMU.read_bytes())


def without_any_lab(callback: dict) -> dict:
    """The raw callback with no lab anywhere in it (a notify URL without `lab_name=`)."""
    callback = dict(callback, definition=callback["definition"].replace("lab_name=mgalka-lava-local&", ""))
    assert "lab_name" not in callback and "lab_name" not in callback["definition"]
    return callback


@pytest.fixture
def corpus():
    return LegacyCorpus()


@pytest.fixture
def replica(corpus):
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as running:
        yield running


@pytest.fixture
def env(replica, logstash, tmp_path):
    return feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_DAYS="2")


def qemu_build():
    """The build the raw QEMU callback booted, listed today."""
    return build_item("mgalka", "5680d14d59bd", "arm", "multi_v7_defconfig", at(TODAY, 0, 9),
                      branch="unhandled_exception")


def add_lava(corpus, build, lab, callback, hour):
    item = boot_item(build, lab, "qemu_arm-virt-gicv3", at(TODAY, 0, hour))
    path = "%s/%s/lava-json-qemu_arm-virt-gicv3.json" % (build["file_server_resource"], lab)
    corpus.add_boot(item, path, json.dumps(callback).encode())
    return item


def boots(logstash):
    return {doc_id: body for (index, doc_id), body in logstash.store.items() if index.startswith("boot-")}


# -- 1. the boot verdict ---------------------------------------------------------------------------

def test_a_kernel_fault_after_login_is_fed_as_a_failed_boot(corpus, replica, env, logstash, tmp_path):
    add_lava(corpus, qemu_build(), "mgalka-lava-local", raw_callback(), 10)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    (boot,) = boots(logstash).values()
    assert (boot["boot_result"], boot["boot_failure"], boot["job_status"]) == ("fail", "kernel", "incomplete")
    assert boot["error_type"] == "Job"
    others = [body for (index, _), body in logstash.store.items() if not index.startswith("boot-")]
    assert others and {body["boot_result"] for body in others} == {"fail"}  # tests and log lines alike


def test_an_infrastructure_error_is_not_fed_as_a_kernel_failure(corpus, replica, env, logstash, tmp_path):
    callback = raw_callback()
    callback["results"] = dict(callback["results"], lava=callback["results"]["lava"].replace(
        "error_type: Job", "error_type: Infrastructure"))
    add_lava(corpus, qemu_build(), "mgalka-lava-local", callback, 10)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    (boot,) = boots(logstash).values()
    assert (boot["boot_result"], boot["boot_failure"], boot["error_type"]) == ("unknown", "infrastructure",
                                                                               "Infrastructure")


# -- 2. the lab --------------------------------------------------------------------------------------

def test_two_labs_with_one_job_id_and_board_each_keep_their_documents(corpus, replica, env, logstash, tmp_path):
    build = qemu_build()
    callback = without_any_lab(raw_callback())
    add_lava(corpus, build, "lab-a", callback, 10)
    add_lava(corpus, build, "lab-b", callback, 11)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    labs = sorted(body["lab_name"] for body in boots(logstash).values())
    assert labs == ["lab-a", "lab-b"]
    per_lab = {}
    for (index, doc_id), body in logstash.store.items():
        per_lab.setdefault(body["lab_name"], set()).add((index, doc_id))
    expected = len(documents_for(LAVA, json.dumps(callback).encode(), None, "lab-a"))
    assert len(per_lab["lab-a"]) == len(per_lab["lab-b"]) == expected
    assert not per_lab["lab-a"] & per_lab["lab-b"]


def test_a_local_callback_naming_no_lab_is_refused_with_its_reason(logstash, tmp_path):
    path = tmp_path / "lava-json-qemu.json"
    path.write_text(json.dumps(without_any_lab(raw_callback())))
    result = kcing(["feed_es", "--lavas", str(path)], local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 1
    assert "names no lab" in result.stdout + result.stderr
    assert not logstash.store
    assert [row["state"] for row in ledger_rows(tmp_path / "kcing.db")] == ["rejected"]



def test_a_gzip_compressed_local_file_is_read_as_its_content_and_a_broken_one_rejected_alone(logstash, tmp_path):
    """An archived lava-json file (`.json.gz`), or an API job's `lava_callback.json.gz` artifact
    (upstream.md §2.7), is gzip file content: it was rejected as "not UTF-8 text (byte 1)"."""
    plain = (SAMPLES / "lava" / "5fb6196b59b5140d3b3a6259.json").read_bytes()
    packed = tmp_path / "lava-json-meson-gxbb-p200.json.gz"
    packed.write_bytes(gzip.compress(plain))
    broken = tmp_path / "lava-json-broken.json.gz"
    broken.write_bytes(gzip.compress(plain)[:200])
    result = kcing(["feed_es", "--lavas", str(packed), str(broken)], local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 1, result.stderr
    expected = {(document.index, document.doc_id) for document in documents_for(LAVA, plain)}
    assert set(logstash.store) == expected
    assert sorted(row["state"] for row in ledger_rows(tmp_path / "kcing.db")) == ["delivered", "rejected"]
    assert "lava-json-broken.json.gz: gzip-compressed, and gzip data cut short" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr



def test_a_gzip_compressed_local_file_too_large_once_decompressed_is_rejected_naming_the_setting(logstash, tmp_path):
    plain = (SAMPLES / "lava" / "5fb6196b59b5140d3b3a6259.json").read_bytes()
    packed = tmp_path / "lava-json-meson-gxbb-p200.json.gz"
    packed.write_bytes(gzip.compress(plain))
    assert len(packed.read_bytes()) < 100_000 < len(plain)
    result = kcing(["feed_es", "--lavas", str(packed)], dict(local_environ(logstash, tmp_path),
                                                              KCI_MAX_OBJECT_BYTES="100000"), tmp_path)
    assert result.returncode == 1, result.stderr
    assert ("lava-json-meson-gxbb-p200.json.gz: gzip-compressed, and larger than 100000 bytes once "
            "decompressed: raise KCI_MAX_OBJECT_BYTES to take it") in result.stdout, result.stdout
    assert not logstash.store


def test_a_local_file_and_a_gzip_compressed_copy_of_it_are_one_file_delivered_once(logstash, tmp_path):
    """The ledger knows a local file by its content: compressed (an archive's `.json.gz`), it is
    the same file, not another to deliver again, in the same run or in a later one however it
    was compressed (gzip writes the time it compressed into the file)."""
    plain = (SAMPLES / "lava" / "5fb6196b59b5140d3b3a6259.json").read_bytes()
    given = tmp_path / "lava-json-meson-gxbb-p200.json"
    given.write_bytes(plain)
    packed = tmp_path / "lava-json-meson-gxbb-p200.json.gz"
    packed.write_bytes(gzip.compress(plain, mtime=1))
    env = local_environ(logstash, tmp_path)
    first = kcing(["feed_es", "--lavas", str(given), str(packed)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "delivered 1," in first.stdout and "is listed again" in first.stderr
    documents = documents_for(LAVA, plain)
    assert len(logstash.lava.events_received) == len(documents)
    packed.write_bytes(gzip.compress(plain, mtime=2, compresslevel=1))
    again = kcing(["feed_es", "--lavas", str(packed)], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped 1 (already delivered)" in again.stdout
    assert len(logstash.lava.events_received) == len(documents)
    assert [row["state"] for row in ledger_rows(tmp_path / "kcing.db")] == ["delivered"]


def test_a_storage_file_served_gzip_compressed_without_content_encoding_is_read_as_its_content(
        corpus, replica, env, logstash, tmp_path):
    """A storage host (a mirror, an object store) holding `build.json` gzip-compressed and serving
    its bytes without `Content-Encoding`: the same file given with --builds was read, the crawled
    one rejected as "not UTF-8 text (byte 1)". A broken one is rejected alone, saying so."""
    whole = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 8))
    broken = build_item("next", "next-20210503", "riscv", "defconfig", at(TODAY, 0, 9))
    corpus.add_build(whole, gzip.compress(build_json(whole)))
    corpus.add_build(broken, gzip.compress(build_json(broken))[:100])
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    created = datetime(TODAY.year, TODAY.month, TODAY.day, 8, tzinfo=timezone.utc)
    (expected,) = documents_for(BUILD, build_json(whole), created)
    assert set(logstash.store) == {(expected.index, expected.doc_id)}
    assert logstash.store[(expected.index, expected.doc_id)]["arch"] == "arm64"
    states = {row["upstream_id"]: row["state"] for row in ledger_rows(tmp_path / "kcing.db")}
    assert states == {whole["_id"]["$oid"]: "delivered", broken["_id"]["$oid"]: "rejected"}
    assert "build.json: gzip-compressed, and gzip data cut short" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_storage_file_served_gzip_compressed_is_held_to_the_size_limit_once_decompressed(
        corpus, replica, env, logstash, tmp_path):
    """A few kilobytes of gzip can inflate to gigabytes: the content is held to KCI_MAX_OBJECT_BYTES
    while it is inflated, and the file is rejected, as a file served that large is."""
    bomb = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 8))
    corpus.add_build(bomb, gzip.compress(build_json(bomb) + b" " * 3_000_000))
    result = kcing(["feed_es"], dict(env, KCI_MAX_OBJECT_BYTES="2000000"), tmp_path)
    assert result.returncode == 1, result.stderr
    states = {row["upstream_id"]: row["state"] for row in ledger_rows(tmp_path / "kcing.db")}
    assert states == {bomb["_id"]["$oid"]: "rejected"}
    # The limit as set, and the setting named, as for a file served that large ("larger than 1 MB"
    # was said of a limit of 2 MB, and of 1024 bytes "0 MB", without naming the setting).
    assert ("build.json: gzip-compressed, and larger than 2000000 bytes once decompressed: raise "
            "KCI_MAX_OBJECT_BYTES to take it") in result.stdout, result.stdout
    assert not logstash.store

# -- 4. bmeta.json ----------------------------------------------------------------------------------

def test_a_build_with_only_bmeta_json_on_storage_is_fed_like_its_build_json(corpus, replica, env, logstash,
                                                                            tmp_path):
    flat = build_item("next", "next-20210430", "arm64", "defconfig", at(TODAY, 0, 8))
    nested = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 9))
    corpus.add_build(flat, build_json(flat))
    corpus.add_bmeta_build(nested, bmeta_json(nested))
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    created = datetime(TODAY.year, TODAY.month, TODAY.day, 9, tzinfo=timezone.utc)
    (expected,) = documents_for(BUILD, bmeta_json(nested), created)
    assert logstash.store[(expected.index, expected.doc_id)]["kernel"] == "next-20210503"
    assert {body["kernel"] for body in logstash.store.values()} == {"next-20210430", "next-20210503"}
    paths = [request.path for request in replica.storage.requests]
    assert sum(path.endswith("/bmeta.json") for path in paths) == 1  # only where build.json is missing


def test_a_build_json_storage_says_is_gone_is_looked_for_as_bmeta_json_too(corpus, replica, env, logstash, tmp_path):
    # A storage or mirror answering 410 for what it does not hold: the file is not there, as a 404 says.
    nested = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 9))
    path = corpus.add_bmeta_build(nested, bmeta_json(nested))
    replica.storage.fail_next("/" + path.rsplit("/", 1)[0] + "/build.json", 410, count=None)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {body["kernel"] for body in logstash.store.values()} == {"next-20210503"}
    # Neither there: both answers named (the last one ends as a 404 does, taken as not there).
    gone = build_item("next", "next-20210504", "arm64", "defconfig", at(TODAY, 0, 10))
    corpus.add_item("build", gone)
    replica.storage.fail_next("/" + gone["file_server_resource"] + "/build.json", 410, count=None)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1
    assert "build.json answered 410, and bmeta.json answered 404" in result.stdout


def test_a_build_with_neither_file_fails_naming_both(corpus, replica, env, logstash, tmp_path):
    missing = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 9))
    corpus.add_item("build", missing)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1
    assert "build.json answered 404, and bmeta.json answered 404" in result.stdout
    assert [row["state"] for row in ledger_rows(tmp_path / "kcing.db")] == ["failed"]


# -- 4 and 5. local files ---------------------------------------------------------------------------

def local_environ(logstash, tmp_path):
    return clean_environ(ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"],
                         KCING_DB=str(tmp_path / "kcing.db"), ES_RETRY_BACKOFF="0.05", ES_TIMEOUT="10")


def sample_build():
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    return next(obj for obj in sample_objects() if obj.kind == "build")


def test_a_local_build_lands_where_the_samples_feed_put_it_whatever_its_mtime(logstash, tmp_path):
    sample = sample_build()
    (from_samples,) = documents_for(BUILD, sample.path.read_bytes(), sample.date)
    copy = tmp_path / "build.json"
    copy.write_bytes(sample.path.read_bytes())
    os.utime(copy, (1e9, 1e9))  # 2001: a date the build has nothing to do with
    day = sample.date.strftime("%Y-%m-%d")
    result = kcing(["feed_es", "--builds", str(copy), "--date", day], local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(logstash.store) == {(from_samples.index, from_samples.doc_id)}


def test_a_local_build_given_again_with_another_date_is_said_to_stay_where_it_was_delivered(logstash, tmp_path):
    # A wrong --date put right: the file is delivered already, so the run skips it, and said
    # only "skipped 1 (already delivered)", as if its documents now were in the new day's index.
    sample = sample_build()
    env = local_environ(logstash, tmp_path)
    first = kcing(["feed_es", "--builds", str(sample.path), "--date", "2021-11-04"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    again = kcing(["feed_es", "-q", "--builds", str(sample.path), "--date", "2020-11-04"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert {index for index, _ in logstash.store} == {"build-2021.11.04"}
    warnings = [line for line in again.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, again.stderr
    assert warnings[0].endswith("was delivered dated 2021-11-04, not 2020-11-04: skipped as delivered, its documents "
                                "stay in the indices of 2021-11-04")
    # The same day, at another time of it, is the same index: nothing to say.
    same_day = kcing(["feed_es", "-q", "--builds", str(sample.path), "--date", "2021-11-04 23:00"], env, tmp_path)
    assert same_day.returncode == 0 and "WARNING" not in same_day.stderr, same_day.stderr


def test_a_local_bmeta_json_is_the_same_build_document_as_its_build_json(logstash, tmp_path):
    item = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 9))
    (tmp_path / "build.json").write_bytes(build_json(item))
    (tmp_path / "bmeta.json").write_bytes(bmeta_json(item))
    env = local_environ(logstash, tmp_path)
    for name in ("build.json", "bmeta.json"):
        result = kcing(["feed_es", "--builds", str(tmp_path / name), "--date", "2021-05-03"], env, tmp_path)
        assert result.returncode == 0, result.stderr
    (key,) = logstash.store  # the second file overwrote the first's document: one build, one document
    assert key[0] == "build-2021.05.03"
    assert logstash.store[key]["kernel"] == "next-20210503"


def test_a_local_build_without_a_date_is_refused_until_one_is_given(logstash, tmp_path):
    sample = sample_build()
    env = local_environ(logstash, tmp_path)
    refused = kcing(["feed_es", "--builds", str(sample.path)], env, tmp_path)
    assert refused.returncode == 1
    assert "no date: build.json carries none" in refused.stdout and "--date" in refused.stdout
    assert "Traceback" not in refused.stderr
    assert not logstash.store
    accepted = kcing(["feed_es", "--builds", str(sample.path), "--date", "2020-11-04"], env, tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert {index for index, _ in logstash.store} == {"build-2020.11.04"}


def test_a_local_file_in_neither_build_format_is_refused_naming_them(logstash, tmp_path):
    path = tmp_path / "lava-json-qemu.json"
    path.write_bytes(RAW_QEMU.read_bytes() if RAW_QEMU.is_file() else b'{"id": 1}')
    result = kcing(["feed_es", "--builds", str(path), "--date", "2021-05-03"], local_environ(logstash, tmp_path),
                   tmp_path)
    assert result.returncode == 1
    assert "neither a build.json" in result.stdout and "nor a bmeta.json" in result.stdout


def test_a_boot_report_given_as_a_build_is_refused_and_never_overwrites_the_build_it_booted(logstash, tmp_path):
    """A boot report names the file_server_resource of the build it booted, and a build's id is its
    storage directory: taken for a build.json (`--builds boot-<board>.json`, a slip of the flag),
    it became a build document of that id, `build_result: UNKNOWN`, in place of the real one."""
    build = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 9))
    built = tmp_path / "build.json"
    built.write_bytes(build_json(build))
    report = tmp_path / "boot-meson-gxbb-p200.json"
    report.write_bytes(boot_json(boot_item(build, "lab-baylibre-seattle", "meson-gxbb-p200", at(TODAY, 0, 10))))
    env = local_environ(logstash, tmp_path)
    assert kcing(["feed_es", "--builds", str(built), "--date", "2021-05-03"], env, tmp_path).returncode == 0
    (stored,) = logstash.store.values()
    assert stored["build_result"] == "PASS"
    slip = kcing(["feed_es", "--builds", str(report), "--date", "2021-05-03"], env, tmp_path)
    assert slip.returncode == 1, slip.stdout + slip.stderr
    assert "a boot's file, not a build.json or bmeta.json" in slip.stdout
    assert list(logstash.store.values()) == [stored] and len(logstash.build.events_received) == 1
    assert sorted(row["state"] for row in ledger_rows(tmp_path / "kcing.db")) == ["delivered", "rejected"]


@pytest.mark.parametrize("option, given, reason", [
    ("--boots", "lava", "a LAVA callback (it holds a job definition), not a boot report: a lava-json-<board>.json "
                        "is fed with --lavas"),
    ("--builds", "lava", "nor a bmeta.json (build, environment, kernel and revision sections): it is a LAVA "
                         "callback (it holds a job definition), which is fed with --lavas"),
    ("--boots", "build", "a build's file, not a boot report: a build.json or bmeta.json is fed with --builds"),
    ("--boots", "bmeta", "a build's file, not a boot report: a build.json or bmeta.json is fed with --builds"),
    ("--lavas", "build", "a build's file, not a LAVA callback: a build.json or bmeta.json is fed with --builds"),
    ("--lavas", "bmeta", "a build's file, not a LAVA callback: a build.json or bmeta.json is fed with --builds"),
])
def test_a_local_file_given_to_another_kind_s_option_is_refused_saying_what_it_is(logstash, tmp_path, option, given,
                                                                                  reason):
    """Read as the kind of its option, it was refused for lacking what that kind holds (`boot report
    lacks board, job, ...`, `LAVA callback has no integer job id`), which says nothing of the slip."""
    build = build_item("next", "next-20210503", "arm64", "defconfig", at(TODAY, 0, 9))
    content = {"lava": RAW_QEMU.read_bytes() if RAW_QEMU.is_file() else None, "build": build_json(build),
               "bmeta": bmeta_json(build)}[given]
    if content is None:
        pytest.skip("the real raw LAVA callback is not here")
    path = tmp_path / "file.json"
    path.write_bytes(content)
    result = kcing(["feed_es", option, str(path), "--date", "2021-05-03"], local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stdout
    assert not logstash.store and [row["state"] for row in ledger_rows(tmp_path / "kcing.db")] == ["rejected"]


def test_a_local_lava_file_is_dated_by_its_own_times_not_by_date_or_mtime(logstash, tmp_path):
    path = tmp_path / "lava-json-qemu.json"
    path.write_text(json.dumps(raw_callback()))
    os.utime(path, (1e9, 1e9))
    result = kcing(["feed_es", "--lavas", str(path), "--date", "2030-01-01"], local_environ(logstash, tmp_path),
                   tmp_path)
    assert result.returncode == 0, result.stderr
    assert {index.split("-", 1)[1] for index, _ in logstash.store} == {"2020.10.23"}  # the job's end_time


def test_a_local_lava_file_given_again_with_another_date_is_skipped_with_nothing_to_warn_of(logstash, tmp_path):
    # Its own times name its index, whatever --date says: the other day changes nothing.
    path = tmp_path / "lava-json-qemu.json"
    path.write_text(json.dumps(raw_callback()))
    env = local_environ(logstash, tmp_path)
    first = kcing(["feed_es", "--lavas", str(path), "--date", "2030-01-01"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    again = kcing(["feed_es", "-q", "--lavas", str(path), "--date", "2031-01-01"], env, tmp_path)
    assert again.returncode == 0 and "WARNING" not in again.stderr, again.stderr
    assert {index.split("-", 1)[1] for index, _ in logstash.store} == {"2020.10.23"}


@pytest.mark.parametrize("day", ["1969-12-31", "9999-12-31", "0001-01-01", "9999-12-31T23:59:59-01:00",
                                 "0001-01-01T00:00:00+01:00"])
def test_a_date_no_index_can_be_named_by_is_a_usage_error_not_a_missing_date(logstash, tmp_path, day):
    """Documents are dated 1970 to 9998: a --date outside those was taken, then every file was
    rejected as if none had been given. One whose offset takes it past the year 9999 (or before
    the year 1) in UTC is outside them too, not "no date"."""
    result = kcing(["feed_es", "--builds", str(sample_build().path), "--date", day],
                   local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kcing feed_es: --date expects a day from 1970 to 9998, not %r" % day]
    assert not logstash.store


def test_a_date_that_is_not_one_is_a_usage_error(logstash, tmp_path):
    result = kcing(["feed_es", "--builds", str(tmp_path / "x.json"), "--date", "soon"],
                   local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kcing feed_es: --date expects a date such as 2020-11-04 or '2020-11-04 09:41', not 'soon'"]


@pytest.mark.parametrize("facts, url, expected", [
    pytest.param({"listing": {"lab_name": "lab-collabora"}}, "https://s/a/b/lab-x/lava-json-b.json", "lab-collabora",
                 id="the-listing-item"),
    pytest.param({"listing": {"lab_name": None}}, "https://s/next/master/v/arm/d/gcc-8/lab-x/lava-json-b.json",
                 "lab-x", id="the-storage-path"),
    pytest.param({"url": "https://s/next/master/v/arm/d/gcc-8/lab-cip/boot-b.json"}, "samples/boot/1.json",
                 "lab-cip", id="a-sample-by-its-storage-url"),
    pytest.param({}, "https://s/next/master/v/arm/d/gcc-8/build.json", None, id="not-a-lab-file"),
    pytest.param({}, "/home/me/lab-copy/lava-json-b.json", None, id="a-local-file-never"),
    pytest.param({}, "https://s/next/x/..%2F/lava-json-b.json", None, id="unsafe-segment"),
])
def test_the_listed_lab(facts, url, expected):
    from kcing.records import UpstreamObject
    from kcing.sources import listed_lab
    assert listed_lab(UpstreamObject("legacy", LAVA, "x", url, facts=facts)) == expected


def test_a_sample_build_without_a_manifest_date_is_refused_not_dated_by_its_file(logstash, tmp_path):
    sample = sample_build()
    samples = tmp_path / "samples"
    (samples / "build").mkdir(parents=True)
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    (entry,) = [entry for entry in manifest["objects"] if entry["upstream_id"] == sample.upstream_id]
    del entry["date"]
    (samples / entry["path"]).write_bytes(sample.path.read_bytes())
    (samples / "manifest.json").write_text(json.dumps(dict(manifest, objects=[entry])))
    env = dict(local_environ(logstash, tmp_path), KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(samples))
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1
    assert "no date: build.json carries none" in result.stdout
    assert "the samples manifest's" in result.stdout  # the reason says where a date comes from
    assert not logstash.store


def test_a_local_file_larger_than_the_object_limit_is_refused_unread_and_the_run_goes_on(logstash, tmp_path):
    sample = sample_build()
    good = tmp_path / "build.json"
    good.write_bytes(sample.path.read_bytes())
    huge = tmp_path / "huge.json"
    with huge.open("wb") as sparse:  # 300 MB that take no disk: read whole, they would take memory
        sparse.truncate(300 * 1024 * 1024)
    just_over = tmp_path / "just_over.json"  # one byte more than the limit: refused as unread too
    with just_over.open("wb") as sparse:
        sparse.truncate(1048577)
    env = dict(local_environ(logstash, tmp_path), KCI_MAX_OBJECT_BYTES="1048576")
    result = kcing(["feed_es", "--builds", str(huge), str(just_over), str(good), "--date", "2020-11-04"], env,
                   tmp_path)
    assert result.returncode == 1, result.stderr
    assert "more than the limit of 1048576: raise KCI_MAX_OBJECT_BYTES" in result.stdout
    assert "just_over.json: 1048577 bytes, more than the limit of 1048576" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr
    assert len(logstash.store) == 1  # the other file was fed


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_local_path_that_is_no_regular_file_is_refused_without_reading_it(logstash, tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)  # no writer: opened as usual, it would block forever
    result = kcing(["feed_es", "--builds", special, "--date", "2020-11-04"], local_environ(logstash, tmp_path),
                   tmp_path, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "not a regular file" in result.stdout
    assert not logstash.store


@pytest.mark.parametrize("day", ["-5", "2020", "2020-11", "Nov 2020"])
def test_a_date_that_names_no_whole_day_is_a_usage_error_not_filled_from_today(logstash, tmp_path, day):
    """`--date -5` dated the documents the 5th of this month, `--date 2020` today's day of 2020:
    an index named by the day the command ran."""
    result = kcing(["feed_es", "--builds", str(sample_build().path), "--date", day],
                   local_environ(logstash, tmp_path), tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "kcing feed_es: --date expects a date with its year, month and day, such as 2020-11-04 or "
        "'2020-11-04 09:41', not %r" % day]
    assert not logstash.store
