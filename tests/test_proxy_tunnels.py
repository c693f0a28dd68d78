"""Through an HTTP proxy (HTTPS_PROXY), an https:// Logstash input or upstream host is reached by
a CONNECT tunnel, made before the request is sent: a proxy whose answer to CONNECT never ends is
cut at the exchange's deadline like a server that never answers, and one refusing the tunnel is
named with its status, not taken for the server failing to connect. Loopback servers only."""
from __future__ import annotations

import socket
import threading

import pytest

from kcing.http import BodyReader, RetryPolicy, new_session
from kcing.sinks.batching import Batch
from kcing.sinks.logstash import LogstashSink
from kcing.transport import Transport

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_the_shell(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


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
