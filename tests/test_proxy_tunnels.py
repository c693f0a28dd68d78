"""Through an HTTP proxy (HTTPS_PROXY), an https:// Logstash input or upstream host is reached by
a CONNECT tunnel, made before the request is sent: a proxy whose answer to CONNECT never ends is
cut at the exchange's deadline like a server that never answers, and one refusing the tunnel is
named with its status, not taken for the server failing to connect. Loopback servers only."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from kcing.http import BodyReader, RetryPolicy, new_session
from kcing.sinks.batching import Batch
from kcing.sinks.logstash import LogstashSink
from kcing.transport import Transport
from tests.fakes.forward_proxy import ForwardProxy
from tests.fakes.kibana_server import KibanaEmulator
from tests.fakes.logstash_emulator import LogstashEmulator
from tests.fakes.rogue_http import RogueFront, answer
from tests.feedrun import PROXY_VARIABLES, SAMPLES, kcing, proxy_free_environ


@pytest.fixture(autouse=True)
def no_proxy_from_the_shell(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


class LoopbackProxy:
    """An HTTP proxy on 127.0.0.1 that reads each request's head, counts the CONNECTs and answers
    as `answer(sock)` says, on a thread of its own per connection."""

    def __init__(self):
        self.connects = 0
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self._listener.getsockname()[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        with sock:
            sock.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    return
                head += data
            self.connects += head.startswith(b"CONNECT ")
            self.answer(sock)

    def answer(self, sock) -> None:
        raise NotImplementedError


class EndlessTunnelProxy(LoopbackProxy):
    """Answers `CONNECT` with `200 Connection established`, then one header line every 0.2 s,
    never the empty line that ends its head (each line well within any read timeout)."""

    def answer(self, sock) -> None:
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n")
        line = 0
        while not self.stopping.wait(0.2):
            try:
                sock.sendall(b"X-Still-Connecting-%d: yes\r\n" % line)
            except OSError:
                return
            line += 1


class RefusingProxy(LoopbackProxy):
    """Answers every CONNECT `407 Proxy Authentication Required`."""

    def answer(self, sock) -> None:
        sock.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\n"
                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")


def finished_within(seconds: float, call):
    """Run `call` in a thread; return (whether it ended within `seconds`, its outcome)."""
    outcome = []

    def run():
        try:
            outcome.append(("returned", call()))
        except BaseException as error:  # the outcome is what is judged
            outcome.append(("raised", error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), outcome


def test_a_post_to_an_https_input_through_a_proxy_whose_connect_answer_never_ends_is_cut_at_its_deadline(
        monkeypatch):
    """README: a batch must be taken and answered within ES_POST_DEADLINE (here 2 s), and a
    connection to an input be made within 10 s (ES_TIMEOUT, 1 s here, when shorter). Through
    HTTPS_PROXY, an https input is reached by a CONNECT tunnel; a proxy whose answer to the
    CONNECT never ends holds the POST for good: the tunnel's head is read before the exchange
    watches the socket, and each line comes within the read timeout."""
    with EndlessTunnelProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        sink = LogstashSink({"lava": ["https://127.0.0.1:9/"]}, Transport(), RetryPolicy(attempts=1), 1.0,
                            sleep=lambda _: None, reader=BodyReader(deadline=2, max_bytes=1000),
                            settings={"lava": "ES_LAVA"})
        ended, outcome = finished_within(10, lambda: sink.send(Batch.of_items("lava", [b'{"a":1}'], [("lava", "x")])))
        assert proxy.connects == 1
        assert ended, "the POST still waits for the proxy 10 s later (ES_POST_DEADLINE 2 s, ES_TIMEOUT 1 s)"


def test_a_download_from_https_upstream_through_a_proxy_whose_connect_answer_never_ends_is_cut_at_its_deadline(
        monkeypatch):
    """README (Limits on what comes in): a download arrives whole within KCI_DOWNLOAD_DEADLINE,
    counted from the moment the request is sent, 'Only a SOCKS proxy's connections are outside
    this'. Through an HTTP proxy's CONNECT tunnel, the download waits for good."""
    from kcing.sources.requester import Requester

    with EndlessTunnelProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        requester = Requester(new_session(netrc=False), RetryPolicy(attempts=1), 1.0, sleep=lambda _: None,
                              reader=BodyReader(deadline=2, max_bytes=1000))
        ended, outcome = finished_within(10, lambda: requester.get("https://127.0.0.1:9/build.json"))
        assert proxy.connects == 1
        assert ended, "the download still waits for the proxy 10 s later (KCI_DOWNLOAD_DEADLINE 2 s, KCI_TIMEOUT 1 s)"
    ((how, error),) = outcome
    assert how == "raised" and str(error) == ("GET https://127.0.0.1:9/build.json: not complete within 2s "
                                              "(KCI_DOWNLOAD_DEADLINE); the next run tries again"), error


def test_a_proxy_refusing_the_tunnel_to_logstash_is_named_with_its_cause_not_a_bare_connection_failure(monkeypatch):
    """The proxy HTTPS_PROXY names answers the CONNECT with 407: no retry mends that, and the one
    line must say what did (the proxy, 407), where it says `cannot connect to <input>
    (connection failed)`, sending the operator to look at Logstash, after retrying it."""
    from kcing.errors import ConfigError, SinkUnavailable

    with RefusingProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        sink = LogstashSink({"lava": ["https://127.0.0.1:9/"]}, Transport(), RetryPolicy(attempts=2, base=0.01),
                            1.0, sleep=lambda _: None, settings={"lava": "ES_LAVA"})
        with pytest.raises((ConfigError, SinkUnavailable)) as failed:
            sink.send(Batch.of_items("lava", [b'{"a":1}'], [("lava", "x")]))
    assert str(failed.value).endswith("(last: cannot connect to https://127.0.0.1:9/ (the proxy (HTTPS_PROXY, "
                                      "ALL_PROXY) refused the tunnel: 407 Proxy Authentication Required))"), failed.value


# -- a proxy in cron's environment, failing the requests to a service on this host --------------

def last_line(done) -> str:
    return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


SQUID_PAGE = (b"<!DOCTYPE html><html><head><title>ERROR: The requested URL could not be retrieved</title></head>"
              b"<body><p>Access Denied.</p></body></html>")
SQUID_HEADERS = (("Content-Type", "text/html;charset=utf-8"), ("X-Squid-Error", "ERR_ACCESS_DENIED 0"),
                 ("Via", "1.1 proxy (squid/5.7)"))


def refusing_proxy() -> RogueFront:
    """A forward proxy that refuses every request (squid's default `http_access deny to_localhost`
    for a Logstash or Kibana on 127.0.0.1), answering 403 with its error page."""
    proxy = RogueFront()
    for method in ("GET", "POST"):
        proxy.on(method, "http://", answer(403, SQUID_HEADERS, SQUID_PAGE))
    return proxy


def dead_proxy_url() -> str:
    with ForwardProxy() as gone:
        return gone.url


def feed_environ_to(logstash_url: str, db: Path, **extra) -> dict:
    settings = dict(KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(SAMPLES), ES_BUILD=logstash_url, ES_LAVA=logstash_url,
                    ES_BOOT=logstash_url, ES_REGRESSION=logstash_url, KCING_DB=str(db), ES_RETRY_BACKOFF="0.05",
                    ES_TIMEOUT="5")
    settings.update(extra)
    return proxy_free_environ(**settings)


@pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")
@pytest.mark.parametrize("proxy_kind", ["refusing", "down"])
def test_a_proxy_in_crons_environment_that_fails_the_posts_is_named_not_blamed_on_logstash(proxy_kind, tmp_path):
    """HTTP_PROXY exported for the whole host (/etc/environment), without NO_PROXY: kcing sends
    its posts to Logstash on 127.0.0.1 through it, as requests would, and the README says so.
    When that proxy refuses them (403, squid's error page) the run ends with exit 2 saying
    "Logstash at http://127.0.0.1:... refused the request (403) without credentials (none are
    set): set LS_USER and LS_PASSWORD if what answers there asks for them"; when the proxy is
    down, "Logstash unreachable: ... cannot connect to http://127.0.0.1:... (connection
    refused)", exit 3. Logstash is up and never asked; neither line names the proxy, HTTP_PROXY or
    NO_PROXY, and the first sends the user to set credentials Logstash never wanted."""
    with LogstashEmulator() as logstash:
        if proxy_kind == "refusing":
            with refusing_proxy() as proxy:
                done = kcing(["feed_es", "-q"], feed_environ_to(logstash.url, tmp_path / "kcing.db",
                                                                 HTTP_PROXY=proxy.url), tmp_path)
                proxy_url = proxy.url
        else:
            proxy_url = dead_proxy_url()
            done = kcing(["feed_es", "-q"], feed_environ_to(logstash.url, tmp_path / "kcing.db", HTTP_PROXY=proxy_url),
                         tmp_path)
        assert logstash.requests.snapshot() == []  # nothing reached Logstash: the proxy failed them
    line = last_line(done)
    assert done.returncode in (2, 3), done.stderr
    assert "the request went through the proxy %s" % proxy_url in line and "add 127.0.0.1 to NO_PROXY" in line, line


@pytest.mark.parametrize("proxy_kind", ["refusing", "down"])
def test_a_proxy_in_crons_environment_that_fails_kibanas_requests_is_named_not_blamed_on_kibana(proxy_kind,
                                                                                                tmp_path):
    """The same HTTP_PROXY before a Kibana on 127.0.0.1 (the README: Kibana goes through the
    proxies too). A proxy refusing with 403 gives "Kibana at http://127.0.0.1:... does not let a
    request without credentials report its status (HTTP 403): an HTML page "ERROR: The requested
    URL could not be retrieved"; set KB_USER and KB_PASSWORD, or KB_API_KEY" (exit 2); a proxy
    that is down, "cannot reach Kibana at http://127.0.0.1:... (connection refused); gave up
    after waiting 3s" (exit 3). Neither names the proxy."""
    with KibanaEmulator() as kibana:
        if proxy_kind == "refusing":
            with refusing_proxy() as proxy:
                done = kcing(["setup_kbn", "--wait", "3"], proxy_free_environ(KB_URL=kibana.url, HTTP_PROXY=proxy.url),
                             tmp_path)
                proxy_url = proxy.url
        else:
            proxy_url = dead_proxy_url()
            done = kcing(["setup_kbn", "--wait", "3"], proxy_free_environ(KB_URL=kibana.url, HTTP_PROXY=proxy_url),
                         tmp_path)
        assert kibana.requests.snapshot() == []
    line = last_line(done)
    assert done.returncode in (2, 3), done.stderr
    assert "the request went through the proxy %s" % proxy_url in line and "add 127.0.0.1 to NO_PROXY" in line, line
