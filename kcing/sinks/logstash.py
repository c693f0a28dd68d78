"""Deliver batches to Logstash HTTP inputs: POST JSON arrays, retry with backoff, spread over URLs."""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Dict, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from kcing.sinks import logstash_destination
from kcing.errors import BatchTooLarge, ConfigError, SinkRejected, SinkUnavailable
from kcing.http import BodyAbandoned, BodyError, BodyReader, RetryPolicy, parse_retry_after, seconds_text
from kcing.netreason import connection_failure
from kcing.secrecy import masked
from kcing.settingvalues import mask_credentials
from kcing.sinks.batching import LOGSTASH_SEPARATOR, Batch
from kcing.sinks.encoding import logstash_json
from kcing.transport import (CannotConnect, PostFailed, PostTimeout, Transport, answers_in_tls, proxy_note,
                             speaks_tls_message)
from kcing.webpage import html_page, page_title

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
# Seconds an input that failed a POST is tried only after its route's other inputs: an input
# that stopped answering would otherwise cost every other batch a timeout before the next one.
FAILING_INPUT_PAUSE = 60.0
# Logstash answers `ok`; anything near this size is not a Logstash answer.
MAX_ANSWER_BYTES = 1_000_000


# What a Logstash http input answers once it queued a batch's events: "ok" with any of the codes
# `response_code` allows, and no body with 204 alone (elk.md §1.6). A 200 without a body is a
# stub's or a proxy's answer, not the input's.
LOGSTASH_ACKNOWLEDGEMENT = b"ok"
NO_CONTENT = 204


# "Not Found" and "Method Not Allowed": a Logstash http input has no routing (elk.md §1.1), so
# these come from something else at the URL (Elasticsearch itself, a proxy without the route).
NOT_AN_INPUT = (404, 405)


def acknowledges(status: int, answer: bytes) -> bool:
    """Whether a 2xx answer is a Logstash http input's acknowledgement of the batch."""
    return answer.strip() == (b"" if status == NO_CONTENT else LOGSTASH_ACKNOWLEDGEMENT)


def _described(answer: bytes, headers) -> str:
    """A short, one-line account of an answer body, for an error message."""
    kind = (headers.get("Content-Type") or "no Content-Type").split(";")[0].strip()
    # Masked before the cut: an answer echoing the request holds its Authorization header.
    text = " ".join(masked(answer[:4096].decode("utf-8", "replace")).split())
    # A web server's or proxy's error page, said by its title: its first 60 characters are markup.
    title = page_title(text)
    if title:
        return 'an HTML page "%s" (%s)' % (title, kind)
    return "%s %r%s" % (kind, text[:60], "..." if len(text) > 60 or len(answer) > 4096 else "")


class LogstashSink:
    """Posts each batch to one of the route's Logstash inputs until one acknowledges it.

    Retrying a POST is safe only because every document carries a deterministic id and the
    pipeline writes with action `index`: a batch that was accepted but whose answer was lost
    overwrites the same documents when sent again.
    """

    name = "Logstash"
    # What a run stopped by a signal has recorded as delivered (its last line says it).
    kept_on_stop = "what Logstash acknowledged"

    def __init__(self, routes: Mapping[str, Sequence[str]], transport: Transport,
                 policy: RetryPolicy, timeout: float,
                 sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random,
                 settings: Optional[Mapping[str, str]] = None, reader: Optional[BodyReader] = None,
                 clock: Callable[[], float] = time.monotonic, stopping: Callable[[], bool] = lambda: False):
        self.routes = {route: list(urls) for route, urls in routes.items()}
        # Asked for each object the feed takes: named once, not re-read from the URLs each time.
        self._destinations = {route: logstash_destination(urls) for route, urls in self.routes.items()}
        self.transport = transport
        self.policy = policy
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self.sleep = sleep
        self.rand = rand
        # route -> the setting that names its URLs, for messages that tell what to fix
        self.settings = dict(settings or {})
        self.reader = reader or BodyReader(deadline=2 * timeout, max_bytes=MAX_ANSWER_BYTES)
        self._turn: Dict[str, int] = {route: 0 for route in routes}
        self._turn_lock = threading.Lock()  # batches are posted from more than one thread
        self.clock = clock
        # Whether the run is stopping (a signal) or ending with an error (another post's, the
        # ledger's): then nothing is retried.
        self.stopping = stopping
        self._failing: Dict[str, float] = {}  # input URL -> until when it is tried last

    # An object's documents are joined by commas, as they lie in a batch's JSON array.
    separator = LOGSTASH_SEPARATOR

    encode = staticmethod(logstash_json)

    def destination(self, kind: str) -> str:
        """What the ledger records as where objects of `kind` were delivered."""
        return self._destinations[kind]

    def destinations_key(self) -> str:
        """All the routes' inputs: where a watermark of this sink's runs applies."""
        return logstash_destination({url for urls in self.routes.values() for url in urls})

    def send(self, batch: Batch) -> None:
        """Return once an input acknowledged `batch`; raise SinkUnavailable when retries run out."""
        body = batch.body()
        errors = []
        for attempt in range(1, self.policy.attempts + 1):
            retry_after = None
            for url in self._urls_for(batch.route):
                error, wait = self._post(url, body, len(batch), batch.route)
                if error is None:
                    self._answered(url)
                    return
                self._failed(url, batch.route, error)
                errors.append(error)
                retry_after = wait if retry_after is None or (wait or 0) > retry_after else retry_after
            if attempt < self.policy.attempts:
                if self.stopping():
                    # No retry starts once the run is stopping (the next run sends the batch, under
                    # the same ids), and none is announced.
                    raise SinkUnavailable("%s batch of %d failed (%s), not retried: the run is stopping"
                                          % (batch.route, len(batch), errors[-1]))
                delay = self.policy.delay(attempt, retry_after, self.rand)
                log.warning("%s batch of %d failed (%s); retry %d of %d in %.1fs",
                            batch.route, len(batch), errors[-1], attempt, self.policy.attempts - 1, delay)
                self.sleep(delay)
        attempts = self.policy.attempts
        # The setting named: a newcomer whose Logstash is not started, or who gave it another
        # port, reads which URL to check (a route's name is kcing's word, not the user's).
        setting = self.settings.get(batch.route)
        # A proxy of the environment named too, unless the reason names it already.
        through = "" if "proxy" in errors[-1] else next(filter(None, map(proxy_note, self.routes[batch.route])), "")
        raise SinkUnavailable("Logstash unreachable: %s input%s failed %s (last: %s)%s"
                              % (batch.route, " (%s)" % setting if setting else "",
                                 "its only attempt" if attempts == 1 else "%d attempts in a row" % attempts,
                                 errors[-1], through))

    def _untrusted_because(self, url: str, error: Exception, route: str) -> str:
        """Why a certificate was refused, and what to change: the CA bundle only when the
        certificate's signer is what is unknown."""
        text = str(error).lower()
        if "mismatch" in text:  # OpenSSL's "Hostname mismatch" or "IP address mismatch"
            return ("it is not valid for %s: name the input in %s by a host name the certificate holds"
                    % (urlsplit(url).hostname, self.settings.get(route, "the route's ES_* setting")))
        return "point LS_CA_BUNDLE at the CA bundle that signed it"

    def _failure(self, url: str, error: Exception, cut: Optional[str], route: str = "") -> str:
        """Why one POST failed, for the retry log; the reader's cut, whenever it came, first."""
        if cut == "abandoned" or isinstance(error, BodyAbandoned):
            return "cut short at %s: the run is stopping" % url
        if cut == "deadline":
            return "answer from %s not complete within %s" % (url, seconds_text(self.reader.deadline))
        if isinstance(error, PostTimeout) and error.connecting:
            # Named apart: the wait was the connect timeout's, which ES_TIMEOUT caps but does not set.
            return "no connection to %s within %s" % (url, seconds_text(self.timeout[0]))
        if isinstance(error, PostTimeout):
            return "timed out after %s at %s" % (seconds_text(self.timeout[1]), url)
        if isinstance(error, BodyError):
            return "answer from %s %s" % (url, error)
        if isinstance(error, CannotConnect):
            if error.untrusted_certificate:
                raise ConfigError("the TLS certificate of Logstash at %s is not trusted: %s"
                                  % (url, self._untrusted_because(url, error, route))) from None
            if error.client_certificate_required:
                raise ConfigError("Logstash at %s requires a TLS client certificate, which kcing does not send: set "
                                  "ssl_client_authentication to none or optional on that http input" % url) from None
        if answers_in_tls(url, error):  # an http input with TLS on hangs up on plain HTTP
            raise ConfigError(speaks_tls_message(self.settings.get(route, "the route's ES_* setting"), url,
                                                 "Logstash")) from None
        if isinstance(error, CannotConnect):
            return "cannot connect to %s (%s)" % (url, connection_failure(error))
        return "request to %s failed (%s)" % (url, connection_failure(error))

    def _urls_for(self, route: str):
        """The route's URLs, starting with the next in turn, so batches spread across inputs;
        those that failed within FAILING_INPUT_PAUSE come after the others."""
        urls = self.routes[route]
        with self._turn_lock:
            start = self._turn[route]
            self._turn[route] = (start + 1) % len(urls)
            now = self.clock()
            failing = {url for url in urls if self._failing.get(url, now) > now}
        turn = urls[start:] + urls[:start]
        return [url for url in turn if url not in failing] + [url for url in turn if url in failing]

    def _failed(self, url: str, route: str, error: str) -> None:
        """Try `url` after the route's other inputs for a while; say so when it starts."""
        if len(self.routes[route]) < 2:
            return  # nothing to put before it: the retry messages tell what happens
        with self._turn_lock:
            now = self.clock()
            was_failing = self._failing.get(url, now) > now
            self._failing[url] = now + FAILING_INPUT_PAUSE
        if not was_failing:
            log.warning("%s input %s failed (%s): for %s it is tried only when the route's other inputs fail",
                        self.settings.get(route, route), url, error, seconds_text(FAILING_INPUT_PAUSE))

    def _answered(self, url: str) -> None:
        if url in self._failing:
            with self._turn_lock:
                self._failing.pop(url, None)

    def _post(self, url: str, body: bytes, count: int, route: str = ""):
        """POST once. Return (None, None) on success, or (error text, Retry-After seconds).

        A POST that got no answer on a kept-alive connection is sent again at once on another
        (urllib3 dropped that one), without counting as an attempt: the input, or a proxy before
        it, closed the idle connection as the batch was written, which is no sign of trouble.
        Sending a batch twice is harmless (see the class). Each such connection is dropped, so
        after at most as many as the pool keeps the POST goes out on a new one, and a failure
        there is a failed attempt."""
        resends = getattr(self.transport, "pool_size", 0)
        for resend in range(resends + 1):
            started = time.monotonic()
            with self.reader.exchange() as exchange:
                try:
                    # The transport never follows a redirect: a POST answered 301/302/303 and repeated
                    # as a GET without the body would get a 200 that looks like an acknowledgement.
                    response = self.transport.post(url, body, "application/json", self.timeout)
                    # The answer is read under the reader's overall deadline, which began when the
                    # batch was sent: an input trickling its headers or its answer forever, or
                    # cutting it short, is a failed attempt like a timeout.
                    answer = self.reader.read(response)
                except CannotConnect as error:
                    if (getattr(error, "stale_connection", False) and resend < resends
                            and exchange.cut is None and not self.reader.abandon()):
                        log.debug("POST %s: no answer on a kept-alive connection, which the input had "
                                  "closed; sending the batch again on another", url)
                        continue
                    return self._failure(url, error, exchange.cut, route), None
                except (PostTimeout, BodyError, PostFailed) as error:
                    return self._failure(url, error, exchange.cut, route), None
            break
        status = response.status_code
        log.debug("POST %s [status:%s duration:%.3fs docs:%d bytes:%d]",
                  url, status, time.monotonic() - started, count, len(body))
        if 200 <= status < 300:
            if not response.request_sent_whole:
                # An input queues a batch's events once it has read the whole body (elk.md §1.2):
                # a success for a batch it did not take whole (a proxy or stub that answers first,
                # then drops the connection) acknowledges nothing, and the batch goes again.
                return "%s answered %d before it had taken the whole batch" % (url, status), None
            if not acknowledges(status, answer):
                # Not Logstash's answer: a web server or a proxy's page says nothing of the batch,
                # and taking it as an acknowledgement would record as delivered what went nowhere.
                raise ConfigError("%s answered %d with %s instead of a Logstash http input's \"ok\": set %s to the "
                                  "URL of the input" % (url, status, _described(answer, response.headers),
                                                        self.settings.get(route, "the route's ES_* setting")))
            return None, None
        if 300 <= status < 400:
            location = response.headers.get("Location")
            raise ConfigError("Logstash at %s answered %d (redirect%s): a batch is never re-posted to another "
                              "URL; set %s to the URL that accepts it"
                              % (url, status, " to %s" % mask_credentials(location) if location else "",
                                 self.settings.get(route, "the route's ES_* setting")))
        if status in NOT_AN_INPUT:
            # The http input takes any method on any path: what answers so is not one.
            raise ConfigError("%s answered %d with %s, which a Logstash http input never answers: set %s to the URL "
                              "of the input" % (url, status, _described(answer, response.headers),
                                                self.settings.get(route, "the route's ES_* setting")))
        if status == 413:
            raise BatchTooLarge(url, len(body))
        if status == 401 and not self.transport.sends_credentials(url):
            # Nothing to check when none were sent: the input wants some (its user and password).
            raise ConfigError("Logstash at %s asks for credentials (401): set LS_USER and LS_PASSWORD%s"
                              % (url, proxy_note(url)))
        if status == 403 and not self.transport.sends_credentials(url):
            # An input never answers 403: a proxy before it, refusing a request that had none to show.
            raise ConfigError("Logstash at %s refused the request (403) without credentials (none are set): set "
                              "LS_USER and LS_PASSWORD if what answers there asks for them%s" % (url, proxy_note(url)))
        if status in (401, 403):
            raise ConfigError("Logstash at %s refused the request (%d): check LS_USER and LS_PASSWORD%s"
                              % (url, status, proxy_note(url)))
        if status == 407:  # never Logstash's: a proxy on the way wants credentials of its own
            raise ConfigError("a proxy asks for credentials (407) on the way to Logstash at %s: give them in the proxy's "
                              "URL (http://user:password@proxy:port)%s" % (url, proxy_note(url)))
        if self.policy.is_retryable(status):
            headers = response.headers
            return "%s answered %d" % (url, status), parse_retry_after(headers.get("Retry-After"),
                                                                       sent_at=headers.get("Date"))
        text = masked(answer[:4096].decode("utf-8", "replace")).strip()
        text = (html_page(text) or text)[:200]
        raise SinkRejected("Logstash at %s rejected a batch with %d: %s" % (url, status, text or "no reason given"))
