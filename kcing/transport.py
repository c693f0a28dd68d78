"""POST bodies to a few fixed URLs over urllib3's connection pools.

A requests.Session works out, for every request, what depends only on the URL: it merges headers
and cookies, requotes the URL, looks up ~/.netrc and the proxy environment, then builds a Response.
For a Logstash batch of 360 KB that costs more CPU than sending it, and a backlog run posts tens
of thousands of batches to a handful of inputs. Here those decisions are made once per URL, the way
requests makes them (its own helpers decide proxies, netrc and URL normalisation), and each POST
is one call into the URL's pool.
"""
from __future__ import annotations

import logging
import netrc
import os
import socket
import ssl
import threading
from base64 import b64encode
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import urllib3
from requests.adapters import SOCKSProxyManager
from requests.exceptions import RequestException
from requests.models import PreparedRequest
from requests.utils import (NETRC_FILES, default_headers, get_auth_from_url, get_environ_proxies,
                            prepend_scheme_if_needed, select_proxy, urldefragauth)
from urllib3.exceptions import (ClosedPoolError, ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ProxyError, ReadTimeoutError, SSLError)
from urllib3.util.ssl_ import create_urllib3_context

from kcing.errors import ConfigError
from kcing.http import (USER_AGENT, certificate_refused, client_certificate_required, sending_ends, sending_starts,
                        sent_on_kept_alive_connection, socks_unsupported, watch_pools)
from kcing.netreason import connection_failure
from kcing.secrecy import mask_credentials_too

log = logging.getLogger(__name__)


class PostTimeout(Exception):
    """No connection, or no answer, within the timeout. `connecting`: no connection was made, a
    wait bounded by the connect timeout, not the read timeout."""

    def __init__(self, message: str, connecting: bool = False):
        super().__init__(message)
        self.connecting = connecting


class CannotConnect(Exception):
    """The connection failed or broke before an answer: refused, reset, closed, unknown host, TLS
    or proxy failure. The urllib3 error is the cause, for netreason to find the reason in."""

    def __init__(self, error: Exception, kept_alive: bool = False):
        super().__init__(str(error))
        # Retrying cannot help a certificate nobody trusts; the CA bundle setting can.
        self.untrusted_certificate = certificate_refused(error)
        # Nor can it help a server that wants a client certificate: kcing has none to send.
        self.client_certificate_required = client_certificate_required(error)
        # The request went out on a kept-alive connection and it ended without an answer: the
        # server (or a proxy) had most likely closed it while idle, just as the request was
        # written. A new connection is worth trying at once (Transport.post says more).
        self.stale_connection = kept_alive and isinstance(error, (ProtocolError, SSLError))


class PostFailed(Exception):
    """The request could not be made at all: an unusable proxy setting, say."""


class BadCaBundle(ValueError):
    """The CA bundle holds no certificate OpenSSL can load."""


def tls_context(ca_bundle: str = "", system_store: bool = True) -> ssl.SSLContext:
    """Certificate and hostname verification, always on, against `ca_bundle` (a PEM file or a
    directory of hashed certificates) or else the system store (OpenSSL's default paths, which
    SSL_CERT_FILE and SSL_CERT_DIR override). Loaded once, here: a bad bundle is found at start.
    `system_store=False` leaves the system store to be loaded later (`load_default_certs`)."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    try:
        if not ca_bundle:
            if system_store:
                context.load_default_certs()
        elif os.path.isdir(ca_bundle):
            context.load_verify_locations(capath=ca_bundle)
        else:
            context.load_verify_locations(cafile=ca_bundle)
    except (ssl.SSLError, OSError) as error:
        raise BadCaBundle("%s holds no CA certificate that can be loaded (%s)"
                          % (ca_bundle, getattr(error, "reason", None) or error)) from None
    return context


def check_ca_bundle(name: str, bundle: str) -> None:
    """A CA bundle setting (KCI_CA_BUNDLE, KB_CA_BUNDLE) that holds no certificate is refused now,
    as LS_CA_BUNDLE is by the Transport: requests would find it only at the first https request,
    which would fail as if the host were down ("connection failed"), without a word of the setting."""
    if bundle:
        try:
            tls_context(bundle, system_store=False)
        except BadCaBundle as error:
            raise ConfigError("%s %s" % (name, error)) from None


# What a server closing a plain HTTP request unanswered leaves (netreason's words).
_HUNG_UP = ("connection closed without an answer", "connection reset by the peer")
# Seconds the TLS handshake of `answers_in_tls` may take.
TLS_PROBE_TIMEOUT = 3.0


def answers_in_tls(url: str, error: BaseException, direct: bool = False) -> bool:
    """Whether a request to an http:// `url` that was closed or reset unanswered (`error`) went
    to a port that speaks TLS: Elasticsearch 8 serves HTTPS by default, and closes plain HTTP
    without a word, which read as an outage to wait out. A request sent through a proxy of the
    environment is left alone (the proxy, not the port, hung up), unless it went `direct`, as
    the Elasticsearch client's do whatever the environment says."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or connection_failure(error) not in _HUNG_UP:
        return False
    try:
        if not direct and environ_proxy(url):
            return False
        port = parts.port or 80
    except ValueError:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # any certificate says TLS; trusting it is another matter
    try:
        with socket.create_connection((parts.hostname, port), timeout=TLS_PROBE_TIMEOUT) as connection:
            with context.wrap_socket(connection, server_hostname=parts.hostname):
                return True
    except (OSError, ValueError):
        return False


def environ_proxy(url: str) -> Optional[str]:
    """The proxy of the environment a request to `url` goes through (as requests chooses it:
    HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, unless NO_PROXY names the host), or None."""
    try:
        return select_proxy(url, get_environ_proxies(url)) or None
    except ValueError:
        return None


def proxy_note(url: str) -> str:
    """What to add to a failure of a request to `url` that went through a proxy of the
    environment (HTTP_PROXY in cron's environment, say): it may be the proxy that failed it, not
    the service, whose settings the message would otherwise send the user to."""
    proxy = environ_proxy(url)
    if not proxy:
        return ""
    return ("; the request went through the proxy %s (HTTP_PROXY, HTTPS_PROXY or ALL_PROXY of the environment): if "
            "the service is not to be reached through it, add %s to NO_PROXY"
            % (urldefragauth(prepend_scheme_if_needed(proxy, "http")), urlsplit(url).hostname))


def speaks_tls_message(setting: str, url: str, what: str) -> str:
    return ("%s at %s closed the plain HTTP request unanswered and answers in TLS at that port: write https:// in %s"
            % (what, url, setting))


def basic_auth(user: str, password: str) -> str:
    """The Authorization header value for basic auth to a Logstash http input: base64 of
    "user:password" in UTF-8 (RFC 7617), the exact string the input compares the header with
    (`Base64.strict_encode64("#{user}:#{password}")` of its UTF-8 settings). requests would send
    latin-1 bytes for a letter such as "ä", which the input refuses with 401."""
    return "Basic " + b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")


def netrc_credentials(url: str) -> Optional[Tuple[str, str]]:
    """The login and password of the `machine` entry for `url`'s host in ~/.netrc (or `NETRC`),
    found and read as requests finds and reads them, or None. The `default` entry, which names
    every host, is left out: a password kept for any host (an FTP login, a package index's token)
    is not a Logstash input's. The credentials returned are masked from then on, as LS_PASSWORD
    is: a server echoing its request back quotes them."""
    host = urlsplit(url).hostname
    named = os.environ.get("NETRC")
    for candidate in (named,) if named is not None else ["~/" + name for name in NETRC_FILES]:
        path = os.path.expanduser(candidate)
        if not os.path.exists(path):
            continue
        try:
            entry = netrc.netrc(path).hosts.get(host)
        except (netrc.NetrcParseError, OSError):
            return None  # as requests does: an unreadable netrc gives no credentials
        if entry is None or not any(entry):
            return None
        login, account, password = entry
        credentials = login or account or "", password or ""
        mask_credentials_too(*credentials)
        return credentials
    return None


def proxy_basic_auth(user: str, password: str) -> str:
    """The Proxy-Authorization header value, as requests sends it: latin-1 bytes, and UTF-8 for
    a name or password latin-1 cannot encode."""
    def encoded(text: str) -> bytes:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return text.encode("utf-8")
    return "Basic " + b64encode(encoded(user) + b":" + encoded(password)).decode("ascii")


class Answer:
    """An answer whose body is still to be read: by BodyReader, from `raw`. `request_sent_whole`:
    whether the connection took every byte of the request's body (into the socket's buffers, at
    least) before the answer was read."""

    __slots__ = ("raw", "request_sent_whole")

    def __init__(self, raw: urllib3.BaseHTTPResponse, request_sent_whole: bool = True):
        self.raw = raw
        self.request_sent_whole = request_sent_whole

    @property
    def status_code(self) -> int:
        return self.raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.raw.headers

    def close(self) -> None:
        """Drop the connection (its body was not read whole) and free its place in the pool. A
        body read whole has already given its connection back for the next POST."""
        self.raw.close()
        self.raw.release_conn()


@dataclass(frozen=True)
class _Route:
    """What a URL's POSTs share: the pool's manager and key, the request target, fixed headers."""

    manager: urllib3.PoolManager
    scheme: str
    host: str
    port: Optional[int]
    target: str  # the path, or the absolute URL for a plain-http request through a proxy
    headers: Dict[str, str]
    authorization: Dict[str, str]


# Pools kept at once, one per origin (scheme, host, port). A run posts to a handful of Logstash
# inputs; with fewer places than origins, pools would be closed and reopened in turn and no
# connection would live long enough to be reused.
MAX_ORIGINS = 64


class Transport:
    """POSTs with keep-alive, safe to use from several threads at once.

    Never retries and never follows a redirect: the caller decides what an answer means. A POST
    that got no answer on a connection kept alive from an earlier one fails with a CannotConnect
    whose `stale_connection` is true: a server may close an idle connection at any moment, and
    one closing it as the request is written looks just so. urllib3 drops a pooled connection
    found closed before its use, and this one too, so sending again soon takes another.
    Proxies come from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY), credentials
    from `auth` or else ~/.netrc (NETRC), both read once per URL; headers are those requests sends.
    """

    def __init__(self, pool_size: int = 10, ca_bundle: str = "", auth: Optional[Tuple[str, str]] = None):
        self.auth = auth
        self.pool_size = pool_size  # connections kept alive per input at most
        # Reading the system store takes about 30 ms of CPU, which a run posting to http:// inputs
        # need not pay at every start: it is read when the first https route is made.
        self._system_store_pending = not ca_bundle
        self._pool_options = dict(num_pools=MAX_ORIGINS, maxsize=pool_size, block=False,
                                  ssl_context=tls_context(ca_bundle, system_store=False),
                                  cert_reqs="CERT_REQUIRED")
        self._direct = watch_pools(urllib3.PoolManager(**self._pool_options))
        self._proxied: Dict[str, urllib3.PoolManager] = {}
        self._routes: Dict[str, _Route] = {}
        self._lock = threading.Lock()
        self._head = dict(default_headers(), **{"User-Agent": USER_AGENT})

    def post(self, url: str, body: bytes, content_type: str, timeout: Tuple[float, float]) -> Answer:
        """Send `body`; return the answer once its status line and headers came, body unread.
        Raise PostTimeout, CannotConnect or PostFailed."""
        route = self._routes.get(url) or self._route(url)
        # The order requests sends them in: its defaults, the caller's, the body's, then auth.
        headers = dict(route.headers)
        headers["Content-Type"] = content_type
        headers["Content-Length"] = str(len(body))
        headers.update(route.authorization)
        # Each wait for the input to take more of the batch is bounded like a wait for its answer.
        sending_starts(send_wait=timeout[1])
        blocks = _SentBlocks(body)
        try:
            pool = route.manager.connection_from_host(route.host, route.port, route.scheme)
            raw = pool.urlopen("POST", route.target, body=blocks, headers=headers, retries=False,
                               redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                               timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]))
        except (HTTPError, OSError) as error:
            raise _failure(error, sent_on_kept_alive_connection()) from error
        finally:
            sending_ends()
        return Answer(raw, request_sent_whole=blocks.all_sent)

    def sends_credentials(self, url: str) -> bool:
        """Whether POSTs to `url` carry credentials (LS_USER and LS_PASSWORD, or ~/.netrc's)."""
        return bool((self._routes.get(url) or self._route(url)).authorization)

    def _route(self, url: str) -> _Route:
        try:
            route = self._new_route(url)
        except (HTTPError, RequestException) as error:  # a URL, or a proxy's, that cannot be used
            raise PostFailed(str(error)) from error
        with self._lock:
            return self._routes.setdefault(url, route)

    def _new_route(self, url: str) -> _Route:
        prepared = PreparedRequest()
        prepared.prepare_url(url, None)  # normalised as requests would: IDNA host, quoted path
        url = prepared.url
        parts = urllib3.util.parse_url(url)
        target = prepared.path_url
        manager = self._direct
        proxy = select_proxy(url, get_environ_proxies(url))
        if parts.scheme == "https" or proxy:
            self._trust_system_store()
        if proxy:
            try:
                manager = self._proxy_manager(proxy)
            except RequestException as error:
                raise socks_unsupported(error, url) or error from None
            log.debug("POSTs to %s go through the proxy %s", url, urldefragauth(proxy))
            if parts.scheme != "https" and not proxy.lower().startswith("socks"):
                target = urldefragauth(url)  # a plain-http proxy is asked for the whole URL
        credentials = self.auth or netrc_credentials(url)
        authorization = {"Authorization": basic_auth(*credentials)} if credentials else {}
        return _Route(manager, parts.scheme, parts.host, parts.port, target, dict(self._head), authorization)

    def _trust_system_store(self) -> None:
        """Load the system store into the TLS context before its first connection, when no
        CA bundle replaces it."""
        with self._lock:
            if self._system_store_pending:
                self._pool_options["ssl_context"].load_default_certs()
                self._system_store_pending = False

    def _proxy_manager(self, proxy: str) -> urllib3.PoolManager:
        proxy = prepend_scheme_if_needed(proxy, "http")
        with self._lock:
            manager = self._proxied.get(proxy)
        if manager is not None:
            return manager
        if not urllib3.util.parse_url(proxy).host:
            raise PostFailed("the proxy URL %s names no host" % urldefragauth(proxy))
        user, password = get_auth_from_url(proxy)
        if user or password:
            mask_credentials_too(user, password)  # a proxy's error page may quote what it was sent
        if proxy.lower().startswith("socks"):
            # requests' name for it: urllib3's manager, or without PySocks one raising InvalidSchema.
            manager = SOCKSProxyManager(proxy, username=user, password=password, **self._pool_options)
        else:
            headers = {"Proxy-Authorization": proxy_basic_auth(user, password)} if user else {}
            manager = watch_pools(urllib3.ProxyManager(proxy, proxy_headers=headers,
                                                       proxy_ssl_context=self._pool_options["ssl_context"],
                                                       **self._pool_options))
        with self._lock:
            return self._proxied.setdefault(proxy, manager)


# Bytes of a batch handed to the socket at once: a wait to send is bounded per block (ES_TIMEOUT),
# where one sendall() of the whole batch would be bounded in all by the connect timeout.
SEND_BLOCK = 256 * 1024


def _blocks(body: bytes):
    """`body` in blocks, sent one after the other (the Content-Length header frames them)."""
    view = memoryview(body)
    return [view[start:start + SEND_BLOCK] for start in range(0, len(body), SEND_BLOCK)] or [b""]


class _SentBlocks:
    """A body's blocks for urllib3 to send, knowing whether it sent them all. urllib3 reads the
    answer of a server that stopped taking the body (it closed or reset the connection: a server
    may answer a request it refuses, as a 413, without reading it), so an answer may come for a
    body of which only a part went out."""

    def __init__(self, body: bytes):
        self._blocks = _blocks(body)
        self.all_sent = False

    def __iter__(self):
        yield from self._blocks
        # Asked for a block after the last one: every block went out whole.
        self.all_sent = True


def _failure(error: Exception, kept_alive: bool = False) -> Exception:
    """The transport's error for a urllib3 one, sorted as requests sorts them into Timeout,
    ConnectionError and the rest, so that every message about them stays what it was.
    `kept_alive`: the request went out on a connection that had carried an answer before."""
    if isinstance(error, (SSLError, ProxyError)):
        return CannotConnect(error, kept_alive)
    if isinstance(error, ProtocolError) and any(isinstance(arg, TimeoutError) for arg in error.args):
        return PostTimeout(str(error))  # the input stopped taking the batch: connected, then no progress
    if isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError):
        return PostTimeout(str(error), connecting=True)
    if isinstance(error, ReadTimeoutError):
        return PostTimeout(str(error))
    if isinstance(error, (ProtocolError, NewConnectionError, ClosedPoolError, OSError)):
        return CannotConnect(error, kept_alive)
    return PostFailed(str(error))
