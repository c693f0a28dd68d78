"""A loopback HTTP forward proxy: what HTTP_PROXY / HTTPS_PROXY point a client at.

A plain-http request arrives in absolute form (`POST http://127.0.0.1:8337/ HTTP/1.1`) and is
sent on to that origin; `CONNECT 127.0.0.1:8443` opens a tunnel for https. Like a real proxy it
refuses a request in origin form (`POST / HTTP/1.1`): that is a client talking to it as if it
were the server. It only ever connects to 127.0.0.1. `seen` lists (method, target) in order.
"""
from __future__ import annotations

import http.client
import socket
import socketserver
import threading
from typing import Optional
from urllib.parse import urlsplit

from tests.fakes.rogue_http import HOP_BY_HOP, _read_request, _send_head
from tests.fakes.serving import LOOPBACK, LockedList, StartedByWith, relay, serve_connections


class ForwardProxy(StartedByWith):
    def __init__(self):
        self.seen: LockedList = LockedList()
        self.connections = 0
        self._lock = threading.Lock()
        self._server: Optional[socketserver.ThreadingTCPServer] = None

    @property
    def url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self._server.server_address[1])

    def start(self) -> str:
        self._server = serve_connections(self._serve, "forward-proxy")
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        sock.settimeout(30)
        reader = sock.makefile("rb")
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    return
                self.seen.append((request.method, request.path))
                if request.method == "CONNECT":
                    self._tunnel(sock, reader, request.path)
                    return
                if not self._forward(sock, request):
                    return
        except OSError:
            return

    def _forward(self, sock: socket.socket, request) -> bool:
        target = urlsplit(request.path)
        if target.scheme != "http" or target.hostname != LOOPBACK:
            _send_head(sock, 400, [("Content-Length", "0")])
            return False
        upstream = http.client.HTTPConnection(LOOPBACK, target.port, timeout=30)
        try:
            headers = {name: value for name, value in request.headers.items()
                       if name.lower() not in ("host", "proxy-authorization", "proxy-connection")}
            path = target.path or "/"
            upstream.request(request.method, path + ("?" + target.query if target.query else ""),
                             body=request.body or None, headers=headers)
            response = upstream.getresponse()
            body = response.read()
            kept = [(name, value) for name, value in response.getheaders() if name.lower() not in HOP_BY_HOP]
        finally:
            upstream.close()
        _send_head(sock, response.status, kept + [("Content-Length", str(len(body)))])
        sock.sendall(body)
        return True

    def _tunnel(self, sock: socket.socket, reader, authority: str) -> None:
        host, _, port = authority.rpartition(":")
        if host != LOOPBACK:
            _send_head(sock, 403, [("Content-Length", "0")])
            return
        upstream = socket.create_connection((LOOPBACK, int(port)), timeout=30)
        try:
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pending = reader.peek(0) if hasattr(reader, "peek") else b""
            if pending:
                upstream.sendall(reader.read(len(pending)))
            relay(sock, upstream)
        finally:
            upstream.close()
