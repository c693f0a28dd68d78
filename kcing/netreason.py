"""Why a connection failed, in words a person reads: never urllib3's nested reprs
(`HTTPConnection(host=...)`, `<... object at 0x...>`) nor an exception class name."""
from __future__ import annotations

# Checked in order against the text of the error and of the errors it wraps.
_REASONS = (
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    # What OpenSSL says when the answer to its hello is not TLS: plain HTTP at an https:// URL.
    ("WRONG_VERSION_NUMBER", "no TLS at that port: is it an http:// server?"),
    ("RECORD_LAYER_FAILURE", "no TLS at that port: is it an http:// server?"),
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


def connection_failure(error: BaseException) -> str:
    """A short reason for a failed connection, e.g. 'connection refused'."""
    texts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts.append("%s %s" % (type(error).__name__, error))
        error = error.__cause__ or error.__context__
    text = " ".join(texts)
    for needle, reason in _REASONS:
        if needle in text:
            return reason
    return "connection failed"
