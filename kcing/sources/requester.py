"""GET with bounded retries on the failures that pass (timeouts, resets, 429, 5xx), only
within the upstream origins."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Callable, Collection, Dict, FrozenSet, Optional
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import BaseAdapter

from kcing.errors import (ConfigError, Interrupted, ObjectTooLarge, ObjectTooSlow, ObjectUndecodable, RejectedInput,
                          UpstreamAnsweredError, UpstreamError)
from kcing.http import (BodyError, BodyReader, BodyTooLarge, BodyUndecodable, RetryPolicy, certificate_refused,
                        json_value, parse_retry_after, resent_if_idle_closed, seconds_text, socks_unsupported)
from kcing.urls import Origin, authority_problem, origin_allowed, origin_as_sent, origin_of, origin_text, redacted
from kcing.netreason import connection_failure, got_no_answer
from kcing.surrogates import lone_surrogates_replaced

log = logging.getLogger(__name__)


# The settings whose origins may be fetched, for messages that refuse another one.
ORIGIN_SETTINGS = "KCI_HOST, KCI_STORAGE_URL, KCI_API_URL, KCI_API_STORAGE_URL or KCI_ARTIFACT_ORIGINS"


# Seconds a connection to upstream may take at most (KCI_TIMEOUT when shorter).
CONNECT_TIMEOUT = 10.0


class Requester:
    """Wraps one pooled session; every call has a (connect, read) timeout, and every body an
    overall deadline and a size limit (`reader`).

    With `allowed_origins`, a URL, or a redirect, to any other origin (or scheme: `file:`) is
    refused with RejectedInput before anything is sent to it: upstream data names the URLs
    fetched (artifact URLs, storage redirects), and must not make kcing fetch from hosts
    inside the network it runs in and index what they answer. So is a URL whose host part
    parsers could read differently (kcing/urls.py). Each URL is judged as given, then once more
    as requests sends it, the first and every redirect (`_OriginGuard`): that is the origin
    its connection goes to.

    With `give_up_after` (N > 0), once N requests in a row to one origin went unanswered after all
    their attempts (refused, timed out, no such host), with no answer from it in between, the
    requests to it that follow fail at once for the rest of the run, redirects to it and the
    next attempts of requests already under way included: a storage down for the day
    would otherwise hold each of a backlog's files for its retries and timeouts, hours for a
    run that can do nothing (`_GivenUp`).
    """

    def __init__(self, session: requests.Session, policy: RetryPolicy, timeout: float,
                 sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random,
                 reader: Optional[BodyReader] = None, allowed_origins: Optional[FrozenSet[Origin]] = None,
                 give_up_after: int = 0):
        self.given_up = _GivenUp(give_up_after)
        self.session = session
        self.policy = policy
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self.sleep = sleep
        self.rand = rand
        self.reader = reader or BodyReader(deadline=300.0, max_bytes=100_000_000)
        self.allowed_origins = allowed_origins
        # Response hooks run on each answer, a redirect's before requests follows it.
        session.hooks["response"].append(self._heard_from)
        if allowed_origins is not None:
            session.hooks["response"].append(self._refuse_redirect_elsewhere)
        for prefix, adapter in list(session.adapters.items()):
            session.mount(prefix, _OriginGuard(adapter, self._refusal_as_sent, self.given_up.why))
        session.hooks["response"].append(self._read_redirect_body)

    def refusal(self, url: str) -> Optional[str]:
        """Why `url` may not be fetched, or None when it may."""
        if self.allowed_origins is None:
            return None
        ambiguous = authority_problem(url) if isinstance(url, str) else None
        if ambiguous is not None:
            return "an ambiguous URL (%s), never fetched" % ambiguous
        if origin_allowed(url, self.allowed_origins):
            return None
        try:
            shown = origin_text(url)
        except ValueError as error:  # `http://[::1/x`, in upstream data: urllib.parse reads no URL in it
            return "not a URL (%s)" % error
        return "%s is not an upstream origin (%s)" % (shown, ORIGIN_SETTINGS)

    def _refusal_as_sent(self, url: str) -> Optional[str]:
        """Why a request requests is about to send may not go, or None when it may."""
        if self.allowed_origins is None:
            return None
        origin = origin_as_sent(url)
        if origin in self.allowed_origins:
            return None
        shown = "%s://%s:%d" % origin if origin is not None else "a URL the HTTP client reads no single origin in"
        return "%s is not an upstream origin (%s)" % (shown, ORIGIN_SETTINGS)

    def _heard_from(self, response: requests.Response, *args, **kwargs) -> None:
        """Any answer, a redirect's included, says its host is there."""
        self.given_up.heard_from(response.url)

    def _refuse_redirect_elsewhere(self, response: requests.Response, *args, **kwargs) -> None:
        if not response.is_redirect:
            return
        try:
            why = self.refusal(_redirect_target(self.session, response))
        except ValueError as error:
            # requests reads a Location as UTF-8 and would fail to follow one that is not;
            # urllib.parse reads no URL in `http://[::1/x`. Either is the server's fault alone.
            response.close()
            what = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "not a URL (%s)" % error
            raise RejectedInput("GET %s redirected to a Location that is %s" % (redacted(response.url), what)) from None
        if why is not None:
            response.close()
            raise RejectedInput("GET %s redirected: %s" % (redacted(response.url), why))

    def get(self, url: str, params=None, headers=None, attempts: Optional[int] = None,
            not_retried: Collection[int] = ()) -> requests.Response:
        """Return the first response that is not a passing failure, its body read; the caller
        judges its status. `attempts` (at most) instead of KCI_MAX_RETRIES; a status in
        `not_retried` ends the attempts at once, as a failure.

        Raises RejectedInput for a URL, or a redirect, outside the allowed origins (not retried);
        UpstreamAnsweredError when the last attempt was answered with a status worth a retry."""
        why = self.refusal(url)
        if why is not None:
            raise RejectedInput("GET refused: %s" % why)
        why = self.given_up.why(url)
        if why is not None:
            raise UpstreamError("GET %s not sent: %s" % (redacted(url), why))
        last, last_status, answered = "no attempt", None, False
        silent: Optional[Origin] = None  # the host the last attempt heard nothing from
        attempts = min(attempts or self.policy.attempts, self.policy.attempts)
        for attempt in range(1, attempts + 1):
            last_status, silent = None, None
            retry_after: Optional[float] = None
            with self.reader.exchange() as exchange:
                try:
                    response = self._attempt(url, params, headers, exchange)
                except BodyTooLarge as error:
                    raise ObjectTooLarge("GET %s: body %s: raise KCI_MAX_OBJECT_BYTES to take it"
                                         % (redacted(url), error)) from None
                except BodyUndecodable as error:
                    raise ObjectUndecodable("GET %s: body %s" % (redacted(url), error)) from None
                except requests.TooManyRedirects:
                    # A loop (or a chain longer than any storage makes): another try meets it again.
                    raise UpstreamError("GET %s: redirected more than %d times (a redirect loop); the next run "
                                        "tries again" % (redacted(url), self.session.max_redirects)) from None
                except (BodyError, requests.RequestException) as error:
                    # The host the failed request went to: after a redirect, another than
                    # the one that answered it.
                    sent_to = _origin_sent_to(error) or origin_of(url)
                    if isinstance(error, BodyError) or not got_no_answer(error):
                        # Its head came, or bytes no HTTP client reads (a TLS alert, no HTTP at
                        # all): the host is there, however unusable this answer.
                        answered = True
                        self.given_up.answered(sent_to)
                    else:
                        silent = sent_to
                    unsupported = socks_unsupported(error, url)
                    if unsupported is not None:
                        raise unsupported from None
                    # The reader's cut, whenever it came (awaiting the headers, a redirect, the
                    # body), says more than the error it left the HTTP client with.
                    if exchange.cut == "abandoned":
                        raise Interrupted("stopped by a signal during a download") from None
                    if exchange.cut == "deadline":
                        if not answered and silent is not None:
                            # Cut awaiting its answer: a host that never answers within
                            # KCI_DOWNLOAD_DEADLINE, shorter than KCI_TIMEOUT, times out so.
                            self.given_up.unanswered(silent, "no answer within %s"
                                                     % seconds_text(self.reader.deadline))
                        raise ObjectTooSlow("GET %s: not complete within %s (KCI_DOWNLOAD_DEADLINE); the next run "
                                            "tries again" % (redacted(url), seconds_text(self.reader.deadline))) from None
                    last = self._failure(url, error)
                else:
                    answered = True
                    if not self.policy.is_retryable(response.status_code):
                        return response
                    last, last_status = "HTTP %d" % response.status_code, response.status_code
                    retry_after = parse_retry_after(response.headers.get("Retry-After"),
                                                    sent_at=response.headers.get("Date"))
            if last_status in not_retried:
                break
            if attempt < attempts and retry_after is not None and retry_after > self.policy.max_retry_after:
                # Waiting that long for each of a crawl's files would stall the run for hours: the
                # next run asks again.
                last += ", Retry-After %s (a run waits up to %s)" % (
                    seconds_text(retry_after), seconds_text(self.policy.max_retry_after))
                break
            if attempt < attempts:
                delay = self.policy.delay(attempt, retry_after, self.rand)
                log.info("GET %s: %s; retry %d of %d in %.1fs", redacted(url), last, attempt, attempts - 1, delay)
                self.sleep(delay)
        message = "GET %s failed %s (last: %s)" % (redacted(url), "once" if attempt == 1 else "%d times" % attempt,
                                                    last)
        if last_status is not None:
            raise UpstreamAnsweredError(message, last_status)
        if not answered and silent is not None:
            self.given_up.unanswered(silent, last)
        raise UpstreamError(message)

    def _attempt(self, url: str, params, headers, exchange) -> requests.Response:
        """One attempt. A GET that got no answer on a kept-alive connection the server closed is
        asked again at once on another (`resent_if_idle_closed`), without counting as an
        attempt: that says nothing of the object, and asking again is harmless. Not once the
        exchange was cut (its deadline, a signal) or the run is stopping."""
        return resent_if_idle_closed(lambda: self._sent(url, params, headers), getattr(self.session, "pool_size", 0),
                                     "GET %s" % redacted(url), "the server",
                                     may_resend=lambda: exchange.cut is None and not self.reader.abandon())

    def _sent(self, url: str, params, headers) -> requests.Response:
        # verify= given per request: requests would otherwise let REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE from the environment replace the session's (KCI_CA_BUNDLE).
        response = self.session.get(url, params=params, headers=headers, timeout=self.timeout,
                                    verify=self.session.verify, stream=True)
        _keep_body(response, self.reader.read(response))
        return response

    def _failure(self, url: str, error: Exception) -> str:
        """What went wrong in an attempt that another may mend; a certificate nobody trusts is
        a configuration error instead."""
        if isinstance(error, requests.ConnectTimeout):
            # Named apart: that wait was the connect timeout's, which KCI_TIMEOUT caps but does not set
            # (a host behind a firewall that drops packets: 10 s an attempt, whatever KCI_TIMEOUT is).
            return "no connection within %s" % seconds_text(self.timeout[0])
        if isinstance(error, requests.Timeout):
            return "timed out after %s" % seconds_text(self.timeout[1])
        if isinstance(error, BodyError):
            return str(error)
        if certificate_refused(error):
            if "mismatch" in str(error).lower():  # OpenSSL's "Hostname mismatch" or "IP address mismatch"
                raise ConfigError("the TLS certificate of %s is not valid for %s: name the host by a name the "
                                  "certificate holds" % (redacted(url), urlsplit(url).hostname)) from None
            raise ConfigError("the TLS certificate of %s is not trusted: point KCI_CA_BUNDLE at the CA "
                              "bundle that signed it" % redacted(url)) from None
        return connection_failure(error)

    def _read_redirect_body(self, response: requests.Response, *args, **kwargs) -> None:
        """Read a redirect's body within the reader's limits: requests would read it whole,
        however long it is, before following the redirect."""
        if response.is_redirect and not response._content_consumed:
            _keep_body(response, self.reader.read(response))


class _GivenUp:
    """The count of requests in a row each origin left unanswered, and the origins a run gives up
    on (KCI_GIVE_UP_AFTER). Shared by the download threads."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._unanswered: Dict[Origin, int] = {}
        self._reasons: Dict[Origin, str] = {}

    def why(self, url: str) -> Optional[str]:
        """Why a request to `url` is not sent (checked as each is sent, redirects and retries
        included), or None when it is. The URL is read only once some host was given up on: every
        request asks, and nearly every run gives up on none."""
        if not self._reasons:
            return None
        origin = origin_of(url)
        return self._reasons.get(origin) if origin is not None else None

    def heard_from(self, url: str) -> None:
        """`url`'s host answered; read only while some host has requests left unanswered."""
        if self._unanswered:
            self.answered(origin_of(url))

    def answered(self, origin: Optional[Origin]) -> None:
        """The count of `origin` starts again (a host that has none is not counted)."""
        if origin is not None and origin in self._unanswered:
            with self._lock:
                self._unanswered.pop(origin, None)

    def unanswered(self, origin: Optional[Origin], last: str) -> None:
        if self.limit <= 0 or origin is None:
            return
        with self._lock:
            count = self._unanswered[origin] = self._unanswered.get(origin, 0) + 1
            if count < self.limit or origin in self._reasons:
                return
            shown = "%s://%s:%d" % origin
            self._reasons[origin] = ("%s left %s unanswered (last: %s), so this run asks it nothing more "
                                     "(KCI_GIVE_UP_AFTER); the next run tries again" % (shown, _in_a_row(count), last))
        log.warning("giving up on %s for this run: %s unanswered (last: %s); the objects left to fetch from it "
                    "fail at once and the next run tries them again (KCI_GIVE_UP_AFTER)", shown, _in_a_row(count), last)


def _in_a_row(count: int) -> str:
    """`count` requests in a row, in words (KCI_GIVE_UP_AFTER=1 gives up after one)."""
    return "the last %d requests in a row" % count if count > 1 else "its last request"


class _OriginGuard(BaseAdapter):
    """The session's adapter behind one last look at each request it is given to send: the
    first, and each one requests makes to follow a redirect, its URL as requests joined,
    requoted and prepared it. `refusal` judges that URL; a refused request is never sent, nor
    one to a host the run gave up on (`given_up` says why)."""

    def __init__(self, adapter: BaseAdapter, refusal: Callable[[str], Optional[str]],
                 given_up: Callable[[str], Optional[str]]):
        super().__init__()
        self.adapter = adapter
        self.refusal = refusal
        self.given_up = given_up

    def send(self, request: requests.PreparedRequest, *args, **kwargs) -> requests.Response:
        why = self.refusal(request.url)
        if why is not None:
            raise RejectedInput("GET refused: %s" % why)
        why = self.given_up(request.url)
        if why is not None:
            raise UpstreamError("GET %s not sent: %s" % (redacted(request.url), why))
        return self.adapter.send(request, *args, **kwargs)

    def close(self) -> None:
        self.adapter.close()


def _origin_sent_to(error: Exception) -> Optional[Origin]:
    """The origin of the request a requests error is about (the first or a redirect), if it names one."""
    request = getattr(error, "request", None)
    return origin_of(request.url) if request is not None and isinstance(request.url, str) else None


def _redirect_target(session: requests.Session, response: requests.Response) -> str:
    """Where requests goes next for a redirect, as it reads the Location header (re-decoded as
    UTF-8, `//host/...` given the answer's scheme, relative paths joined to the answer's URL)."""
    location = session.get_redirect_target(response) or ""
    if location.startswith("//"):
        location = "%s:%s" % (urlsplit(response.url).scheme, location)
    return urljoin(response.url, location)


def _keep_body(response: requests.Response, body: bytes) -> None:
    """Give a streamed response its body as if requests had read it (`.content`, `.text`, `.json()`)."""
    response._content = body
    response._content_consumed = True


def json_of(response: requests.Response):
    """The answer's JSON, read as JSON text is (RFC 8259 §8.1): UTF-8 whatever charset its
    Content-Type names or implies, a byte order mark ignored, bytes that are not UTF-8 replaced.
    `response.json()` would decode a page labelled `text/plain` without a charset as ISO-8859-1
    (every letter beyond ASCII garbled), and refuse one starting with a byte order mark. A body
    nested deeper than the decoder goes (it recurses once per level: RecursionError) is as
    unreadable as any other that is not JSON, and raises ValueError like it. Half a character
    escaped ("\\udc80") is replaced too, as in upstream files (surrogates.py): kept, no document
    made of the answer could be written out."""
    content = response.content
    return json_value(lone_surrogates_replaced(content.decode(json.detect_encoding(content), "replace")))
