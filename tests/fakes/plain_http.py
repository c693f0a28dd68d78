"""The plainest HTTP servers a user might put kcing against: Python's `http.server` with its
defaults (HTTP/1.0, a connection closed after every answer, `send_error`'s HTML pages, a `Server`
and a `Date` header), in front of one of the emulators, whose answers they pass on.

What the emulator answers is unchanged; only the framing is the plain server's, as a proxy that
speaks HTTP/1.0 would frame it: an answer without Content-Length (its body ends at the close),
another Content-Type, one request at a time (`HTTPServer`, not threading).
"""
from __future__ import annotations

import functools
import http.client
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional
from urllib.parse import urlsplit

from tests.fakes.serving import LOOPBACK

# Headers of the emulator's answer that frame its connection, not the answer: the plain server's own stand.
HOP_BY_HOP = {"content-length", "connection", "keep-alive", "transfer-encoding", "date", "server"}


class _Forwarding(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass

    def _forward(self) -> None:
        front: PlainFront = self.server.front
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        target = urlsplit(front.target)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
        connection.request(self.command, self.path, body=body, headers=headers)
        answer = connection.getresponse()
        content = answer.read()
        connection.close()
        front.requests.append((self.command, self.path, answer.status))
        if answer.status >= 400 and front.error_pages:
            self.send_error(answer.status)
            return
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() in HOP_BY_HOP:
                continue
            if name.lower() == "content-type" and front.content_type is not None:
                if front.content_type:
                    self.send_header(name, front.content_type)
                continue
            self.send_header(name, value)
        if front.content_length:
            self.send_header("Content-Length", str(len(content)))
        if front.connection_close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


class _ClosingHTTP11(_Forwarding):
    """HTTP/1.1 answers that all say `Connection: close` (and close)."""
    protocol_version = "HTTP/1.1"


class _Served:
    """A server of http.server's in a daemon thread, for a `with` block."""

    server: HTTPServer

    @property
    def url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self.server.server_address[1])

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _server(threaded: bool, handler_class) -> HTTPServer:
    return (ThreadingHTTPServer if threaded else HTTPServer)((LOOPBACK, 0), handler_class)


class PlainFront(_Served):
    """Forwards every request to `target` (an emulator's base URL) and passes its answer on, in
    the plain server's framing: HTTP/1.0 without Content-Length unless `content_length`, HTTP/1.1
    with `Connection: close` when `http11_close`; `content_type` replaces the emulator's label
    ("" leaves none); an error answer becomes `send_error`'s HTML page when `error_pages`."""

    def __init__(self, target: str, threaded: bool = False, content_length: bool = False,
                 content_type: Optional[str] = None, error_pages: bool = True, http11_close: bool = False):
        self.target = target.rstrip("/")
        self.content_length = content_length or http11_close
        self.content_type = content_type
        self.error_pages = error_pages
        self.connection_close = http11_close
        self.requests: List[tuple] = []  # (method, path, the emulator's status)
        self.server = _server(threaded, _ClosingHTTP11 if http11_close else _Forwarding)
        self.server.front = self


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


class PlainFiles(_Served):
    """`python -m http.server` over `directory`: a directory's index page, a missing file's 404
    page, a type guessed from the name (`.gz` as application/gzip, no Content-Encoding)."""

    def __init__(self, directory: str, threaded: bool = False):
        self.server = _server(threaded, functools.partial(_Quiet, directory=directory))


class _ErrorPage(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_error(self.server.status)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer


class PlainErrors(_Served):
    """Answers every request with `send_error(status)`: its HTML page, `Content-Type: text/html`."""

    def __init__(self, status: int):
        self.server = _server(False, _ErrorPage)
        self.server.status = status
