"""BodyReader: the one mechanism that bounds every response body kcing reads (downloads and
Logstash answers), against real loopback servers that trickle, stream without end or cut short."""
from __future__ import annotations

import gzip
import threading
import time
import zlib

import pytest

from kcing.http import (BodyAbandoned, BodyBroken, BodyReader, BodyTooLarge, BodyTooSlow, BodyUndecodable,
                        new_session)
from tests.fakes.rogue_http import RogueFront, answer, cut_short, endless, exact_head, trickle


@pytest.fixture
def front():
    with RogueFront() as started:
        yield started


def get(front, path="/file", reader=None):
    session = new_session()
    response = session.get(front.url + path, stream=True, timeout=(5, 30))
    return (reader or BodyReader(deadline=30, max_bytes=1_000_000)).read(response), session


def test_a_whole_body_is_returned_and_the_connection_reused(front):
    front.on("GET", "/file", answer(200, body=b'{"ok": true}'), count=None)
    session = new_session()
    reader = BodyReader(deadline=5, max_bytes=1000)
    for _ in range(3):
        assert reader.read(session.get(front.url + "/file", stream=True, timeout=5)) == b'{"ok": true}'
    # One connection for the three requests: a body read whole gives its connection back.
    assert front.connections == 1


def test_a_trickling_body_is_cut_at_the_deadline_not_when_it_ends(front):
    front.on("GET", "/file", trickle(length=1000, every=0.1))
    started = time.monotonic()
    with pytest.raises(BodyTooSlow, match="within 1s"):
        get(front, reader=BodyReader(deadline=1.0, max_bytes=1_000_000))
    assert 0.9 < time.monotonic() - started < 3  # not 100 s


def test_a_stalled_body_is_cut_at_the_deadline_even_without_a_byte(front):
    front.on("GET", "/file", trickle(length=10, every=60))  # headers, then nothing for a minute
    started = time.monotonic()
    with pytest.raises(BodyTooSlow):
        get(front, reader=BodyReader(deadline=0.5, max_bytes=1_000_000))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("declared", [None, 5_000_000], ids=["streamed", "announced"])
def test_an_endless_body_stops_at_the_size_limit(front, declared):
    front.on("GET", "/file", endless(declared=declared))
    with pytest.raises(BodyTooLarge, match="200000"):
        get(front, reader=BodyReader(deadline=30, max_bytes=200_000))


def test_a_body_shorter_than_its_content_length_is_a_broken_connection(front):
    front.on("GET", "/file", cut_short(declared=100, sent=b"ok"))
    with pytest.raises(BodyBroken, match="IncompleteRead"):
        get(front)


def test_abandoning_cuts_every_body_in_progress_at_once(front):
    front.on("GET", "/file", trickle(length=1000, every=0.5), count=None)
    stopping = threading.Event()
    reader = BodyReader(deadline=600, max_bytes=1_000_000, abandon=stopping.is_set)
    errors = []

    def download():
        try:
            get(front, reader=reader)
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=download) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    stopping.set()
    started = time.monotonic()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - started < 2
    assert len(errors) == 3 and all(isinstance(error, BodyAbandoned) for error in errors)


# Compressed bodies: urllib3 inflates them, and hands out a stream cut short as if it were whole --

LOG = b"".join(b"line %d of a build log\n" % number for number in range(5000))


def deflated(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


def chunked(body: bytes) -> bytes:
    """`body` in whole chunks, ended as the framing asks."""
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:]) if part) + b"0\r\n\r\n"


@pytest.mark.parametrize("encoding, body", [
    ("gzip", gzip.compress(LOG)),
    ("gzip", gzip.compress(LOG[:100]) + gzip.compress(LOG[100:])),  # members one after another
    ("gzip", gzip.compress(LOG) + b"\0\0\0\0"),  # padding after the member, which gzip -d ignores
    ("deflate", deflated(LOG, zlib.MAX_WBITS)),  # zlib's wrapping, as HTTP names it
    ("deflate", deflated(LOG, -zlib.MAX_WBITS)),  # raw deflate, which servers send too
], ids=["gzip", "gzip-members", "gzip-padded", "deflate-zlib", "deflate-raw"])
def test_a_whole_compressed_body_is_inflated(front, encoding, body):
    front.on("GET", "/file", exact_head(200, (("Content-Encoding", encoding), ("Content-Length", str(len(body)))), body))
    assert get(front)[0] == LOG


def test_an_empty_body_labelled_gzip_is_empty(front):
    front.on("GET", "/file", exact_head(404, (("Content-Encoding", "gzip"), ("Content-Length", "0"))))
    assert get(front)[0] == b""


@pytest.mark.parametrize("encoding, body", [
    ("gzip", gzip.compress(LOG)[:-8]),  # without its trailer (CRC and length)
    ("gzip", gzip.compress(LOG)[:len(gzip.compress(LOG)) // 2]),
    ("gzip", gzip.compress(LOG[:100]) + gzip.compress(LOG[100:])[:-8]),  # the second member cut
    ("deflate", deflated(LOG, zlib.MAX_WBITS)[:len(deflated(LOG, zlib.MAX_WBITS)) // 2]),
    ("deflate", deflated(LOG, -zlib.MAX_WBITS)[:len(deflated(LOG, -zlib.MAX_WBITS)) // 2]),
], ids=["gzip-no-trailer", "gzip-half", "gzip-second-member", "deflate-zlib-half", "deflate-raw-half"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_compressed_file_cut_short_but_sent_whole_is_undecodable(front, encoding, body, framing):
    # The server frames the body right: what it holds is a compressed file that stops short (an
    # interrupted upload). The same bytes come again however often they are asked for.
    if framing == "chunked":
        head, sent = (("Content-Encoding", encoding), ("Transfer-Encoding", "chunked")), chunked(body)
    else:
        head, sent = (("Content-Encoding", encoding), ("Content-Length", str(len(body)))), body
    front.on("GET", "/file", exact_head(200, head, sent))
    with pytest.raises(BodyUndecodable, match="ends before its stream does"):
        get(front)


def test_a_compressed_body_read_until_the_connection_closed_and_cut_short_is_a_broken_connection(front):
    # No Content-Length and no chunks: only the compressed stream's end tells that the connection
    # closed early, which another try may not meet.
    body = gzip.compress(LOG)
    front.on("GET", "/file", exact_head(200, (("Content-Encoding", "gzip"), ("Connection", "close")),
                                        body[:len(body) // 2]))
    with pytest.raises(BodyBroken, match="closed before the end of its gzip stream"):
        get(front)


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br"])
def test_a_body_compressed_in_a_coding_kcing_did_not_ask_for_is_undecodable(front, encoding):
    # kcing asks for gzip or deflate; a server answering brotli anyway sends bytes that would
    # otherwise be taken for the file (a build log of compressed bytes, its figures all zero).
    body = b"\x1b\x00\x00\x00compressed bytes, never a file's text"
    front.on("GET", "/file", exact_head(200, (("Content-Encoding", encoding), ("Content-Length", str(len(body)))),
                                        body))
    with pytest.raises(BodyUndecodable, match="compressed with %s, which kcing cannot decode" % encoding.split()[-1]):
        get(front)


@pytest.mark.parametrize("encoding", ["identity", "utf-8"])
def test_a_coding_that_is_not_a_compression_leaves_the_body_as_it_came(front, encoding):
    front.on("GET", "/file", exact_head(200, (("Content-Encoding", encoding), ("Content-Length", "2")), b"{}"))
    assert get(front)[0] == b"{}"
