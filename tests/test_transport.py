"""The transport that carries batches to Logstash (kcing/transport.py), against loopback servers:
the headers it sends, keep-alive, proxies from the environment, TLS trust and hostnames, basic
auth, redirects left alone, and the sink's messages for what can go wrong on the way."""
from __future__ import annotations

import base64
import importlib.util
import logging
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest

from kcing import __version__
from kcing.errors import ConfigError, SinkUnavailable
from kcing.http import BodyReader, RetryPolicy, new_session
from kcing.ledger.models import DELIVERED
from kcing.sinks import logstash as logstash_sink
from kcing.sinks.batching import Batch
from kcing.sinks.logstash import FAILING_INPUT_PAUSE, LogstashSink
from kcing.transport import BadCaBundle, CannotConnect, Transport
from tests.fakes.forward_proxy import ForwardProxy
from tests.fakes.rogue_http import RogueFront, answer, redirect
from tests.fakes.serving import serve_connections, taking_no_connection
from tests.faults.tls_front import TlsFront
from tests.feedrun import SAMPLES, clean_environ, feed_environ, kcing

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
BODY = b'[{"a":1},{"b":"\xc3\xa9"}]'


@pytest.fixture(autouse=True)
def no_proxy_from_the_shell(monkeypatch):
    """Each test says which proxy settings apply; none come from the developer's shell."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def front():
    with RogueFront() as started:
        yield started


def recording(requests: list, status: int = 200, body: bytes = b"ok"):
    """A behaviour that keeps each request (headers in the order sent) and answers `status`."""
    def recorded(front, sock, request) -> bool:
        requests.append(request)
        return answer(status, body=body)(front, sock, request)
    return recorded


def silent_for(seconds: float):
    """Read the request, answer nothing for `seconds`, hang up."""
    def silent(front, sock, request) -> bool:
        front.stopping.wait(seconds)
        return False
    return silent


def post(transport: Transport, url: str, body: bytes = BODY, timeout=(5, 5)):
    response = transport.post(url, body, "application/json", timeout)
    answer_body = response.raw.read()
    return response.status_code, answer_body


def sink_for(url: str, transport: Transport, timeout: float = 5) -> LogstashSink:
    return LogstashSink({"lava": [url]}, transport, RetryPolicy(attempts=1), timeout, sleep=lambda _: None,
                        settings={"lava": "ES_LAVA"})


def batch(body: bytes = b'{"a":1}') -> Batch:
    return Batch.of_items("lava", [body], [("lava", "x")])


# What is sent ------------------------------------------------------------------------------------

def test_the_request_is_byte_for_byte_what_requests_sent(front):
    """Same headers, same order, same values, same body as a requests.Session POST."""
    seen = []
    front.on("POST", "/", recording(seen), count=None)
    session = new_session()
    session.post(front.url + "/", data=BODY, headers={"Content-Type": "application/json"}, timeout=5).close()
    post(Transport(), front.url)
    old, new = seen
    assert list(new.headers.items()) == list(old.headers.items())
    assert (new.method, new.path, new.body) == (old.method, old.path, old.body) == ("POST", "/", BODY)
    assert new.headers["User-Agent"] == "kcing/%s" % __version__
    assert new.headers["Content-Length"] == str(len(BODY))


def test_basic_auth_is_the_header_requests_sent(front):
    seen = []
    front.on("POST", "/", recording(seen), count=None)
    session = new_session()
    session.post(front.url, data=BODY, auth=("kcing", "s3cret-pass"), timeout=5).close()
    post(Transport(auth=("kcing", "s3cret-pass")), front.url)
    old, new = seen
    assert new.headers["Authorization"] == old.headers["Authorization"]
    assert new.headers["Authorization"] == "Basic " + base64.b64encode(b"kcing:s3cret-pass").decode()


def test_a_password_with_latin_1_letters_is_sent_as_utf_8_as_the_http_input_compares_it(front):
    # The input expects "Basic " + base64 of "user:password" in UTF-8 (its config is UTF-8 text);
    # requests would send latin-1 bytes for "ä", which the input answers with 401.
    from tests.fakes.logstash_emulator import LogstashEmulator

    seen = []
    front.on("POST", "/", recording(seen))
    post(Transport(auth=("kcing", "pässwörd")), front.url)
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode("kcing:pässwörd".encode()).decode()
    with LogstashEmulator(user="kcing", password="pässwörd") as secured:
        assert post(Transport(auth=("kcing", "pässwörd")), secured.url) == (200, b"ok")


def test_a_password_outside_latin_1_is_sent_as_utf_8(front):
    seen = []
    front.on("POST", "/", recording(seen))
    post(Transport(auth=("kcing", "пароль")), front.url)
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode("kcing:пароль".encode()).decode()


def test_credentials_for_the_host_in_netrc_are_sent_when_ls_user_is_not_set(front, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login from-netrc password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    seen = []
    front.on("POST", "/", recording(seen), count=None)
    post(Transport(), front.url)
    post(Transport(auth=("kcing", "given")), front.url)
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"from-netrc:secret").decode()
    assert seen[1].headers["Authorization"] == "Basic " + base64.b64encode(b"kcing:given").decode()


def test_the_default_entry_of_netrc_is_never_sent_to_logstash(front, tmp_path, monkeypatch):
    """A netrc's `default` entry names every host (an FTP login, a package index's token): it was
    sent to every Logstash input, where the README promises only the entry for the input's host."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine elsewhere.example login other password other-secret\n"
                     "default login anyone password default-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    seen = []
    front.on("POST", "/", recording(seen), count=None)
    post(Transport(), front.url)
    assert "Authorization" not in seen[0].headers


# Connections -------------------------------------------------------------------------------------

def test_posts_reuse_one_connection(front):
    front.on("POST", "/", answer(200, body=b"ok"), count=None)
    sink = sink_for(front.url, Transport(pool_size=2))
    for _ in range(5):
        sink.send(batch())
    assert front.connections == 1


def test_connections_stay_open_to_more_inputs_than_the_pool_size():
    # 6 inputs and posts 2 at a time: each input keeps its own connection across rounds.
    fronts = [RogueFront().__enter__() for _ in range(6)]
    try:
        for each in fronts:
            each.on("POST", "/", answer(200, body=b"ok"), count=None)
        transport = Transport(pool_size=2)
        for _ in range(3):
            for each in fronts:
                assert post(transport, each.url) == (200, b"ok")
        assert [each.connections for each in fronts] == [1] * 6
    finally:
        for each in fronts:
            each.__exit__(None, None, None)


def test_a_kept_alive_connection_the_input_closed_is_replaced_without_costing_an_attempt(front):
    # The input (or a proxy before it) closed the idle connection just as the next batch went out
    # on it: no answer comes. The batch goes again at once on a new connection; the one attempt
    # the policy allows is not spent on it.
    front.on("POST", "/", answer(200, body=b"ok"), count=1)
    front.on("POST", "/", silent_for(0), count=1)
    front.on("POST", "/", answer(200, body=b"ok"), count=None)
    sink = sink_for(front.url, Transport(pool_size=2))
    sink.send(batch())
    sink.send(batch())
    assert [by for _, _, by in front.requests] == ["whole_answer", "silent", "whole_answer"]
    assert front.connections == 2


def test_no_answer_on_a_new_connection_still_costs_an_attempt(front):
    # Only a connection that had carried an answer before can have been closed while idle.
    front.on("POST", "/", silent_for(0), count=None)
    with pytest.raises(SinkUnavailable, match="connection closed without an answer"):
        sink_for(front.url, Transport(pool_size=2)).send(batch())
    # (Besides the POST, one TLS hello: is it a port that speaks TLS? It is not.)
    assert [request for request in front.requests if request[0] == "POST"] == [("POST", "/", "silent")]


def test_an_input_that_closes_every_connection_after_its_answer_loses_no_attempt(tmp_path):
    # Each answer is the last on its connection, without `Connection: close`: the next batch
    # is often written before the close is seen. A run allowed a single attempt per batch still
    # delivers everything, with nothing to warn about.
    from tests.fakes.logstash_emulator import LogstashCluster

    with LogstashCluster() as logstash:
        for emulator in logstash.emulators.values():
            emulator.close_after_answers()
        env = clean_environ(KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(SAMPLES), KCING_DB=str(tmp_path / "kcing.db"),
                            KCING_WORKERS="0", ES_MAX_RETRIES="1", ES_RETRY_BACKOFF="0.05",
                            LS_PIPELINE_BATCH_SIZE="20", ES_PARALLEL_POSTS="4",
                            **{"ES_" + route.upper(): url for route, url in logstash.urls.items()})
        result = kcing(["feed_es"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert " WARNING " not in result.stderr
        assert {status for emulator in logstash.emulators.values() for *_, status in emulator.trace} == {200}


def test_an_input_that_stopped_answering_is_tried_after_the_others_for_a_while(front, caplog):
    # Two inputs for a route; one holds every request without answering (its host hangs, or a
    # firewall drops its packets). Each batch pays the timeout there once, not every other batch.
    from tests.fakes.logstash_emulator import LogstashEmulator

    front.on("POST", "/", answer(200, body=b"ok"), count=None)
    now = [0.0]
    with LogstashEmulator(reject_when_blocked_after=None) as hung:
        hung.block_pipeline()
        try:
            sink = LogstashSink({"lava": [hung.url, front.url]}, Transport(), RetryPolicy(attempts=1), 0.3,
                                sleep=lambda _: None, settings={"lava": "ES_LAVA"}, clock=lambda: now[0])
            for _ in range(6):
                sink.send(batch())
            assert hung.peak_inflight == 1 and len(front.requests) == 6
            assert "ES_LAVA input %s failed" % hung.url in caplog.text
            now[0] += FAILING_INPUT_PAUSE + 1  # then it is tried first again, in its turn
            sink.send(batch())
            sink.send(batch())
            assert hung.peak_inflight == 2
        finally:
            hung.unblock_pipeline()


def test_a_routes_only_input_that_fails_is_not_said_to_wait_for_other_inputs(front, caplog):
    # With one input there is no other to try first: the retry's warning tells what happens.
    front.on("POST", "/", answer(503), count=1).on("POST", "/", answer(200, body=b"ok"), count=None)
    sink = LogstashSink({"lava": [front.url]}, Transport(), RetryPolicy(attempts=2, base=0.01, cap=0.01), 5,
                        sleep=lambda _: None, settings={"lava": "ES_LAVA"})
    with caplog.at_level(logging.WARNING):
        sink.send(batch())
    assert len(front.requests) == 2
    (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.startswith("lava batch of 1 failed (%s answered 503); retry 1 of 1 in " % front.url), warning


def test_batches_take_the_routes_inputs_in_turn(front):
    with RogueFront() as other:
        for each in (front, other):
            each.on("POST", "/", answer(200, body=b"ok"), count=None)
        sink = LogstashSink({"lava": [front.url, other.url]}, Transport(), RetryPolicy(attempts=1), 5,
                            sleep=lambda _: None, settings={"lava": "ES_LAVA"})
        for _ in range(4):
            sink.send(batch())
        assert (len(front.requests), len(other.requests)) == (2, 2)


def test_a_batch_every_input_refuses_waits_between_attempts_as_long_as_the_longest_retry_after(front):
    # Two inputs answer 503, asking for different pauses: the wait honours the longer one, and
    # there is none after the last attempt, which ends the batch's retries at once.
    sleeps = []
    with RogueFront() as other:
        front.on("POST", "/", answer(503, (("Retry-After", "7"),)), count=None)
        other.on("POST", "/", answer(503, (("Retry-After", "3"),)), count=None)
        sink = LogstashSink({"lava": [front.url, other.url]}, Transport(),
                            RetryPolicy(attempts=3, base=0.01, cap=0.01), 5, sleep=sleeps.append,
                            settings={"lava": "ES_LAVA"})
        with pytest.raises(SinkUnavailable, match="3 attempts in a row"):
            sink.send(batch())
        assert len(front.requests) == len(other.requests) == 3
    assert sleeps == [7, 7]



def test_a_retry_after_date_from_logstash_is_read_by_its_clock_not_this_hosts(front):
    # A proxy before Logstash whose clock runs three hours ahead asks, as a date, for a pause of
    # 7 s: measured from its own Date, that is 7 s, not the longest wait a run makes.
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    sleeps = []
    there = datetime.now(timezone.utc) + timedelta(hours=3)
    front.on("POST", "/", answer(503, (("Date", format_datetime(there, usegmt=True)),
                                       ("Retry-After", format_datetime(there + timedelta(seconds=7), usegmt=True)))),
             count=None)
    sink = LogstashSink({"lava": [front.url]}, Transport(), RetryPolicy(attempts=2, base=0.01, cap=0.01), 5,
                        sleep=sleeps.append, settings={"lava": "ES_LAVA"})
    with pytest.raises(SinkUnavailable):
        sink.send(batch())
    assert sleeps == [7]

def test_posts_from_several_threads_at_once_all_arrive(front):
    seen = []
    front.on("POST", "/", recording(seen), count=None)
    sink = sink_for(front.url, Transport(pool_size=4))
    errors = []

    def poster(number):
        try:
            for index in range(10):
                sink.send(batch(b'{"thread":%d,"index":%d}' % (number, index)))
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=poster, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(request.body for request in seen) == sorted(
        b'[{"thread":%d,"index":%d}]' % (number, index) for number in range(4) for index in range(10))
    assert front.connections <= 4


def test_a_redirect_is_answered_to_the_caller_and_never_followed(front):
    front.on("POST", "/", redirect(307, front.url + "/moved"))
    front.on("POST", "/moved", answer(200, body=b"ok"))
    response = Transport().post(front.url, BODY, "application/json", (5, 5))
    assert response.status_code == 307 and response.headers["Location"] == front.url + "/moved"
    assert [path for _, path, _ in front.requests] == ["/"]


# Errors, in the sink's words -----------------------------------------------------------------------

def test_no_answer_within_the_timeout_is_a_timeout(front):
    front.on("POST", "/", silent_for(5))
    started = time.monotonic()
    with pytest.raises(SinkUnavailable, match=r"timed out after 0\.5s at %s\)" % front.url):
        sink_for(front.url, Transport(), timeout=0.5).send(batch())
    assert time.monotonic() - started < 3


def test_no_connection_within_the_connect_timeout_is_named_so_not_as_es_timeout(monkeypatch):
    # An input too busy to take connections: its accept queue is full and the SYN goes unanswered.
    # That wait is bounded by the connect timeout (10 s at most, whatever ES_TIMEOUT is), and the
    # message said "timed out after <ES_TIMEOUT>", which raising ES_TIMEOUT would not change.
    with taking_no_connection() as url:
        monkeypatch.setattr(logstash_sink, "CONNECT_TIMEOUT", 0.5)
        sink = LogstashSink({"lava": [url]}, Transport(), RetryPolicy(attempts=1), 60.0, sleep=lambda _: None)
        started = time.monotonic()
        with pytest.raises(SinkUnavailable, match=r"no connection to %s within 0\.5s\)" % url):
            sink.send(batch())
        assert time.monotonic() - started < 5


def test_an_es_timeout_shorter_than_the_connect_timeout_bounds_the_wait_for_a_connection():
    # "10 s at most": ES_TIMEOUT when shorter, for each attempt, and the message says that wait.
    with taking_no_connection() as url:
        sink = LogstashSink({"lava": [url]}, Transport(), RetryPolicy(attempts=1), 0.5, sleep=lambda _: None)
        started = time.monotonic()
        with pytest.raises(SinkUnavailable, match=r"no connection to %s within 0\.5s\)" % url):
            sink.send(batch())
        assert time.monotonic() - started < 5


def test_a_refused_connection_is_named_so():
    with RogueFront() as gone:
        url = gone.url
    with pytest.raises(SinkUnavailable, match=r"cannot connect to %s \(connection refused\)" % url):
        sink_for(url, Transport()).send(batch())


def test_an_https_url_of_a_plain_http_input_is_named_so():
    # The input answers the TLS hello as the bad HTTP request it is: OpenSSL reads no TLS in that.
    from tests.fakes.logstash_emulator import LogstashEmulator

    with LogstashEmulator() as plain:
        url = plain.url.replace("http://", "https://")
        with pytest.raises(SinkUnavailable,
                           match=r"cannot connect to %s \(no TLS at that port: is it an http:// server\?\)" % url):
            sink_for(url, Transport()).send(batch())


def test_a_connection_closed_without_an_answer_is_named_so(front):
    front.on("POST", "/", silent_for(0))
    with pytest.raises(SinkUnavailable, match=r"cannot connect to %s \(connection closed without an answer\)"
                       % front.url):
        sink_for(front.url, Transport()).send(batch())


# Sending the batch: a slow link, an input that stops reading ------------------------------------

# Larger than what the loopback's socket buffers hold, so that sending it waits on the reader.
LARGE_BODY = b"[" + b" " * (40 << 20) + b"]"


class ReadingInput:
    """A raw loopback input that reads a request's body `rate` bytes a second (the speed of the
    link), stops after `stop_after` bytes if given (an input stuck before its queue), then
    answers `ok`: the pace no HTTP server library lets a test set."""

    def __init__(self, rate: float, stop_after: int = -1):
        self.rate, self.stop_after = rate, stop_after
        self.stopping = threading.Event()
        self.read_whole: list = []  # one True for each body read to its end

    def __enter__(self):
        self._server = serve_connections(self._serve, "reading-input")
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, sock) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                     .split(b":")[1])
        got, started = 0, time.monotonic()
        while got < length:
            if got >= self.stop_after >= 0:
                self.stopping.wait(60)
                return
            chunk = sock.recv(min(1 << 16, length - got))
            if not chunk:
                return
            got += len(chunk)
            ahead = got / self.rate - (time.monotonic() - started)
            if ahead > 0 and self.stopping.wait(ahead):
                return
        self.read_whole.append(True)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")


def large_batch() -> Batch:
    return Batch.of_items("lava", [LARGE_BODY[1:-1]], [("lava", "x")])


def test_a_batch_that_takes_longer_to_send_than_the_connect_timeout_is_delivered_while_it_moves():
    # A slow link to Logstash: 40 MB at 10 MB/s take 4 s, while ES_TIMEOUT (1 s here) bounds
    # each wait for the input to take more, and ES_POST_DEADLINE the whole exchange.
    with ReadingInput(rate=10 << 20) as slow:
        sink = LogstashSink({"lava": [slow.url]}, Transport(), RetryPolicy(attempts=1), 1.0,
                            reader=BodyReader(deadline=60, max_bytes=1000))
        sink.send(large_batch())
        assert slow.read_whole == [True]


@pytest.mark.parametrize("timeout, deadline, failure", [
    # The input stopped reading: each wait is cut after ES_TIMEOUT, a timeout, not a failure to connect.
    (1.0, 60, r"timed out after 1s at "),
    # ... and the whole exchange at ES_POST_DEADLINE, however long ES_TIMEOUT is.
    (60.0, 1.0, r"answer from .* not complete within 1s"),
])
def test_an_input_that_stops_reading_the_batch_is_cut(timeout, deadline, failure):
    with ReadingInput(rate=1 << 30, stop_after=1 << 20) as stuck:
        sink = LogstashSink({"lava": [stuck.url]}, Transport(pool_size=2), RetryPolicy(attempts=1), timeout,
                            reader=BodyReader(deadline=deadline, max_bytes=1000))
        started = time.monotonic()
        with pytest.raises(SinkUnavailable, match=failure):
            sink.send(large_batch())
        assert time.monotonic() - started < 4


def answer_ok_then_hang_up(sock) -> None:
    """Read the request's head, answer `200 ok` at once and close on the body: what a stub, or
    a proxy that answers for its backend, may do. The input behind it queued nothing."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")


def test_a_success_answered_before_the_input_took_the_whole_batch_acknowledges_nothing():
    # urllib3 reads the answer of a server that closed the connection on the body it was sending:
    # that "ok" came before most of the batch went out, and acknowledges none of it.
    server = serve_connections(answer_ok_then_hang_up, "answering-first")
    try:
        url = "http://127.0.0.1:%d" % server.server_address[1]
        sink = LogstashSink({"lava": [url]}, Transport(), RetryPolicy(attempts=1), 5.0,
                            reader=BodyReader(deadline=60, max_bytes=1000))
        with pytest.raises(SinkUnavailable, match=r"answered 200 before it had taken the whole batch"):
            sink.send(large_batch())
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(importlib.util.find_spec("socks") is not None, reason="PySocks is installed: SOCKS is usable")
@pytest.mark.parametrize("password", ["secret", "sec@ret-part"], ids=["plain", "holding an @"])
def test_a_socks_proxy_without_pysocks_is_a_configuration_error_naming_the_proxy(front, monkeypatch, password):
    # A password holding an "@" (the proxy URL's credentials end at its last one) showed its
    # part after the first: `socks5://***@ret-part@127.0.0.1:1`.
    monkeypatch.setenv("HTTP_PROXY", "socks5://user:%s@127.0.0.1:1" % password)
    with pytest.raises(ConfigError) as refused:
        sink_for(front.url, Transport()).send(batch())
    assert str(refused.value).startswith("the proxy socks5://***@127.0.0.1:1 (ALL_PROXY, HTTPS_PROXY or HTTP_PROXY) "
                                         "is a SOCKS proxy, which needs PySocks")
    assert front.requests.snapshot() == []


@pytest.mark.skipif(importlib.util.find_spec("socks") is not None, reason="PySocks is installed: SOCKS is usable")
def test_a_feed_through_a_socks_proxy_without_pysocks_stops_at_once_with_exit_2(legacy_replica, logstash, tmp_path):
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    for name in PROXY_VARIABLES:
        env.pop(name, None)
        env.pop(name.lower(), None)
    env["ALL_PROXY"] = "socks5h://127.0.0.1:1"
    for args in (["feed_es"], ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES)]):
        result = kcing(args, env, tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == (
            "kcing feed_es: the proxy socks5h://127.0.0.1:1 (ALL_PROXY, HTTPS_PROXY or HTTP_PROXY) is a SOCKS proxy, "
            "which needs PySocks: install it (pip install PySocks) where kcing runs, or name this host in NO_PROXY")
        assert "retry" not in result.stderr
    assert not any(emulator.requests for emulator in logstash.emulators.values())
    with sqlite3.connect(str(tmp_path / "kcing.db")) as ledger:
        assert ledger.execute("SELECT count(*) FROM upstream_file WHERE state = ?", (DELIVERED,)).fetchone() == (0,)


# Proxies from the environment ------------------------------------------------------------------------

@pytest.fixture
def proxy():
    with ForwardProxy() as started:
        yield started


def test_a_post_goes_through_the_proxy_the_environment_names(front, proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    seen = []
    front.on("POST", "/", recording(seen), count=None)
    transport = Transport()
    for _ in range(3):
        assert post(transport, front.url) == (200, b"ok")
    assert proxy.seen.snapshot() == [("POST", front.url + "/")] * 3
    assert proxy.connections == 1  # kept alive through the proxy too
    assert [request.body for request in seen] == [BODY] * 3


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.0/8"])
def test_no_proxy_covering_the_input_means_a_direct_post(front, proxy, monkeypatch, no_proxy):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    front.on("POST", "/", answer(200, body=b"ok"), count=None)
    assert post(Transport(), front.url) == (200, b"ok")
    assert proxy.seen.snapshot() == []


def test_all_proxy_applies_when_no_scheme_proxy_is_set(front, proxy, monkeypatch):
    monkeypatch.setenv("ALL_PROXY", proxy.url)
    front.on("POST", "/", answer(200, body=b"ok"))
    assert post(Transport(), front.url) == (200, b"ok")
    assert proxy.seen.snapshot() == [("POST", front.url + "/")]


def test_a_proxy_that_is_down_is_a_connection_failure_to_retry(front, monkeypatch):
    with ForwardProxy() as gone:
        down = gone.url
    monkeypatch.setenv("HTTP_PROXY", down)
    with pytest.raises(SinkUnavailable, match=r"cannot connect to %s \(connection refused\)" % front.url):
        sink_for(front.url, Transport()).send(batch())
    assert front.requests.snapshot() == []


@pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")
@pytest.mark.parametrize("bypassed", [False, True], ids=["proxied", "no_proxy"])
def test_a_feed_posts_through_the_environments_proxy_unless_no_proxy_covers_logstash(
        legacy_replica, logstash, proxy, tmp_path, bypassed):
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    for name in PROXY_VARIABLES:
        env.pop(name, None)
        env.pop(name.lower(), None)
    env["HTTP_PROXY"] = proxy.url
    if bypassed:
        env["NO_PROXY"] = "127.0.0.1"
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    posted_to = {url + "/" for route, url in logstash.urls.items() if logstash.emulators[route].requests}
    assert posted_to  # the run delivered something
    if bypassed:
        assert proxy.seen.snapshot() == []
    else:
        assert {target for method, target in proxy.seen.snapshot() if method == "POST"} == posted_to


# TLS ---------------------------------------------------------------------------------------------------

@pytest.fixture
def tls_front(front, certificate):
    front.on("POST", "/", answer(200, body=b"ok"), count=None)
    with TlsFront(int(front.url.rsplit(":", 1)[1]), *certificate) as started:
        yield started


def test_the_ca_bundle_makes_a_self_signed_input_trusted(tls_front, certificate):
    transport = Transport(ca_bundle=str(certificate[0]))
    assert post(transport, tls_front.url) == (200, b"ok")
    assert post(transport, tls_front.url) == (200, b"ok")


def test_a_self_signed_input_is_not_trusted_without_the_bundle(tls_front):
    with pytest.raises(CannotConnect) as caught:
        Transport().post(tls_front.url, BODY, "application/json", (5, 5))
    assert caught.value.untrusted_certificate
    with pytest.raises(ConfigError, match="not trusted.*LS_CA_BUNDLE"):
        sink_for(tls_front.url, Transport()).send(batch())


def test_without_a_bundle_the_system_store_decides_and_it_is_read_only_for_https(tls_front, certificate,
                                                                                   monkeypatch):
    # OpenSSL's default paths are the system store; SSL_CERT_FILE points them at another file.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    transport = Transport()
    assert post(transport, tls_front.url) == (200, b"ok")
    # Read when the first https input was used, not when the transport was made: a run posting
    # to http:// inputs does not pay for reading it.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]) + ".missing")
    late = Transport()
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    assert post(late, tls_front.url) == (200, b"ok")


def test_a_directory_of_hashed_certificates_works_as_a_ca_bundle(tls_front, certificate, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl program to hash the certificate's name")
    directory = tmp_path / "certs"
    directory.mkdir()
    subject_hash = subprocess.run([openssl, "x509", "-hash", "-noout", "-in", str(certificate[0])], check=True,
                                  capture_output=True, text=True, timeout=60).stdout.strip()
    shutil.copy(certificate[0], directory / ("%s.0" % subject_hash))
    assert post(Transport(ca_bundle=str(directory)), tls_front.url) == (200, b"ok")


def test_the_host_name_is_checked_against_the_certificate(tls_front, certificate):
    # The certificate names 127.0.0.1; "localhost" reaches the same server but is not its name.
    url = tls_front.url.replace("127.0.0.1", "localhost")
    with pytest.raises(ConfigError, match="not trusted"):
        sink_for(url, Transport(ca_bundle=str(certificate[0]))).send(batch())


def test_a_certificate_for_another_host_name_is_named_so_not_blamed_on_the_ca_bundle(tls_front, certificate):
    # The bundle is the right one: pointing LS_CA_BUNDLE elsewhere would not help, the URL's host would.
    url = tls_front.url.replace("127.0.0.1", "localhost")
    with pytest.raises(ConfigError) as refused:
        sink_for(url, Transport(ca_bundle=str(certificate[0]))).send(batch())
    message = str(refused.value)
    assert "not valid for localhost" in message and "ES_LAVA" in message, message
    assert "LS_CA_BUNDLE" not in message, message
    assert "\n" not in message


def test_an_input_that_requires_a_client_certificate_is_a_configuration_error_not_retried(front, certificate):
    # An http input with ssl_client_authentication => required (elk.md §1.8) ends the TLS 1.3
    # handshake with a certificate_required alert: kcing sends no client certificate, so no
    # retry can get through, and the input is there, not unreachable.
    front.on("POST", "/", answer(200, body=b"ok"), count=None)
    with TlsFront(int(front.url.rsplit(":", 1)[1]), *certificate, client_ca=certificate[0]) as demanding:
        url, waits = demanding.url, []
        sink = LogstashSink({"lava": [url]}, Transport(ca_bundle=str(certificate[0])),
                            RetryPolicy(attempts=3), 5, sleep=waits.append, settings={"lava": "ES_LAVA"})
        with pytest.raises(ConfigError) as refused:
            sink.send(batch())
    message = str(refused.value)
    assert url in message and "client certificate" in message and "ssl_client_authentication" in message
    assert waits == [] and front.requests.snapshot() == []


def test_https_through_a_proxy_tunnels_and_verifies_the_input(tls_front, certificate, proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert post(Transport(ca_bundle=str(certificate[0])), tls_front.url) == (200, b"ok")
    assert proxy.seen.snapshot() == [("CONNECT", "127.0.0.1:%d" % tls_front.port)]


def test_a_file_that_holds_no_certificate_is_refused_when_the_transport_is_made(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(BadCaBundle, match=str(bundle)):
        Transport(ca_bundle=str(bundle))


def test_an_ls_ca_bundle_without_a_certificate_is_a_one_line_configuration_error(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    unused = "http://127.0.0.1:9"  # the run stops before it connects anywhere
    env = clean_environ(KCI_HOST="127.0.0.1:9", KCI_SCHEME="http", KCI_STORAGE_URL=unused, ES_BUILD=unused,
                        ES_LAVA=unused, ES_BOOT=unused, ES_REGRESSION=unused, KCING_DB=str(tmp_path / "kcing.db"),
                        LS_CA_BUNDLE=str(bundle))
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("kcing ")]
    assert "LS_CA_BUNDLE" in line and str(bundle) in line



def test_a_batch_held_by_a_full_logstash_queue_is_sent_again_and_stored_once():
    # An http input older than 3.10.0 answers nothing while its queue is full: the post times
    # out, and the batch sent again once there is room overwrites what the first one queued.
    from tests.fakes.logstash_emulator import LogstashEmulator

    document = b'{"@metadata":{"index":"log-2024.10.15","id":"%s"},"message":"x"}' % (b"a" * 40)
    with LogstashEmulator(reject_when_blocked_after=None) as full:
        full.block_pipeline()
        sink = LogstashSink({"lava": [full.url]}, Transport(), RetryPolicy(attempts=3), 0.3,
                            sleep=lambda _: full.unblock_pipeline(), settings={"lava": "ES_LAVA"})
        sink.send(Batch.of_items("lava", [document], [("lava", "x")]))
        assert full.wait_idle()
        assert list(full.store) == [("log-2024.10.15", "a" * 40)]
        assert [status for _, _, status in full.trace] == [200, 200]
