"""The real program against the plainest servers a user may have: Python's `http.server` with its
defaults (HTTP/1.0, a connection closed after every answer, no Content-Length, one request at a
time, `send_error`'s HTML pages), in front of the emulators or serving the storage's files."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.fakes.api_data import MAESTRO, REAL_JOB, checkout_tree, real_nodes
from tests.fakes.api_replica import ApiReplica
from tests.fakes.elastic_forward import ForwardingStore
from tests.fakes.kibana_server import KibanaEmulator
from tests.fakes.logstash_emulator import LogstashCluster
from tests.fakes.plain_http import PlainErrors, PlainFiles, PlainFront
from tests.feedrun import (REPO, SAMPLES, api_feed_environ, clean_environ, expected_documents, feed_environ, kcing,
                           ledger_states, sample_objects, stored_keys)

needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")
needs_real_job = pytest.mark.skipif(not (MAESTRO / REAL_JOB).is_file(), reason="real upstream file %s is absent (the "
                                    "shared/ folder sits beside the repository)" % REAL_JOB)


def copied_to_files(read, paths, root: Path) -> None:
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read(path))


def logstash_fronts(cluster, **framing):
    """A plain front before each Logstash input, passing its answers on as they are."""
    return {route: PlainFront(cluster.urls[route], error_pages=False, **framing)
            for route in ("build", "lava", "boot", "regression")}


def logstash_settings(fronts) -> dict:
    return {"ES_" + route.upper(): front.url for route, front in fronts.items()}


def started(*servers):
    for server in servers:
        server.__enter__()


def stopped(*servers):
    for server in servers:
        server.__exit__(None, None, None)


@needs_samples
@pytest.mark.parametrize("framing", [dict(), dict(http11_close=True)], ids=["http10", "http11-close"])
def test_a_legacy_feed_through_single_threaded_plain_servers_delivers_every_document(legacy_replica, logstash,
                                                                                     tmp_path, framing):
    root = tmp_path / "storage"
    copied_to_files(legacy_replica.corpus.read, legacy_replica.corpus.paths(), root)
    frontend, storage, fronts = PlainFront(legacy_replica.frontend_url, **framing), PlainFiles(str(root)), \
        logstash_fronts(logstash, **framing)
    started(frontend, storage, *fronts.values())
    try:
        env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_HOST=frontend.url.split("://")[1],
                           KCI_STORAGE_URL=storage.url, **logstash_settings(fronts))
        result = kcing(["feed_es", "--threads", "4"], env, tmp_path, timeout=60)
    finally:
        stopped(frontend, storage, *fronts.values())
    assert result.returncode == 0, result.stderr
    expected = expected_documents(sample_objects())
    assert stored_keys(logstash) == set(expected)
    assert all({name: logstash.store[key].get(name) for name in body} == body for key, body in expected.items())
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}



@needs_samples
def test_gen_samples_through_plain_servers_saves_the_files_it_saves_from_the_replica(legacy_replica, logstash,
                                                                                     tmp_path):
    """Each file read until the server closed the connection, none with a Content-Length."""
    root = tmp_path / "storage"
    copied_to_files(legacy_replica.corpus.read, legacy_replica.corpus.paths(), root)
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    direct = kcing(["gen_samples", "--sample-size", "50", "--samples-dir", str(tmp_path / "direct")], env, tmp_path)
    with PlainFront(legacy_replica.frontend_url) as frontend, PlainFiles(str(root)) as storage:
        env.update(KCI_HOST=frontend.url.split("://")[1], KCI_STORAGE_URL=storage.url)
        plain = kcing(["gen_samples", "--sample-size", "50", "--samples-dir", str(tmp_path / "plain")], env, tmp_path)
    assert direct.returncode == plain.returncode == 0, plain.stderr

    def saved(directory: Path) -> dict:
        return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*.json")
                if path.name != "manifest.json"}
    assert saved(tmp_path / "direct") and saved(tmp_path / "plain") == saved(tmp_path / "direct")

def api_feed(tmp_path: Path, logstash, plain: bool, page_type=None) -> dict:
    """Feed the API replica's nodes with their logs: through a plain front with its files from
    `http.server` when `plain`, else from the replica itself. Returns what Logstash holds, the
    API's and the files' URLs in it replaced by {API} and {FILES}, its arrival times left out."""
    replica = ApiReplica()
    replica.start()
    front = PlainFront(replica.url, content_type=page_type)
    files = PlainFiles(str(tmp_path / "files"))
    started(front, files)
    try:
        api_url = front.url + "/latest" if plain else replica.api_url
        files_url = files.url if plain else replica.files_url
        real_nodes(replica.corpus, files_url)
        checkout_tree(replica.corpus, files_url, datetime(2026, 1, 5, tzinfo=timezone.utc))
        copied_to_files(replica.corpus.read, list(replica.corpus._files), tmp_path / "files")
        env = api_feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_DAYS="36500", KCI_API_URL=api_url,
                               KCI_API_STORAGE_URL=files_url)
        result = kcing(["feed_es", "--with-logs"], env, tmp_path, timeout=60)
    finally:
        stopped(front, files)
        replica.stop()
    assert result.returncode == 0, result.stderr
    return {key: json.loads(json.dumps({name: value for name, value in document.items() if name != "@timestamp"})
                            .replace(files_url, "{FILES}").replace(api_url, "{API}"))
            for key, document in logstash.store.items()}


@needs_real_job
@pytest.mark.parametrize("page_type", [None, "text/plain", "application/octet-stream", ""])
def test_an_api_feed_through_plain_servers_delivers_what_it_does_from_the_api(logstash, tmp_path, page_type):
    """The pages labelled otherwise than JSON (or not at all), the `.gz` logs served as
    application/gzip by a static file server, without Content-Encoding."""
    through_plain = api_feed(tmp_path / "plain", logstash, True, page_type)
    assert any(index.startswith("log-") for index, _ in through_plain)
    direct = LogstashCluster()
    direct.start()
    try:
        assert api_feed(tmp_path / "direct", direct, False) == through_plain
    finally:
        direct.stop()


@needs_samples
def test_the_elasticsearch_commands_through_a_single_threaded_plain_front(legacy_replica, es, tmp_path):
    cluster = LogstashCluster(store=ForwardingStore(es.url))
    cluster.start()
    es_front, fronts = PlainFront(es.url, error_pages=False), logstash_fronts(cluster)
    started(es_front, *fronts.values())
    try:
        env = feed_environ(legacy_replica, cluster, tmp_path / "kcing.db", ES_HOST=es_front.url, DRP_DAYS="36500",
                           ES_READY_TIMEOUT="5", **logstash_settings(fronts))
        outcomes = {" ".join(args): kcing(args, env, tmp_path, timeout=60)
                    for args in (["setup_es", "--ilm"], ["feed_es", "--verify", "--verify-delay", "0"], ["reconcile"],
                                 ["status", "--json"], ["drp", "--drp-days", "30"])}
    finally:
        stopped(es_front, *fronts.values())
        cluster.stop()
    assert {command: done.returncode for command, done in outcomes.items()} == dict.fromkeys(outcomes, 0), \
        {command: done.stderr[-500:] for command, done in outcomes.items()}
    assert {"kcing-build", "kcing-boot", "kcing-test", "kcing-log"} <= set(es.templates)
    assert json.loads(outcomes["status --json"].stdout)
    assert not [name for name in es.index_names() if name.startswith(("build-", "boot-", "test-", "log-"))]


def test_setup_kbn_and_backup_kbn_through_a_plain_front_round_trip(tmp_path):
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    shutil.copyfile(REPO / "kibana" / "saved_objects.ndjson", kibana_dir / "saved_objects.ndjson")
    shipped = (kibana_dir / "saved_objects.ndjson").read_bytes()
    with KibanaEmulator(spaces=("ci",)) as kibana, PlainFront(kibana.url, error_pages=False) as front:
        env = clean_environ(KB_URL=front.url)
        for command in ("setup_kbn", "backup_kbn"):
            done = kcing([command, "--space", "ci", "--kibana-dir", str(kibana_dir), "--wait", "5"], env, tmp_path)
            assert done.returncode == 0, done.stderr
        assert kibana.objects("ci")
    assert (kibana_dir / "saved_objects.ndjson").read_bytes() == shipped


def last_line(done) -> str:
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("command, action", [
    ("setup_es", "checking cluster health"),
    ("drp", "listing indices (build-*,boot-*,test-*,log-*,regression-*)"),
], ids=["setup_es", "drp"])
def test_an_error_page_before_elasticsearch_is_said_by_its_title_not_its_markup(tmp_path, command, action):
    """A proxy's error page (nginx's "502 Bad Gateway") in front of the node was quoted whole,
    its doctype, head and markup flattened into the line."""
    with PlainErrors(500) as server:
        done = kcing([command], clean_environ(ES_HOST=server.url, KCING_DB=str(tmp_path / "kcing.db"),
                                              ES_READY_TIMEOUT="1"), tmp_path)
    assert done.returncode == 3, done.stderr
    assert last_line(done) == ('kcing %s: Elasticsearch at %s refused a request while %s (500 error): an HTML page '
                               '"Error response"' % (command, server.url, action))


@pytest.mark.parametrize("status, user, exit_status, said", [
    (404, "", 2, 'kcing feed_es: {url} answered 404 with an HTML page "Error response" (text/html), which a Logstash '
                 'http input never answers: set ES_BUILD to the URL of the input'),
    (400, "", 3, 'kcing feed_es: Logstash at {url} rejected a batch with 400: an HTML page "Error response"'),
    # A proxy's refusal: an input never answers 403. "Check LS_USER and LS_PASSWORD" named empty settings.
    (403, "", 2, 'kcing feed_es: Logstash at {url} refused the request (403) without credentials (none are set): '
                 'set LS_USER and LS_PASSWORD if what answers there asks for them'),
    (403, "kcing", 2, 'kcing feed_es: Logstash at {url} refused the request (403): check LS_USER and LS_PASSWORD'),
], ids=["404", "400", "403", "403-credentials-set"])
def test_an_error_page_at_a_logstash_input_is_said_by_its_title_not_its_markup(tmp_path, status, user, exit_status,
                                                                             said):
    build = sorted((SAMPLES / "build").iterdir())[0]
    with PlainErrors(status) as server:
        env = clean_environ(ES_BUILD=server.url, KCING_DB=str(tmp_path / "kcing.db"), ES_RETRY_BACKOFF="0.05",
                            LS_USER=user, LS_PASSWORD="s3cret" if user else "")
        done = kcing(["feed_es", "--date", "2020-11-04", "--builds", str(build)], env, tmp_path)
    assert done.returncode == exit_status, done.stderr
    assert last_line(done) == said.format(url=server.url)


def test_json_labelled_text_plain_before_elasticsearch_is_an_unreadable_answer(tmp_path, es):
    """A proxy that labels the node's JSON `text/plain`: the client hands it over as a string, and
    drp deleted nothing yet ended 0, setup_es with an internal error."""
    es.seed_index("boot-2001.01.01", docs={"1": {"job": "mainline"}})
    with PlainFront(es.url, content_type="text/plain", error_pages=False) as front:
        env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"), ES_READY_TIMEOUT="0")
        deleting = kcing(["drp", "--drp-days", "30"], env, tmp_path)
        installing = kcing(["setup_es", "--wait", "0"], env, tmp_path)
    assert deleting.returncode == 3, deleting.stderr
    assert last_line(deleting) == (
        "kcing drp: Elasticsearch at %s sent an unreadable answer while listing indices (build-*,boot-*,test-*,"
        "log-*,regression-*): a JSON array labelled text/plain, not application/json" % front.url)
    assert installing.returncode == 3, installing.stderr
    assert last_line(installing).endswith(
        "sent an unreadable answer while checking cluster health: a JSON object labelled text/plain, not "
        "application/json")


@pytest.mark.parametrize("status, user, said", [
    (401, "", "asks for credentials (401) while listing indices ({patterns}): set ES_USER and ES_PASSWORD, or "
              "ES_API_KEY"),
    (401, "kcing", "refused the credentials (401) while listing indices ({patterns}): check ES_USER/ES_PASSWORD or "
                   "ES_API_KEY"),
    (403, "", "denied access (403) while listing indices ({patterns}): an HTML page \"Error response\"; no "
              "credentials are set (ES_USER and ES_PASSWORD, or ES_API_KEY)"),
    (403, "kcing", "denied the configured user (403) while listing indices ({patterns}): an HTML page \"Error "
                   "response\""),
], ids=["401-none-set", "401-set", "403-none-set", "403-set"])
def test_a_401_or_403_page_of_a_proxy_before_elasticsearch_names_no_credentials_when_none_are_set(
        tmp_path, status, user, said):
    """A proxy's 401 page (nginx's auth_basic) to a request without credentials was said "refused
    the credentials: check ES_USER/ES_PASSWORD", naming settings that hold nothing to check; its
    403 (an address allow-list, a client certificate missing), that it "denied the configured user"."""
    with PlainErrors(status) as server:
        env = clean_environ(ES_HOST=server.url, KCING_DB=str(tmp_path / "kcing.db"), ES_USER=user,
                            ES_PASSWORD="s3cret" if user else "")
        done = kcing(["drp", "--drp-days", "30"], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert last_line(done) == "kcing drp: Elasticsearch at %s %s" % (
        server.url, said.format(patterns="build-*,boot-*,test-*,log-*,regression-*"))
