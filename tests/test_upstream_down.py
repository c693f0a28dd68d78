"""An upstream host that stops answering costs a run a few requests, not hours: after
KCI_GIVE_UP_AFTER requests in a row to it went unanswered (after all their attempts), the run
asks it nothing more. What was left to fetch from it fails at once, is recorded as failed, and
the next run takes it; an answer from the host in between starts the count again.

The real `kcing feed_es` runs against the legacy replica, whose storage sits behind a loopback
front that hangs up on every request while the host is "down".
"""
from __future__ import annotations

import threading
import time

import pytest

from kcing.errors import ObjectTooSlow, UpstreamError
from kcing.http import BodyReader, RetryPolicy, new_session
from kcing.sources import requester as requester_module
from kcing.sources.requester import Requester
from kcing.urls import origin_of
from tests.fakes.rogue_http import RogueFront, answer, cut_short, redirect, trickle
from tests.fakes.serving import serve_connections, taking_no_connection, wait_until
from tests.feedrun import SAMPLES, feed_environ, kcing, ledger_rows, ledger_states, sample_objects

pytestmark = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


def hang_up(front, sock, request) -> bool:
    """Read the request, answer nothing, close: what a host whose server is gone does."""
    return False


@pytest.fixture
def storage_front(legacy_replica):
    with RogueFront(legacy_replica.storage_url) as front:
        yield front


def environ(legacy_replica, logstash, storage_front, tmp_path, **extra):
    settings = dict(KCI_STORAGE_URL=storage_front.url, KCI_THREADS="1", KCI_MAX_RETRIES="2",
                    KCI_RETRY_BACKOFF="0.01")
    settings.update(extra)
    return feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", **settings)


def test_a_storage_that_stops_answering_is_given_up_after_the_limit_and_the_next_run_takes_all(
        legacy_replica, logstash, storage_front, tmp_path):
    objects = sample_objects()
    assert len(objects) > 4
    storage_front.on("GET", "/", hang_up)
    env = environ(legacy_replica, logstash, storage_front, tmp_path, KCI_GIVE_UP_AFTER="2")

    down = kcing(["feed_es"], env, tmp_path)

    assert down.returncode == 1, down.stderr
    # Two files, two attempts each; every other file failed without a request.
    assert storage_front.answered_by("hang_up") == 4
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"failed"}
    given_up = [row for row in ledger_rows(tmp_path / "kcing.db") if "KCI_GIVE_UP_AFTER" in row["last_error"]]
    assert len(given_up) == len(objects) - 2
    assert "not sent" in given_up[0]["last_error"] and storage_front.url.rstrip("/") in given_up[0]["last_error"]
    assert down.stderr.count("giving up on") == 1
    assert "Traceback" not in down.stderr

    storage_front.clear()
    back = kcing(["feed_es"], env, tmp_path)

    assert back.returncode == 0, back.stderr
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}
    assert len(ledger_states(tmp_path / "kcing.db")) == len(objects)


def test_with_no_limit_every_file_gets_all_its_attempts(legacy_replica, logstash, storage_front, tmp_path):
    objects = sample_objects()
    storage_front.on("GET", "/", hang_up)
    env = environ(legacy_replica, logstash, storage_front, tmp_path, KCI_GIVE_UP_AFTER="0")

    down = kcing(["feed_es"], env, tmp_path)

    assert down.returncode == 1, down.stderr
    assert storage_front.answered_by("hang_up") == 2 * len(objects)
    assert "giving up" not in down.stderr


def test_files_storage_answers_even_with_an_error_never_count_towards_giving_up(
        legacy_replica, logstash, storage_front, tmp_path):
    """A 404 or a 503 is an answer: the host is there, and each file is judged alone."""
    objects = sample_objects()
    storage_front.on("GET", "/", answer(503, (("Content-Type", "text/html"),), b"<html>busy</html>"))
    env = environ(legacy_replica, logstash, storage_front, tmp_path, KCI_GIVE_UP_AFTER="1")

    busy = kcing(["feed_es"], env, tmp_path)

    assert busy.returncode == 1, busy.stderr
    assert storage_front.answered_by("whole_answer") == 2 * len(objects)
    assert not any("KCI_GIVE_UP_AFTER" in row["last_error"] for row in ledger_rows(tmp_path / "kcing.db"))


@pytest.fixture
def two_hosts():
    """Two loopback hosts: one hangs up on paths under /down/, the other answers everything."""
    with RogueFront() as first, RogueFront() as second:
        for front in (first, second):
            front.on("GET", "/down/", hang_up)
            front.on("GET", "/up/", answer(200, (("Content-Type", "text/plain"),), b"fine"))
        yield first, second


def asked(front) -> set:
    return {path for _, path, _ in front.requests}


def test_an_answer_starts_the_count_again_and_each_host_has_its_own(two_hosts):
    first, second = two_hosts
    requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=3,
                          allowed_origins=frozenset({origin_of(first.url), origin_of(second.url)}))

    def unanswered(front, name):
        with pytest.raises(UpstreamError) as failed:
            requester.get(front.url + "/down/" + name)
        return str(failed.value)

    unanswered(first, "1")
    unanswered(first, "2")
    assert requester.get(first.url + "/up/a").content == b"fine"  # the count starts again
    unanswered(first, "3")
    unanswered(first, "4")
    unanswered(second, "1")  # another host: counted apart
    assert "not sent" not in unanswered(first, "5")  # the third in a row is still asked
    assert asked(first) == {"/down/1", "/down/2", "/up/a", "/down/3", "/down/4", "/down/5"}

    refused = unanswered(first, "6")
    with pytest.raises(UpstreamError, match="not sent.*3 requests in a row"):
        requester.get(first.url + "/up/b")
    assert asked(first) == {"/down/1", "/down/2", "/up/a", "/down/3", "/down/4", "/down/5"}
    assert "KCI_GIVE_UP_AFTER" in refused
    assert requester.get(second.url + "/up/a").content == b"fine"


def not_http(front, sock, request) -> bool:
    """Bytes that are no HTTP answer: what a port serving something else says."""
    sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
    return False


def head_too_long(front, sock, request) -> bool:
    """A head of more header lines than http.client reads."""
    sock.sendall(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Line-%d: a\r\n" % number for number in range(150)) + b"\r\n")
    return False


@pytest.mark.parametrize("unusable", [not_http, head_too_long, cut_short()], ids=["not-http", "head-too-long",
                                                                                  "cut-short"])
def test_an_answer_the_run_cannot_use_is_an_answer_and_starts_the_count_again(unusable):
    """A host that answers, however badly, is there: such a file fails alone, as before, and the
    count of requests in a row left unanswered starts again."""
    with RogueFront() as front:
        front.on("GET", "/down/", hang_up)
        front.on("GET", "/odd/", unusable)
        requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=2,
                              allowed_origins=frozenset({origin_of(front.url)}))
        for number in range(3):
            for path in ("/down/%d" % number, "/odd/%d" % number):
                with pytest.raises(UpstreamError) as failed:
                    requester.get(front.url + path)
                assert "not sent" not in str(failed.value)
        assert len(front.requests) == 6


@pytest.fixture
def plain_http_port():
    """A port that answers plain HTTP at once, to a TLS hello too."""
    def refuse_tls(sock):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    server = serve_connections(refuse_tls, "plain-http")
    yield server
    server.shutdown()
    server.server_close()


def test_a_tls_failure_the_host_answered_never_gives_it_up(plain_http_port):
    """An https:// URL at a port that speaks plain HTTP fails each request as before (the host
    answered, in the wrong protocol); it is never taken for a host that went away."""
    url = "https://127.0.0.1:%d" % plain_http_port.server_address[1]
    requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=1,
                          allowed_origins=frozenset({origin_of(url)}))
    for number in range(3):
        with pytest.raises(UpstreamError, match="no TLS at that port") as failed:
            requester.get("%s/file-%d" % (url, number))
        assert "not sent" not in str(failed.value)


def test_a_redirect_to_a_host_that_stopped_answering_counts_against_that_host(two_hosts):
    """The storage answers each file with a redirect to a host that is down: that host is the
    one left unanswered, and given up on, with no more redirects followed to it; the storage,
    which answered every time, is still asked."""
    storage, gone = two_hosts
    storage.on("GET", "/moved/", lambda front, sock, request: redirect(302, gone.url + "/down" + request.path)(
        front, sock, request))
    requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=2,
                          allowed_origins=frozenset({origin_of(storage.url), origin_of(gone.url)}))
    for name in ("1", "2"):
        with pytest.raises(UpstreamError, match="failed once"):
            requester.get(storage.url + "/moved/" + name)

    with pytest.raises(UpstreamError) as refused:
        requester.get(storage.url + "/moved/3")

    assert "not sent: %s left the last 2 requests in a row unanswered" % gone.url in str(refused.value)
    assert asked(gone) == {"/down/moved/1", "/down/moved/2"}
    assert requester.get(storage.url + "/up/a").content == b"fine"


def test_a_request_waiting_to_retry_when_its_host_is_given_up_asks_it_nothing_more(two_hosts):
    """Another download thread's failure gives the host up while this request waits for its
    next attempt: that attempt is not sent, as no request to the host is from then on."""
    host, _ = two_hosts
    others = []

    def meanwhile(seconds):
        if not others:
            others.append("/down/2")
            with pytest.raises(UpstreamError, match="failed once"):
                requester.get(host.url + "/down/2", attempts=1)

    requester = Requester(new_session(), RetryPolicy(attempts=2, base=0), 5, sleep=meanwhile, give_up_after=1,
                          allowed_origins=frozenset({origin_of(host.url)}))

    with pytest.raises(UpstreamError, match="not sent: .*KCI_GIVE_UP_AFTER"):
        requester.get(host.url + "/down/1")

    assert [path for _, path, _ in host.requests] == ["/down/1", "/down/2"]


def test_a_host_silent_past_the_download_deadline_is_given_up_like_one_that_times_out():
    """With KCI_DOWNLOAD_DEADLINE shorter than KCI_TIMEOUT, a host that accepts connections and
    never answers meets the deadline first: each such file failed after it, and the run never
    gave the host up."""
    def silent(front, sock, request) -> bool:
        front.stopping.wait(30)
        return False

    with RogueFront() as front:
        front.on("GET", "/", silent)
        requester = Requester(new_session(), RetryPolicy(attempts=2, base=0), 10, give_up_after=2,
                              reader=BodyReader(deadline=0.3, max_bytes=1 << 20),
                              allowed_origins=frozenset({origin_of(front.url)}))
        for name in ("1", "2"):
            with pytest.raises(ObjectTooSlow):
                requester.get(front.url + "/silent/" + name)

        with pytest.raises(UpstreamError, match="not sent: .*2 requests in a row unanswered \\(last: no answer "
                                                "within 0.3s\\)"):
            requester.get(front.url + "/silent/3")
        assert len(front.requests) == 2


def one_attempt_requester(url: str, timeout: float) -> Requester:
    """A Requester of one attempt per request, with KCI_TIMEOUT `timeout`, that gives `url`'s
    host up after one request left unanswered (KCI_GIVE_UP_AFTER=1)."""
    return Requester(new_session(), RetryPolicy(attempts=1, base=0), timeout, give_up_after=1,
                     allowed_origins=frozenset({origin_of(url)}))


def fails_once_then_gives_up(url: str, timeout: float, last: str) -> None:
    """A first request to `url` fails after its one attempt, and the next is not sent, each saying
    the wait it met (`last`, a pattern)."""
    requester = one_attempt_requester(url, timeout)
    with pytest.raises(UpstreamError, match=r"failed once \(last: %s\)" % last):
        requester.get(url + "/build.json")
    with pytest.raises(UpstreamError, match=r"not sent: .*\(last: %s\)" % last):
        requester.get(url + "/boot.json")


def test_a_host_that_takes_no_connection_is_said_to_time_out_connecting_not_after_kci_timeout(monkeypatch):
    """A host that drops connections (a firewall's DROP, an accept queue full) costs each attempt
    the connect timeout, 10 s at most, whatever KCI_TIMEOUT is: the message named KCI_TIMEOUT's
    wait ("timed out after 1m"), which no attempt waited."""
    monkeypatch.setattr(requester_module, "CONNECT_TIMEOUT", 0.5)
    with taking_no_connection() as url:
        fails_once_then_gives_up(url, 60, r"no connection within 0\.5s")


def test_a_kci_timeout_shorter_than_the_connect_timeout_bounds_the_wait_for_a_connection():
    # "10 at most": KCI_TIMEOUT when shorter, for each attempt, and the message says that wait.
    with taking_no_connection() as url:
        requester = one_attempt_requester(url, 0.5)
        started = time.monotonic()
        with pytest.raises(UpstreamError, match=r"failed once \(last: no connection within 0\.5s\)"):
            requester.get(url + "/build.json")
        assert time.monotonic() - started < 5


def read_the_request_then_answer_nothing(sock) -> None:
    """Take the connection and the request, then say nothing until the client hangs up: a host
    whose server is stuck."""
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def test_a_host_that_connects_but_never_answers_is_said_to_time_out_after_kci_timeout_not_connecting():
    """The other wait: connected, the request sent, no answer within KCI_TIMEOUT. Said as that
    wait, in the failure and in the KCI_GIVE_UP_AFTER warning, not as a connection never made."""
    server = serve_connections(read_the_request_then_answer_nothing, "never-answering")
    try:
        fails_once_then_gives_up("http://127.0.0.1:%d" % server.server_address[1], 0.5, r"timed out after 0\.5s")
    finally:
        server.shutdown()
        server.server_close()


def test_a_limit_of_one_says_one_request(two_hosts):
    host, _ = two_hosts
    requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=1,
                          allowed_origins=frozenset({origin_of(host.url)}))
    with pytest.raises(UpstreamError, match="failed once"):
        requester.get(host.url + "/down/1")
    with pytest.raises(UpstreamError) as refused:
        requester.get(host.url + "/down/2")
    assert "not sent: %s left its last request unanswered (last: connection closed" % host.url in str(refused.value)


def silent_past(front, sock, request) -> bool:
    """Accept the request and say nothing until the test ends: a host whose server hangs."""
    front.stopping.wait(30)
    return False


@pytest.mark.parametrize("then", [hang_up, silent_past], ids=["then-hung-up-on", "then-silent-past-the-deadline"])
@pytest.mark.parametrize("first", [answer(503, (("Content-Type", "text/plain"),), b"busy"), cut_short()],
                         ids=["answered-503", "answered-cut-short"])
def test_a_request_the_host_answered_once_is_not_left_unanswered_whatever_its_last_attempt_met(first, then):
    """A host that answered one attempt (a 503, a body cut short) was there during that request,
    whatever the next attempt met: the request counts towards no giving up, even with a limit
    of one, and the next is asked."""
    with RogueFront() as front:
        front.on("GET", "/flaky/", first, count=1)
        front.on("GET", "/flaky/", then)
        front.on("GET", "/up/", answer(200, (("Content-Type", "text/plain"),), b"fine"))
        requester = Requester(new_session(), RetryPolicy(attempts=2, base=0), 5, give_up_after=1,
                              reader=BodyReader(deadline=0.5, max_bytes=1 << 20),
                              allowed_origins=frozenset({origin_of(front.url)}))
        with pytest.raises(UpstreamError) as failed:
            requester.get(front.url + "/flaky/1")
        assert "not sent" not in str(failed.value)
        assert requester.get(front.url + "/up/a").content == b"fine"


def test_a_host_whose_answers_trickle_past_the_download_deadline_is_never_given_up():
    """Its head came each time: a file too slow to download fails alone, and the host, which
    answers, is asked for the next."""
    with RogueFront() as front:
        front.on("GET", "/slow/", trickle(length=10_000, every=0.1))
        requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 10, give_up_after=1,
                              reader=BodyReader(deadline=0.3, max_bytes=1 << 20),
                              allowed_origins=frozenset({origin_of(front.url)}))
        for name in ("1", "2", "3"):
            with pytest.raises(ObjectTooSlow):
                requester.get(front.url + "/slow/" + name)
        assert len(front.requests) == 3


@pytest.fixture
def tls_hang_up_port():
    """A port that takes the connection and closes it during the TLS handshake: a load balancer
    whose servers behind are gone."""
    def hang_up_in_handshake(sock):
        sock.recv(4096)
    server = serve_connections(hang_up_in_handshake, "tls-hang-up")
    yield server
    server.shutdown()
    server.server_close()


def test_a_host_hanging_up_during_the_tls_handshake_is_given_up(tls_hang_up_port):
    """A connection closed before any TLS came back heard nothing, as a refused one does: unlike a
    TLS alert, which the server sends."""
    url = "https://127.0.0.1:%d" % tls_hang_up_port.server_address[1]
    requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=2,
                          allowed_origins=frozenset({origin_of(url)}))
    for number in range(2):
        with pytest.raises(UpstreamError) as failed:
            requester.get("%s/file-%d" % (url, number))
        assert "not sent" not in str(failed.value)
    with pytest.raises(UpstreamError, match="not sent: .*left the last 2 requests in a row unanswered"):
        requester.get(url + "/file-2")


def test_a_request_left_unanswered_after_its_host_was_given_up_warns_no_more(caplog):
    """Another download thread's request, sent before the run gave the host up and left
    unanswered after, neither warns a second time nor changes what the run says of the host."""
    release = threading.Event()

    def late_hang_up(front, sock, request) -> bool:
        release.wait(10)
        return False

    with RogueFront() as front:
        front.on("GET", "/late/", late_hang_up)
        front.on("GET", "/down/", hang_up)
        requester = Requester(new_session(), RetryPolicy(attempts=1, base=0), 5, give_up_after=1,
                              allowed_origins=frozenset({origin_of(front.url)}))
        late_failure = []

        def late():
            try:
                requester.get(front.url + "/late/1")
            except UpstreamError as error:
                late_failure.append(str(error))

        in_flight = threading.Thread(target=late)
        in_flight.start()
        assert wait_until(lambda: front.requests, timeout=10)  # sent before the host is given up
        with caplog.at_level("WARNING", logger="kcing"):
            with pytest.raises(UpstreamError, match="failed once"):
                requester.get(front.url + "/down/1")
            release.set()
            in_flight.join(10)
            assert late_failure and "not sent" not in late_failure[0]
            with pytest.raises(UpstreamError) as refused:
                requester.get(front.url + "/down/2")
    assert "left its last request unanswered" in str(refused.value)
    assert sum("giving up on" in record.getMessage() for record in caplog.records) == 1
