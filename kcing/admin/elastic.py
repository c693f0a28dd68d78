"""The Elasticsearch client for admin commands (setup_es, drp), and its errors in kcing's terms.

kcing pins the 8.x client: it sends `compatible-with=8`, which Elasticsearch 8 and 9 both accept,
whereas a 9.x client is refused by every Elasticsearch 8 (elk.md §4.1).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

import elasticsearch
from elastic_transport import Transport, Urllib3HttpNode
from elastic_transport.client_utils import DEFAULT
from elasticsearch import (
    ApiError, AuthenticationException, AuthorizationException, ConnectionError, ConnectionTimeout,
    Elasticsearch, ElasticsearchWarning, SSLError, SerializationError, TransportError, UnsupportedProductError,
)

from kcing.digits import ascii_digits
from kcing.errors import ConfigError, ElasticsearchError, KcingError, kept_short
from kcing.http import (CHUNK, USER_AGENT, BodyTooLarge, RetryPolicy, final_answers_only, joined_within,
                        json_value, parse_retry_after, seconds_text, warn_cleartext_credentials)
from kcing.secrecy import masked
from kcing.netreason import connection_failure
from kcing.overdue import Overdue, deadline
from kcing.transport import BadCaBundle, answers_in_tls, basic_auth, speaks_tls_message, tls_context
from kcing.webpage import html_page

log = logging.getLogger(__name__)

# Connection errors are asked again this many times at once, 429/502/503/504 after a backoff
# wait (_PatientTransport).
MAX_RETRIES = 2
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
SUPPORTED_MAJORS = (8, 9)
# The largest answer taken: kcing asks for little (an _mget of ids, kcing's templates and index
# names, filtered), and a whole answer is held in memory at once.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_REASON_LIMIT = 300


class AnswerTooLarge(TransportError):
    """An answer larger than MAX_ANSWER_BYTES. A TransportError that is no connection error nor
    timeout, which the transport does not retry: the same answer would come again."""


class UnexpectedAnswer(TransportError):
    """A 2xx answer of Elasticsearch that is not the JSON kcing asked for (`unexpected_answer`);
    not retried, as AnswerTooLarge."""


class CredentialsAsked(AuthenticationException):
    """A 401 to a request that carried no credentials (none are set): there is nothing to check,
    only to set, whoever answered it (Elasticsearch, or a proxy asking for its own in front of it)."""


class DeniedWithoutCredentials(AuthorizationException):
    """A 403 to a request that carried no credentials (none are set): a proxy's refusal, or a
    node's to anonymous access, not the privileges of a user kcing was given."""


class Redirected(TransportError):
    """A 3xx answer, taken before the client reads its body: a redirect's body, of whatever type
    (none, text, HTML), would otherwise be an unreadable answer rather than the setting to fix."""

    def __init__(self, status: int, location: Optional[str]):
        super().__init__("HTTP %d to %s" % (status, location))
        self.status, self.location = status, location


class _TooLarge(BaseException):
    """Raised through the node's own `except Exception`, which would make a connection error of
    it (retried), to become AnswerTooLarge in _OverallDeadlineNode.perform_request."""


class _WholeAnswer:
    """What the node reads of urllib3's response (status, headers, data), the body already read."""

    def __init__(self, status: int, headers, data: bytes):
        self.status = status
        self.headers = headers
        self.data = data


class _BoundedPool:
    """The node's urllib3 pool, each answer of which is read within `max_bytes`: urllib3 would
    otherwise read a body of any length into memory before the node sees it (an endless body on
    loopback is gigabytes before ES_REQUEST_DEADLINE cuts it). Everything else goes to the pool."""

    def __init__(self, pool, max_bytes: int):
        self._pool = pool
        self._max_bytes = max_bytes

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def urlopen(self, method, url, **kwargs):
        kwargs["preload_content"] = False
        response = self._pool.urlopen(method, url, **kwargs)
        try:
            # A HEAD's Content-Length is that of the body a GET would have: none comes.
            declared = response.headers.get("Content-Length", "") if method != "HEAD" else ""
            data = joined_within(response.stream(CHUNK, decode_content=True), self._max_bytes, declared)
        except BodyTooLarge as error:
            response.close()  # the rest is never read: the connection cannot serve another request
            raise _TooLarge(str(error)) from None
        except BaseException:
            response.close()
            raise
        response.release_conn()
        return _WholeAnswer(response.status, response.headers, data)


class _OverallDeadlineNode(Urllib3HttpNode):
    """The client's node, each request of which must be answered whole within `overall`
    seconds (ES_REQUEST_DEADLINE): the timeout alone bounds each wait for the next bytes, however
    slowly they come. A request given a timeout of its own, one the server holds (the health
    wait, told what is left of --wait and a margin), takes that long at most instead: a
    `setup_es --wait 1` is not held a whole request's deadline by a node trickling its answer."""

    overall = 60.0
    max_answer_bytes = MAX_ANSWER_BYTES

    def __init__(self, config):
        super().__init__(config)
        self.pool = _BoundedPool(final_answers_only(self.pool), self.max_answer_bytes)

    def perform_request(self, method, target, body=None, headers=None, request_timeout=DEFAULT):
        limit = self.overall
        if request_timeout is not DEFAULT and request_timeout:
            limit = request_timeout
        try:
            with deadline(limit):
                answer = super().perform_request(method, target, body=body, headers=headers,
                                                 request_timeout=request_timeout)
        except Overdue:
            # A timeout to the transport, which does not retry one (retry_on_timeout is off).
            # The setting is named where it set the limit (the health wait's comes from --wait).
            setting = " (ES_REQUEST_DEADLINE)" if limit == self.overall else ""
            raise ConnectionTimeout("no whole answer within %s%s" % (seconds_text(limit), setting)) from None
        except _TooLarge as error:
            raise AnswerTooLarge("an answer larger than kcing takes (%s)" % error) from None
        if 300 <= answer.meta.status < 400:
            raise Redirected(answer.meta.status, answer.meta.headers.get("Location"))
        if answer.meta.status in (401, 403) and not any(name.lower() == "authorization" for name in headers or {}):
            if answer.meta.status == 401:
                raise CredentialsAsked("HTTP 401 to a request without credentials", answer.meta, answer.body)
            # A block on the cluster or an index is no one's privileges: the client's error, as ever.
            envelope = _json_or_none(answer.body)
            if body_error_type(envelope) != "cluster_block_exception":
                raise DeniedWithoutCredentials("HTTP 403 to a request without credentials", answer.meta,
                                               answer.body if envelope is None else envelope)
        why = unexpected_answer(method, target, answer.meta.status, answer.meta.headers.get("X-Elastic-Product"),
                                answer.body, answer.meta.headers.get("Content-Type") or "")
        if why:
            raise UnexpectedAnswer(why)
        return answer


class _PatientTransport(Transport):
    """elastic-transport's Transport, which asks again at once, asking again after a wait.

    A node answers 429 when a queue of its is full or a circuit breaker tripped, and a proxy in
    front of it 502/503/504 while it restarts: asked again at once, it answers the same, and the
    command failed for a moment's load. Here such an answer is asked again after a capped
    exponential backoff from `policy.base` (ES_RETRY_BACKOFF), or after its `Retry-After` (up
    to 120 s), MAX_RETRIES times. A 429 for an index block (a full disk's flood-stage block) or
    a PERMANENT circuit breaker is answered at once: no wait lifts it. Connection errors are
    still asked again at once by the transport, and a timeout not at all: the deadline is the
    longest a question may take. The waits sleep in the command's main thread, where a signal
    ends them as it ends a request."""

    policy = RetryPolicy(attempts=MAX_RETRIES + 1)

    def perform_request(self, method, target, **kwargs):
        kwargs["retry_on_status"] = ()
        # A request given fewer retries of its own (setup_es's health wait, which has a loop and
        # a deadline of its own, none) gets no more.
        given = kwargs.get("max_retries", DEFAULT)
        attempts = self.policy.attempts if given is DEFAULT else min(self.policy.attempts, given + 1)
        attempt = 1
        while True:
            response = super().perform_request(method, target, **kwargs)
            status = response.meta.status
            if status not in RETRIED_STATUSES or attempt >= attempts or no_wait_helps(response.body):
                return response
            headers = response.meta.headers
            asked = parse_retry_after(headers.get("Retry-After"), sent_at=headers.get("Date"))
            wait = self.policy.delay(attempt, asked)
            log.info("%s %s: HTTP %d; retry %d of %d in %.1fs", method, target.split("?", 1)[0], status, attempt,
                     attempts - 1, wait)
            time.sleep(wait)
            attempt += 1


def no_wait_helps(body) -> bool:
    """Whether an error answer says asking again later would be answered the same: an index
    block (a full disk's flood-stage block, answered 429), or a circuit breaker Elasticsearch
    calls PERMANENT (429 too: the request is larger than the memory it may ever take, which an
    operator has to change)."""
    kind = body_error_type(body)
    if kind == "cluster_block_exception":
        return True
    return kind == "circuit_breaking_exception" and str(body["error"].get("durability", "")).upper() == "PERMANENT"


def unexpected_answer(method: str, target: str, status: int, product: Optional[str], body: bytes,
                      content_type: str = "") -> str:
    """Why a successful answer of Elasticsearch is not one to read, or "".

    Every request kcing makes is answered with a JSON object, but a `_cat` one (asked for JSON),
    answered with an array: anything else (an HTML page, JSON null, a string) would be read as an
    empty answer (drp deleting nothing and exiting 0) or end the command with an internal error.
    An answer without Elasticsearch's product header is left to the client, which says that what
    answered is not Elasticsearch; a HEAD has no body. So is JSON labelled as text (`text/plain`,
    which Elasticsearch never sends for JSON, but a proxy rewriting its answers may): the client
    hands it over as a string."""
    if method == "HEAD" or not 200 <= status < 300 or product != "Elasticsearch":
        return ""
    array = target.split("?", 1)[0].startswith("/_cat/")
    body = body.lstrip()
    kind = "array" if array else "object"
    if body[:1] == (b"[" if array else b"{"):
        mimetype = content_type.split(";", 1)[0].strip().lower()
        if mimetype.startswith("text/"):
            return "a JSON %s labelled %s, not application/json" % (kind, _one_line(mimetype))
        return ""
    start = body[:40].decode("utf-8", "replace")
    return "not a JSON %s (%s)" % (kind, _one_line(repr(start)) if start else "no body")


_warnings_logged = threading.Lock()
_logging_warnings = False


def log_server_warnings() -> None:
    """Log each `Warning` header Elasticsearch answers with as one warning line.

    The client turns them into Python warnings (ElasticsearchWarning), which Python prints on
    stderr as two lines quoting kcing's own source (`templates.py:283: ElasticsearchWarning:
    ...` and the line of code). A node answers so, for instance, when a legacy template matches
    the patterns of a template kcing installs. Other warnings are shown as Python shows them;
    a warning repeated from one place is still shown once, as Python's default filter does."""
    global _logging_warnings
    with _warnings_logged:
        if _logging_warnings:
            return
        shown_otherwise = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if isinstance(category, type) and issubclass(category, ElasticsearchWarning):
                log.warning("Elasticsearch warns: %s", _one_line(str(message)))
            else:
                shown_otherwise(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        _logging_warnings = True


def make_client(settings) -> Elasticsearch:
    """An Elasticsearch client for ES_HOST with the configured credentials and CA bundle.

    Each wait for the next bytes of an answer may last as long as the whole request may
    (ES_REQUEST_DEADLINE): a shorter one of the client's own would cut a busy node working on a
    request (a delete of many indices, a large _mget) before the time the setting gives it, and
    raising the setting would not help. The deadline, started first, is what ends a silent one."""
    log_server_warnings()
    request_timeout = settings.ES_REQUEST_DEADLINE
    options = {
        "hosts": [client_url(settings.ES_HOST)],
        "node_class": type("OverallDeadlineNode", (_OverallDeadlineNode,),
                           {"overall": settings.ES_REQUEST_DEADLINE}),
        "request_timeout": request_timeout,
        "transport_class": type("PatientTransport", (_PatientTransport,),
                                {"policy": RetryPolicy(attempts=MAX_RETRIES + 1, base=settings.ES_RETRY_BACKOFF)}),
        "max_retries": MAX_RETRIES,
        "retry_on_timeout": False,
        "headers": {"User-Agent": USER_AGENT},
    }
    if settings.ES_API_KEY:
        if settings.ES_USER or settings.ES_PASSWORD:
            raise ConfigError("set either ES_API_KEY or ES_USER/ES_PASSWORD, not both")
        # The encoded key (base64, as Kibana and the create-API-key answer give it), or its id and
        # key as `id:api_key` (as Logstash and Beats take them), which the client encodes.
        key_id, colon, key = settings.ES_API_KEY.partition(":")
        options["api_key"] = (key_id, key) if colon else settings.ES_API_KEY
        warn_cleartext_credentials("the Elasticsearch API key (ES_API_KEY)", {"ES_HOST": [settings.ES_HOST]})
    elif settings.ES_USER or settings.ES_PASSWORD:
        if not (settings.ES_USER and settings.ES_PASSWORD):
            raise ConfigError("ES_USER and ES_PASSWORD must be set together")
        # In UTF-8, as Elasticsearch reads it (its 401 says charset="UTF-8"): the client's own
        # basic_auth takes ASCII alone, and refused a password such as "пароль" as a bad ES_HOST.
        options["headers"]["Authorization"] = basic_auth(settings.ES_USER, settings.ES_PASSWORD)
        warn_cleartext_credentials("the Elasticsearch password (ES_PASSWORD)", {"ES_HOST": [settings.ES_HOST]})
    if settings.ES_CA_BUNDLE:
        if urlsplit(settings.ES_HOST).scheme != "https":
            # The client refuses TLS options for http://; a bundle set for other hosts is harmless here.
            log.warning("ES_CA_BUNDLE is ignored: ES_HOST %s is not https", settings.ES_HOST)
        elif os.path.isdir(settings.ES_CA_BUNDLE):
            # A directory of hashed certificates (`openssl rehash`), as the other *_CA_BUNDLE take
            # (the client reads `ca_certs` as one file): loaded as the Logstash transport loads it,
            # trusted with the system store, as a bundle file is.
            try:
                context = tls_context(settings.ES_CA_BUNDLE)
            except BadCaBundle as error:
                raise ConfigError("ES_CA_BUNDLE %s" % error) from None
            context.load_default_certs()
            options["ssl_context"] = context
        else:
            options["ca_certs"] = settings.ES_CA_BUNDLE
    try:
        return Elasticsearch(**options)
    except ValueError as error:
        raise ConfigError("cannot use ES_HOST %s: %s" % (settings.ES_HOST, error)) from None


def client_url(url: str) -> str:
    """ES_HOST as the client takes it: with its port. The client refuses an http URL without one
    ("URL must include ... 'port'"), where a URL without a port means its scheme's, as everywhere else."""
    parts = urlsplit(url)
    if parts.port is not None:
        return url
    host = parts.hostname if ":" not in parts.hostname else "[%s]" % parts.hostname
    return urlunsplit((parts.scheme, "%s:%d" % (host, 443 if parts.scheme == "https" else 80), parts.path, "", ""))


def translate(error: Exception, host: str, action: str) -> KcingError:
    """The kcing error for a client error raised while doing `action` against `host`.

    Messages are one line and never carry credentials: only the host, the status, and the
    reason Elasticsearch gave.
    """
    where = "Elasticsearch at %s" % host
    if isinstance(error, UnsupportedProductError):
        # A success without the header: most often another server at that port (a Logstash http
        # input answers "ok" to any path), said as the 404 of one is, with the setting to fix.
        return ConfigError("ES_HOST %s is not Elasticsearch: it answered without Elasticsearch's X-Elastic-Product "
                           "header while %s (a Logstash input's port, another server's, or OpenSearch, which is not "
                           "supported): set ES_HOST to the address Elasticsearch answers at" % (host, action))
    if isinstance(error, AuthenticationException):
        if isinstance(error, CredentialsAsked) or reason_of(error).startswith("missing authentication"):
            # Elasticsearch's words for a request that carried no credentials (security is on by
            # default since 8.0), or a proxy's 401 page (nginx's auth_basic): none were set, so
            # there is nothing to check, only to set.
            return ConfigError("%s asks for credentials (401) while %s: set ES_USER and ES_PASSWORD, or ES_API_KEY"
                               % (where, action))
        return ConfigError("%s refused the credentials (401) while %s: check ES_USER/ES_PASSWORD or ES_API_KEY"
                           % (where, action))
    if isinstance(error, AuthorizationException) and error_type(error) != "cluster_block_exception":
        if isinstance(error, DeniedWithoutCredentials):
            return ConfigError("%s denied access (403) while %s: %s; no credentials are set (ES_USER and "
                               "ES_PASSWORD, or ES_API_KEY)" % (where, action, reason_of(error)))
        return ConfigError("%s denied the configured user (403) while %s: %s" % (where, action, reason_of(error)))
    # A 403 cluster_block_exception is a block on the cluster or an index (read-only, or the disk
    # flood-stage watermark's read_only_allow_delete), not the user's privileges: Elasticsearch
    # refusing, said as such (exit 3), with the block it names.
    if isinstance(error, Redirected):
        return _redirect(error.status, error.location, where, action)
    if isinstance(error, ApiError) and answered_by_another_server(error.meta.status, error.meta.headers):
        return ConfigError("ES_HOST %s is not Elasticsearch: it answered HTTP %d without Elasticsearch's "
                           "X-Elastic-Product header while %s (Kibana's port, or another server's?): set ES_HOST "
                           "to the address Elasticsearch answers at" % (host, error.meta.status, action))
    if isinstance(error, ApiError):
        return _api_error(error, where, action)
    if isinstance(error, SSLError):
        return ConfigError("TLS to %s failed: %s (check ES_HOST's scheme and ES_CA_BUNDLE)"
                           % (where, _transport_reason(error)))
    if isinstance(error, AnswerTooLarge):
        return ElasticsearchError("%s sent %s while %s" % (where, _transport_reason(error), action))
    if isinstance(error, ConnectionTimeout):
        return ElasticsearchError("%s did not answer in time while %s (%s)" % (where, action, _transport_reason(error)))
    if isinstance(error, ConnectionError):
        if answers_in_tls(host, error, direct=True):  # the client reads no proxy variable
            # Not an outage to wait out: ES_HOST's scheme is to fix.
            return ConfigError(speaks_tls_message("ES_HOST", host, "Elasticsearch"))
        return ElasticsearchError("cannot reach %s: %s" % (where, connection_failure(error)))
    if isinstance(error, (SerializationError, UnexpectedAnswer)):
        # The client's message quotes the whole body (megabytes, from a proxy): its start only.
        return ElasticsearchError("%s sent an unreadable answer while %s: %s" % (where, action, _one_line(str(error))))
    if isinstance(error, TransportError):
        return ElasticsearchError("%s failed while %s: %s" % (where, action, _transport_reason(error)))
    raise TypeError("not an Elasticsearch client error: %r" % (error,))


def answered_by_another_server(status: int, headers) -> bool:
    """Whether a refusal came from something that is not Elasticsearch. Elasticsearch sends its
    X-Elastic-Product header with every answer, its errors too, but a 401 to a request it could
    not authenticate (never a 404 or 405); the client checks it on successful answers only. A 404 or 405 without it (Kibana's 404 for `/_cluster/health`,
    ES_HOST set to Kibana's port; a web server's, or a proxy's routing another path) says that
    no Elasticsearch answers at ES_HOST: a setting to fix, not Elasticsearch refusing. Other
    statuses a proxy in front of the cluster may answer itself (400, 429, 5xx) stay refusals."""
    return status in (404, 405) and (headers or {}).get("X-Elastic-Product") != "Elasticsearch"


def _api_error(error: ApiError, where: str, action: str) -> KcingError:
    status = error.meta.status
    if 300 <= status < 400:
        return _redirect(status, error.meta.headers.get("Location"), where, action)
    kind = error_type(error)
    if kind == "media_type_header_exception":
        return compatibility_refused(where, reason_of(error))
    return ElasticsearchError("%s refused a request while %s (%d %s): %s"
                              % (where, action, status, kind or "error", reason_of(error)))


# How a node says which `compatible-with` versions it takes: its own major and the one before.
_ACCEPTED_VERSIONS = re.compile(r"version must be either version ([0-9]+) or ([0-9]+)")


def compatibility_refused(where: str, reason: str) -> ConfigError:
    """The error for a node that refused the client's `compatible-with` version: a server older
    than kcing supports (Elasticsearch 7 takes 7 or 6), which no client kcing runs with can
    reach, or an elasticsearch-py of another major installed in kcing's place."""
    accepted = _ACCEPTED_VERSIONS.search(reason)
    server_major = max(int(number) for number in accepted.groups()) if accepted else None
    if server_major is not None and server_major < min(SUPPORTED_MAJORS):
        return ConfigError("%s is version %d (it refused kcing's requests: %s); kcing needs Elasticsearch %s"
                           % (where, server_major, reason, " or ".join(str(m) for m in SUPPORTED_MAJORS)))
    # The server refused the client's `compatible-with`: a client/server major mismatch.
    return ConfigError("%s refused elasticsearch-py %s (%s): use an elasticsearch-py whose major version "
                       "the server accepts (8.x works with Elasticsearch 8 and 9)"
                       % (where, elasticsearch.__versionstr__, reason))


def _redirect(status: int, location: Optional[str], where: str, action: str) -> ConfigError:
    # Elasticsearch sends none: something in front of it does (a proxy sending http to https,
    # or to its login page). A setting to fix, as a redirect from Kibana or Logstash is.
    return ConfigError("%s answered HTTP %d, a redirect to %s, while %s: set ES_HOST to the address "
                       "Elasticsearch answers at itself (kcing follows no redirect)"
                       % (where, status, _one_line(location) if location else "nowhere (no Location)", action))


def error_type(error: ApiError) -> str:
    """The `error.type` of an Elasticsearch error envelope ("" when the body has none)."""
    return body_error_type(error.body)


def _json_or_none(body):
    """An answer's body read as JSON, or None when it is none (a proxy's page, nothing)."""
    try:
        return json_value(body) if isinstance(body, (bytes, str)) else body
    except ValueError:
        return None


def body_error_type(body) -> str:
    """The `error.type` of an Elasticsearch error answer's body ("" when it has none)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("type", ""))
    return ""


# The answers of a server that has no such request at all: no route (404), no handler for the
# URI (400, a node's own words for one it does not know), the method not allowed, or not
# implemented. Said by a proxy that exposes part of the API, or by a test double made to the list
# of requests elk.md names (§3.8), which leaves out `_resolve/index` and an index's `_settings`:
# the requests kcing makes only to say more (what a missing document's index is, which expired
# index a block would keep) go without them.
NOT_SERVED = (400, 404, 405, 501)


def not_served(error: Exception) -> bool:
    """Whether `error` is an answer saying the request is not served there (NOT_SERVED); a
    request of a node's that names a missing index cannot say so: they ask `ignore_unavailable`."""
    return isinstance(error, ApiError) and error.meta.status in NOT_SERVED


def reason_of(error: ApiError) -> str:
    """The most specific reason in an error envelope, shortened to one line."""
    body = error.body
    reason = ""
    if isinstance(body, dict):
        envelope = body.get("error")
        if isinstance(envelope, dict):
            reason = _deepest_reason(envelope)
        elif envelope:
            reason = str(envelope)
    elif body is None or body == "":
        # An answer without a body (a proxy's 502 or 503 in front of the node): the client's
        # message is then the body as Python writes it, "None".
        return "no reason given (an empty answer)"
    else:
        # A proxy's or web server's error page before the node (nginx's "502 Bad Gateway"),
        # which Elasticsearch never answers: said by its title, not its markup.
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        reason = html_page(text) or text
    return _one_line(str(reason or error.message))


def _deepest_reason(envelope: dict) -> str:
    """The reason at the end of an error's `caused_by` chain that has one: the actionable part
    (a media_type_header_exception's cause says which header; a refused template's innermost
    cause names the mapping parameter, where the outer ones say only "invalid")."""
    reason = envelope.get("reason") or ""
    cause = envelope.get("caused_by")
    while isinstance(cause, dict):  # decoded JSON: a chain as deep as the answer, never a loop
        reason = cause.get("reason") or reason
        cause = cause.get("caused_by")
    return reason


def _transport_reason(error: TransportError) -> str:
    return _one_line(str(error.message))


def _one_line(text: str) -> str:
    # Masked before the cut: a proxy's page echoing the request quotes its Authorization header.
    text = " ".join(masked(text).split())
    return text if len(text) <= _REASON_LIMIT else text[:_REASON_LIMIT] + "..."


@contextmanager
def elastic_errors(host: str, action: str) -> Iterator[None]:
    """Turn client errors raised inside the block into kcing errors naming `action`."""
    try:
        yield
    except (ApiError, TransportError) as error:
        raise translate(error, host, action) from None


def server_version(client: Elasticsearch, host: str) -> str:
    """The server's version number; a ConfigError if kcing does not support that major."""
    with elastic_errors(host, "reading the server version"):
        info = client.info()
    version = info.get("version")
    number = str(version.get("number", "")) if isinstance(version, dict) else ""
    major = _major(number)
    if major not in SUPPORTED_MAJORS:
        raise ConfigError("Elasticsearch at %s is version %s; kcing needs Elasticsearch %s"
                          % (host, kept_short(number) or "unknown", " or ".join(str(m) for m in SUPPORTED_MAJORS)))
    return kept_short(number)  # printed: the server's text, whatever it holds after its major


def _major(number: str) -> Optional[int]:
    head = number.split(".", 1)[0]
    return int(head) if ascii_digits(head) else None
