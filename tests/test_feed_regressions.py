"""Regressions and test-to-job links from the KernelCI API, end to end: the real `kcing feed_es
--source api` against the API replica and the Logstash emulators.

Two checkouts of one tree: on the older one a kselftest case passed, on the newer one it failed,
and the replica holds the regression node KernelCI's tracker makes for that (tests/fakes/api_data.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kcing.documents.identity import document_id
from tests.fakes.api_corpus import parse_api_time
from tests.fakes.api_data import checkout_tree
from tests.fakes.api_replica import ApiReplica
from tests.feedrun import api_feed_environ, kcing, ledger_states

NEW = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6)
OLD = NEW - timedelta(days=1)


@pytest.fixture
def api_replica():
    replica = ApiReplica()
    replica.start()
    replica.old = checkout_tree(replica.corpus, replica.files_url, OLD, seed="old", describe="v6.12-rc2",
                                case_results=("pass", "pass", "skip"))
    replica.new = checkout_tree(replica.corpus, replica.files_url, NEW, seed="new", describe="v6.12-rc3",
                                previous=replica.old)
    yield replica
    replica.stop()
    assert not replica.errors


@pytest.fixture
def env(api_replica, logstash, tmp_path):
    return api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="3")


def regression_documents(logstash) -> dict:
    return {key: body for key, body in logstash.store.items() if key[0].startswith("regression-")}


def document(logstash, kind: str, node: dict) -> dict:
    (body,) = [body for (index, _), body in logstash.store.items()
               if index.startswith(kind + "-") and body["kernelci_api"]["node_id"] == node["id"]]
    return body


def sent_to(logstash) -> dict:
    return {route: len(emulator.events_received) for route, emulator in logstash.emulators.items()}


def test_a_regression_becomes_one_document_linking_both_runs(env, tmp_path, api_replica, logstash):
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    node, failed, passed = (api_replica.new["regression"], api_replica.new["case-1"], api_replica.old["case-1"])
    created = parse_api_time(node["created"])
    key = ("regression-%s" % created.strftime("%Y.%m.%d"), document_id("regression", "kernelci_api", node["id"]))
    assert set(regression_documents(logstash)) == {key}
    body = logstash.store[key]
    assert {name: body.get(name) for name in (
        "job", "git_branch", "git_describe", "pass_git_describe", "git_commit", "pass_git_commit", "status",
        "test_path", "name", "plan", "board", "lab_name", "lava_job_id", "fail_node", "pass_node",
        "fail_node_url", "pass_node_url", "arch", "build_environment", "defconfig_full", "runs_since")} == {
        "job": "mainline", "git_branch": "master",
        "git_describe": "v6.12-rc3", "pass_git_describe": "v6.12-rc2",  # failing and last passing kernels
        "git_commit": failed["data"]["kernel_revision"]["commit"],
        "pass_git_commit": passed["data"]["kernel_revision"]["commit"],
        "status": "active", "test_path": "kselftest-exec.kselftest-exec.exec_execveat_1",
        "name": "exec_execveat_1", "plan": "kselftest-exec", "board": "qemu-arm64",
        "lab_name": "lava-baylibre", "lava_job_id": 7700002,  # the LAVA job the failing case ran in
        "fail_node": failed["id"], "pass_node": passed["id"],
        "fail_node_url": "%s/viewer?node_id=%s" % (api_replica.api_url, failed["id"]),
        "pass_node_url": "%s/viewer?node_id=%s" % (api_replica.api_url, passed["id"]),
        "arch": "arm64", "build_environment": "gcc-12", "defconfig_full": "defconfig+lab-setup", "runs_since": 0,
    }
    assert body["@timestamp"] == created.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # dated by the node
    assert sent_to(logstash)["regression"] == 1  # through the regression input only


def test_a_regression_updated_upstream_is_sent_again_in_place_and_a_rerun_sends_nothing(env, tmp_path,
                                                                                       api_replica, logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    node = api_replica.new["regression"]
    (key,) = regression_documents(logstash)
    # The test passed again on a later run: the tracker appends it and marks the regression inactive.
    later_run = "f" * 24
    api_replica.corpus.update(node["id"], when=datetime.now(timezone.utc) - timedelta(minutes=1), result="pass",
                              data={"node_sequence": [later_run]})
    before = sent_to(logstash)

    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    after = sent_to(logstash)
    assert after["regression"] - before["regression"] == 1
    assert {route: after[route] - before[route] for route in ("build", "lava", "boot")} == \
        {"build": 0, "lava": 0, "boot": 0}
    assert set(regression_documents(logstash)) == {key}  # the same id and index: overwritten, not doubled
    body = logstash.store[key]
    assert (body["status"], body["runs_since"], body["node_sequence"]) == ("inactive", 1, [later_run])
    assert "delivered 1" in second.stdout

    third = kcing(["feed_es"], env, tmp_path)
    assert third.returncode == 0, third.stderr
    assert sent_to(logstash) == after
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}


def test_test_documents_name_the_lava_job_device_and_lab_they_ran_in(env, tmp_path, api_replica, logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    baseline = api_replica.new["baseline"]
    for name in ("login", "kernelmsg", "setup"):
        body = document(logstash, "test", api_replica.new[name])
        assert (body["lava_job_id"], body["board_instance"], body["board"], body["lab_name"]) == \
            (7700001, "meson-gxbb-p200-cbg-1", "meson-gxbb-p200", "lava-collabora"), name
        assert body["kernelci_api"]["job_node_id"] == baseline["id"]
    case = document(logstash, "test", api_replica.new["case-1"])  # two levels below its job
    assert (case["lava_job_id"], case["board_instance"]) == (7700002, "qemu-arm64-cbg-1")
    kunit = document(logstash, "test", api_replica.new["kunit-case-0"])  # a Kubernetes job: no LAVA id
    assert "lava_job_id" not in kunit and kunit["kernelci_api"]["job_node_id"] == api_replica.new["kunit"]["id"]
    # Jobs are listed before their tests and remembered: only the regression's two runs, which
    # are tests, were asked for one by one.
    asked = sorted(request.path for request in api_replica.requests if "/node/" in request.path)
    assert asked == sorted("/latest/node/%s" % node["id"] for node in (api_replica.new["case-1"],
                                                                       api_replica.old["case-1"]))


def test_a_test_whose_job_was_delivered_by_an_earlier_run_asks_the_api_for_it(env, tmp_path, api_replica,
                                                                              logstash):
    env = dict(env, KCI_API_OVERLAP_MINUTES="0")
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    login, setup = api_replica.new["login"], api_replica.new["setup"]
    api_replica.corpus.update(login["id"], when=datetime.now(timezone.utc) - timedelta(minutes=1), result="fail")
    api_replica.requests.clear()

    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "delivered 1" in second.stdout  # only the login test changed
    asked = [request.path for request in api_replica.requests if "/node/" in request.path]
    assert asked == ["/latest/node/%s" % setup["id"], "/latest/node/%s" % api_replica.new["baseline"]["id"]]
    body = document(logstash, "test", login)
    assert (body["result"], body["lava_job_id"], body["board_instance"]) == ("fail", 7700001, "meson-gxbb-p200-cbg-1")


def test_tests_of_one_job_fetched_side_by_side_ask_for_each_of_its_nodes_once(env, tmp_path, api_replica, logstash):
    """The tests of a job delivered by an earlier run are fetched on KCI_THREADS threads at once:
    each of them asked the API for the same parents, where the README says each node is asked
    for once per run."""
    env = dict(env, KCI_API_OVERLAP_MINUTES="0", KCI_THREADS="8")
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    changed = datetime.now(timezone.utc) - timedelta(minutes=1)
    tests = [api_replica.new[name] for name in ("login", "kernelmsg", "case-0", "case-1", "case-2")]
    for test in tests:
        api_replica.corpus.update(test["id"], when=changed, state="done")
    api_replica.requests.clear()

    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "delivered %d" % len(tests) in second.stdout
    asked = [request.path for request in api_replica.requests if "/node/" in request.path]
    assert sorted(asked) == sorted("/latest/node/%s" % api_replica.new[name]["id"]
                                   for name in ("setup", "baseline", "suite", "kselftest"))
    assert document(logstash, "test", api_replica.new["case-2"])["lava_job_id"] == 7700002


def test_a_job_lookup_that_keeps_failing_leaves_the_test_undelivered_until_the_api_answers(env, tmp_path,
                                                                                         api_replica, logstash):
    env = dict(env, KCI_API_OVERLAP_MINUTES="0")
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    login = api_replica.new["login"]
    api_replica.corpus.update(login["id"], when=datetime.now(timezone.utc) - timedelta(minutes=1), result="fail")
    api_replica.fail_next("/latest/node/", 503, count=None)
    before = sent_to(logstash)

    failing = kcing(["feed_es"], env, tmp_path)
    assert failing.returncode == 1, failing.stderr
    assert sent_to(logstash) == before  # no test document without its job
    assert "failed" in set(ledger_states(tmp_path / "kcing.db").values())

    api_replica.clear_faults()
    recovered = kcing(["feed_es"], env, tmp_path)
    assert recovered.returncode == 0, recovered.stderr
    assert document(logstash, "test", login)["lava_job_id"] == 7700001
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}


def test_a_test_whose_job_the_api_no_longer_has_is_delivered_without_the_job_s_fields(env, tmp_path, api_replica,
                                                                                     logstash):
    """README: a job the API no longer has (`GET /node/<id>` answers null) leaves the job's fields
    out; the test keeps its own board and lab, and is delivered, not failed."""
    env = dict(env, KCI_API_OVERLAP_MINUTES="0")
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    login, baseline = api_replica.new["login"], api_replica.new["baseline"]
    api_replica.corpus.remove(baseline["id"])
    api_replica.corpus.update(login["id"], when=datetime.now(timezone.utc) - timedelta(minutes=1), result="fail")

    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "delivered 1" in second.stdout
    body = document(logstash, "test", login)
    assert body["result"] == "fail" and (body["board"], body["lab_name"]) == ("meson-gxbb-p200", "lava-collabora")
    for field in ("lava_job_id", "board_instance", "boot_result"):
        assert field not in body, field
    assert "job_node_id" not in body["kernelci_api"]
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}


def test_a_regression_whose_runs_the_api_no_longer_has_is_still_delivered(tmp_path, logstash):
    with ApiReplica() as replica:
        tree = checkout_tree(replica.corpus, replica.files_url, NEW, seed="alone")  # no previous tree
        env = api_feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_DAYS="3")
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    (body,) = regression_documents(logstash).values()
    assert body["pass_node"] == tree["regression"]["data"]["pass_node"]
    assert "pass_git_describe" not in body and body["git_describe"] == "v6.12-rc3-45-gc862449c840a"
    assert body["pass_node_url"].endswith(tree["regression"]["data"]["pass_node"])
