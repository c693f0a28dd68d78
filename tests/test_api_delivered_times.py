"""The newest listed time of each minute, which the API listing's watermark is drawn from."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from kcing.sources.api_passes import DeliveredTimes

BASE = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)


def newest_of_each_minute_time_by_time(pages) -> dict:
    """The rule, one time at a time: minute -> the newest time in it."""
    newest = {}
    for page in pages:
        for when in page:
            minute = when.replace(second=0, microsecond=0)
            if minute not in newest or when > newest[minute]:
                newest[minute] = when
    return newest


def kept(pages) -> dict:
    times = DeliveredTimes()
    for page in pages:
        times.add(page)
    return {when.replace(second=0, microsecond=0): when for when in times.newest_of_each_minute()}


def test_each_minute_keeps_its_newest_time_whatever_the_order_and_the_pages():
    pages = [
        [BASE + timedelta(seconds=50), BASE + timedelta(seconds=5), BASE + timedelta(seconds=59, microseconds=999999)],
        (BASE + timedelta(minutes=1),),  # the first instant of the next minute is that minute's
        [BASE + timedelta(minutes=3, seconds=1), BASE + timedelta(seconds=10)],
    ]
    assert kept(pages) == {
        BASE: BASE + timedelta(seconds=59, microseconds=999999),
        BASE + timedelta(minutes=1): BASE + timedelta(minutes=1),
        BASE + timedelta(minutes=3): BASE + timedelta(minutes=3, seconds=1),
    }
    assert len(DeliveredTimes()) == 0


def test_the_first_instant_of_a_minute_is_that_minutes_on_the_page_of_the_one_before():
    """On one page, the next minute's first instant (10:01:00.000000) is no time of the minute
    before: that minute keeps its own newest, and the next minute is kept too."""
    page = [BASE + timedelta(minutes=1), BASE + timedelta(seconds=30), BASE + timedelta(minutes=2),
            BASE + timedelta(minutes=1, seconds=59, microseconds=999999)]
    assert kept([page]) == {
        BASE: BASE + timedelta(seconds=30),
        BASE + timedelta(minutes=1): BASE + timedelta(minutes=1, seconds=59, microseconds=999999),
        BASE + timedelta(minutes=2): BASE + timedelta(minutes=2),
    }


def test_the_last_minute_there_is_keeps_its_newest_time():
    pages = [[LATEST - timedelta(seconds=30), LATEST, LATEST - timedelta(minutes=1, seconds=1)]]
    assert kept(pages) == {LATEST.replace(second=0, microsecond=0): LATEST,
                           (LATEST - timedelta(minutes=1)).replace(second=0, microsecond=0):
                               LATEST - timedelta(minutes=1, seconds=1)}


@pytest.mark.parametrize("seed", range(5))
def test_pages_of_random_times_keep_what_the_rule_time_by_time_keeps(seed):
    rng = random.Random(seed)
    for _ in range(300):
        span = rng.choice([1, 90, 3600, 400 * 86400])
        pages = [[BASE + timedelta(seconds=rng.uniform(-span, span)) for _ in range(rng.randint(0, 40))]
                 for _ in range(rng.randint(1, 4))]
        assert kept(pages) == newest_of_each_minute_time_by_time(pages)
