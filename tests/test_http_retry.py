"""Retry decisions are pure: backoff growth, jitter bounds, Retry-After parsing."""
from datetime import datetime, timezone

import pytest

from kcing.http import RetryPolicy, announced_length, backoff_delay, parse_retry_after, seconds_text


def test_backoff_grows_exponentially_with_equal_jitter():
    assert backoff_delay(1, base=1, cap=30, rand=lambda: 0.0) == 0.5
    assert backoff_delay(1, base=1, cap=30, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, base=1, cap=30, rand=lambda: 0.0) == 2.0
    assert backoff_delay(3, base=1, cap=30, rand=lambda: 1.0) == 4.0


def test_backoff_is_capped():
    assert backoff_delay(30, base=1, cap=30, rand=lambda: 1.0) == 30


def test_a_policy_whose_first_wait_is_above_the_cap_waits_it_every_time():
    policy = RetryPolicy(attempts=4, base=120, cap=30)
    assert [policy.delay(attempt, rand=lambda: 1.0) for attempt in (1, 2, 3)] == [120, 120, 120]
    assert policy.delay(1, rand=lambda: 0.0) == 60


@pytest.mark.parametrize("name", ["ES_RETRY_BACKOFF", "KCI_RETRY_BACKOFF"])
def test_a_retry_backoff_setting_above_thirty_seconds_is_the_first_wait(tmp_path, name):
    """The settings allow up to an hour; the policy's 30 s cap cut every wait to 30 s."""
    from kcing import settings as settings_module
    from kcing.wiring import make_sink, make_source

    settings = settings_module.load(environ={name: "300"}, local_file=tmp_path / "local_settings.py")
    made = make_sink({}, settings) if name.startswith("ES_") else make_source({}, settings)
    policy = made.policy if name.startswith("ES_") else made.requester.policy
    assert policy.delay(1, rand=lambda: 1.0) == 300


@pytest.mark.parametrize("header, seconds", [("5", 5.0), (" 120 ", 120.0), (None, None), ("", None),
                                             ("soon", None), ("-3", None),
                                             # digits to str.isdigit(), not to HTTP
                                             ("\u00b2", None), ("\u0661\u0662", None), ("1e9", None)])
def test_retry_after_in_seconds(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_as_http_date():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0


def test_a_retry_after_date_is_measured_from_the_answers_own_date():
    """The server wrote both dates by its clock, hours off this host's: the wait is their difference."""
    here = datetime(2026, 11, 23, 12, 0, 0, tzinfo=timezone.utc)
    server_ahead = "Mon, 23 Nov 2026 15:00:00 GMT"
    assert parse_retry_after("Mon, 23 Nov 2026 15:00:30 GMT", here, sent_at=server_ahead) == 30.0
    server_behind = "Mon, 23 Nov 2026 09:00:00 GMT"
    assert parse_retry_after("Mon, 23 Nov 2026 09:00:20 GMT", here, sent_at=server_behind) == 20.0
    # An answer without a readable Date: this host's clock.
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", here, sent_at="yesterday") == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", here, sent_at=None) == 30.0


def test_policy_honours_retry_after_but_bounds_it():
    policy = RetryPolicy(attempts=3, base=1, cap=30, max_retry_after=60)
    assert policy.delay(1, retry_after=10, rand=lambda: 0.0) == 10
    assert policy.delay(1, retry_after=3600, rand=lambda: 0.0) == 60
    assert policy.delay(1, retry_after=None, rand=lambda: 0.0) == 0.5


@pytest.mark.parametrize("status, retry", [(408, True), (429, True), (500, True), (502, True), (503, True),
                                           (504, True), (400, False), (401, False), (404, False), (413, False),
                                           (501, False), (505, False), (507, False)])
def test_only_passing_failures_are_retried(status, retry):
    assert RetryPolicy().is_retryable(status) is retry


def test_sessions_honour_proxy_settings_from_the_environment_per_host(monkeypatch):
    from kcing.http import new_session

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    session = new_session()
    for _ in range(2):  # the second answer comes from the per-origin cache: it must be the same
        upstream = session.merge_environment_settings("https://storage.kernelci.org/a/build.json", {}, None, True, None)
        local = session.merge_environment_settings("http://127.0.0.1:8337", {}, None, True, None)
        assert upstream["proxies"].get("https") == "http://proxy.example:3128"
        assert "https" not in local["proxies"] and "http" not in local["proxies"]
    given = session.merge_environment_settings("https://storage.kernelci.org/b", {"https": "http://other:1"}, None, True, None)
    assert given["proxies"]["https"] == "http://other:1"


@pytest.mark.parametrize("header, length", [("5", 5), (" 120 ", 120), ("7, 7", 7), ("", None), ("5, 6", None),
                                            ("-1", None), ("1e3", None), ("\u00b2", None), ("\u0661", None)])
def test_a_content_length_announces_a_length_only_in_http_digits(header, length):
    assert announced_length(header) == length


def test_a_retry_after_of_hundreds_of_digits_is_said_to_be_very_long_not_infinite():
    huge = parse_retry_after("9" * 400)
    assert huge == float("inf")  # float() of a number past its range
    assert seconds_text(huge) == "over 100 days"
    assert seconds_text(120.0) == "120s" and seconds_text(0.5) == "0.5s"
