"""URLs from upstream, judged and shown safely: which origins may be fetched, and how a URL
that may carry a signature is written into messages, logs and the ledger. Pure functions.

An origin is (scheme, host, port), as browsers compare them: `https://files.kernelci.org` and
`https://files.kernelci.org:443/x` are one origin; `http://` of the same host is another.
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
REDACTED = "***"


def origin_of(url: str) -> Optional[Origin]:
    """(scheme, host, port) of an http(s) URL, or None for anything else (`file:`, no host)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
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
