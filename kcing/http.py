"""HTTP plumbing shared by sources and sinks: one pooled session, and pure retry decisions."""
from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from kcing import __version__

USER_AGENT = "kcing/%s" % __version__

# Statuses worth another try: the server is overloaded or briefly broken, not refusing the request.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _Session(requests.Session):
    """A session that reads the environment's proxy settings (HTTPS_PROXY, NO_PROXY, ...) once
    per origin instead of for every request: a run's environment does not change, and a crawl
    makes hundreds of thousands of requests to a handful of hosts."""

    def __init__(self):
        super().__init__()
        self._environment_settings: dict = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if proxies:  # per-request proxies: rare, not worth a cache key
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        settings = self._environment_settings.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment_settings[key] = settings
        return dict(settings, proxies=dict(settings["proxies"]))


def new_session(pool_size: int = 10, verify: str = "") -> requests.Session:
    """Return a session with a connection pool sized for `pool_size` threads.

    `verify` is a CA bundle path; empty keeps certificate verification against the system store
    (verification is never switched off).
    """
    session = _Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.verify = verify or True
    return session


def certificate_refused(error: Exception) -> bool:
    """True when TLS failed because the server's certificate is not trusted: retrying cannot help,
    the CA bundle setting can."""
    return isinstance(error, requests.exceptions.SSLError) and "certificate verify failed" in str(error).lower()


def seconds_text(seconds: float) -> str:
    """`60s`, `0.5s`: durations in messages, without rounding sub-second timeouts to 0."""
    return "%gs" % seconds


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Return the wait before retry number `attempt` (1-based): capped exponential, equal jitter.

    Half of the exponential step is fixed and half random, so clients that failed together do not
    retry together, yet every wait keeps growing.
    """
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return step / 2 + rand() * step / 2


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Return the seconds a `Retry-After` header asks to wait, or None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to wait between them (no I/O here)."""

    attempts: int = 3
    base: float = 1.0
    cap: float = 30.0
    # A server may ask for a long pause; honour it, but never stall a cron run for longer.
    max_retry_after: float = 120.0

    def is_retryable(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES

    def delay(self, attempt: int, retry_after: Optional[float] = None,
              rand: Callable[[], float] = random.random) -> float:
        """Return the wait after failed attempt number `attempt`, honouring Retry-After."""
        wait = backoff_delay(attempt, self.base, self.cap, rand)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait
