"""GET with bounded retries on the failures that pass (timeouts, resets, 429, 5xx)."""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, Optional

import requests

from kcing.errors import ConfigError, UpstreamError
from kcing.http import RetryPolicy, certificate_refused, parse_retry_after, seconds_text
from kcing.netreason import connection_failure

log = logging.getLogger(__name__)


class Requester:
    """Wraps one pooled session; every call has a (connect, read) timeout."""

    def __init__(self, session: requests.Session, policy: RetryPolicy, timeout: float,
                 sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random):
        self.session = session
        self.policy = policy
        self.timeout = (min(10.0, timeout), timeout)
        self.sleep = sleep
        self.rand = rand

    def get(self, url: str, params=None, headers=None) -> requests.Response:
        """Return the first response that is not a passing failure; the caller judges its status."""
        last = "no attempt"
        for attempt in range(1, self.policy.attempts + 1):
            retry_after: Optional[float] = None
            try:
                # verify= given per request: requests would otherwise let REQUESTS_CA_BUNDLE or
                # CURL_CA_BUNDLE from the environment replace the session's (KCI_CA_BUNDLE).
                response = self.session.get(url, params=params, headers=headers, timeout=self.timeout,
                                            verify=self.session.verify)
                # Read the body here so a connection reset mid-body counts as a passing failure.
                response.content
            except requests.Timeout:
                last = "timed out after %s" % seconds_text(self.timeout[1])
            except requests.RequestException as error:
                if certificate_refused(error):
                    raise ConfigError("the TLS certificate of %s is not trusted: point KCI_CA_BUNDLE at the CA "
                                      "bundle that signed it" % url) from None
                last = connection_failure(error)
            else:
                if not self.policy.is_retryable(response.status_code):
                    return response
                last = "HTTP %d" % response.status_code
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < self.policy.attempts:
                delay = self.policy.delay(attempt, retry_after, self.rand)
                log.info("GET %s: %s; retry %d of %d in %.1fs", url, last, attempt, self.policy.attempts - 1, delay)
                self.sleep(delay)
        raise UpstreamError("GET %s failed %d times (last: %s)" % (url, self.policy.attempts, last))
