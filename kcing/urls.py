"""URLs from upstream, judged and shown safely: which origins may be fetched, and how a URL
that may carry a signature is written into messages, logs and the ledger. Pure functions.

An origin is (scheme, host, port), as browsers compare them: `https://files.kernelci.org` and
`https://files.kernelci.org:443/x` are one origin; `http://` of the same host is another.

The origin judged must be the one the HTTP client connects to, and parsers disagree on odd URLs:
urllib.parse ends the host part at "/", "?" or "#", while urllib3 (which requests prepares every
URL with) also ends it at a backslash, as browsers do, so `http://a\\@b/` is host b to the first
and host a to the second. A URL with such characters in its host part has no origin here
(`authority_problem`), and a request's final URL is judged as requests reads it (`origin_as_sent`).
"""
from __future__ import annotations

import re
from typing import FrozenSet, Iterable, Optional, Tuple
from urllib.parse import urlsplit

Origin = Tuple[str, str, int]

DEFAULT_PORTS = {"http": 80, "https": 443}

# Query parameters that grant access by themselves: Azure SAS (`sig`), S3 and GCS presigned
# URLs, and the usual names for tokens and keys. Their values never reach a message or a log.
SECRET_PARAMETERS = (
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "token", "access_token", "auth", "key", "api_key", "apikey", "password", "secret",
    "client_secret", "code",
)
_SECRET_VALUE = re.compile(r"(?i)([?&;](?:%s)=)[^&#\s\"'<>]*" % "|".join(re.escape(name) for name in SECRET_PARAMETERS))
_USERINFO = re.compile(r"(://)[^/@\s]*@")
# Characters no URL carries unencoded: parsers drop some (tab, newline) and keep others.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The scheme and the host part (userinfo@host:port), as far as urllib.parse takes it.
_SCHEME_AND_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
REDACTED = "***"


def origin_of(url: str) -> Optional[Origin]:
    """(scheme, host, port) of an http(s) URL, or None for anything else (`file:`, no host, a
    port that is not a number from 0 to 65535) and for a URL whose origin is ambiguous
    (`authority_problem`)."""
    if not isinstance(url, str) or authority_problem(url) is not None:
        return None
    return _split_origin(url)


def authority_problem(url: str) -> Optional[str]:
    """What in `url` parsers may read as different hosts, or None: a backslash, whitespace or a
    character beyond ASCII in the host part, a control character anywhere (urllib.parse drops
    tabs and newlines before parsing, urllib3 does not), whitespace around it (requests strips
    only the leading one). No well-formed URL has any of these, so none is fetched."""
    if _CONTROL.search(url):
        return "a control character"
    if url != url.strip():
        return "whitespace around it"
    match = _SCHEME_AND_AUTHORITY.match(url)
    authority = match.group(1) if match else ""
    if "\\" in authority:
        return "a backslash in its host part"
    if any(character.isspace() for character in authority):
        return "whitespace in its host part"
    if not authority.isascii():
        return "a character beyond ASCII in its host part"
    return None


def origin_as_sent(url: str) -> Optional[Origin]:
    """The origin requests connects to for `url` as it sends it (a prepared request's URL, the
    first or one reached by a redirect): requests picks the connection by urllib.parse's reading
    of that URL, older versions by urllib3's. None unless both read the same http(s) origin."""
    # Imported here: it takes a while, and most commands never fetch.
    from urllib3.util import parse_url

    split = origin_of(url)
    if split is None:
        return None
    try:
        parsed = parse_url(url)
    except ValueError:  # urllib3's LocationParseError
        return None
    scheme = (parsed.scheme or "").lower()
    # urllib3 keeps an IPv6 address in brackets; urllib.parse drops them.
    host = (parsed.host or "").lower().strip("[]")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS.get(scheme)
    return split if (scheme, host, port) == split else None


def _split_origin(url: str) -> Optional[Origin]:
    """The origin urllib.parse reads in `url`, with no questions about ambiguity."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except (ValueError, AttributeError):
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def origins(urls: Iterable[str]) -> FrozenSet[Origin]:
    """The origins of the given URLs (settings); empty and unusable ones are left out."""
    return frozenset(origin for origin in map(origin_of, urls) if origin is not None)


def origin_allowed(url: str, allowed: FrozenSet[Origin]) -> bool:
    """True when `url` is http(s) on one of the `allowed` origins."""
    return origin_of(url) in allowed


def origin_text(url: str) -> str:
    """`scheme://host:port` of `url` for a message (never its path or query), or its scheme."""
    origin = origin_of(url)
    if origin is not None:
        return "%s://%s:%d" % origin
    scheme = urlsplit(url).scheme if "://" in url or url.startswith("file:") else ""
    return ("a %s: URL" % scheme.lower()) if scheme else "a URL without an http(s) origin"


def redacted(text: str) -> str:
    """`text` with the values of signature and token query parameters of any URL in it replaced
    by `***` (`...?sv=2022&sig=***`), and credentials in URLs too (`https://***@host`): for
    messages, logs and the ledger."""
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    if "=" not in text:
        return text
    return _SECRET_VALUE.sub(r"\1" + REDACTED, text)
