"""Plumbing shared by the local emulators: a quiet keep-alive HTTP/1.1 server in a background thread.

Every emulator listens on 127.0.0.1 only. Responses always carry Content-Length and are written
with one `sendall`, and Nagle is off: a `requests.Session` then reuses each connection without the
40 ms delayed-ACK stall that a headers-then-body write pattern causes on keep-alive sockets.
"""
from __future__ import annotations

import select
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

LOOPBACK = "127.0.0.1"

Header = Tuple[str, str]

# Errors that only mean "the client went away"; a fake must not report them as its own bugs.
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class BodyTooLarge(Exception):
    """The request body is larger than the server accepts; `drained` tells if it was fully read."""

    def __init__(self, drained: bool):
        super().__init__("request body too large")
        self.drained = drained


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler that logs nothing and writes each response in one piece."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle keep-alive connections must not pin a thread forever once the test is over.
    timeout = 60

    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass

    @property
    def app(self):
        """The emulator object that owns this server (set by `BackgroundServer`)."""
        return self.server.app

    def send_whole(self, status: int, headers: Sequence[Header], body: bytes = b"",
                   close: bool = False, head_only: bool = False) -> None:
        """Write status line, headers (plus Content-Length) and body with a single sendall."""
        lines = ["HTTP/1.1 %d %s" % (status, _reason(status))]
        lines.extend("%s: %s" % (name, value) for name, value in headers)
        lines.append("Content-Length: %d" % len(body))
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if head_only else head + body)

    def read_body(self, max_bytes: Optional[int] = None, drain_limit: int = 16 << 20) -> bytes:
        """Return the request body (Content-Length or chunked).

        Raises BodyTooLarge past `max_bytes`. The rest is still read when it is at most
        `drain_limit` bytes, so that closing the socket afterwards does not turn the answer into
        a TCP reset on the client's side (unread received data makes the kernel send RST).
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(max_bytes, drain_limit)
        length = int(self.headers.get("Content-Length") or 0)
        if max_bytes is not None and length > max_bytes:
            if length <= max_bytes + drain_limit:
                self._discard(length)
                raise BodyTooLarge(drained=True)
            raise BodyTooLarge(drained=False)
        return self.rfile.read(length) if length else b""

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self, max_bytes: Optional[int], drain_limit: int) -> bytes:
        parts: List[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self._skip_trailers()
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)
            total += size
            if max_bytes is not None and total > max_bytes + drain_limit:
                raise BodyTooLarge(drained=False)
        if max_bytes is not None and total > max_bytes:
            raise BodyTooLarge(drained=True)
        return b"".join(parts)

    def _skip_trailers(self) -> None:
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass

    def drop_connection(self) -> None:
        """Close the socket now, without answering (what a crashed or reset peer looks like)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _LoopbackServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its open connections so they can be cut."""

    daemon_threads = True
    allow_reuse_address = True
    # Many clients connecting at once (a benchmark) must not see refused connections.
    request_queue_size = 128

    def __init__(self, port: int, handler_class, owner: "BackgroundServer"):
        self.app = owner.app
        self._owner = owner
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__((LOOPBACK, port), handler_class)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if not isinstance(error, CLIENT_GONE):
            self._owner.errors.append(error)


class BackgroundServer:
    """Run one handler class on 127.0.0.1 in a daemon thread; stoppable and restartable.

    `app` is the object handlers reach through `self.app` (the emulator with its state).
    `errors` collects unexpected exceptions raised by handlers, so tests can assert the fake
    itself did not break.
    """

    def __init__(self, handler_class, app, port: int = 0):
        self.handler_class = handler_class
        self.app = app
        self.port = port
        self.errors: List[BaseException] = []
        self._server: Optional[_LoopbackServer] = None
        self._thread: Optional[threading.Thread] = None
        self._hold: Optional[socket.socket] = None  # keeps the port while down (see `down`)

    @property
    def base_url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self.port)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        if self._server is None:
            # Bound beside the hold (both reuse the address and the hold never listens), which
            # is closed only then: the port is never free between `down()` and here.
            self._server = _LoopbackServer(self.port, self.handler_class, self)
            self.port = self._server.server_address[1]
            self._release_hold()
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                name="fake-http-%d" % self.port, daemon=True)
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop listening and cut every open connection; a later `start()` binds the same port again."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.cut_connections()
            self._thread.join(timeout=5)
        self._release_hold()

    def down(self) -> None:
        """`stop()`, keeping the port for a later `start()`: connections to it are refused, as by
        a service that is down, and no other socket of the machine takes it meanwhile.

        A port the kernel handed out is free once closed: a client's connection (any process's)
        or another server asking for any port could be given it, and `start()` then failed with
        EADDRINUSE. A socket bound to it that never listens holds it and refuses connections."""
        self.stop()
        hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            hold.bind((LOOPBACK, self.port))
        except OSError:  # taken in the instant between close and bind: start() will say so
            hold.close()
            return
        self._hold = hold

    def _release_hold(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.close()


class StartedByWith:
    """`with Thing() as running:` starts it and stops it, for anything with `start()` and `stop()`."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ServedByBackgroundServer(StartedByWith):
    """Lifecycle shared by the emulators: `self._server` is their BackgroundServer.

    `start()` returns the base URL; `with Emulator() as running:` starts and stops it; `errors`
    lists what the emulator's own handlers raised, for tests to assert it stayed sound.
    """

    _server: BackgroundServer

    def start(self) -> str:
        return self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.base_url

    @property
    def errors(self) -> List[BaseException]:
        return self._server.errors


def serve_connections(serve: Callable[[socket.socket], None], name: str) -> socketserver.ThreadingTCPServer:
    """A raw TCP server on 127.0.0.1 (ephemeral port) calling `serve(socket)` for each connection in
    a thread of its own, running in a background thread until `shutdown()` and `server_close()`."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            serve(self.request)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = Server((LOOPBACK, 0), Handler)
    # Polled often, as BackgroundServer is: `shutdown()` waits for the loop to look (0.5 s by
    # default), and a fault scenario stops four of these.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, name=name, daemon=True).start()
    return server


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for the block: bound, never listening. A port
    only found free and let go may be another test's server by the time it is asked (the tests
    run in parallel processes, each binding ephemeral ports)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@contextmanager
def taking_no_connection() -> Iterator[str]:
    """The URL of a listener that takes no connection: its accept queue is full, so the next SYN
    goes unanswered, as with a firewall that drops packets or a server too busy to accept."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(0)
        queued = []
        try:
            for _ in range(3):
                waiting = socket.socket()
                queued.append(waiting)
                waiting.setblocking(False)
                waiting.connect_ex(busy.getsockname())
            yield "http://127.0.0.1:%d" % busy.getsockname()[1]
        finally:
            for waiting in queued:
                waiting.close()


def relay(first: socket.socket, second: socket.socket, idle: float = 30.0) -> None:
    """Copy bytes both ways between two connected sockets until either closes or both idle for
    `idle` seconds. One thread reads and writes both sides: an SSL socket must not be used by two
    threads at once. Bytes an SSL socket already decrypted wait in its `pending()`, not in the
    kernel, where select() would not see them."""
    while True:
        pending = getattr(first, "pending", None)
        ready = [first] if pending is not None and pending() else select.select([first, second], [], [], idle)[0]
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (second if sock is first else first).sendall(data)


class FaultQueue:
    """Consumable faults keyed by a path prefix; thread-safe.

    `count=None` keeps a fault until `clear()`. The first matching fault, in the order added,
    is used: a test that queues "500 then 503" gets them in that order.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: List[list] = []

    def add(self, prefix: str, fault, count: Optional[int] = 1) -> None:
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        with self._lock:
            self._entries.append([prefix, fault, count])

    def take(self, path: str):
        with self._lock:
            for entry in self._entries:
                prefix, fault, remaining = entry
                if path.startswith(prefix):
                    if remaining is not None:
                        entry[2] -= 1
                        if entry[2] == 0:
                            self._entries.remove(entry)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class LockedList:
    """An append-only list that threads can share; `snapshot()` returns a copy."""

    def __init__(self, items: Iterable = ()):
        self._lock = threading.Lock()
        self._items = list(items)

    def append(self, item) -> None:
        with self._lock:
            self._items.append(item)

    def extend(self, items: Iterable) -> None:
        with self._lock:
            self._items.extend(items)

    def snapshot(self) -> list:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self):
        return iter(self.snapshot())

    def __getitem__(self, index):
        with self._lock:
            return self._items[index]

    def __eq__(self, other) -> bool:
        return self.snapshot() == list(other)

    def __repr__(self) -> str:
        return "LockedList(%r)" % (self.snapshot(),)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll `condition` until it is true or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ManualClock:
    """A clock (epoch seconds) that moves only when told to: `clock()`, `clock.advance(s)`."""

    def __init__(self, start: Optional[float] = None):
        self._lock = threading.Lock()
        self._now = time.time() if start is None else start

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
