"""The KernelCI API source, its watermark and the replica it is tested against, as units.

The source talks to the replica over 127.0.0.1 through the real Requester, with its sleep
recorded instead of slept; the watermark rules are pure functions checked on plain values.
"""
from __future__ import annotations

import gzip
import json
import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests

from kcing import watermark
from kcing.wiring import crawl_since
from kcing.documents import documents_for
from kcing.errors import ConfigError, UpstreamAnsweredError, UpstreamError
from kcing.http import BodyReader, RetryPolicy, new_session
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import DELIVERED, FAILED
from kcing.pipeline import FeedOptions, feed
from kcing.records import NODE_KINDS, UpstreamObject, invalid_item_id
from kcing.sources import api as api_module, api_passes, heads
from kcing.sources.api import KernelCIApi, filter_time, refusal_detail, server_time_before
from kcing.sources.api_passes import MAX_PASSES
from kcing.sources.requester import Requester
from tests.fakes.api_corpus import api_time, parse_api_time
from tests.fakes.api_data import MAESTRO, REAL_JOB, checkout_tree, object_id, real_files_present, real_nodes
from tests.fakes.legacy_data import object_id_at
from tests.fakes.api_replica import ApiReplica
from tests.fakes.list_sink import ListSink

UTC = timezone.utc
BASE = datetime(2024, 10, 16, 0, 0, tzinfo=UTC)
SINCE = datetime(2024, 1, 1, tzinfo=UTC)
TIMEOUT = (2, 5)


@pytest.fixture
def replica():
    with ApiReplica() as running:
        running.tree = checkout_tree(running.corpus, running.files_url, BASE)
        yield running
    assert running.errors == []


def make_source(replica, sleeps=None, **options) -> KernelCIApi:
    sleeps = [] if sleeps is None else sleeps
    requester = Requester(new_session(), RetryPolicy(attempts=3, base=0.01), 5, sleep=sleeps.append)
    options.setdefault("since", SINCE)
    return KernelCIApi(requester, replica.api_url, replica.files_url, **options)


def listed_ids(objects) -> list:
    return [obj.facts["node_id"] for obj in objects]


def page_at(number: int, size: int = 3) -> str:
    """The offset a pass asks for its page `number` (0: its first) at, while the listing stays as
    it was: each page after the first starts one place early, at the node the page before ended
    with, so a page of `size` brings `size - 1` nodes more."""
    return str(number * (size - 1))


# The watermark's rules ---------------------------------------------------------------------------

def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


@pytest.mark.parametrize("listed, expected", [
    pytest.param([(at(1), True), (at(3), True), (at(2), True)], at(3), id="all-delivered-newest"),
    pytest.param([(at(1), True), (at(2), False), (at(3), True)], at(1), id="held-before-undelivered"),
    pytest.param([(at(2), False), (at(3), True)], None, id="oldest-undelivered-keeps-it"),
    pytest.param([(at(1), True), (None, False)], None, id="unknown-time-unsettled-keeps-it"),
    pytest.param([(at(1), True), (None, True)], at(1), id="unknown-time-settled-holds-nothing"),
    pytest.param([(None, True)], None, id="only-an-unknown-time-settled"),
    pytest.param([], None, id="nothing-listed"),
    pytest.param([(at(1), True), (at(90), True)], at(60), id="capped-at-listing-start"),
])
def test_the_watermark_moves_to_the_newest_time_with_everything_before_delivered(listed, expected):
    settled = [updated for updated, delivered in listed if delivered]
    unsettled = [updated for updated, delivered in listed if not delivered]
    assert watermark.next_watermark(settled, unsettled, listing_started=at(60)) == expected


def test_the_crawl_starts_at_since_else_the_watermark_minus_overlap_else_the_default_days():
    now, mark, overlap = at(600), at(100), timedelta(minutes=10)
    assert watermark.crawl_start(mark, at(5), overlap, 2, now) == at(5)
    assert watermark.crawl_start(mark, None, overlap, 2, now) == at(90)
    assert watermark.crawl_start(None, None, overlap, 2, now) == now - timedelta(days=2)


@pytest.mark.parametrize("text, expected", [
    ("2024-10-16", datetime(2024, 10, 16, tzinfo=UTC)),
    ("16 Oct 2024 08:30", datetime(2024, 10, 16, 8, 30, tzinfo=UTC)),
    ("2024-10-16T10:30:00+02:00", datetime(2024, 10, 16, 8, 30, tzinfo=UTC)),
    ("2024-10-16T08:30:00Z", datetime(2024, 10, 16, 8, 30, tzinfo=UTC)),
])
def test_since_reads_any_date_and_means_utc(text, expected):
    assert watermark.parse_since(text) == expected


def test_a_since_that_is_no_date_is_a_config_error():
    with pytest.raises(ConfigError, match="--since"):
        watermark.parse_since("last tuesday-ish")


def test_days_means_days_before_now_and_nothing_means_resume():
    now = at(0)
    assert crawl_since({"--days": "3"}, now=now) == now - timedelta(days=3)
    assert crawl_since({"--since": "2024-01-01"}) == SINCE
    assert crawl_since({}) is None


def test_the_ledger_keeps_the_watermark_forward_only_across_opens(tmp_path):
    path = str(tmp_path / "kcing.db")
    ledger = Ledger.open(path)
    assert ledger.watermark("api") is None
    assert ledger.advance_watermark("api", at(5)) == at(5)
    assert ledger.advance_watermark("api", at(1)) == at(5)
    ledger.close()
    reopened = Ledger.open(path)
    assert reopened.watermark("api") == at(5) and reopened.watermarks() == {("api", ""): at(5)}
    assert reopened.watermark("legacy") is None
    reopened.close()


# The pipeline hook ------------------------------------------------------------------------------

class StubSource:
    """An incremental source of two objects; records what the pipeline told it."""

    name = "api"

    def __init__(self, fail_second: bool = False):
        self.resumed_from = "not called"
        self.fail_second = fail_second
        self.objects = [UpstreamObject("api", "test", "n%d" % n, "", at(n), facts={"updated": at(n)})
                        for n in (1, 2)]

    def resume_from(self, mark):
        self.resumed_from = mark

    def list_objects(self):
        yield from self.objects

    def fetch(self, obj):
        if self.fail_second and obj is self.objects[1]:
            raise UpstreamError("GET failed")
        return json.dumps({"node": {"id": object_id(obj.upstream_id), "kind": "test", "created": api_time(at(0)),
                                    "updated": api_time(obj.created)}}).encode()

    def watermark_candidate(self, delivered_ids):
        delivered = delivered_ids("test", [obj.upstream_id for obj in self.objects])
        return watermark.next_watermark([obj.facts["updated"] for obj in self.objects if obj.upstream_id in delivered],
                                        [obj.facts["updated"] for obj in self.objects if obj.upstream_id not in delivered],
                                        at(60))


@pytest.mark.parametrize("fail_second, expected", [(False, at(2)), (True, at(1))])
def test_the_pipeline_resumes_the_source_and_advances_over_what_the_ledger_shows(fail_second, expected):
    ledger = Ledger.open(":memory:")
    ledger.advance_watermark("api", at(0))
    source = StubSource(fail_second)
    feed(source, ledger, ListSink(), FeedOptions(threads=1))
    assert source.resumed_from == at(0)
    assert ledger.watermark("api") == expected


def test_a_dry_run_leaves_the_watermark_alone():
    ledger = Ledger.open(":memory:")
    feed(StubSource(), ledger, ListSink(), FeedOptions(threads=1, dry_run=True))
    assert ledger.watermark("api") is None


def test_a_dry_run_leaves_the_watermark_alone_even_where_the_ledger_would_move_it():
    ledger = Ledger.open(":memory:")
    source = StubSource()
    ledger.record([Outcome(obj, DELIVERED) for obj in source.objects])
    ledger.advance_watermark("api", at(0))
    feed(source, ledger, ListSink(), FeedOptions(threads=1, dry_run=True))
    assert ledger.watermark("api") == at(0)
    feed(source, ledger, ListSink(), FeedOptions(threads=1))  # what the dry run must not have done
    assert ledger.watermark("api") == at(2)


# Listing ----------------------------------------------------------------------------------------

def test_every_kind_is_listed_in_pages_with_naive_time_filters(replica):
    source = make_source(replica, page_size=4)
    objects = list(source.list_objects())
    assert sorted(listed_ids(objects)) == sorted(node["id"] for node in replica.corpus.nodes())
    assert [obj.kind for obj in objects] == sorted((obj.kind for obj in objects), key=NODE_KINDS.index)
    pages = replica.listing_requests()
    assert [request.params("offset")[0] for request in pages if request.params("kind") == ["test"]] == [
        page_at(number, size=4) for number in range(3)]  # 8 test nodes: 4, then 3 more a page
    assert {request.params("updated__gte")[0] for request in pages} == {"2024-01-01T00:00:00.000000"}
    assert {request.params("limit")[0] for request in pages} == {"4"}


def test_the_upstream_id_names_the_node_version_and_the_url_the_node(replica):
    login = replica.tree["login"]
    (obj,) = [obj for obj in make_source(replica).list_objects() if obj.facts["node_id"] == login["id"]]
    stamp = datetime.fromisoformat(login["updated"]).strftime("%Y%m%dT%H%M%S.%f")
    assert obj.upstream_id == "%s.%s" % (login["id"], stamp)
    assert obj.url == "%s/node/%s" % (replica.api_url, login["id"])
    assert obj.created == datetime.fromisoformat(login["created"]).replace(tzinfo=UTC)


def test_a_server_that_caps_the_page_size_is_paged_to_the_end(replica):
    replica.max_limit = 2
    objects = list(make_source(replica, page_size=100).list_objects())
    assert len(objects) == len(replica.corpus)


def test_nodes_updated_before_the_start_are_not_asked_for(replica):
    late = replica.tree["kunit-case-1"]
    start = datetime.fromisoformat(late["updated"]).replace(tzinfo=UTC)
    objects = list(make_source(replica, since=start).list_objects())
    assert late["id"] in listed_ids(objects)
    assert all(datetime.fromisoformat(obj.facts["node"]["updated"]).replace(tzinfo=UTC) >= start for obj in objects)


def test_nodes_added_and_changed_while_paging_are_listed_once_and_none_missed(replica):
    kunit = replica.tree["kunit-case-0"]

    def churn(server, query, number):
        if number == 2 and query[0] == ("kind", "test"):
            server.corpus.update(kunit["id"], result="fail")
            checkout_tree(server.corpus, server.files_url, BASE + timedelta(hours=1), seed="late")

    replica.on_page(churn)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(source.list_objects())
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    assert sorted(ids) == sorted(tests)  # nothing missed, nothing twice


def test_a_node_skipped_when_another_moves_past_the_end_is_listed_by_another_pass(replica):
    moves = []

    def relocate(server, query, number):  # at each pass's second page, the first node moves to the end
        if dict(query).get("kind") == "test" and dict(query).get("offset") == page_at(1) and not moves:
            first = next(node for node in server.corpus.nodes() if node["kind"] == "test")
            moves.append(server.corpus.update(first["id"], when=datetime.now(UTC), relocate=True))

    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    replica.on_page(relocate)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(source.list_objects())
    assert moves and sorted(set(ids)) == sorted(tests)  # the node the move skipped too
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None

    # Passes that keep finding nodes skipped before (the API counts five nodes, each pass shows
    # one never seen, updated long ago): after the last pass the listing is not sure of itself.
    nodes = [{"id": "%024x" % n, "kind": "test", "created": "2024-10-16T00:00:00.000000",
              "updated": "2024-10-16T00:0%d:00.000000" % n} for n in range(5)]
    passes = [page for node in nodes for page in ([node], [])]  # a pass ends at its empty page
    source = KernelCIApi(ScriptedRequester(passes), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                         page_size=2)
    assert listed_ids(source.list_objects()) == [node["id"] for node in nodes[:MAX_PASSES]]
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None


def listed_as(listing: str, source: KernelCIApi):
    """The source's objects as feed_es lists them ("fed": the ledger asked about each page's
    versions, none delivered, so the usual page is read a page at a time), or every item the
    long way ("listed")."""
    return source.list_objects(known=lambda kind, ids: set()) if listing == "fed" else source.list_objects()


@pytest.mark.parametrize("listing", ["listed", "fed"])
@pytest.mark.parametrize("second_move", ["moved", "reinserted"])
@pytest.mark.parametrize("first_skip", ["moved", "deleted"])
def test_a_node_skipped_again_by_the_next_pass_is_listed_by_a_further_one(replica, first_skip, second_move, listing):
    # A node the first pass read leaves its place (moved to the end, or deleted) before the pass's
    # third page, and in the second pass a node it read moves to the end while it pages (updated,
    # or re-inserted as it was, as a replica set's resync does): each time the next page does not
    # start with the node the page before ended with, and each such pass is followed by another,
    # though the pass, as the one before it, counts as many nodes as the API does. A node the
    # second pass read, updated in place before the third reads it, did not move: the third pass
    # ends the listing.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    skipped = tests[6]  # the node a page asked for at the offset would have skipped in the first pass
    passes = []
    events = {(1, page_at(2)): [(first_skip, tests[0])],  # the nodes after it come one place earlier
              (2, "0"): [("moved", tests[1]), ("moved", tests[2])],
              (2, page_at(1)): [(second_move, tests[3])],  # read by that pass's first page, it moves
              (3, "0"): [("updated", tests[4])]}

    def change(server, query, number):
        asked = dict(query)
        if asked.get("kind") != "test":
            return
        if asked.get("offset") == "0":
            passes.append(number)
        for event, node_id in events.pop((len(passes), asked.get("offset")), []):
            if event == "deleted":
                server.corpus.remove(node_id)
            else:
                when = server.corpus.get(node_id)["updated"] if event == "reinserted" else None
                server.corpus.update(node_id, when=datetime.now(UTC) if when is None else parse_api_time(when),
                                     relocate=event != "updated")

    replica.on_page(change)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(listed_as(listing, source))
    assert not events and len(passes) == 3
    assert skipped in ids and sorted(set(ids)) == sorted(tests)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None


def test_a_node_of_a_page_all_new_to_a_later_pass_that_moves_is_seen_to_move_as_feed_es_lists(replica):
    # feed_es reads a page of nodes no pass listed before a page at a time: one of them moving on
    # to the end still skips a node, which nothing else tells when the first pass's count of
    # nodes seen takes in a node deleted since.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    template = replica.corpus.get(tests[1])
    all_new_at = -(-(len(tests) - 1) // 3) * 3  # the offset of the second pass's first page of new nodes
    new, passes = [], []

    def change(server, query, number):
        asked = dict(query)
        if asked.get("kind") != "test":
            return
        offset = int(asked.get("offset"))
        if offset == 0:
            passes.append(number)
        if len(passes) == 1 and offset == 6 and tests[0] in {node["id"] for node in server.corpus.nodes()}:
            server.corpus.remove(tests[0])  # the node at offset 6 comes one place earlier: skipped
        elif len(passes) == 2 and offset == 0 and not new:
            for index in range(all_new_at - (len(tests) - 1) + 6):  # a tree created: two pages of new nodes
                made = server.now()
                node = dict(template, id=object_id_at(made, "new-%d" % index), updated=api_time(made))
                new.append(server.corpus.add(node)["id"])
        elif len(passes) == 2 and offset == all_new_at + 3:
            first_new = new[all_new_at - (len(tests) - 1)]  # read by the page before: it moves, skipping one
            server.corpus.update(first_new, when=server.now(), relocate=True)

    replica.on_page(change)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(listed_as("fed", source))
    assert len(passes) == 3
    assert sorted(set(ids)) == sorted(tests + new)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None


def test_a_node_skipped_when_the_api_deletes_one_listed_before_it_is_listed_by_another_pass(replica, caplog):
    # The API's maintenance deletes nodes created long ago. One deleted while its kind is paged
    # brings every node after it one place earlier: the pass sees as many nodes as the smaller
    # `total` counts, yet skipped one.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    purged = []

    def purge(server, query, number):  # at the first pass's second page, the oldest test goes
        if dict(query).get("kind") == "test" and dict(query).get("offset") == page_at(1) and not purged:
            purged.append(tests[0])
            server.corpus.remove(tests[0])

    replica.on_page(purge)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(source.list_objects())
    assert purged and set(tests) - set(purged) <= set(ids)  # every node still there, the one after it too
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None

    # A deletion, then a node created before the next page: `total` comes back up, yet the pass
    # skipped one.
    replica.on_page(None)
    checkout_tree(replica.corpus, replica.files_url, BASE, seed="more")
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    events = []

    def purge_then_create(server, query, number):
        offset = dict(query).get("offset")
        if dict(query).get("kind") == "test" and offset == page_at(1) and not events:
            server.corpus.remove(tests[0])
            events.append(tests[0])
        elif dict(query).get("kind") == "test" and offset == page_at(2) and len(events) == 1:
            created = dict(server.corpus.get(tests[1]), id="f" * 24, updated=api_time(datetime.now(UTC)))
            events.append(server.corpus.add(created)["id"])

    replica.on_page(purge_then_create)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(source.list_objects())
    assert len(events) == 2 and set(tests[1:]) | {"f" * 24} <= set(ids)

    # A deletion and a creation between two pages: `total` stays as it was, yet the pass skipped
    # one. The node created (its id made by the API's clock, a minute into the listing) tells.
    replica.on_page(None)
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    events = []

    def purge_and_create(server, query, number):
        if dict(query).get("kind") == "test" and dict(query).get("offset") == page_at(1) and not events:
            server.clock_offset = timedelta(minutes=1)
            server.corpus.remove(tests[0])
            made = server.now()
            created = dict(server.corpus.get(tests[1]), id=object_id_at(made, "created"), updated=api_time(made))
            events.extend([tests[0], server.corpus.add(created)["id"]])

    replica.on_page(purge_and_create)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(source.list_objects())
    assert events and set(tests[1:]) | {events[1]} <= set(ids)
    replica.clock_offset = timedelta(0)

    # Deletions in every pass: after the last one, the listing is not sure of itself.
    replica.on_page(lambda server, query, number: dict(query).get("offset") == page_at(1) and server.corpus.remove(
        next(node["id"] for node in server.corpus.nodes() if node["kind"] == "test")))
    replica.requests.clear()
    source = make_source(replica, page_size=3, kinds=("test",))
    list(source.list_objects())
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None
    assert len([request for request in replica.listing_requests() if request.params("offset") == ["0"]]) == MAX_PASSES
    # ... and says so to a cron run (-q), whose watermark stays.
    (record,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert record.name == "kcing.sources.api"  # as the listing's other lines: what a log filter keeps
    warning = record.getMessage()
    assert warning.startswith("test listing: pass %d still found nodes that offset paging skipped before, or "
                              "nodes deleted or moved while it paged" % MAX_PASSES)
    assert warning.endswith("the watermark stays for the next run")


@pytest.mark.parametrize("api_ahead", [timedelta(0), timedelta(seconds=20)], ids=["same-clock", "proxy-behind"])
@pytest.mark.parametrize("listing", ["listed", "fed"])
def test_a_deletion_and_a_creation_between_two_pages_are_told_by_the_node_created_however_the_kind_is_listed(
        replica, listing, api_ahead):
    # `total` stays as it was, yet the pass skipped one; feed_es reads the usual page a page at a
    # time, and the node created, on such a page, must be counted there too. A proxy before the
    # API may date its answers by a clock behind the API's, which makes the ids (CREATED_MARGIN
    # allows for that much): the node's id is then later than the `Date` of the page it is on.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    events = []

    def purge_and_create(server, query, number):
        if dict(query).get("kind") == "test" and dict(query).get("offset") == page_at(1) and not events:
            server.clock_offset = timedelta(minutes=1)  # the pages come a minute apart
            server.corpus.remove(tests[0])
            made = server.now() + api_ahead
            created = dict(server.corpus.get(tests[1]), id=object_id_at(made, "created"), updated=api_time(made))
            events.extend([tests[0], server.corpus.add(created)["id"]])

    replica.on_page(purge_and_create)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(listed_as(listing, source))
    assert events and set(tests[1:]) | {events[1]} <= set(ids)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None


@pytest.mark.parametrize("entering", ["created-within-the-margin", "old-node-updated-into-the-window"])
@pytest.mark.parametrize("listing", ["listed", "fed"])
def test_a_deletion_while_a_node_enters_that_no_id_shows_created_is_told_by_where_the_next_page_starts(
        replica, listing, entering):
    # Between two pages, the API deletes a node the first page read, and a node enters the
    # listing: one created a second later (its id within CREATED_MARGIN of the first page's
    # `Date`, which cannot count it as created), or an old node updated into the window. The
    # `total` stays as it was and no node counts as created: only the second page, asked for
    # one place early, tells, as it does not start with the node the first page ended with.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    template = replica.corpus.get(tests[1])
    long_ago = SINCE - timedelta(days=30)
    old = replica.corpus.add(dict(template, id=object_id_at(long_ago, "old"), name="old", created=api_time(long_ago),
                                  updated=api_time(long_ago)))
    events = []

    def purge_and_enter(server, query, number):
        if dict(query).get("kind") == "test" and dict(query).get("offset") != "0" and not events:  # the 2nd page
            server.corpus.remove(tests[0])
            if entering == "created-within-the-margin":
                made = server.now()
                events.append(server.corpus.add(dict(template, id=object_id_at(made, "created"),
                                                     updated=api_time(made)))["id"])
            else:
                server.corpus.update(old["id"], when=datetime.now(UTC), result="fail")
                events.append(old["id"])

    replica.on_page(purge_and_enter)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(listed_as(listing, source))
    assert events
    assert set(tests[1:]) | set(events) <= set(ids)  # the node after the first page's last one too
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None
    # The requests asked for the first page of two passes: the second found nothing more.
    assert [request.params("offset") for request in replica.listing_requests()].count(["0"]) == 2


def test_a_page_asked_for_one_place_early_says_whether_its_turn_skipped_a_node():
    before = [("a", "t1"), ("b", "t1"), ("c", "t1")]
    # The node the page before ended with: nothing left the listing before the offset.
    assert api_passes.overlap_verdict(before[-1], ("c", "t1"), iter(before)) == api_passes.SAME_PLACE
    # An unchanged node of that page: nodes entered before the offset, which only repeat.
    assert api_passes.overlap_verdict(before[-1], ("b", "t1"), iter(before)) == api_passes.ENTERED_BEFORE
    # A node that page did not reach: nodes before the offset left the listing.
    assert api_passes.overlap_verdict(before[-1], ("d", "t1"), iter(before)) == api_passes.SHIFTED
    # A node of that page in a newer version may have moved there itself; an item naming no node says nothing.
    assert api_passes.overlap_verdict(before[-1], ("c", "t2"), iter(before)) == api_passes.SHIFTED
    assert api_passes.overlap_verdict(before[-1], ("b", "t2"), iter(before)) == api_passes.SHIFTED
    assert api_passes.overlap_verdict(before[-1], None, iter(before)) == api_passes.SHIFTED


@pytest.mark.parametrize("listing", ["listed", "fed"])
def test_a_busy_api_answering_pages_minutes_apart_is_listed_again_only_for_what_moved(replica, listing):
    # Pages a minute apart (the API's clock, its `Date` and the ids it makes move on together),
    # a node created before each: the count grows by as many nodes as each pass sees created, which
    # tells of no deletion. A move in the first pass takes a second pass, which ends the listing
    # (a pass more would be for nothing, and the last one allowed holds the watermark).
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    template = replica.corpus.get(tests[1])
    passes, created = [], []

    def busy(server, query, number):
        asked = dict(query)
        if asked.get("kind") != "test":
            return
        if asked.get("offset") == "0":
            passes.append(number)
        server.clock_offset += timedelta(minutes=1)
        made = server.now()
        node = dict(template, id=object_id_at(made, "busy-%d" % len(created)), updated=api_time(made))
        created.append(server.corpus.add(node)["id"])
        if len(passes) == 1 and asked.get("offset") == page_at(1):
            server.corpus.update(tests[0], when=made, relocate=True)  # the page starts a node later

    replica.on_page(busy)
    source = make_source(replica, page_size=3, kinds=("test",))
    ids = listed_ids(listed_as(listing, source))
    assert len(passes) == 2
    assert sorted(set(ids)) == sorted(tests + created)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None


# The second a page's answer is dated, as its `Date` says, and a node created then.
FIRST_PAGE = datetime(2024, 10, 16, 12, 0, 0, tzinfo=UTC)
LAST_PAGE = FIRST_PAGE + timedelta(minutes=2)


@pytest.mark.parametrize("made, created", [
    (FIRST_PAGE + timedelta(seconds=29), False),  # made before: the proxy's `Date` is behind the API's clock
    (FIRST_PAGE + api_passes.CREATED_MARGIN, True),
    (LAST_PAGE + api_passes.CREATED_MARGIN, True),  # made just before the page, by the API's clock
    (LAST_PAGE + api_passes.CREATED_MARGIN + timedelta(seconds=1), False),  # by a clock further ahead
], ids=["first-page+29s", "first-page+margin", "last-page+margin", "last-page+margin+1s"])
def test_a_node_counts_as_created_while_its_pass_paged_by_its_id_against_the_pages_dates(made, created):
    # The pass's first page counts 4 nodes; between its two pages one is deleted and one created:
    # the count stays 4 and the pass skipped a node, which only the node created tells.
    passes = api_passes.Passes(lambda: FIRST_PAGE - timedelta(minutes=10))
    passes.counted(4, FIRST_PAGE)
    assert all(passes.is_new(object_id_at(BASE, "old-%d" % number), BASE) for number in range(3))
    passes.counted(4, LAST_PAGE)
    assert passes.is_new(object_id_at(made, "created"), made)
    assert passes.again("test", 4) is created


def test_an_empty_page_short_of_the_total_is_listed_again_and_holds_the_watermark_while_it_stays(replica):
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    # Once: the next pass lists the rest, and the listing is complete.
    replica.malformed_page(2, json.dumps({"items": [], "total": len(tests), "limit": 3,
                                          "offset": int(page_at(1))}).encode())
    source = make_source(replica, page_size=3, kinds=("test",))
    assert sorted(listed_ids(source.list_objects())) == sorted(tests)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is not None and source.left_out == []

    # Every time: the nodes past it are never listed, so the watermark stays and the run is told.
    replica.empty_from["test"] = int(page_at(1))
    source = make_source(replica, page_size=3, kinds=("test",))
    assert listed_ids(source.list_objects()) == tests[:3]
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None
    (problem,) = source.left_out
    assert problem.startswith("test listing: the API answered an empty page at offset %s though it counts %d nodes"
                              % (page_at(1), len(tests)))


def test_a_repeated_node_is_listed_again_only_when_newer():
    node = {"id": "a" * 24, "kind": "test", "created": "2024-10-16T00:00:00.000000",
            "updated": "2024-10-16T00:05:00.000000"}
    newer = dict(node, updated="2024-10-16T00:06:00.000000")
    pages = [[node, dict(node, id="b" * 24)], [node, newer, newer]]
    source = KernelCIApi(ScriptedRequester(pages), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                         page_size=2)
    assert [obj.upstream_id for obj in source.list_objects()] == [
        "a" * 24 + ".20241016T000500.000000", "b" * 24 + ".20241016T000500.000000",
        "a" * 24 + ".20241016T000600.000000"]


@pytest.mark.parametrize("created", [None, "not a date", "absent", " 2024-10-15T23:59:59.000000 "])
def test_a_node_without_a_created_time_is_dated_by_its_id_in_every_version(created):
    # A node's id is a MongoDB ObjectId, which holds the second the node was made: unlike its
    # `updated` time, it is the same in every version, so its documents keep one index. A
    # `created` with spaces around it is no time, to the listing as to the documents: both
    # take the id's day, never one each.
    node = {"id": "670f0782493b6b8188c7621c", "kind": "regression", "created": created,
            "updated": "2024-10-16T00:24:00.000000", "result": "fail"}
    if created == "absent":
        del node["created"]
    later = dict(node, updated="2024-10-19T08:00:00.000000", result="pass")
    source = KernelCIApi(ScriptedRequester([[node], [later]]), "http://api.invalid/latest", kinds=("regression",),
                         since=SINCE, page_size=1)
    objects = list(source.list_objects())
    assert len(objects) == 2
    assert {obj.created for obj in objects} == {datetime(2024, 10, 16, 0, 23, 30, tzinfo=UTC)}
    indices = {document.index for obj in objects
               for document in documents_for("regression", json.dumps({"node": obj.facts["node"]}).encode(),
                                             obj.created)}
    assert indices == {"regression-2024.10.16"}


def test_versions_the_ledger_holds_as_delivered_become_no_objects_and_are_not_asked_about_again(replica):
    """A routine run lists mostly delivered versions: the listing asks the ledger about each page
    once, makes objects only for the others, and the watermark asks only about those."""
    tree = replica.tree
    everything = list(make_source(replica).list_objects())
    undelivered = [obj.upstream_id for obj in everything if obj.facts["node_id"] in (tree["login"]["id"],
                                                                                       tree["kbuild-x86"]["id"])]
    asked = []

    def known(kind, ids):
        asked.append(list(ids))
        return {upstream_id for upstream_id in ids if upstream_id not in undelivered}

    source = make_source(replica, page_size=4)
    replica.requests.clear()
    objects = list(source.list_objects(known=known))
    plain = {obj.upstream_id: obj for obj in everything}
    assert [obj.upstream_id for obj in objects] == undelivered  # in listing order
    for obj in objects:
        assert (obj.kind, obj.url, obj.created, obj.facts) == (plain[obj.upstream_id].kind, plain[obj.upstream_id].url,
                                                               plain[obj.upstream_id].created,
                                                               plain[obj.upstream_id].facts)
    assert sorted(upstream_id for page in asked for upstream_id in page) == sorted(plain)  # each version once
    assert all(len(page) <= 4 for page in asked)

    # The login test's job was delivered by an earlier run: its envelope still names the job,
    # from the listing, without asking the API for it.
    login = next(obj for obj in objects if obj.facts["node_id"] == tree["login"]["id"])
    assert json.loads(source.fetch(login))["job_node"]["id"] == tree["baseline"]["id"]
    assert [request.path for request in replica.requests if "/node/" in request.path] == []

    # The watermark asks the ledger only about the versions the listing did not find delivered,
    # and moves exactly as far as after a listing that made an object of everything.
    for settled in (set(), set(undelivered)):
        questions = []
        full = make_source(replica)
        list(full.list_objects())
        expected = full.watermark_candidate(lambda kind, ids: {i for i in ids if i in settled or i not in undelivered})
        moved = source.watermark_candidate(lambda kind, ids: questions.extend(ids) or settled & set(ids))
        assert sorted(questions) == sorted(undelivered)
        assert moved == expected and moved is not None
    assert source.watermark_candidate(lambda kind, ids: set(ids)) == max(plain[i].facts["updated"] for i in plain)


def _test_node(number: int, updated: datetime) -> dict:
    return {"id": "%024x" % (0x670F0C27493B6B8A00000000 + number), "kind": "test", "created": api_time(BASE),
            "updated": api_time(updated)}


def test_a_relisting_of_delivered_versions_keeps_a_time_per_minute_not_per_version():
    """A backfill over weeks lists millions of versions the ledger holds: what the listing keeps
    for the watermark grows with the minutes listed, not with the versions."""
    nodes = [_test_node(number, BASE + timedelta(seconds=number / 100)) for number in range(3000)]  # 30 s
    nodes += [_test_node(3000 + number, BASE + timedelta(minutes=5, seconds=number / 100)) for number in range(3000)]
    source = KernelCIApi(ScriptedRequester([nodes[start:start + 500] for start in range(0, len(nodes), 500)]),
                         "http://api.invalid/latest", kinds=("test",), since=SINCE, page_size=500)
    assert list(source.list_objects(known=lambda kind, ids: set(ids))) == []
    assert source.versions_held() == 2  # two minutes of 6,000 delivered versions
    newest = BASE + timedelta(minutes=5, seconds=2999 / 100)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) == newest


@pytest.mark.parametrize("rejected", [0, 500])
def test_a_backfill_keeps_a_time_per_minute_of_what_it_delivered_not_each_version(rejected):
    """A first run over weeks hands on millions of versions: once the ledger holds one as
    delivered (or rejected), the listing keeps only its time, the newest of each minute."""
    nodes = [dict(_test_node(number, BASE + timedelta(seconds=number / 50)), name="case-%d" % number, result="pass",
                  path=["checkout", "job", "case-%d" % number]) for number in range(1500)]  # 30 s
    for node in nodes[::3] if rejected else ():
        node["kind"] = "kbuild"  # listed as a test: rejected
    pages = [nodes[start:start + 100] for start in range(0, len(nodes), 100)]
    source = KernelCIApi(ScriptedRequester(pages), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                         page_size=100)
    ledger = Ledger.open(":memory:")
    summary = feed(source, ledger, ListSink(), FeedOptions(threads=2, max_docs=50))
    assert (summary.delivered, summary.rejected, summary.failed) == (1500 - rejected, rejected, 0)
    assert source.versions_held() == 1  # one minute of 1,500 versions delivered or rejected
    assert ledger.watermark("api") == BASE + timedelta(seconds=1499 / 50)


def _minutes(minutes: int, seconds: int) -> datetime:
    return BASE + timedelta(minutes=minutes, seconds=seconds)


@pytest.mark.parametrize("undelivered_at, held_at", [
    pytest.param(_minutes(3, 0), _minutes(2, 50), id="after-a-minute"),
    # The versions would allow 2:10; the newest of minute 2 is after 2:30, so minute 2 is left.
    pytest.param(_minutes(2, 30), _minutes(1, 10), id="between-two-of-a-minute"),
    pytest.param(_minutes(2, 5), _minutes(1, 10), id="before-a-minute"),
    pytest.param(_minutes(0, 5), None, id="before-all"),
])
def test_the_watermark_never_passes_a_version_not_delivered_among_those_found_delivered(undelivered_at, held_at):
    """Of those found delivered, the newest of each minute is kept: a version not delivered in a
    minute between two found delivered holds the watermark before that minute, a minute earlier
    than the versions would (listed again by the next run, within its overlap), never after it."""
    times = [_minutes(number, 10) for number in range(5)] + [_minutes(2, 50)]
    delivered = [_test_node(number, when) for number, when in enumerate(times)]
    late = _test_node(99, undelivered_at)
    source = KernelCIApi(ScriptedRequester([delivered + [late]]), "http://api.invalid/latest", kinds=("test",),
                         since=SINCE, page_size=10)
    not_delivered = {"%024x.%s" % (0x670F0C27493B6B8A00000000 + 99, undelivered_at.strftime("%Y%m%dT%H%M%S.000000"))}
    listed = list(source.list_objects(known=lambda kind, ids: set(ids) - not_delivered))
    assert [obj.upstream_id for obj in listed] == sorted(not_delivered)
    assert source.watermark_candidate(lambda kind, ids: set()) == held_at
    # Delivered by the run, it holds nothing back.
    assert source.watermark_candidate(lambda kind, ids: set(ids)) == _minutes(4, 10)


def test_a_repeated_version_is_asked_about_once_and_counted_once():
    node = {"id": "a" * 24, "kind": "test", "created": "2024-10-16T00:00:00.000000",
            "updated": "2024-10-16T00:05:00.000000"}
    newer = dict(node, updated="2024-10-16T00:06:00.000000")
    pages = [[node, dict(node, id="b" * 24)], [node, newer, newer]]
    asked = []
    source = KernelCIApi(ScriptedRequester(pages), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                         page_size=2)
    delivered = {"b" * 24 + ".20241016T000500.000000"}
    objects = list(source.list_objects(known=lambda kind, ids: asked.append(ids) or delivered))
    assert asked == [["a" * 24 + ".20241016T000500.000000", "b" * 24 + ".20241016T000500.000000"],
                     ["a" * 24 + ".20241016T000600.000000"]]
    assert [obj.upstream_id for obj in objects] == ["a" * 24 + ".20241016T000500.000000",
                                                    "a" * 24 + ".20241016T000600.000000"]


@pytest.mark.parametrize("known", [None, lambda kind, ids: set()], ids=["without-ledger", "with-ledger"])
def test_a_node_twice_on_a_page_of_nodes_listed_first_is_listed_once_in_its_newest_version(known):
    """A page can hold a node twice (it moved to the end of the order as the API answered):
    a repeat is listed only when newer, within a page as across pages."""
    node = {"id": "a" * 24, "kind": "test", "created": "2024-10-16T00:00:00.000000",
            "updated": "2024-10-16T00:05:00.000000"}
    newer = dict(node, updated="2024-10-16T00:06:00.000000")
    source = KernelCIApi(ScriptedRequester([[newer, dict(node, id="b" * 24), node, newer]]),
                         "http://api.invalid/latest", kinds=("test",), since=SINCE, page_size=4)
    assert [obj.upstream_id for obj in source.list_objects(known=known)] == [
        "a" * 24 + ".20241016T000600.000000", "b" * 24 + ".20241016T000500.000000"]


@pytest.mark.parametrize("updated", ["2024-10-16T02:22:58.113000", "2024-10-16T02:22:58", "2024-10-16T02:22:58Z",
                                     "2024-10-16T04:22:58.113+02:00", "2024-10-16 02:22:58.113000",
                                     "2024-13-16T02:22:58.113000", "2024-10-16T02:22:58.1130001", None])
@pytest.mark.parametrize("node_id", ["670F0C27493B6B8A3F1E2D4C", "670f0c27493b6b8a3f1e2d4c\n", "670f0c27493b6b8a3f1e2d4"])
def test_a_version_read_without_making_an_object_has_the_objects_id_and_time(node_id, updated):
    """The short way a listing reads delivered versions gives what the long way gives, or leaves it."""
    source = KernelCIApi(ScriptedRequester([]), "http://api.invalid/latest", kinds=("test",), since=SINCE)
    item = {"id": node_id, "kind": "test", "updated": updated}
    # Read from the page's JSON only as far as the heads (heads.py), and from an item decoded whole.
    head = _heads_of([item])[0]
    short, long = api_module._version_of(head, "test"), source._object_from("test", item)
    assert api_module._version_of(api_module._head_of(item), "test") == short
    if short is not None:
        assert long.problem is None
        assert short == (long.facts["node_id"], long.facts["updated"], long.upstream_id)
    # The API's own forms always go the short way.
    assert (short is not None) == (node_id.isalnum() and len(node_id) == 24 and updated in (
        "2024-10-16T02:22:58.113000", "2024-10-16T02:22:58"))
    # An id with a line break after it is no ObjectId, however the item is read.
    if node_id.endswith("\n"):
        assert short is None and long.problem == "listed node has no valid id: %r" % node_id


@pytest.mark.parametrize("item, upstream_id, reason", [
    pytest.param({"id": "not-an-object-id", "name": "login", "kind": "test", "updated": "2024-10-16T02:22:58"},
                 None, "listed node has no valid id: 'not-an-object-id' (named 'login')", id="bad-id"),
    pytest.param({"kind": "test", "name": "login", "updated": "2024-10-16T02:22:58"},
                 None, "listed node has no id (named 'login')", id="no-id"),
    pytest.param({"id": "670f0c27493b6b8a3f1e2d4c", "kind": "test", "updated": "2024-13-45T02:22:58"},
                 "670f0c27493b6b8a3f1e2d4c", "listed node's updated time is no date: '2024-13-45T02:22:58'",
                 id="bad-updated"),
    pytest.param({"id": "670f0c27493b6b8a3f1e2d4c", "kind": "test", "updated": None},
                 "670f0c27493b6b8a3f1e2d4c", "listed node has no updated time", id="null-updated"),
    pytest.param({"id": "670f0c27493b6b8a3f1e2d4c", "kind": "test"},
                 "670f0c27493b6b8a3f1e2d4c", "listed node has no updated time", id="no-updated"),
    pytest.param(["670f0c27493b6b8a3f1e2d4c"], None, "listed item is not a node object but a list",
                 id="not-an-object"),
])
def test_an_unusable_listed_node_is_refused_saying_which_part_and_its_value(item, upstream_id, reason):
    """A reason that names what is wrong and quotes it: `no valid id and updated time` said neither
    which of the two, nor what the node held, nor which node it was when its id was the bad part."""
    source = KernelCIApi(ScriptedRequester([]), "http://api.invalid/latest", kinds=("test",), since=SINCE)
    listed = source._object_from("test", item)
    # An item without a usable id is named by its content (each bad item its own ledger row).
    assert (listed.upstream_id, listed.problem) == (upstream_id or invalid_item_id(item), reason)
    assert listed.upstream_id.startswith("invalid-") == (upstream_id is None)


VERSION_FORMS = [("670F0C27493B6B8A3F1E2D4C", "2024-10-16T02:22:58.113000"), ("670f0c27493b6b8a3f1e2d4d", "2024-10-16T02:22:58"),
                 ("670f0c27493b6b8a3f1e2d4e", "2024-10-16T02:22:59.000001"), ("670f0c27493b6b8a3f1e2d4c\n", "2024-10-16T02:22:58"),
                 ("670f0c27493b6b8a3f1e2d4", "2024-10-16T02:22:58"), ("670f0c27493b6b8a3f1e2d4f", "2024-13-16T02:22:58.113000"),
                 ("670f0c27493b6b8a3f1e2d50", "2024-10-16T02:22:58Z"), ("670f0c27493b6b8a3f1e2d51", None),
                 ("670f0c27493b6b8a3f1e2d52\n670f0c27493b6b8a3f1e2d53", "2024-10-16T02:22:58"),
                 ("670f0c27493b6b8a3f1e2d54", "2024-10-16T02:22:58\n2024-10-16T02:22:58")]


@pytest.mark.parametrize("id_field", ["id", "_id"])
@pytest.mark.parametrize("forms", [[0], [0, 1, 2], [1, 1], [0, 3], [4, 0], [2, 5], [6, 2], [7], [8, 2], [9, 1], [0, 1, 8]])
def test_a_page_read_at_once_gives_the_versions_read_item_by_item(forms, id_field):
    """A routine listing reads a page's ids and times a page at a time: the same versions as item
    by item, and a page with any item not in the API's own forms is left to the item-by-item way."""
    items = [{id_field: VERSION_FORMS[form][0], "kind": "test", "updated": VERSION_FORMS[form][1]} for form in forms]
    page = api_module._page_versions(_heads_of(items), "test")
    one_by_one = [api_module._version_of(head, "test") for head in _heads_of(items)]
    if all(forms_index in (0, 1, 2) for forms_index in forms):  # every item in the API's forms
        assert page is not None
    if page is not None:
        assert list(zip(*page)) == one_by_one
    else:
        assert None in one_by_one
    assert api_module._page_versions(_heads_of(items), "job") is None


class ScriptedRequester:
    """Answers listing GETs with the given pages in turn (total = every item of every page)."""

    policy = RetryPolicy()

    def __init__(self, pages):
        self.pages = list(pages)
        self.total = sum(len(page) for page in pages)

    def get(self, url, params=None, headers=None, attempts=None, not_retried=()):
        response = requests.Response()
        response.status_code = 200
        items = self.pages.pop(0) if self.pages else []
        offset = int(dict(params or ()).get("offset", 0))  # echoed, as the API does
        response._content = json.dumps({"items": items, "total": self.total, "limit": 2, "offset": offset}).encode()
        return response


def test_items_without_an_id_or_of_another_kind_become_problems():
    good = {"id": "c" * 24, "kind": "job", "updated": "2024-10-16T00:05:00.000000"}
    pages = [[{"kind": "test"}, "not an object", dict(good, id="d" * 24)], [good]]
    source = KernelCIApi(ScriptedRequester(pages), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                         page_size=3)
    objects = list(source.list_objects())
    assert [obj.problem is not None for obj in objects] == [True, True, True, True]
    assert "listed as kind=test but is 'job'" in objects[-1].problem
    assert source.watermark_candidate(lambda kind, ids: set()) is None


# A page read only as far as a routine run needs (sources/heads.py) ---------------------------

JOB_ITEM = {"id": "c" * 24, "kind": "job", "name": "baseline-arm64", "group": "baseline-arm64",
            "path": ["checkout", "kbuild-gcc-12-arm64", "baseline-arm64"], "parent": "b" * 24,
            "created": "2024-10-16T00:01:00.000000", "updated": "2024-10-16T00:05:00.000000", "result": "pass",
            "state": "done", "artifacts": {"lava_log": "https://storage.invalid/log.txt"},
            "data": {"kernel_revision": {"tree": "mainline", "branch": "master", "commit": "f" * 40,
                                         "describe": "v6.12", "url": "https://git.invalid/linux.git",
                                         "commit_message": "a long message", "tags": ["v6.12"]},
                     "platform": "rk3399-gru-kevin", "runtime": "lava-collabora", "job_id": 15851917,
                     "device": None, "error_code": None, "arch": "arm64", "kernel_type": "image"}}


def _json_response(value, encoding=None):
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(value).encode()
    response.encoding = encoding
    return response


def _heads_of(items, jobs=False):
    page = heads.node_heads(_json_response({"items": list(items), "total": len(items)}), jobs=jobs)
    return None if page is None else page.items


@pytest.mark.parametrize("data", [JOB_ITEM["data"], None, [1, 2], "text", {}, {"kernel_revision": "not a dict"},
                                  {"kernel_revision": None, "platform": None, "runtime": "lava-x", "job_id": 0},
                                  dict(JOB_ITEM["data"], kernel_revision={"tree": "next", "tags": []})])
def test_a_delivered_jobs_extract_read_from_its_head_is_that_of_the_whole_job(data):
    from kcing.sources.api_related import related_node
    items = [dict(JOB_ITEM, data=data), {key: value for key, value in JOB_ITEM.items() if key != "data"},
             dict({key: value for key, value in JOB_ITEM.items() if key != "id"}, _id="c" * 24)]
    if real_files_present():
        items.append(json.loads((MAESTRO / REAL_JOB).read_text()))
    # Read only as far as the heads, unless `data` or its revision is neither an object nor
    # null: then the page is decoded whole.
    readable = data is None or isinstance(data, dict) and isinstance(data.get("kernel_revision"), (dict, type(None)))
    for item in items:
        read = _heads_of([item], jobs=True)
        assert (read is not None) == (readable or item is not items[0])
        if read is not None:
            assert heads.job_extract(read[0]) == related_node(item)
            assert api_module._version_of(read[0], "job") == api_module._version_of(api_module._head_of(item), "job")


def test_a_routine_listing_makes_the_same_objects_however_the_page_is_read():
    """Pages msgspec cannot read (a NaN the standard decoder takes) are decoded whole; items that
    are not objects, or not in the API's forms, go the long way: the objects and the ledger
    questions are those of a listing that decodes every node."""
    def node(letter, kind="test", **fields):
        return dict({"id": letter * 24, "kind": kind, "created": "2024-10-16T00:00:00.000000",
                     "updated": "2024-10-16T00:05:00.000000", "data": {"value": 1.5}}, **fields)

    pages = [[node("a"), "not an object", node("b", data={"value": float("nan")})],
             [node("c"), node("d", updated="2024-10-16T00:05:00Z"), node("e", kind="job")],
             [node("f"), {"kind": "test"}, node("a", updated="2024-10-16T00:06:00.000000")]]
    delivered = {"b" * 24 + ".20241016T000500.000000", "c" * 24 + ".20241016T000500.000000"}
    asked = []
    source = KernelCIApi(ScriptedRequester(pages), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                         page_size=3)
    routine = list(source.list_objects(known=lambda kind, ids: asked.extend(ids) or delivered & set(ids)))
    every = list(KernelCIApi(ScriptedRequester(pages), "http://api.invalid/latest", kinds=("test",), since=SINCE,
                             page_size=3).list_objects())
    # Versions in the API's own forms are asked about while listing; the rest (the Z time) by
    # the pipeline, as objects.
    assert sorted(asked) == sorted(obj.upstream_id for obj in every
                                   if obj.problem is None and not obj.upstream_id.startswith("d"))
    expected = [obj for obj in every if obj.upstream_id not in delivered]
    assert [(obj.upstream_id, obj.facts, obj.problem) for obj in routine] == [
        (obj.upstream_id, obj.facts, obj.problem) for obj in expected]
    assert sum(obj.problem is not None for obj in routine) == 3  # a string, a job, no id


def test_the_real_nodes_read_as_heads_make_the_objects_and_job_extracts_of_the_whole_nodes():
    if not real_files_present():
        pytest.skip("shared/data/upstream/maestro is absent")
    from kcing.sources.api_related import related_node
    with ApiReplica() as server:
        nodes = real_nodes(server.corpus, server.files_url)
        kinds = tuple(dict.fromkeys(node["kind"] for node in nodes))
        since = datetime(2023, 1, 1, tzinfo=UTC)
        every = list(make_source(server, kinds=kinds, since=since).list_objects())
        for delivered_share in (0, 1, 2):  # none, every other one, all
            delivered = {obj.upstream_id for n, obj in enumerate(every) if delivered_share and n % delivered_share == 0}
            source = make_source(server, kinds=kinds, since=since)
            routine = list(source.list_objects(known=lambda kind, ids: delivered & set(ids)))
            assert [(obj.upstream_id, obj.facts, obj.problem) for obj in routine] == [
                (obj.upstream_id, obj.facts, obj.problem) for obj in every if obj.upstream_id not in delivered]
            jobs = [node for node in nodes if node["kind"] == "job"]
            asked = len(server.requests)
            assert jobs and all(source.related.node(job["id"]) == related_node(job) for job in jobs)
            assert len(server.requests) == asked  # every job was kept while listing, none asked for


def test_old_underscore_id_items_are_read():
    if not real_files_present():
        pytest.skip("shared/data/upstream/maestro is absent")
    with ApiReplica() as server:
        real_nodes(server.corpus, server.files_url)
        source = make_source(server, kinds=("node",), since=datetime(2023, 1, 1, tzinfo=UTC))
        objects = list(source.list_objects())
    assert listed_ids(objects) == ["63c549319fb3b62c7626e7f9", "63c549329fb3b62c7626e7fa"]


# Errors -----------------------------------------------------------------------------------------

def test_busy_answers_are_retried_honouring_retry_after(replica):
    sleeps = []
    replica.fail_next("/latest/nodes", 429, retry_after=3)
    replica.fail_next("/latest/nodes", 502)
    objects = list(make_source(replica, sleeps=sleeps).list_objects())
    assert len(objects) == len(replica.corpus)
    assert len(sleeps) == 2 and sleeps[0] >= 3


def test_a_page_that_keeps_failing_stops_the_listing_and_holds_the_watermark(replica):
    source = make_source(replica, page_size=3)
    replica.fail_next("/latest/nodes", 500, count=None)
    with pytest.raises(UpstreamError, match="failed 3 times"):
        list(source.list_objects())
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("status", [503, 429])
def test_a_page_still_refused_after_its_retries_is_named_by_its_kind_and_offset(replica, status):
    # The run's last line names the page, as for an error answer (README): not only the path.
    source = make_source(replica, page_size=3, kinds=("kbuild", "test"))

    def refuse_the_second_test_page(server, query, number):
        if dict(query)["kind"] == "test" and dict(query)["offset"] == page_at(1):
            server.fail_next("/latest/nodes", status, count=None)

    replica.on_page(refuse_the_second_test_page)
    with pytest.raises(UpstreamAnsweredError) as stopped:
        list(source.list_objects())
    assert stopped.value.status == status
    assert str(stopped.value) == "GET %s/nodes (kind=test, offset %s) failed 3 times (last: HTTP %d)" % (
        replica.api_url, page_at(2), status)


@pytest.mark.parametrize("page_size", [1, 2, 3, 500])
def test_nodes_the_api_cannot_answer_are_left_out_whole_pages_of_them_too(replica, page_size):
    # Two neighbours the API fails to answer (a whole page of them when a page holds two):
    # every other node is listed, each asked page by page, and the listing holds the watermark.
    nodes = [node for node in replica.corpus.nodes() if node["kind"] == "kbuild"] or list(replica.corpus.nodes())
    kind = nodes[0]["kind"]
    listed_before = [node["id"] for node in replica.corpus.nodes() if node["kind"] == kind]
    replica.unanswerable.update(listed_before[:2])
    source = make_source(replica, page_size=page_size)
    objects = [obj for obj in source.list_objects() if obj.kind == kind]
    assert listed_ids(objects) == listed_before[2:]
    assert len(source.left_out) == 2 and all("offset" in problem for problem in source.left_out)
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("page_size, unanswerable, stops", [(20, 8, False), (20, 9, True), (5, 8, False), (5, 10, True)],
                         ids=["8-of-a-page", "9-of-a-page", "8-in-a-row", "10-in-a-row"])
def test_at_most_8_nodes_the_api_cannot_answer_are_left_out_and_more_are_the_api_failing(
        replica, page_size, unanswerable, stops):
    """The README: the nodes the API fails to answer alone, at most 8 a page or in a row with none
    answered between them, are left out; more is the API failing, which stops the listing as a
    page that keeps failing does."""
    template = next(node for node in replica.corpus.nodes() if node["kind"] == "test")
    for number in range(16):
        replica.corpus.add(dict(template, id=object_id("many-%d" % number), name="case-%d" % number))
    listed_before = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    replica.unanswerable.update(listed_before[:unanswerable])
    source = make_source(replica, page_size=page_size, kinds=("test",))
    if stops:
        with pytest.raises(UpstreamAnsweredError) as stopped:
            list(source.list_objects())
        assert stopped.value.status == 500
    else:
        assert listed_ids(source.list_objects()) == listed_before[unanswerable:]
        assert len(source.left_out) == unanswerable
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("known", [None, lambda kind, ids: set()], ids=["decoded-whole", "read-as-heads"])
def test_a_node_the_api_cannot_answer_costs_no_other_node_on_a_server_that_caps_the_page_size(replica, known):
    # The page holding it is read in halves; a server that caps the page size answers a half
    # larger than its cap in part. The rest of that half is asked for before the next half: the
    # nodes in that rest were never listed, by any pass, while the node failed.
    template = next(node for node in replica.corpus.nodes() if node["kind"] == "test")
    for number in range(16):
        replica.corpus.add(dict(template, id=object_id("capped-%d" % number), name="case-%d" % number))
    listed_before = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    replica.unanswerable.add(listed_before[0])
    replica.max_limit = 3
    source = make_source(replica, page_size=16, kinds=("test",))
    assert listed_ids(source.list_objects(known=known)) == listed_before[1:]
    assert len(source.left_out) == 1 and "offset 0 alone" in source.left_out[0]
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("known", [None, lambda kind, ids: set()], ids=["decoded-whole", "read-as-heads"])
def test_a_node_the_api_cannot_answer_is_reported_once_however_many_passes_list_its_kind(replica, known):
    # A node moved while its kind was paged calls for another pass, which leaves out the node the
    # API cannot answer again: one node the run fails, reported once, not once a pass.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    replica.unanswerable.add(tests[6])
    moved = []

    def relocate(server, query, number):
        if dict(query)["offset"] == page_at(1) and not moved:
            moved.append(server.corpus.update(tests[0], when=server.now(), relocate=True))

    replica.on_page(relocate)
    source = make_source(replica, page_size=3, kinds=("test",))
    assert set(listed_ids(source.list_objects(known=known))) == set(tests[:6] + tests[7:])
    assert moved and len(source.left_out) == 1 and "offset 5 alone" in source.left_out[0]


@pytest.mark.parametrize("status", [429, 503])
def test_a_passing_failure_met_while_a_failing_page_is_read_in_halves_is_retried(replica, status):
    # The halves go in a burst, each asked once for a 500: a rate limit's 429 (or a 503) met
    # meanwhile is retried as on any page, honouring its Retry-After, not the end of the run.
    tests = [node["id"] for node in replica.corpus.nodes() if node["kind"] == "test"]
    replica.unanswerable.add(tests[2])
    halves = []

    def rate_limited(server, query, number):
        if dict(query)["limit"] != "500":
            halves.append(number)
            if len(halves) == 2:
                server.fail_next("/latest/nodes", status, retry_after=7)

    replica.on_page(rate_limited)
    sleeps = []
    source = make_source(replica, sleeps, kinds=("test",))
    assert listed_ids(source.list_objects()) == tests[:2] + tests[3:]
    assert 7 in sleeps and len(source.left_out) == 1 and "offset 2 alone" in source.left_out[0]


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"items": {}, "total": 3}', b'{"items": []}',
                                  b'{"items": [], "total": "3"}', b'[1, 2]'])
@pytest.mark.parametrize("known", [None, lambda kind, ids: set()], ids=["every node", "routine, as heads"])
def test_a_malformed_page_stops_the_listing(replica, body, known):
    source = make_source(replica, page_size=3)
    replica.malformed_page(3, body)
    listed = []
    with pytest.raises(UpstreamError, match="malformed page") as stopped:
        for obj in source.list_objects(known=known):
            listed.append(obj)
    # A page of the API gone wrong after others: KCI_API_URL is the API's, and not asked about.
    assert "KCI_API_URL" not in str(stopped.value)
    assert listed and source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("known", [None, lambda kind, ids: set()], ids=["decoded-whole", "read-as-heads"])
def test_a_page_answered_for_another_offset_stops_the_listing(replica, known):
    replica.ignores_offset = True  # a cache before the API that keys pages without their offset
    source = make_source(replica, page_size=3, kinds=("test",))
    listed = []
    with pytest.raises(UpstreamError, match=r"\(kind=test, offset %s\) answered the page at offset 0 instead$" % page_at(1)):
        for obj in source.list_objects(known=known):
            listed.append(obj)
    assert len(listed) == 3 and source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("since, overlap, moves", [
    pytest.param(None, timedelta(minutes=10), True, id="resumed-with-overlap"),
    pytest.param(None, timedelta(0), True, id="resumed-without-overlap"),
    pytest.param(SINCE, timedelta(minutes=10), True, id="since-before-the-watermark"),
    pytest.param(SINCE + timedelta(days=1), timedelta(minutes=10), False, id="since-after-the-watermark"),
])
def test_a_run_that_started_after_the_watermark_keeps_it(replica, since, overlap, moves):
    # A `--since` (or `--days`) later than the watermark leaves the time between them uncrawled:
    # moving the watermark past it would make every later run skip what changed in that gap.
    source = make_source(replica, since=since, overlap=overlap)
    source.resume_from(SINCE)
    assert list(source.list_objects())
    candidate = source.watermark_candidate(lambda kind, ids: set(ids))
    assert (candidate is not None and candidate > SINCE) if moves else candidate is None


def test_how_many_limits_each_kind_and_keeps_the_watermark(replica):
    source = make_source(replica, how_many=2)
    objects = list(source.list_objects())
    # The tree has one checkout and one regression, no generic `node`, and more than two of the other kinds.
    assert [obj.kind for obj in objects] == \
        ["checkout"] + [kind for kind in ("kbuild", "job", "test") for _ in range(2)] + ["regression"]
    assert source.watermark_candidate(lambda kind, ids: set(ids)) is None


@pytest.mark.parametrize("header, elapsed, expected", [
    ("Fri, 04 Dec 2026 18:08:10 GMT", timedelta(seconds=2), datetime(2026, 12, 4, 18, 8, 8, tzinfo=timezone.utc)),
    ("Fri, 04 Dec 2026 18:08:10 GMT", None, datetime(2026, 12, 4, 18, 8, 10, tzinfo=timezone.utc)),
    ("Fri, 04 Dec 2026 19:08:10 +0100", timedelta(0), datetime(2026, 12, 4, 18, 8, 10, tzinfo=timezone.utc)),
    (None, timedelta(seconds=1), None),
    ("", None, None),
    ("yesterday", None, None),
    # In UTC past the calendar's last day: no reading of any clock (was an OverflowError, exit 70).
    ("Fri, 31 Dec 9999 23:59:59 -0100", None, None),
])
def test_the_apis_clock_is_read_from_its_date_header_less_the_requests_time(header, elapsed, expected):
    assert server_time_before(header, elapsed) == expected


@pytest.mark.parametrize("body, expected", [
    (b'{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 100",'
     b'"input":"500","ctx":{"le":100}}]}', ({"limit"}, "limit: Input should be less than or equal to 100")),
    (b'{"detail":[{"loc":["query","offset"],"msg":"out of range"},{"loc":[],"msg":"and\\nmore"}]}',
     ({"offset"}, "offset: out of range; and more")),
    (b'{"detail":"Invalid isoformat string: \'2024-13\'"}', (set(), "Invalid isoformat string: '2024-13'")),
    (b"<html><body>502 Bad Gateway</body></html>", (set(), "")),
    (b'{"detail": 3}', (set(), "")),
    (b"[]", (set(), "")),
])
def test_an_error_answers_detail_is_read_as_fastapi_writes_it(body, expected):
    response = requests.Response()
    response.status_code, response._content = 422, body
    assert refusal_detail(response) == expected


def test_a_plain_text_refusal_is_quoted_by_its_first_line_masked_then_cut(monkeypatch):
    """A proxy's text answer echoing the request quotes the token: the message quotes its first
    line with the secrets masked, and at most 300 characters of it (the run's last line)."""
    from kcing import secrecy
    token = "tok-Secret-0123456789"
    monkeypatch.setattr(secrecy, "_current", secrecy.Masker([token]))
    response = requests.Response()
    response.status_code, response.headers["Content-Type"] = 403, "text/plain; charset=utf-8"
    response._content = ("denied: Authorization: Bearer %s %s\nsecond line" % (token, "x" * 400)).encode()
    fields, detail = refusal_detail(response)
    assert detail.startswith("denied: Authorization: Bearer *** xxx") and len(detail) == 300, detail
    assert fields == set() and "tok-Se" not in detail


@pytest.mark.parametrize("shape", ["text", "list"])
def test_a_json_refusal_is_masked_before_it_is_cut(monkeypatch, shape):
    """A token that the 300-character cut would split is masked first: cut first, its start
    would be left that no later masking recognises."""
    from kcing import secrecy
    token = "tok-Secret-0123456789"
    monkeypatch.setattr(secrecy, "_current", secrecy.Masker([token]))
    said = "x" * 290 + " " + token
    detail = said if shape == "text" else [{"loc": [], "msg": said}]
    response = requests.Response()
    response.status_code, response._content = 401, json.dumps({"detail": detail}).encode()
    assert refusal_detail(response) == (set(), "x" * 290 + " ***")


def test_a_listing_under_a_version_the_api_does_not_serve_says_the_apis_reason(replica):
    source = KernelCIApi(Requester(new_session(), RetryPolicy(attempts=1), 5), replica.url + "/v1", since=SINCE)
    with pytest.raises(UpstreamError, match=r"/v1/nodes \(kind=checkout, offset 0\) answered 400: Unsupported API "
                                            r"version: v1 \(is KCI_API_URL the KernelCI API's base URL, as "
                                            r"https://api.kernelci.org/latest\?\)$"):
        list(source.list_objects())


def test_an_api_that_answered_and_then_stops_is_not_asked_whether_it_is_the_api(replica):
    """A first page left unanswered asks whether KCI_API_URL is the API's; once a page was
    answered, the API is there, and a later pass's first page left unanswered is an outage."""

    class Gone:
        def get(self, url, **options):
            raise UpstreamError("GET %s failed 3 times (last: connection refused)" % url)

    source = make_source(replica)
    source.requester, answering = Gone(), source.requester
    with pytest.raises(UpstreamError, match=r"\(is KCI_API_URL the KernelCI API's base URL"):
        source._page(source.kinds[0], 0)
    source.requester = answering
    assert source._page(source.kinds[0], 0)[1].status_code == 200
    source.requester = Gone()
    with pytest.raises(UpstreamError, match=r"\(kind=checkout, offset 0\) failed 3 times \(last: connection refused\)$"):
        source._page(source.kinds[0], 0)


def test_how_many_takes_the_newest_nodes_of_each_kind_the_last_in_the_apis_order(replica):
    # The API has no sort: its order is insertion order, oldest first, so the newest N are its last N.
    source = make_source(replica, how_many=2, page_size=500)
    objects = list(source.list_objects())
    for kind in NODE_KINDS:
        in_order = [node["id"] for node in replica.corpus.nodes() if node["kind"] == kind]
        assert listed_ids(obj for obj in objects if obj.kind == kind) == in_order[-2:], kind


@pytest.mark.parametrize("token, forbid, expected", [
    ("", False, "asks for a token (401: Could not validate credentials): set KCI_API_TOKEN"),
    ("tok-wrong-1", False, "refused KCI_API_TOKEN (401"),
    ("tok-right-1", True, "refused KCI_API_TOKEN (403: Forbidden)"),
])
def test_refusals_name_the_token_setting_and_never_the_token(replica, token, forbid, expected):
    replica.token, replica.forbid = "tok-right-1", forbid
    with pytest.raises(ConfigError) as error:
        list(make_source(replica, token=token).list_objects())
    assert expected in str(error.value) and "tok-" not in str(error.value)


@pytest.mark.parametrize("body, reason", [
    (json.dumps({"detail": "Not authenticated.\nSign in at\r\n  https://auth.example " + "x" * 100_000}),
     "(401: Not authenticated. Sign in at https://auth.example xxx"),
    ("<html><body>\n<h1>401</h1>\n</body></html>", "(401): set KCI_API_TOKEN"),
], ids=["long-detail", "html"])
def test_a_refusal_is_said_in_one_short_line_whatever_the_api_answers(replica, body, reason):
    """What the API answers with its 401 is quoted as one line of at most 300 characters: the
    message is the run's last line, and a detail of many lines or megabytes came out whole."""
    from tests.fakes.rogue_http import RogueFront, answer
    with RogueFront(replica.url.rsplit("/", 1)[0]) as front:
        content_type = "application/json" if body.startswith("{") else "text/html"
        front.on("GET", "/nodes", answer(401, (("Content-Type", content_type),), body.encode()), count=None)
        source = KernelCIApi(Requester(new_session(), RetryPolicy(attempts=1), 5),
                             front.url + "/" + replica.url.rsplit("/", 1)[1], since=SINCE)
        with pytest.raises(ConfigError) as error:
            list(source.list_objects())
    message = str(error.value)
    assert reason in message and "\n" not in message and "\r" not in message
    assert len(message) < 500, len(message)


def test_the_token_goes_to_the_api_and_not_to_the_storage(replica):
    replica.token = "tok-123"
    source = make_source(replica, token="tok-123", with_logs=True)
    for obj in source.list_objects():
        source.fetch(obj)
    assert {request.headers.get("authorization") for request in replica.listing_requests()} == {"Bearer tok-123"}
    assert replica.file_requests() and all("authorization" not in request.headers
                                           for request in replica.file_requests())


# Content ----------------------------------------------------------------------------------------

def envelope_of(source, node_id):
    (obj,) = [obj for obj in source.list_objects() if obj.facts["node_id"] == node_id]
    return json.loads(source.fetch(obj))


def test_fetch_wraps_the_listed_node_without_a_request(replica):
    source = make_source(replica)
    node = replica.tree["kbuild-arm64"]
    before = len(replica.requests)
    wrapped = envelope_of(source, node["id"])
    assert wrapped == {"node": node, "viewer_url": "%s/viewer?node_id=%s" % (replica.api_url, node["id"])}
    assert all(request.path.endswith("/nodes") for request in replica.requests[before:])


def test_relative_artifact_paths_are_joined_to_the_storage_and_absolute_urls_kept_whole(replica):
    source = make_source(replica)
    checkout = envelope_of(source, replica.tree["checkout"]["id"])["node"]
    assert checkout["artifacts"]["tarball"] == "%s/linux-mainline-master-v6.12-rc3-45-gc862449c840a.tar.gz" % (
        replica.files_url)
    if real_files_present():
        real = real_nodes(replica.corpus, replica.files_url)[1]
        job = envelope_of(source, real["id"])["node"]
        assert job["artifacts"]["callback_data"].endswith("lava_callback.json.gz?" + real["artifacts"][
            "callback_data"].split("?", 1)[1])
        assert "sig=" in job["artifacts"]["callback_data"]


def test_with_logs_a_job_carries_its_callback_and_a_kbuild_its_build_log(replica):
    source = make_source(replica, with_logs=True)
    job = envelope_of(source, replica.tree["baseline"]["id"])
    callback = json.loads(job["callback_data"])
    assert callback["id"] == 7700001 and "token" not in callback and "lab_name" not in callback
    build = envelope_of(source, replica.tree["kbuild-x86"]["id"])
    assert "error: undeclared" in build["build_log"]
    assert "callback_data" not in envelope_of(source, replica.tree["login"]["id"])


@pytest.mark.parametrize("status, content, problem", [
    (404, None, "HTTP 404"),
    (403, None, "HTTP 403"),
    (200, gzip.compress(b"{}", mtime=0)[:-6], "gzip data cut short"),
    (200, b"\x1f\x8b not gzip at all", "not valid gzip"),
    (200, gzip.compress(b"{}", mtime=0) + b"<html>trailing</html>", "not valid gzip (data after its last member is not gzip)"),
    (200, gzip.compress(b"{}", mtime=0) + gzip.compress(b"{}", mtime=0)[:-6], "gzip data cut short"),
])
def test_a_log_that_cannot_be_had_is_noted_and_the_node_still_delivered(replica, status, content, problem):
    baseline = replica.tree["baseline"]
    path = baseline["artifacts"]["callback_data"][len(replica.files_url) + 1:]
    if status == 200:
        replica.corpus.add_file(path, content)
    elif status == 404:
        replica.corpus.remove_file(path)
    else:
        replica.fail_next("/files/" + path, status)
    wrapped = envelope_of(make_source(replica, with_logs=True), baseline["id"])
    assert wrapped["artifact_errors"]["callback_data"].startswith(problem)
    assert "callback_data" not in wrapped


@pytest.mark.parametrize("content, problem", [
    pytest.param(gzip.compress(b'{"id": 7700001}', mtime=0), None, id="gzip"),
    pytest.param(b"\x1f\x8b\x08\x00 not gzip at all" * 8, "does not decode as its Content-Encoding", id="broken-gzip"),
    pytest.param(b"not gzip at all", "does not decode as its Content-Encoding", id="not-gzip"),
    # Cut by an interrupted upload: what inflates is the start of the log, never taken for all of it.
    pytest.param(gzip.compress(b'{"id": 7700001}' + b" " * 5000, mtime=0)[:-8],
                 "does not decode as its Content-Encoding", id="gzip-cut-short"),
])
def test_a_log_served_with_content_encoding_is_decoded_or_noted_and_the_node_still_delivered(replica, content,
                                                                                              problem):
    # A storage host that labels `.gz` files `Content-Encoding: gzip` (upstream.md §2.7): the HTTP
    # client inflates the file itself; bytes that do not inflate stay the same however often they
    # are asked for, as a broken gzip file sent without the header does.
    baseline = replica.tree["baseline"]
    path = baseline["artifacts"]["callback_data"][len(replica.files_url) + 1:]
    replica.corpus.add_file(path, content)
    replica.content_encoded.add(path)
    sleeps = []
    wrapped = envelope_of(make_source(replica, sleeps, with_logs=True), baseline["id"])
    if problem is None:
        assert json.loads(wrapped["callback_data"]) == {"id": 7700001}
        assert "artifact_errors" not in wrapped
    else:
        assert problem in wrapped["artifact_errors"]["callback_data"]
        assert "callback_data" not in wrapped
        assert len(replica.file_requests()) == 1 and sleeps == []  # the same bytes again would not help


def test_a_log_larger_than_the_object_size_limit_is_left_out_and_the_node_still_delivered(replica):
    baseline = replica.tree["baseline"]
    path = baseline["artifacts"]["callback_data"][len(replica.files_url) + 1:]
    replica.corpus.add_file(path, b"x" * 50_000)
    requester = Requester(new_session(), RetryPolicy(attempts=3, base=0.01), 5, sleep=[].append,
                          reader=BodyReader(deadline=5, max_bytes=10_000))
    source = KernelCIApi(requester, replica.api_url, replica.files_url, since=SINCE, with_logs=True)
    wrapped = envelope_of(source, baseline["id"])
    assert "KCI_MAX_OBJECT_BYTES" in wrapped["artifact_errors"]["callback_data"]
    assert "callback_data" not in wrapped


@pytest.mark.parametrize("labelled", [False, True], ids=["gzip-file", "content-encoding-gzip"])
def test_a_gzip_log_larger_than_the_object_size_limit_once_decompressed_is_left_out_however_it_is_served(
        replica, labelled):
    # A storage serves a `.gz` file as its bytes, or labels it gzip and the HTTP client inflates it:
    # either way the setting bounds the log the node's documents are built from (README: lower it
    # so that a log too large to build in memory is refused).
    baseline = replica.tree["baseline"]
    path = baseline["artifacts"]["callback_data"][len(replica.files_url) + 1:]
    replica.corpus.add_file(path, gzip.compress(b'{"id": 7700001, "log": "%s"}' % (b"x" * 50_000), mtime=0))
    if labelled:
        replica.content_encoded.add(path)
    requester = Requester(new_session(), RetryPolicy(attempts=3, base=0.01), 5, sleep=[].append,
                          reader=BodyReader(deadline=5, max_bytes=10_000))
    source = KernelCIApi(requester, replica.api_url, replica.files_url, since=SINCE, with_logs=True)
    wrapped = envelope_of(source, baseline["id"])
    assert wrapped["artifact_errors"]["callback_data"].endswith(": raise KCI_MAX_OBJECT_BYTES to take it")
    assert "10000 bytes" in wrapped["artifact_errors"]["callback_data"]
    assert "callback_data" not in wrapped


def test_unusable_logs_are_named_a_few_of_each_kind_artifact_and_reason_then_said_to_go_unnamed(caplog):
    """A backfill's log names the first NAMED_UNUSABLE_ARTIFACTS nodes of each kind, artifact and
    reason whose log is not usable; a line says the further ones go unnamed once there is one,
    never when the last one was named."""
    named = api_module.NAMED_UNUSABLE_ARTIFACTS
    unusable = api_module._UnusableArtifacts()
    jobs = [UpstreamObject("api", "job", "j%d" % n, "") for n in range(named + 2)]

    def warned() -> list:
        said = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        caplog.clear()
        return said

    with caplog.at_level(logging.WARNING, logger=api_module.log.name):
        for job in jobs[:named]:
            unusable.warn(job, "callback_data", "HTTP 404")
        assert warned() == ["job j%d: callback_data not usable (HTTP 404); its documents go without it" % n
                            for n in range(named)]
        # Another reason, and another kind, are named apart.
        unusable.warn(jobs[0], "callback_data", "gzip data cut short")
        unusable.warn(UpstreamObject("api", "kbuild", "k0", ""), "build_log", "HTTP 404")
        assert warned() == ["job j0: callback_data not usable (gzip data cut short); its documents go without it",
                            "kbuild k0: build_log not usable (HTTP 404); its documents go without it"]
        for job in jobs[named:]:
            unusable.warn(job, "callback_data", "HTTP 404")
        assert warned() == ["further job nodes whose callback_data is not usable (HTTP 404) go unnamed in this run's "
                            "log; their documents say it (kernelci_api.artifact_errors)"]


def test_a_storage_host_that_keeps_failing_fails_the_object(replica):
    baseline = replica.tree["baseline"]
    path = baseline["artifacts"]["callback_data"][len(replica.files_url):]
    source = make_source(replica, with_logs=True)
    (obj,) = [obj for obj in source.list_objects() if obj.facts["node_id"] == baseline["id"]]
    replica.fail_next("/files" + path, 503, count=None)
    with pytest.raises(UpstreamError, match="HTTP 503"):
        source.fetch(obj)


def test_a_log_in_several_gzip_members_is_carried_whole(replica):
    """A gzip file may be members one after another (`cat a.gz b.gz`): the log is all of them."""
    baseline = replica.tree["baseline"]
    path = baseline["artifacts"]["callback_data"][len(replica.files_url) + 1:]
    text = gzip.decompress(replica.corpus.read(path))
    middle = len(text) // 2
    replica.corpus.add_file(path, gzip.compress(text[:middle]) + gzip.compress(text[middle:]))
    wrapped = envelope_of(make_source(replica, with_logs=True), baseline["id"])
    assert "artifact_errors" not in wrapped
    assert wrapped["callback_data"] == text.decode("utf-8")


def test_filter_times_are_naive_utc_with_microseconds():
    assert filter_time(datetime(2024, 10, 16, 2, 22, 58, 113000, tzinfo=UTC)) == "2024-10-16T02:22:58.113000"
    eastern = timezone(timedelta(hours=-4))
    assert filter_time(datetime(2024, 10, 15, 22, 0, tzinfo=eastern)) == "2024-10-16T02:00:00.000000"


# The replica itself -----------------------------------------------------------------------------

def get(replica, where, **params):
    return requests.get(replica.url + where, params=params, timeout=TIMEOUT)


def total(replica, **params) -> int:
    response = get(replica, "/latest/nodes", limit=1, **params)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def test_the_replica_filters_as_the_api_does(replica):
    nodes = replica.corpus.nodes()
    assert total(replica, kind="test") == len([node for node in nodes if node["kind"] == "test"])
    assert total(replica, **{"data.runtime": "lava-baylibre"}) == 5  # the kselftest job and all below it
    assert total(replica, path="setup") == 3  # a list field "equals" the names it contains
    assert total(replica, parent="null") == 2  # the checkout, and the regression: the tracker gives it no parent
    assert total(replica, result="null") == 2  # the checkout and the running test
    assert total(replica, processed_by_kcidb_bridge="FALSE") == len(nodes)
    assert total(replica, kind__in="checkout,kbuild") == 3
    assert total(replica, kind__nin="test,job") == 4  # the checkout, two kbuilds and the regression
    assert total(replica, kind__ne="test") == len(nodes) - 8
    assert total(replica, name__re="^kunit-case") == 3
    assert total(replica, retry_counter__gt="0") == 0
    assert total(replica, no_such_field="x") == 0
    late = replica.tree["kunit-case-1"]["updated"]
    assert total(replica, updated__gte=late) == total(replica, updated__gt=late) + 1
    assert total(replica, updated__lt="2024-10-16", created__gte="2024-10-15") == 0
    assert get(replica, "/latest/count", kind="kbuild").text == "2"


def test_the_replica_reads_keys_operators_and_ids_as_the_api_does(replica):
    # The API splits a key at `__` only into two parts; an operator it does not know matches
    # nothing (a time is still parsed first); `__int` matches an integer; `parent` is an ObjectId.
    nodes = replica.corpus.nodes()
    assert total(replica, retry_counter__int="0") == len(nodes)
    assert total(replica, name__foo="login") == total(replica, name__foo="null") == 0
    assert total(replica, updated__foo="2024-10-16T00:00:00") == 0
    assert total(replica, **{"data__arch__ne": "x"}) == 0  # a field named `data__arch__ne`, not an operator
    kbuild = replica.tree["kbuild-arm64"]
    children = [node for node in nodes if node["parent"] == kbuild["id"]]
    assert total(replica, parent=kbuild["id"].upper()) == len(children) > 0
    assert total(replica, parent__in=kbuild["id"] + "," + "f" * 24) == len(children)


@pytest.mark.parametrize("params", [{"updated__gte": "yesterday"}, {"updated__gte": "2024-10-16T00:00:00Z"},
                                    {"created__lt": "2024-10-16T00:00:00+00:00"}, {"updated__foo": "yesterday"},
                                    {"parent": "670f0c27"}, {"parent__in": "670f0c27,null"},
                                    {"retry_counter__int": "zero"}])
def test_the_replica_refuses_times_ids_and_numbers_the_api_cannot_read(replica, params):
    response = get(replica, "/latest/nodes", **params)
    assert response.status_code == 400 and "detail" in response.json()
    assert get(replica, "/latest/count", **params).status_code == 400


@pytest.mark.parametrize("params, refused", [
    ({"limit": "0"}, ["limit"]), ({"offset": "-1"}, ["offset"]), ({"offset": "ten"}, ["offset"]),
    ({"limit": "x", "offset": "-2"}, ["limit", "offset"]),
])
def test_the_replica_names_each_paging_parameter_it_refuses(replica, params, refused):
    response = get(replica, "/latest/nodes", **params)
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["query", name] for name in refused]


def test_the_replica_pages_in_insertion_order_with_a_default_limit(replica):
    for number in range(3):
        checkout_tree(replica.corpus, replica.files_url, BASE + timedelta(days=1), seed="more-%d" % number)
    first = get(replica, "/latest/nodes").json()
    assert (first["limit"], first["offset"], len(first["items"]), first["total"]) == (50, 0, 50, 4 * 17)
    second = get(replica, "/nodes", offset=50).json()  # the un-prefixed path is the same API
    assert [node["id"] for node in first["items"] + second["items"]] == [node["id"] for node in replica.corpus.nodes()]
    assert get(replica, "/latest/nodes", limit=0).status_code == 422
    assert get(replica, "/v0/nodes", limit=1).json()["total"] == 4 * 17
    response = get(replica, "/v1/nodes")
    assert response.status_code == 400 and response.text == "Unsupported API version: v1"


def test_the_replica_serves_single_nodes_and_gzip_files_as_bytes(replica):
    login = replica.tree["login"]
    assert get(replica, "/latest/node/" + login["id"]).json() == login
    assert get(replica, "/latest/node/" + "f" * 24).text == "null"
    assert get(replica, "/latest/node/xyz").status_code == 400
    url = replica.tree["baseline"]["artifacts"]["callback_data"]
    response = requests.get(url, timeout=TIMEOUT)
    assert response.content[:2] == b"\x1f\x8b" and "content-encoding" not in response.headers
    assert json.loads(gzip.decompress(response.content))["id"] == 7700001


def test_the_replica_mutates_nodes_in_place_and_moves_updated(replica):
    running = replica.tree["running"]
    changed = replica.corpus.update(running["id"], state="done", result="pass")
    assert changed["updated"] > running["updated"] and changed["state"] == "done"
    assert [node["id"] for node in replica.corpus.nodes()].index(running["id"]) == \
        [node["id"] for node in replica.corpus.nodes()].index(changed["id"])


def test_the_replica_is_safe_to_change_while_serving(replica):
    def writer():
        for number in range(30):
            checkout_tree(replica.corpus, replica.files_url, BASE, seed="w-%d" % number)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(20):
            assert get(replica, "/latest/nodes", limit=5).status_code == 200
    finally:
        thread.join()
    assert total(replica) == 31 * 17  # 30 trees written while serving, and the fixture's


def test_outcomes_used_by_the_hook_are_plain_ledger_facts():
    ledger = Ledger.open(":memory:")
    objects = [UpstreamObject("api", "test", "x.%d" % n, "") for n in range(3)]
    ledger.record([Outcome(objects[0], DELIVERED), Outcome(objects[1], FAILED, error="boom")])
    assert ledger.delivered_ids("api", "test", [obj.upstream_id for obj in objects]) == {"x.0"}


@pytest.mark.parametrize("text", ["-1", "1", "99", "2024", "2024-10", "Oct 2024", "10:00", "16 Oct"])
def test_a_since_that_does_not_name_a_whole_day_is_refused_not_filled_from_today(text):
    """python-dateutil fills what a text leaves out from today: `--since -1` read as the first of
    this month, `--since 2024` as today's day of 2024. A run must not list from such a day."""
    with pytest.raises(ConfigError, match="--since"):
        watermark.parse_since(text)


def test_a_redirect_answered_on_a_kept_alive_connection_to_a_target_that_fails_costs_one_attempt():
    """A GET answered with a redirect on a kept-alive connection, to an https target whose TLS
    handshake fails: the failure came on a new connection, not on one the server closed while
    idle, yet it was taken for that and the GET asked again at once on it as many times as the
    pool keeps connections (11 handshakes for one attempt, KCI_MAX_RETRIES=1)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import socket

    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(50)
    handshakes = []

    def refuse_handshakes():
        while True:
            try:
                connection, _ = target.accept()
            except OSError:
                return
            handshakes.append(1)
            connection.close()

    class Redirecting(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/page":
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            self.send_response(302)
            self.send_header("Location", "https://127.0.0.1:%d/file" % target.getsockname()[1])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=refuse_handshakes, daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d" % server.server_address[1]
        requester = Requester(new_session(pool_size=10), RetryPolicy(attempts=1), 5)
        requester.get(url + "/page")  # the connection to the server is kept alive
        with pytest.raises(UpstreamError, match="failed once"):
            requester.get(url + "/file")
        assert len(handshakes) == 1
    finally:
        server.shutdown()
        server.server_close()
        target.close()
