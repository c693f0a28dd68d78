"""Pin the strictness of the local emulators with plain `requests` calls."""
from __future__ import annotations

import errno
import gzip
import json
import re
import socket
import threading
from datetime import date, datetime, timezone

import pytest
import requests

from tests.fakes.elastic_store import index_name_problem
from tests.fakes.legacy_data import (
    at, boot_item, boot_path, build_item, build_json, lava_json, small_corpus,
)
from tests.fakes.legacy_replica import LegacyCorpus, LegacyFrontend, LegacyReplica
from tests.fakes.logstash_emulator import LogstashEmulator
from tests.fakes.logstash_events import parse_timestamp
from tests.fakes.serving import ManualClock, wait_until

TODAY = date(2019, 5, 31)
TOKEN_PATTERN = re.compile(r'csrf-token.*?content="([^"]+)"', re.DOTALL)
TIMEOUT = (2, 5)


# -- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def replica():
    """The built-in corpus (whatever samples/ holds), with a manual clock."""
    clock = ManualClock(start=1559300000.0)
    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=clock) as running:
        yield running
    assert running.frontend.errors == [] and running.storage.errors == []


@pytest.fixture
def emulator():
    with LogstashEmulator() as running:
        yield running
    assert running.errors == []


def login(session: requests.Session, frontend_url: str) -> str:
    home = session.get(frontend_url + "/", timeout=TIMEOUT)
    assert home.status_code == 200
    return TOKEN_PATTERN.search(home.text).group(1)


def ajax(session, replica, collection, token, **params):
    return session.get("%s/_ajax/%s" % (replica.frontend_url, collection), params=params,
                       headers={"X-CSRFToken": token}, timeout=TIMEOUT)


def oids(response) -> list:
    return [item["_id"]["$oid"] for item in response.json()["result"]]


def doc(index="build-2019.05.31", doc_id="a1", **fields):
    return dict({"@metadata": {"index": index, "id": doc_id}, "@timestamp": "2019-05-31T01:00:00.000Z"}, **fields)


def post(url, body, content_type="application/json", **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = dict(kwargs.pop("headers", {}))
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(url, data=data, headers=headers, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


# -- legacy frontend: CSRF -------------------------------------------------------------------

def test_ajax_needs_token_and_cookie(replica):
    anonymous = requests.get(replica.frontend_url + "/_ajax/build", timeout=TIMEOUT)
    assert anonymous.status_code == 403
    assert anonymous.headers["Content-Type"].startswith("text/html")

    session = requests.Session()
    token = login(session, replica.frontend_url)
    without_cookie = requests.get(replica.frontend_url + "/_ajax/build", headers={"X-CSRFToken": token},
                                  timeout=TIMEOUT)
    assert without_cookie.status_code == 403
    without_token = session.get(replica.frontend_url + "/_ajax/build", timeout=TIMEOUT)
    assert without_token.status_code == 403
    lowercase_header = session.get(replica.frontend_url + "/_ajax/build", headers={"x-csrftoken": token},
                                   timeout=TIMEOUT)
    assert lowercase_header.status_code == 200
    assert lowercase_header.headers["Content-Type"] == "application/json; charset=UTF-8"


def test_home_page_sets_session_cookie_and_token_format(replica):
    home = requests.get(replica.frontend_url + "/", timeout=TIMEOUT)
    assert re.match(r"kernelci\.org=[^;]+; HttpOnly; Path=/", home.headers["Set-Cookie"])
    expires, signature = TOKEN_PATTERN.search(home.text).group(1).split("##")
    assert re.fullmatch(r"[0-9a-f]{40}", signature)
    assert 600 <= int(expires) - replica.clock() <= 1200


def test_token_is_tied_to_its_own_session(replica):
    first, second = requests.Session(), requests.Session()
    first_token = login(first, replica.frontend_url)
    login(second, replica.frontend_url)
    assert ajax(second, replica, "build", first_token).status_code == 403
    assert ajax(first, replica, "build", first_token).status_code == 200


def test_token_expires_with_the_clock(replica):
    session = requests.Session()
    token = login(session, replica.frontend_url)
    replica.clock.advance(1201)
    assert ajax(session, replica, "build", token).status_code == 403
    fresh = login(session, replica.frontend_url)
    assert ajax(session, replica, "build", fresh).status_code == 200


def test_token_lifetime_range_is_configurable():
    clock = ManualClock(start=1000.0)
    with LegacyFrontend(small_corpus(TODAY), today=TODAY, clock=clock, token_lifetime=(5, 5)) as frontend:
        session = requests.Session()
        token = login(session, frontend.url)
        assert token.startswith("1005##")
        clock.advance(5)
        url = frontend.url + "/_ajax/boot"
        assert session.get(url, headers={"X-CSRFToken": token}, timeout=TIMEOUT).status_code == 200
        clock.advance(1)
        assert session.get(url, headers={"X-CSRFToken": token}, timeout=TIMEOUT).status_code == 403


def test_expire_all_tokens_hook(replica):
    session = requests.Session()
    token = login(session, replica.frontend_url)
    replica.frontend.expire_all_tokens()
    assert ajax(session, replica, "build", token).status_code == 403
    assert ajax(session, replica, "build", login(session, replica.frontend_url)).status_code == 200


# -- legacy frontend: listing ----------------------------------------------------------------

@pytest.fixture
def logged_in(replica):
    session = requests.Session()
    token = login(session, replica.frontend_url)
    return lambda collection, **params: ajax(session, replica, collection, token, **params)


def test_paging_with_skip_limit_until_an_empty_page(logged_in):
    seen, skip = [], 0
    while True:
        page = logged_in("boot", date_range=2, skip=skip, limit=3, sort="created_on", sort_order=1).json()
        assert page["count"] == 4 and page["limit"] == 3 and page["skip"] == skip
        if not page["result"]:
            break
        seen += page["result"]
        skip += len(page["result"])
    created = [item["created_on"]["$date"] for item in seen]
    assert len(seen) == 4 and created == sorted(created)


def test_listing_answers_of_1024_bytes_or_more_come_gzip_compressed_as_the_backend_sent_them(replica):
    """The frontend passes the backend's gzip body and Content-Encoding through, whatever the
    crawler's Accept-Encoding said; a short answer stays plain."""
    session = requests.Session()
    token = login(session, replica.frontend_url)
    url = "%s/_ajax/build" % replica.frontend_url
    for accepted in ("gzip, deflate", "identity"):
        raw = session.get(url, params={"limit": 0}, headers={"X-CSRFToken": token, "Accept-Encoding": accepted},
                          timeout=TIMEOUT, stream=True)
        assert raw.headers["Content-Encoding"] == "gzip"
        body = raw.raw.read()
        assert int(raw.headers["Content-Length"]) == len(body)
        assert len(json.loads(gzip.decompress(body))["result"]) == 4
    short = session.get(url, params={"limit": 1, "field": "_id"}, headers={"X-CSRFToken": token},
                        timeout=TIMEOUT)
    assert "Content-Encoding" not in short.headers and len(short.json()["result"]) == 1


def test_sort_order_defaults_to_descending(logged_in):
    ascending = oids(logged_in("build", sort="created_on", sort_order=1))
    assert oids(logged_in("build", sort="created_on")) == ascending[::-1]
    assert oids(logged_in("build", sort="created_on", sort_order=7)) == ascending[::-1]
    assert logged_in("build", sort="created_on", sort_order="up").status_code == 500


def test_limit_zero_is_all_and_the_last_repeated_limit_wins(logged_in):
    assert len(logged_in("build", limit=0).json()["result"]) == 4
    page = logged_in("build", limit=[1, 2]).json()
    assert page["limit"] == 2 and len(page["result"]) == 2


def test_date_range_is_relative_to_today(replica, logged_in):
    assert logged_in("build", date_range=2).json()["count"] == 3
    assert logged_in("build", date_range=20).json()["count"] == 4
    assert logged_in("build", date_range="two").json()["count"] == 3  # non-integer -> 5 days
    replica.frontend.today = date(2019, 6, 2)
    assert logged_in("build", date_range=0).json()["count"] == 0


def test_date_range_window_bounds():
    corpus = LegacyCorpus()
    inside_start = build_item("next", "k1", "arm", "d", at(TODAY, 2, 0))
    before = build_item("next", "k2", "arm", "d", datetime(2019, 5, 28, 23, 59, 59, tzinfo=timezone.utc))
    last_second = build_item("next", "k3", "arm", "d", datetime(2019, 5, 31, 23, 59, 59, tzinfo=timezone.utc))
    for item in (inside_start, before, last_second):
        corpus.add_item("build", item)
    with LegacyReplica(corpus, today=TODAY) as running:
        session = requests.Session()
        token = login(session, running.frontend_url)
        page = ajax(session, running, "build", token, date_range=2)
    # created_on >= today 00:00 - N days and < today 23:59:59 (upstream's "almost midnight").
    assert oids(page) == [inside_start["_id"]["$oid"]]


def test_field_projection_keeps_id(logged_in):
    items = logged_in("build", field=["file_server_resource", "created_on"]).json()["result"]
    assert {tuple(sorted(item)) for item in items} == {("_id", "created_on", "file_server_resource")}


def test_equality_filters_and_ignored_keys(logged_in):
    assert logged_in("boot", lab_name="lab-baylibre").json()["count"] == 2
    assert logged_in("boot", lab_name=["lab-baylibre", "lab-collabora"]).json()["count"] == 3
    assert logged_in("boot", board="am335x-boneblack").json()["count"] == 1
    assert logged_in("build", arch="x86_64", job="mainline").json()["count"] == 1
    assert logged_in("build", lab_name="lab-baylibre").json()["count"] == 4  # not a build filter key


def test_unknown_ajax_path_is_a_json_404(logged_in):
    response = logged_in("job")
    assert response.status_code == 404
    assert response.json()["code"] == 404 and "reason" in response.json()


def test_pages_shift_when_items_arrive_between_pages(replica, logged_in):
    def insert_once(corpus, collection, query):
        if dict(query).get("skip") == "2" and corpus.count("build") == 4:
            corpus.add_item("build", build_item("next", "early", "arm", "d", at(TODAY, 2, 0)))

    replica.frontend.on_page(insert_once)
    first = oids(logged_in("build", date_range=2, sort="created_on", sort_order=1, limit=2, skip=0))
    second = oids(logged_in("build", date_range=2, sort="created_on", sort_order=1, limit=2, skip=2))
    assert first[1] == second[0]  # the insertion pushed the second item onto the next page


def test_frontend_faults_are_consumed(replica, logged_in):
    replica.frontend.fail_next("/_ajax/boot", 502, count=2, body=b"bad gateway")
    assert logged_in("build").status_code == 200
    assert [logged_in("boot").status_code for _ in range(3)] == [502, 502, 200]
    replica.frontend.delay("/_ajax/build", 0.2)
    assert logged_in("build").elapsed.total_seconds() >= 0.2
    assert logged_in("build").elapsed.total_seconds() < 0.2


def test_frontend_records_requests(replica, logged_in):
    logged_in("build", skip=0, limit=5, field=["_id", "job"])
    recorded = replica.frontend.ajax_requests("build")[-1]
    assert recorded.status == 200 and recorded.params("field") == ["_id", "job"]
    assert recorded.headers["x-csrftoken"] and "kernelci.org=" in recorded.headers["cookie"]


def test_frontend_fixture_uses_a_corpus(legacy_replica):
    session = requests.Session()
    token = login(session, legacy_replica.frontend_url)
    page = ajax(session, legacy_replica, "build", token, date_range=2, limit=1).json()
    assert page["code"] == 200 and len(page["result"]) == 1


# -- legacy storage --------------------------------------------------------------------------

PLUS_PATH = "mainline/master/v5.2-rc2-24-gbec7550cca10/arm/multi_v7_defconfig+CONFIG_CPU_BIG_ENDIAN=y/gcc-8/build.json"


def test_storage_serves_percent_encoded_and_literal_plus(replica):
    encoded = replica.storage.url_for(PLUS_PATH)
    assert "%2B" in encoded
    response = requests.get(encoded, timeout=TIMEOUT)
    assert response.status_code == 200 and response.json()["defconfig_full"].endswith("BIG_ENDIAN=y")
    assert requests.get(replica.storage_url + "/" + PLUS_PATH, timeout=TIMEOUT).status_code == 200
    assert replica.storage.get_count(PLUS_PATH) == 2
    head = requests.head(encoded, timeout=TIMEOUT)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(response.content)


def test_storage_404_and_directory_index(replica):
    missing = requests.get(replica.storage_url + "/next/master/nope/build.json", timeout=TIMEOUT)
    assert missing.status_code == 404 and b"404 Not Found" in missing.content
    listing = requests.get(replica.storage_url + "/next/master/next-20190531/arm64/defconfig/gcc-8",
                           timeout=TIMEOUT)
    assert listing.status_code == 200 and listing.url.endswith("/")
    assert 'href="build.json"' in listing.text and 'href="lab-baylibre/"' in listing.text


def test_storage_truncate_then_whole(replica):
    replica.storage.truncate(PLUS_PATH, 10)
    short = requests.get(replica.storage.url_for(PLUS_PATH), timeout=TIMEOUT)
    assert short.status_code == 200 and len(short.content) == 10 == int(short.headers["Content-Length"])
    assert len(requests.get(replica.storage.url_for(PLUS_PATH), timeout=TIMEOUT).content) > 10


def test_storage_reset_cuts_the_body(replica):
    session = requests.Session()
    url = replica.storage.url_for(PLUS_PATH)
    replica.storage.reset(PLUS_PATH)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        session.get(url, timeout=TIMEOUT)
    assert session.get(url, timeout=TIMEOUT).status_code == 200


def test_storage_fail_next_by_prefix(replica):
    replica.storage.fail_next("mainline/", 500, count=1)
    assert requests.get(replica.storage.url_for(PLUS_PATH), timeout=TIMEOUT).status_code == 500
    assert requests.get(replica.storage.url_for(PLUS_PATH), timeout=TIMEOUT).status_code == 200


def test_corpus_from_samples_manifest(tmp_path):
    item = build_item("next", "next-20190531", "arm64", "defconfig+kselftest", at(TODAY, 0, 1))
    boot = boot_item(item, "lab-baylibre", "meson-gxbb-p200", at(TODAY, 0, 2))
    (tmp_path / "build").mkdir()
    (tmp_path / "lava").mkdir()
    (tmp_path / "build" / "b.json").write_bytes(build_json(item))
    (tmp_path / "lava" / "l.json").write_bytes(lava_json(boot, 1))
    storage = "https://storage.kernelci.org/"
    objects = [
        {"kind": "build", "upstream_id": "b", "path": "build/b.json", "listing": item,
         "url": storage + "next/master/next-20190531/arm64/defconfig%2Bkselftest/gcc-8/build.json"},
        {"kind": "lava", "upstream_id": "l", "path": "lava/l.json", "listing": boot,
         "url": storage + boot_path(boot).replace("+", "%2B")},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "source": "legacy", "objects": objects}))
    corpus = LegacyCorpus.from_samples(tmp_path)
    assert corpus.count("build") == 1 and corpus.count("boot") == 1
    assert corpus.read("next/master/next-20190531/arm64/defconfig+kselftest/gcc-8/build.json") == build_json(item)
    assert corpus.latest_day() == TODAY


# -- Logstash: responses ---------------------------------------------------------------------

def test_success_is_200_ok_text_plain(emulator):
    session = requests.Session()
    for _ in range(3):
        response = session.post(emulator.url + "/any/path", json=[doc()], timeout=TIMEOUT)
        assert (response.status_code, response.text) == (200, "ok")
        assert response.headers["Content-Type"] == "text/plain"
        assert response.headers["Content-Length"] == "2"
    assert emulator.trace == [("post", 1, 200)] * 3


def test_basic_auth_401_variants():
    with LogstashEmulator(user="kcing", password="s3cret") as secured:
        missing = post(secured.url, [doc()])
        assert missing.status_code == 401 and missing.content == b""
        assert missing.headers["WWW-Authenticate"] == 'Basic realm="Logstash HTTP Input"'
        wrong = post(secured.url, [doc()], auth=("kcing", "nope"))
        assert wrong.status_code == 401 and "WWW-Authenticate" not in wrong.headers
        assert post(secured.url, [doc()], auth=("kcing", "s3cret")).status_code == 200
        assert len(secured.store) == 1
    with LogstashEmulator(user="", password="") as empty_credentials:
        assert post(empty_credentials.url, [doc()]).status_code == 401


def test_body_over_max_content_length_is_413_and_closes():
    with LogstashEmulator(max_content_length=100) as small:
        response = post(small.url, [doc(padding="x" * 200)])
        assert response.status_code == 413 and response.content == b""
        assert response.headers["Content-Length"] == "0" and response.headers["Connection"] == "close"
        assert small.store == {}
        # the limit applies after decompression too
        packed = gzip.compress(json.dumps([doc(padding="x" * 500)]).encode())
        assert len(packed) < 200
        assert post(small.url, packed, headers={"Content-Encoding": "gzip"}).status_code == 413


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-ndjson", "Application/JSON"])
def test_other_content_types_use_the_plain_codec(emulator, content_type):
    body = json.dumps([doc()])
    assert post(emulator.url, body, content_type=content_type).status_code == 200
    [event] = emulator.events_received
    assert event.fields["message"] == body and event.metadata == {"origin": "logstash"}
    assert emulator.store == {} and emulator.unrouted[0].reason == "no [@metadata][index]"


def test_charset_parameter_is_ignored_for_codec_choice(emulator):
    assert post(emulator.url, [doc()], content_type="application/json; charset=UTF-8").status_code == 200
    assert len(emulator.store) == 1


@pytest.mark.parametrize("body", ['{"a": ', '[{"a": 1}, 2]', '"just a string"', '[NaN]'])
def test_json_parse_failure_is_still_200_with_one_tagged_event(emulator, body):
    response = post(emulator.url, body)
    assert (response.status_code, response.text) == (200, "ok")
    [event] = emulator.events_received
    assert event.fields["message"] == body and event.tags == ["_jsonparsefailure"]
    assert emulator.unrouted[0].reason.startswith("_jsonparsefailure")


@pytest.mark.parametrize("body, events", [("[]", 0), ("  \n", 0), ("", 0), ('{"a": 1}', 1)])
def test_empty_bodies_and_single_objects(emulator, body, events):
    assert post(emulator.url, body).status_code == 200
    assert len(emulator.events_received) == events


def test_array_becomes_one_event_per_element_and_metadata_is_not_stored(emulator):
    body = [doc(doc_id="a%d" % n, n=n) for n in range(5)]
    assert post(emulator.url, body).status_code == 200
    assert len(emulator.events_received) == 5 and emulator.trace == [("post", 5, 200)]
    stored = emulator.store[("build-2019.05.31", "a3")]
    assert stored == {"n": 3, "@timestamp": "2019-05-31T01:00:00.000Z", "@version": "1"}


def test_same_index_and_id_overwrites(emulator):
    post(emulator.url, [doc(value=1)])
    post(emulator.url, [doc(value=2)])
    assert emulator.store[("build-2019.05.31", "a1")]["value"] == 2
    assert emulator.writes[("build-2019.05.31", "a1")] == 2
    assert emulator.index_store.rewritten() == {("build-2019.05.31", "a1"): 2}


def test_timestamps_are_normalised_and_flagged(emulator):
    post(emulator.url, [doc(doc_id="zoned", **{"@timestamp": "2019-05-31T03:00:00+02:00"}),
                        doc(doc_id="naive", **{"@timestamp": "2019-05-31T01:00:00"}),
                        doc(doc_id="epoch", **{"@timestamp": 1559264400000}),
                        doc(doc_id="junk", **{"@timestamp": "yesterday"})])
    stored = emulator.index_store.in_index("build-2019.05.31")
    assert stored["zoned"]["@timestamp"] == "2019-05-31T01:00:00.000Z"
    assert [event.zoneless_timestamp for event in emulator.events_received] == [False, True, False, False]
    for bad, original in (("epoch", 1559264400000), ("junk", "yesterday")):
        assert stored[bad]["tags"] == ["_timestampparsefailure"] and stored[bad]["_@timestamp"] == original


@pytest.mark.parametrize("text, expected", [
    ("2019-05-31", "2019-05-31T00:00:00+00:00"),
    ("2019-05-31T07:06:18.385678+00:00", "2019-05-31T07:06:18.385678+00:00"),
    ("2019-05-31T07:06Z", "2019-05-31T07:06:00+00:00"),
    ("2019-05-31T09:06:18-0130", "2019-05-31T10:36:18+00:00"),
])
def test_lenient_iso_timestamps(text, expected):
    instant, _, _ = parse_timestamp(text)
    assert instant.isoformat() == expected


@pytest.mark.parametrize("name", ["Build-2019", "_build", "-b", "+b", "a b", "a,b", "a#b", "a*b", "a:b",
                                  "a/b", "a\\b", "a?b", 'a"b', "a<b", "a|b", "x" * 256, "", ".."])
def test_index_names_elasticsearch_refuses(name):
    assert index_name_problem(name) is not None


def test_unroutable_documents_are_kept_apart(emulator):
    post(emulator.url, [doc(index="Build-2019.05.31"), doc(doc_id="x", _id="mine"),
                        {"@metadata": {"index": "build-2019.05.31"}, "a": 1},
                        doc(index="boot-2019.05.31", doc_id="ok")])
    reasons = [entry.reason for entry in emulator.unrouted]
    assert "must be lowercase" in reasons[0]
    assert "Field [_id] is a metadata field" in reasons[1]
    assert reasons[2] == "no [@metadata][id]"
    assert list(emulator.store) == [("boot-2019.05.31", "ok")]


def test_pipeline_strips_input_fields_and_reports_it(emulator):
    post(emulator.url, [doc(host="builder-1", keep=True)])
    assert emulator.store[("build-2019.05.31", "a1")].get("host") is None
    assert [path for path, _ in emulator.stripped] == ["host"]


# -- Logstash: faults ------------------------------------------------------------------------

def test_fail_next_is_consumable_with_retry_after(emulator):
    emulator.fail_next(429, count=2, retry_after=3)
    session = requests.Session()
    answers = [session.post(emulator.url, json=[doc()], timeout=TIMEOUT) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3" and answers[0].content == b""
    assert emulator.trace == [("post", 0, 429), ("post", 0, 429), ("post", 1, 200)]
    assert emulator.writes[("build-2019.05.31", "a1")] == 1


def test_reset_next_closes_without_answer(emulator):
    emulator.reset_next()
    with pytest.raises(requests.exceptions.ConnectionError):
        post(emulator.url, [doc()])
    assert emulator.store == {} and emulator.trace == [("post", 0, None)]
    assert post(emulator.url, [doc()]).status_code == 200


def test_accept_then_fail_stores_and_answers_500(emulator):
    emulator.accept_then_fail_next()
    response = post(emulator.url, [doc()])
    assert response.status_code == 500 and response.content == b""
    assert len(emulator.store) == 1 and emulator.trace == [("post", 1, 500)]


def test_slow_next_times_out_the_client_but_still_stores(emulator):
    emulator.slow_next(0.4)
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(emulator.url, [doc()], timeout=(1, 0.1))
    assert emulator.store == {}
    assert emulator.wait_idle(timeout=3)
    assert len(emulator.store) == 1


def test_down_refuses_connections_until_up(emulator):
    session = requests.Session()
    assert session.post(emulator.url, json=[doc()], timeout=TIMEOUT).status_code == 200
    emulator.down()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(emulator.url, json=[doc()], timeout=TIMEOUT)
    emulator.up()
    assert session.post(emulator.url, json=[doc()], timeout=TIMEOUT).status_code == 200


def test_a_down_emulator_keeps_its_port_for_up(emulator):
    # A fault scenario takes Logstash down for seconds while other processes open connections
    # and servers: none of them may be given its port, or up() fails with "address in use".
    emulator.down()
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind(("127.0.0.1", emulator.port))
    assert refused.value.errno == errno.EADDRINUSE
    emulator.up()
    assert requests.post(emulator.url, json=[doc()], timeout=TIMEOUT).status_code == 200
    emulator.stop()
    with socket.socket() as other:  # stopped for good: the port is given back
        other.bind(("127.0.0.1", emulator.port))


def _post_in_background(url, results):
    thread = threading.Thread(target=lambda: results.append(post(url, [doc()]).status_code))
    thread.start()
    return thread


def test_saturation_answers_429_while_requests_are_held(emulator):
    emulator.saturate(1)
    emulator.block_pipeline()
    results = []
    held = _post_in_background(emulator.url, results)
    assert wait_until(lambda: emulator.inflight == 1)
    assert post(emulator.url, [doc()]).status_code == 429
    emulator.unblock_pipeline()
    held.join(timeout=3)
    assert results == [200]


def test_blocked_too_long_rejects_new_requests_and_closes():
    with LogstashEmulator(reject_when_blocked_after=0.1) as stalled:
        stalled.block_pipeline()
        results = []
        held = _post_in_background(stalled.url, results)
        assert wait_until(lambda: stalled.inflight == 1)
        wait_until(lambda: False, timeout=0.15)
        rejected = post(stalled.url, [doc()])
        assert rejected.status_code == 429 and rejected.headers["Connection"] == "close"
        stalled.unblock_pipeline()
        held.join(timeout=3)
        assert results == [200]


def test_gzip_bodies_are_decoded_and_bad_gzip_is_400(emulator):
    packed = gzip.compress(json.dumps([doc()]).encode())
    assert post(emulator.url, packed, headers={"Content-Encoding": "gzip"}).status_code == 200
    bad = post(emulator.url, b"not gzip", headers={"Content-Encoding": "gzip"})
    assert bad.status_code == 400 and bad.content


def test_bodies_are_inflated_and_measured_before_credentials_are_checked():
    # Netty decompresses and aggregates before the executor task checks the Authorization header.
    with LogstashEmulator(user="kcing", password="s3cret", max_content_length=100) as secured:
        bad = post(secured.url, b"not gzip", headers={"Content-Encoding": "gzip"})
        assert bad.status_code == 400 and bad.content
        packed = gzip.compress(json.dumps([doc(padding="x" * 500)]).encode())
        assert post(secured.url, packed, headers={"Content-Encoding": "gzip"}).status_code == 413
        assert post(secured.url, gzip.compress(b"[]"), headers={"Content-Encoding": "gzip"}).status_code == 401


def test_cluster_fixture_routes_share_one_store(logstash):
    assert len(set(logstash.urls.values())) == 4 and set(logstash.urls) == {"build", "lava", "boot", "regression"}
    post(logstash.build.url, [doc(doc_id="b")])
    post(logstash.lava.url, [doc(index="test-2019.05.31", doc_id="t")])
    assert set(logstash.store) == {("build-2019.05.31", "b"), ("test-2019.05.31", "t")}
    assert logstash.lava.events_received[0].metadata["origin"] == "lava"
    assert logstash.boot.trace == []


def test_before_http_input_3_10_blocked_requests_are_held_not_refused():
    # logstash-input-http before 3.10.0 (4.1.0 on the 4.x line) has no "blocked for 10 s" rule:
    # a full queue keeps every request open until it has room.
    with LogstashEmulator(reject_when_blocked_after=None) as stalled:
        stalled.block_pipeline()
        results = []
        first = _post_in_background(stalled.url, results)
        assert wait_until(lambda: stalled.inflight == 1)
        wait_until(lambda: False, timeout=0.15)
        second = _post_in_background(stalled.url, results)
        assert wait_until(lambda: stalled.inflight == 2)
        assert results == []
        stalled.unblock_pipeline()
        first.join(timeout=3)
        second.join(timeout=3)
        assert results == [200, 200]


def test_a_version_a_logstash_condition_takes_as_false_is_written_without_one(emulator):
    # `if [@metadata][version]` is false for "" and "false" as for null (Logstash's FieldTruthy):
    # the filter does not check them, and the unversioned output writes the document.
    versions = (("a", ""), ("b", "false"), ("c", None), ("d", False), ("e", "x"), ("f", 0), ("g", "7"))
    post(emulator.url, [dict(doc(doc_id=id_), **{"@metadata": {"index": "build-2019.05.31", "id": id_,
                                                               "version": version}}) for id_, version in versions])
    assert set(emulator.store) == {("build-2019.05.31", id_) for id_ in "abcdg"}
    assert [entry.event.metadata["id"] for entry in emulator.unrouted] == ["e", "f"]
    assert emulator.index_store.versions[("build-2019.05.31", "g")] == 7
