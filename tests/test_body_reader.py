"""BodyReader: the one mechanism that bounds every response body kcing reads (downloads and
Logstash answers), against real loopback servers that trickle, stream without end or cut short."""
from __future__ import annotations

import threading
import time

import pytest

from kcing.http import BodyAbandoned, BodyBroken, BodyReader, BodyTooLarge, BodyTooSlow, new_session
from tests.fakes.rogue_http import RogueFront, answer, cut_short, endless, trickle


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
