"""Dates in HTTP headers (`Date`, `Retry-After`'s date form) of a year or hour no datetime holds,
from Logstash, a listing page or storage: unreadable, as any other date kcing cannot read, never
an OverflowError that ends a run as an internal error or rejects a file."""
from __future__ import annotations

import pytest

from tests.fakes.rogue_http import RogueFront, answer
from tests.feedrun import SAMPLES, feed_environ, kcing, ledger_states, sample_objects
from tests.test_hostile_http import lava_front, storage_front, storage_path  # noqa: F401 (fixtures)

# A Retry-After in the date form whose year no datetime holds: email.utils raises OverflowError
# (not ValueError) reading it.
OVERFLOWING_DATE = "Mon, 01 Jan 99999999999 00:00:00 GMT"


needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


@needs_samples
def test_a_busy_logstash_with_an_unreadable_retry_after_date_is_retried_not_a_traceback(
        legacy_replica, logstash, lava_front, tmp_path):
    """A 503 (a proxy before a restarting input) whose Retry-After is a date of an absurd year
    is a passing failure: retried, the date unreadable as any other (README: Retries)."""
    lava_front.on("POST", "/", answer(503, (("Retry-After", OVERFLOWING_DATE),), b""), count=1)
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_RETRY_BACKOFF="0.01")
    result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


@needs_samples
def test_a_busy_storage_with_an_unreadable_retry_after_date_is_retried_not_a_traceback(
        legacy_replica, logstash, storage_front, tmp_path):
    build = next(obj for obj in sample_objects() if obj.kind == "build")
    storage_front.on("GET", storage_path(build), answer(503, (("Retry-After", OVERFLOWING_DATE),), b"busy"), count=1)
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, KCI_MAX_RETRIES="2",
                       KCI_RETRY_BACKOFF="0.01")
    result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


@needs_samples
def test_a_busy_listing_page_with_an_unreadable_retry_after_date_is_retried_not_an_internal_error(
        legacy_replica, logstash, tmp_path):
    with RogueFront(legacy_replica.frontend_url) as frontend:
        frontend.on("GET", "/_ajax/build", answer(503, (("Retry-After", OVERFLOWING_DATE),), b"busy"), count=1)
        db = tmp_path / "kcing.db"
        env = feed_environ(legacy_replica, logstash, db, KCI_HOST=frontend.url.split("://")[1],
                           KCI_MAX_RETRIES="2", KCI_RETRY_BACKOFF="0.01")
        result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert "internal error" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


def forwarded_with_date(date: str):
    """The emulator's answer, whole, with its `Date` header replaced by `date`."""
    import http.client as client
    from tests.fakes.rogue_http import HOP_BY_HOP, _send_head

    def dated(front, sock, request) -> bool:
        connection = client.HTTPConnection(front.upstream.hostname, front.upstream.port, timeout=30)
        try:
            headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
            connection.request(request.method, request.path, body=request.body or None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            kept = [(name, value) for name, value in response.getheaders()
                    if name.lower() not in HOP_BY_HOP and name.lower() != "date"]
        finally:
            connection.close()
        _send_head(sock, response.status, kept + [("Date", date), ("Content-Length", str(len(body)))])
        sock.sendall(body)
        return True
    return dated


@needs_samples
def test_a_listing_page_whose_date_header_no_datetime_holds_does_not_end_the_run_in_an_internal_error(
        legacy_replica, logstash, tmp_path):
    """A 200 listing page, right in every byte of its body, whose server (or a proxy before it)
    stamps an absurd `Date`: the date is unreadable, as `http_date` says of any other it cannot
    read (None), not an OverflowError that ends the run as an internal error (exit 70)."""
    with RogueFront(legacy_replica.frontend_url) as frontend:
        frontend.on("GET", "/_ajax/", forwarded_with_date(OVERFLOWING_DATE), count=None)
        db = tmp_path / "kcing.db"
        env = feed_environ(legacy_replica, logstash, db, KCI_HOST=frontend.url.split("://")[1])
        result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert "internal error" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


def test_http_date_reads_a_date_of_a_year_no_datetime_holds_as_no_date():
    """`http_date` promises None for what is absent or no date; email.utils raises OverflowError
    for a year or hour beyond a C long, which escapes it (and parse_retry_after)."""
    from kcing.http import http_date, parse_retry_after

    assert http_date(OVERFLOWING_DATE) is None
    assert http_date("Mon, 01 Jan 2024 99999999999999999999:00:00 GMT") is None
    assert parse_retry_after(OVERFLOWING_DATE) is None
