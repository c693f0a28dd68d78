"""How the API source finds the nodes another node's documents need (sources/api_related.py)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from kcing.errors import UpstreamError
from kcing.sources import api_related
from kcing.sources.api_related import RelatedNodes, is_group_root, node_from_answer, related_node
from tests.fakes.serving import wait_until

JOB, SUB, CASE, REGRESSION = ("a1" * 12, "b2" * 12, "c3" * 12, "d4" * 12)


def node(node_id, name, parent, path, group="kselftest-exec", **data):
    return {"id": node_id, "kind": "job", "name": name, "parent": parent, "path": path, "group": group,
            "created": "2024-10-16T00:00:00.000000", "result": "pass", "data": data, "artifacts": {"big": "x"}}


ROOT = node(JOB, "kselftest-exec", "e5" * 12, ["checkout", "kbuild", "kselftest-exec"], job_id="42", device="d1")
SUITE = node(SUB, "kselftest-exec", JOB, ["checkout", "kbuild", "kselftest-exec", "kselftest-exec"])
TEST = dict(node(CASE, "case", SUB, ["checkout", "kbuild", "kselftest-exec", "kselftest-exec", "case"]), kind="test")


class Api:
    """Answers `GET /node/<id>` from a dict and counts the requests."""

    def __init__(self, *nodes):
        self.nodes = {item["id"]: item for item in nodes}
        self.asked = []

    def __call__(self, node_id):
        self.asked.append(node_id)
        return self.nodes.get(node_id)


def test_a_test_two_levels_down_finds_the_job_at_the_root_of_its_group():
    api = Api(ROOT, SUITE)
    job = RelatedNodes(api).job_of(TEST)
    assert (job["id"], job["data"]) == (JOB, {"job_id": "42", "device": "d1"})
    assert "artifacts" not in job  # a small extract, not the node
    assert api.asked == [SUB, JOB]


def test_a_test_nested_deeper_than_usual_still_finds_its_job_and_a_parent_loop_ends():
    # LAVA test sets, KUnit suites and kselftest sub-tests nest cases below their job as deep as
    # upstream makes them: the walk goes as far as the case's path says its job is.
    nodes, parent = [ROOT], ROOT
    for level in range(30):
        parent = dict(node("%024x" % (level + 1), "set%d" % level, parent["id"], parent["path"] + ["set%d" % level]),
                      kind="test")
        nodes.append(parent)
    api = Api(*nodes)
    case = dict(node(CASE, "case", parent["id"], parent["path"] + ["case"]), kind="test")
    assert RelatedNodes(api).job_of(case)["id"] == JOB
    assert len(api.asked) == 31
    # Parents that lead back to each other (no real tree does) end the walk without a job.
    first, second = ("%024x" % 101, "%024x" % 102)
    loop = Api(node(first, "a", second, ["checkout", "kselftest-exec", "a"]),
               node(second, "b", first, ["checkout", "kselftest-exec", "a", "b"]))
    stuck = dict(node(CASE, "case", first, ["checkout", "kselftest-exec", "a", "b", "case"]), kind="test")
    assert RelatedNodes(loop).job_of(stuck) is None and len(loop.asked) == 2


def test_a_walk_past_nodes_of_long_paths_reads_each_of_their_paths_once(monkeypatch):
    # Two nodes named as the group, each the other's parent, with paths of 20,000 steps that
    # name the group, and a case whose path is as long: its walk takes 20,000 steps and asked
    # at each whether the node there heads its group, which scans that node's whole path. A
    # megabyte of such paths took minutes, quadratic in them; each path is now read once.
    (first, second), steps = ("%024x" % 201, "%024x" % 202), 20_000
    tree = ["checkout"] * steps + ["kselftest-exec"]
    related = RelatedNodes(Api())
    related.remember(first, node(first, "kselftest-exec", second, tree + ["a"]))
    related.remember(second, node(second, "kselftest-exec", first, tree + ["b"]))
    scans = []

    def scanned(extract):
        scans.append(extract["id"])
        return is_group_root(extract)

    monkeypatch.setattr(api_related, "is_group_root", scanned)
    case = dict(node(CASE, "case", first, tree + ["set", "case"]), kind="test")
    assert related.job_of(case) is None
    assert sorted(scans) == sorted([CASE, first, second])  # the case's own path, and each of theirs


def test_a_node_whose_job_has_not_finished_waits_for_it_but_not_for_a_job_done_without_a_result():
    # Made before its job finished, a test's document would lack the job's verdict and device for
    # good; a job done without a result will not change, and its tests are made as they are.
    running = RelatedNodes(Api(dict(ROOT, result=None, state="running"), SUITE))
    with pytest.raises(UpstreamError, match="its job %s has not finished" % JOB):
        running.for_envelope("test", TEST)
    done = RelatedNodes(Api(dict(ROOT, result=None, state="done"), SUITE))
    assert done.for_envelope("test", TEST)["job_node"]["state"] == "done"


def test_jobs_remembered_while_listing_need_no_request_and_lookups_are_cached():
    api = Api(ROOT, SUITE)
    related = RelatedNodes(api)
    related.remember(JOB, ROOT)
    related.remember(SUB, SUITE)
    assert related.for_envelope("test", TEST)["job_node"]["id"] == JOB
    assert api.asked == []
    cold = RelatedNodes(api)
    cold.job_of(TEST), cold.job_of(TEST)
    assert api.asked == [SUB, JOB]  # each node asked for once


def test_roots_and_unknown_or_malformed_ids_ask_for_nothing_more():
    api = Api()
    related = RelatedNodes(api)
    assert related.job_of(ROOT) is None  # a job is its own root
    assert related.for_envelope("kbuild", TEST) == {}
    assert related.job_of(dict(TEST, parent="not-an-id")) is None
    assert related.job_of(TEST) is None  # its parent is unknown to the API
    assert api.asked == [SUB]


def test_a_job_remembered_unfinished_is_asked_for_once_when_a_node_below_it_needs_it():
    # The job was listed `running` (no result, no device yet); while the run listed on, LAVA's
    # callback finished it and made its tests, which the same run then lists.
    running = dict(ROOT, result=None, data={"job_id": "42"})
    api = Api(ROOT, SUITE)
    related = RelatedNodes(api)
    related.remember(JOB, running)
    related.remember(SUB, SUITE)
    assert related.job_of(TEST)["data"] == {"job_id": "42", "device": "d1"}
    assert related.job_of(TEST)["result"] == "pass" and api.asked == [JOB]
    # A node that is still unfinished when asked for is not asked for again in the run.
    still = Api(running, SUITE)
    related = RelatedNodes(still)
    related.remember(JOB, running)
    related.job_of(TEST), related.job_of(TEST)
    assert still.asked == [SUB, JOB]
    # Heads kept of delivered jobs alike.
    head = RelatedNodes(api, extract_of_head=lambda kept: related_node(kept.node))
    head.keep_heads([(JOB, SimpleNamespace(node=running))])
    assert head.node(JOB)["data"]["device"] == "d1"


def counting_waits(monkeypatch) -> list:
    """Count the threads that wait for another thread's request (`_Request.done.wait`): a test
    answers only once all but the asking one wait, whenever a loaded machine runs them. A thread
    that came after the answer would find the node kept, or ask again after a failure."""
    waiting = []

    class CountedDone(threading.Event):
        def wait(self, timeout=None):
            waiting.append(threading.get_ident())
            return super().wait(timeout)

    class CountedRequest(api_related._Request):
        def __init__(self):
            super().__init__()
            self.done = CountedDone()

    monkeypatch.setattr(api_related, "_Request", CountedRequest)
    return waiting


def test_a_node_asked_for_on_two_threads_at_once_is_asked_of_the_api_once(monkeypatch):
    """The tests of one job are fetched on several threads: each found the job's nodes not yet
    looked up and asked the API for them too, where one request per node and run was said."""
    answer = threading.Event()

    class SlowApi(Api):
        def __call__(self, node_id):
            self.asked.append(node_id)
            answer.wait(10)
            return self.nodes.get(node_id)

    waiting = counting_waits(monkeypatch)
    api = SlowApi(ROOT, SUITE)
    related = RelatedNodes(api)
    found = []
    walks = [threading.Thread(target=lambda: found.append(related.job_of(TEST))) for _ in range(3)]
    for walk in walks:
        walk.start()
    # Every walk has asked, or waits for the one that asks.
    assert wait_until(lambda: len(waiting) == 2 and api.asked == [SUB], timeout=10)
    answer.set()
    for walk in walks:
        walk.join(10)
    assert [job["id"] for job in found] == [JOB] * 3
    assert api.asked == [SUB, JOB]


def test_a_node_whose_request_fails_fails_the_threads_waiting_for_it_and_is_asked_for_again_later(monkeypatch):
    """Threads waiting for another's request share its outcome: a failing API costs one request
    (and its retries) per node, not one after another for each waiting thread."""
    answer, calls = threading.Event(), []

    def failing(node_id):
        calls.append(node_id)
        answer.wait(10)
        if len(calls) == 1:
            raise UpstreamError("GET /node/%s answered 503" % node_id)
        return ROOT

    waiting = counting_waits(monkeypatch)
    related = RelatedNodes(failing)
    outcomes = []

    def ask():
        try:
            outcomes.append(related.node(JOB)["id"])
        except UpstreamError:
            outcomes.append("failed")

    asking = [threading.Thread(target=ask) for _ in range(3)]
    for thread in asking:
        thread.start()
    assert wait_until(lambda: len(waiting) == 2 and calls == [JOB], timeout=10)
    answer.set()
    for thread in asking:
        thread.join(10)
    assert outcomes == ["failed"] * 3 and calls == [JOB]
    assert related.node(JOB)["id"] == JOB and calls == [JOB, JOB]  # a failure is not kept


def test_a_regression_gets_its_failing_run_with_its_job_and_its_passing_run():
    passed = dict(TEST, id="f6" * 12, data={"kernel_revision": {"describe": "v6.11"}})
    api = Api(ROOT, SUITE, TEST, passed)
    regression = {"id": REGRESSION, "kind": "regression", "data": {"fail_node": CASE, "pass_node": "f6" * 12}}
    related = RelatedNodes(api).for_envelope("regression", regression)
    assert (related["fail_node"]["id"], related["fail_job_node"]["id"], related["pass_node"]["id"]) == \
        (CASE, JOB, "f6" * 12)
    assert RelatedNodes(Api()).for_envelope("regression", dict(regression, data="junk")) == {}


def test_an_extract_keeps_the_revision_without_its_long_parts():
    long_node = node(JOB, "kselftest-exec", None, ["checkout", "kselftest-exec"],
                     kernel_revision={"tree": "next", "commit": "c" * 40, "describe": "next-20241016",
                                      "commit_message": "m" * 10000, "commit_tags": ["t"] * 100})
    related = RelatedNodes(Api(long_node))
    extract = related.node(JOB)
    assert extract["data"]["kernel_revision"] == {"tree": "next", "commit": "c" * 40, "describe": "next-20241016"}


def test_the_cache_keeps_the_newest_nodes():
    related = RelatedNodes(Api(), cache_size=2)
    for number in range(3):
        related.remember("%024x" % number, ROOT)
    assert related.node("%024x" % 2) is not None
    api = Api()
    small = RelatedNodes(api, cache_size=1)
    small.remember(JOB, ROOT)
    small.remember(SUB, SUITE)
    small.node(JOB)
    assert api.asked == [JOB]  # forgotten, asked again


def test_more_jobs_listed_than_kept_cost_one_request_per_job_forgotten_not_one_per_test():
    """A backfill lists all its jobs, then their tests in the same order. With more jobs than the
    cache keeps, the oldest are forgotten; each answer for one of them pushed out the oldest job
    still kept, the next one its tests needed, so every test asked the API. Now the answers are
    kept apart: one request per job forgotten."""
    jobs = [dict(ROOT, id="%024x" % number) for number in range(150)]
    api = Api(*jobs)
    related = RelatedNodes(api, cache_size=100, looked_up_size=10)
    for job in jobs:
        related.remember(job["id"], job)
    for job in jobs:  # two tests a job, listed in the jobs' order
        for case in ("login", "dmesg"):
            test = dict(TEST, id="f" * 24, name=case, parent=job["id"],
                        path=["checkout", "kbuild", "kselftest-exec", case])
            assert related.job_of(test)["id"] == job["id"]
    assert sorted(api.asked) == sorted(job["id"] for job in jobs[:50])


def test_nodes_looked_up_are_kept_to_their_bound_the_least_recently_used_forgotten_first():
    # The children of one node come together: the node they all need stays while it is used,
    # and an answer that is unknown to the API (None) is kept as well as a node.
    first, second, third, unknown = ("%024x" % number for number in range(4))
    api = Api(*(dict(ROOT, id=node_id) for node_id in (first, second, third)))
    related = RelatedNodes(api, looked_up_size=2)
    related.node(first), related.node(second), related.node(first)  # `second` is now the least recently used
    related.node(third)  # forgets `second`
    assert related.node(first)["id"] == first and related.node(third)["id"] == third
    assert api.asked == [first, second, third]
    related.node(second)  # asked again; forgets `first`
    assert api.asked == [first, second, third, second]
    assert related.node(unknown) is None and related.node(unknown) is None
    assert api.asked == [first, second, third, second, unknown]


@pytest.mark.parametrize("status, answer, expected", [
    (200, None, None), (404, {"detail": "Not Found"}, None), (200, {"id": JOB}, {"id": JOB}),
])
def test_the_api_answer_for_one_node(status, answer, expected):
    assert node_from_answer("https://api/node/x", status, answer) == expected


@pytest.mark.parametrize("status, answer", [(500, None), (200, [1]), (400, {"detail": "bad id"})])
def test_an_answer_that_is_not_a_node_or_null_is_an_upstream_failure(status, answer):
    with pytest.raises(UpstreamError, match="https://api/node/x"):
        node_from_answer("https://api/node/x", status, answer)


def test_jobs_kept_as_heads_are_extracted_once_and_only_when_looked_up():
    made = []

    def extract_of_head(head):
        made.append(head.node["id"])
        return related_node(head.node)

    api = Api()
    related = RelatedNodes(api, cache_size=2, extract_of_head=extract_of_head)
    related.keep_heads([(JOB, SimpleNamespace(node=ROOT)), (SUB, SimpleNamespace(node=SUITE))])
    assert made == []  # a routine run keeps thousands of delivered jobs and looks up none
    assert related.node(JOB) == related.node(JOB) == related_node(ROOT)
    assert made == [JOB] and api.asked == []
    # Kept again, a job is the newest: the oldest goes when the cache is full.
    related.keep_heads([(JOB, SimpleNamespace(node=ROOT))])
    related.keep_heads([(CASE, SimpleNamespace(node=TEST))])
    assert related.node(JOB) == related_node(ROOT) and api.asked == []
    assert related.node(SUB) is None and api.asked == [SUB]  # forgotten, asked for


def test_a_job_the_api_names_by_its_older_id_field_is_named_in_its_tests_documents():
    # Before 2023 the API named a node's id `_id` (its listing is read so too, sources/api.py):
    # the job a test ran in is found all the same, and the test's documents name it.
    import json
    from datetime import datetime, timezone

    from kcing.documents import documents_for

    def older(item):
        return dict({key: value for key, value in item.items() if key != "id"}, _id=item["id"].upper())

    api = Api()
    api.nodes = {JOB: older(ROOT), SUB: older(SUITE)}
    job = RelatedNodes(api).job_of(TEST)
    assert job["id"] == JOB
    assert related_node(older(ROOT)) == related_node(ROOT)
    (document,) = documents_for("test", json.dumps({"node": TEST, "job_node": job}).encode(),
                                datetime(2024, 10, 16, tzinfo=timezone.utc))
    assert (document.body["kernelci_api"]["job_node_id"], document.body["lava_job_id"]) == (JOB, 42)
