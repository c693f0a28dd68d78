"""A loopback HTTP front that passes requests on to a real emulator, except those it is told to
answer badly: a redirect, a 413, an answer that trickles a byte at a time, one cut shorter than
its Content-Length, one that streams forever.

Written on a raw socket, byte by byte where it matters, because these are the answers a
well-behaved HTTP server library will not produce. Listens on 127.0.0.1 only.
"""
from __future__ import annotations

import http.client
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from tests.fakes.serving import LOOPBACK, LockedList, StartedByWith, serve_connections

# Headers of the emulator's answer that describe its own framing; the front frames its own.
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Request:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes


@dataclass
class Rule:
    method: str
    contains: str
    behaviour: Callable[["RogueFront", socket.socket, Request], bool]
    remaining: Optional[int]  # None: every matching request


class RogueFront(StartedByWith):
    """Forward to `upstream` (an http:// base URL), or answer matching requests with a behaviour.

    A behaviour writes the whole answer on the socket and returns True when the connection may be
    kept for the next request."""

    def __init__(self, upstream: Optional[str] = None):
        self.upstream = urlsplit(upstream) if upstream else None
        self.rules: List[Rule] = []
        self.requests: LockedList = LockedList()  # (method, path, answered by: rule name or "forward")
        self.connections = 0  # accepted so far
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: Optional[socketserver.ThreadingTCPServer] = None

    # Setup --------------------------------------------------------------------------------

    def on(self, method: str, contains: str, behaviour, count: Optional[int] = None) -> "RogueFront":
        """Answer requests of `method` whose path contains `contains` with `behaviour` (`count` times)."""
        with self._lock:
            self.rules.append(Rule(method, contains, behaviour, count))
        return self

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def start(self) -> str:
        self._server = serve_connections(self._serve_connection, "rogue-front")
        return self.url

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


    @property
    def url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self._server.server_address[1])

    def answered_by(self, name: str) -> int:
        return sum(1 for _, _, by in self.requests if by == name)

    # Serving ------------------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        sock.settimeout(30)
        reader = sock.makefile("rb")
        try:
            while not self.stopping.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                rule = self._rule_for(request)
                name = getattr(rule.behaviour, "__name__", "rule") if rule else "forward"
                self.requests.append((request.method, request.path, name))
                keep = rule.behaviour(self, sock, request) if rule else self._forward(sock, request)
                if not keep:
                    return
        except OSError:  # the client went away, or cut the connection on purpose
            return
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _rule_for(self, request: Request) -> Optional[Rule]:
        with self._lock:
            for rule in self.rules:
                if rule.method == request.method and rule.contains in request.path and rule.remaining != 0:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def _forward(self, sock: socket.socket, request: Request) -> bool:
        if self.upstream is None:
            return answer(404, body=b"nothing behind this front")(self, sock, request)
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
            connection.request(request.method, request.path, body=request.body or None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            kept = [(name, value) for name, value in response.getheaders() if name.lower() not in HOP_BY_HOP]
        finally:
            connection.close()
        _send_head(sock, response.status, kept + [("Content-Length", str(len(body)))])
        sock.sendall(body)
        return True


def _read_request(reader) -> Optional[Request]:
    line = reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: Dict[str, str] = {}
    while True:
        header = reader.readline().decode("latin-1")
        if header in ("\r\n", "\n", ""):
            break
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    length = int(next((value for name, value in headers.items() if name.lower() == "content-length"), "0"))
    return Request(method, path, headers, reader.read(length) if length else b"")


def _send_head(sock: socket.socket, status: int, headers: List[Tuple[str, str]]) -> None:
    reason = http.client.responses.get(status, "Status")
    lines = ["HTTP/1.1 %d %s" % (status, reason)] + ["%s: %s" % item for item in headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


# Behaviours ----------------------------------------------------------------------------------

def answer(status: int, headers: Tuple[Tuple[str, str], ...] = (), body: bytes = b""):
    """A whole, well-formed answer."""
    def whole_answer(front, sock, request) -> bool:
        _send_head(sock, status, list(headers) + [("Content-Length", str(len(body)))])
        sock.sendall(body)
        return True
    return whole_answer


def redirect(status: int, location: str):
    """3xx with a Location, as an http->https upgrade or a moved input would answer."""
    def redirected(front, sock, request) -> bool:
        return answer(status, (("Location", location),), b"moved")(front, sock, request)
    return redirected


def trickle(length: int = 10_000, every: float = 0.5, status: int = 200, first: bytes = b""):
    """Status line and headers at once, then the body a byte every `every` seconds."""
    def trickled(front, sock, request) -> bool:
        _send_head(sock, status, [("Content-Type", "application/json"), ("Content-Length", str(length))])
        if first:
            sock.sendall(first)
        for _ in range(length - len(first)):
            if front.stopping.wait(every):
                return False
            sock.sendall(b" ")
        return True
    return trickled


def trickle_head(every: float = 0.5, status_line: bool = False):
    """An answer that never gets past its head: a header line after another, a byte every
    `every` seconds, each line and their number within http.client's limits. With
    `status_line`, the status line trickles too; else it comes at once."""
    def head_trickled(front, sock, request) -> bool:
        status = b"HTTP/1.1 200 OK\r\n"
        head = status + b"".join(b"X-Wait-%d: %s\r\n" % (number, b"w" * 600) for number in range(99))
        if not status_line:
            sock.sendall(status)
            head = head[len(status):]
        for byte in head:
            if front.stopping.wait(every):
                return False
            sock.sendall(bytes([byte]))
        return False
    return head_trickled


def cut_short(declared: int = 100, sent: bytes = b"ok"):
    """Announce `declared` bytes, send fewer, close: what a crashed or restarted server leaves."""
    def cut(front, sock, request) -> bool:
        _send_head(sock, 200, [("Content-Type", "text/plain"), ("Content-Length", str(declared))])
        sock.sendall(sent)
        return False
    return cut


def endless(chunk: int = 64 * 1024, declared: Optional[int] = None, status: int = 200, location: str = ""):
    """A body that never ends (read until close, or chunked), fast: memory is what it attacks.
    With `declared`, a Content-Length that size is announced (and not kept to); with `location`,
    it is the body of a redirect there (`status` 3xx)."""
    def streamed(front, sock, request) -> bool:
        headers = [("Content-Type", "application/json")]
        headers.append(("Content-Length", str(declared)) if declared else ("Connection", "close"))
        if location:
            headers.append(("Location", location))
        _send_head(sock, status, headers)
        block = b"[" + b" " * (chunk - 1)
        started = time.monotonic()
        while not front.stopping.is_set() and time.monotonic() - started < 120:
            sock.sendall(block)
        return False
    return streamed


def interim_then_forward(status: int = 103, headers: Tuple[Tuple[str, str], ...] = (
        ("Link", "</static/style.css>; rel=preload; as=style"),)):
    """An interim answer (103 Early Hints, as a CDN sends; 102 Processing), then the emulator's
    final answer: a client must pass over the first (RFC 9110 §15.2)."""
    def interim_first(front, sock, request) -> bool:
        _send_head(sock, status, list(headers))
        return front._forward(sock, request)
    return interim_first


def silent_then_forward(seconds: float):
    """Nothing for `seconds` (a busy node working on the request), then the emulator's answer,
    whole and at once."""
    def answered_late(front, sock, request) -> bool:
        if front.stopping.wait(seconds):
            return False
        return front._forward(sock, request)
    return answered_late


def exact_head(status: int, headers: Tuple[Tuple[str, str], ...], body: bytes = b""):
    """An answer whose head is exactly `headers` (no Content-Length added: give one, even one
    that is not a number), then `body`, then the connection closed."""
    def exactly(front, sock, request) -> bool:
        _send_head(sock, status, list(headers))
        sock.sendall(body)
        return False
    return exactly
