"""Why a connection failed, in words a person reads: never urllib3's nested reprs
(`HTTPConnection(host=...)`, `<... object at 0x...>`) nor an exception class name; and whether
the server said anything at all."""
from __future__ import annotations

import http.client
import re
import ssl

# What OpenSSL's words for an answer to its hello that is not TLS (plain HTTP at an https://
# URL) become.
NO_TLS = "no TLS at that port: is it an http:// server?"

# Checked in order against the text of the error and of the errors it wraps.
_REASONS = (
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ("WRONG_VERSION_NUMBER", NO_TLS),
    ("RECORD_LAYER_FAILURE", NO_TLS),
    ("Connection refused", "connection refused"),
    ("refused", "connection refused"),
    ("Connection reset", "connection reset by the peer"),
    ("RemoteDisconnected", "connection closed without an answer"),
    ("closed connection without response", "connection closed without an answer"),
    ("IncompleteRead", "answer cut short"),
    # http.client's limits on an answer's head (a server or proxy sending junk headers): the
    # connection is dropped, which is no network fault to look for.
    ("got more than 100 headers", "an answer of more than 100 header lines"),
    ("bytes when reading header line", "an answer with a header line of more than 64 KiB"),
    ("bytes when reading status line", "an answer whose status line is more than 64 KiB"),
    ("timed out", "timed out"),
    ("Name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("Temporary failure in name resolution", "host name lookup failed"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
)


# How http.client says an HTTP proxy answered CONNECT (the tunnel to an https:// server) with
# another status than 200: its status and reason phrase follow.
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})([^'\"()\r\n]{0,60})")


def connection_failure(error: BaseException) -> str:
    """A short reason for a failed connection, e.g. 'connection refused'."""
    texts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts.append("%s %s" % (type(error).__name__, error))
        error = error.__cause__ or error.__context__
    text = " ".join(texts)
    refused = _TUNNEL_REFUSED.search(text)
    if refused:
        # The proxy answered, not the server: "connection failed" sent the operator to the server.
        return "the proxy (HTTPS_PROXY, ALL_PROXY) refused the tunnel: %s%s" % (
            refused.group(1), "".join(ch for ch in refused.group(2).rstrip() if ch.isprintable()))
    for needle, reason in _REASONS:
        if needle in text:
            return reason
    return "connection failed"


def no_tls_at_port(error: BaseException) -> bool:
    """Whether a connection failed because what answered at the port speaks no TLS (plain HTTP at
    an https:// URL): retrying cannot help, the URL's scheme can."""
    return connection_failure(error) == NO_TLS


def got_no_answer(error: BaseException) -> bool:
    """Whether a failed request heard nothing from its server: no connection (refused, no such
    host, no route), or one timed out, reset or closed before any answer. A server that spoke,
    however unusably (a TLS alert, plain HTTP at an https:// URL, a head http.client refuses: not
    HTTP, too many or too long header lines), answered: the host is there."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    if any("timed out" in str(link) or isinstance(link, TimeoutError) for link in chain):
        return True
    return not any(_spoke(link) for link in chain)


def _spoke(error: BaseException) -> bool:
    """Whether `error` is one only a server's bytes cause (or a proxy's, refusing the tunnel)."""
    if _TUNNEL_REFUSED.search(str(error)):
        return True
    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return False  # the connection closed during the handshake: hung up on
    if isinstance(error, ssl.SSLError):
        return True
    return isinstance(error, http.client.HTTPException) and not isinstance(error, http.client.RemoteDisconnected)
