"""Settings: defaults here, overridden by local_settings.py, by the environment, then by flags.

Precedence, lowest first (each layer only replaces what it names):

1. the defaults in `SPECS` below;
2. `local_settings.py` in the working directory: upper-case module-level names, or a dict named
   `settings` as the original tool used;
3. environment variables of the same names (`ES_LAVA=http://ls:8338 kcing feed_es`);
4. command-line flags (`--db`, `--threads`, ...), mapped to settings by the CLI.

Every value is parsed and validated once, here; a bad value is a `ConfigError` naming the
setting and where it came from. Secrets never appear in `repr()` or in error messages.
"""
from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
import runpy
import sys
from base64 import b64encode
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

from kcing import urls
from kcing.digits import ascii_digits, decimal_number_spelling, foreign_digits, whole_number_spelling
from kcing.errors import ConfigError, one_line
from kcing.keptdays import FEWEST_DAYS_KEPT

log = logging.getLogger(__name__)

SECRET_NAMES = frozenset({"LS_PASSWORD", "ES_PASSWORD", "ES_API_KEY", "KB_PASSWORD", "KB_API_KEY", "KCI_API_TOKEN"})
# Each basic-auth password and the user sent with it: a request carries the two together, in
# base64, and that form is as good as the password to whoever reads it.
BASIC_AUTH_SETTINGS = (("LS_USER", "LS_PASSWORD"), ("ES_USER", "ES_PASSWORD"), ("KB_USER", "KB_PASSWORD"))


def secret_texts(settings: Any) -> list:
    """Every text that gives a secret of `settings` away, for the logs and messages to mask: each
    secret as it is and percent-encoded (as in a URL), and each basic-auth `Authorization` value
    as a request carries it (base64 of `user:password` in UTF-8). A server that echoes its request
    back (a stub or an echo service at an input's URL, a proxy's error page) puts these in the
    answer an error message quotes."""
    texts = []
    for name in sorted(SECRET_NAMES):
        value = getattr(settings, name)
        if value:
            texts.append(value)
            texts.append(quote(value, safe=""))
    for user, password in BASIC_AUTH_SETTINGS:
        if getattr(settings, password):
            pair = "%s:%s" % (getattr(settings, user), getattr(settings, password))
            texts.append(b64encode(pair.encode("utf-8")).decode("ascii"))
    return list(dict.fromkeys(texts))


# Upper bounds of the numeric settings (and of the flags that set them): far above any use, and
# low enough that no value overflows what takes it (a socket or lock timeout, a date so many days
# before now) or asks for threads, processes or memory without end.
MAX_DAYS = 36_500  # a century: "keep everything"
MAX_SECONDS = 86_400  # a day: the longest deadline or wait
MAX_REQUEST_SECONDS = 3_600  # an hour: one wait for an answer, one pause between tries or batches
MAX_CONCURRENCY = 256  # threads or processes
MAX_ATTEMPTS = 100
MAX_PAGE_SIZE = 10_000
MAX_BYTES = 1_000_000_000  # a body or a batch is held in memory whole
MAX_JAVA_INT = 2_147_483_647  # what Logstash reads a count into


def _text(value: Any) -> str:
    """Text: a string (or a path, or a number, from local_settings.py). Anything else is refused
    rather than written out as Python shows it: `LS_USER = None` would be the user "None", and
    `KCING_DB = None` a ledger named None."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected text (a string), not %s" % _type_name(value))
    text = str(value).strip()
    if _LONE_SURROGATE.search(text):
        # `'\ud800'` written in local_settings.py: half of a character, which no encoding writes,
        # so no file name, header or log line can hold it. (The environment's bytes that are not
        # UTF-8 arrive as \udc80-\udcff, which name the same bytes again.)
        raise ValueError("it holds half of a character (a lone surrogate, \\ud800 to \\udfff), which no text can be "
                         "written with")
    return text


_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _credential(value: Any) -> str:
    """A user name or password: text sent in UTF-8, so never bytes the environment's encoding
    could not read (Python keeps them as lone surrogates, which no encoding can send)."""
    text = _text(value)
    if any("\udc80" <= character <= "\udcff" for character in text):
        raise ValueError("it holds bytes that are not UTF-8 text")
    return text


def _token(value: Any) -> str:
    """A token or API key, sent as it is in an HTTP header: printable ASCII without spaces."""
    text = _text(value)
    if not all("!" <= character <= "~" for character in text):
        raise ValueError("a token is printable ASCII without spaces")
    return text


_token.allowed = "printable ASCII"


def _path(value: Any) -> str:
    """A file or directory name: never empty, which would name the working directory (a ledger
    "." refused as a directory, samples saved among whatever is there)."""
    text = _optional_path(value)
    if not text:
        raise ValueError("expected a file or directory name, not an empty one")
    return text


def _ledger_file(value: Any) -> str:
    """The ledger's file name: one SQLite takes for a file. This SQLite reads a name beginning
    with `file:` as a URI (`?mode=memory` keeps it in memory; otherwise it names another file
    than the run lock's `<name>.lock` does), and `:memory:` as a database kept in memory: a run
    would record its deliveries nowhere."""
    text = _path(value)
    problem = directory_name_problem(text, "kcing.db")
    if problem:
        raise ValueError(problem)
    if text == ":memory:":
        what = "a database in memory, forgotten when the run ends"
    elif text.startswith("file:"):
        what = "a URI, not a file name"
    else:
        return text
    raise ValueError("SQLite would take it for %s: name the ledger file (./%s for a file so named)" % (what, text))


_ledger_file.allowed = "a file name (not `:memory:`, nor one beginning with `file:` or ending with `/`)"


def directory_name_problem(path: str, file_name: str) -> str:
    """Why `path`, meant to name a file, names a directory instead (it ends with a slash), or "".
    Python's file calls drop that slash (a log file's handler, pathlib), so `-l /var/log/kcing/`
    with that directory not made yet became a file /var/log/kcing, where a shell refuses the name."""
    if not path.endswith(("/", os.sep)):
        return ""
    return "ends with /, which names a directory: name the file in it, e.g. %s%s" % (path, file_name)


def _optional_path(value: Any) -> str:
    """A file or directory name, or empty. Never one holding a NUL character (which only
    local_settings.py can give): no file name can, and every system call refuses it."""
    text = _text(value)
    if "\x00" in text:
        raise ValueError("a file name cannot hold a NUL character")
    return home_expanded(text)


def home_expanded(path: str) -> str:
    """`path` with a leading `~` or `~user` read as a shell reads it. Nothing else does it for a
    setting: Python does not in local_settings.py, cron does not in its `KCING_DB=~/kcing.db`
    lines, nor does cron's sh after an option's `=` (`--db=~/kcing.db`); a `~` left as it is
    names a directory `~` in the working directory, which is never what was meant. So is a
    `~user` naming no user of this host (a typo, or an account on another host): a shell leaves
    it as it is, and the run would make that directory here (and pathlib, asked again, raises)."""
    if not path.startswith("~"):
        return path
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        user = path[1:].split("/", 1)[0]
        raise ValueError("~%s names no user of this host, so no home directory" % one_line(user, 40) if user
                         else "~ names no home directory: HOME is not set")
    return expanded


def _space(value: Any) -> str:
    """A Kibana space id (empty: the default space), checked here so that a bad one is named as
    the setting it came from, not found only when the Kibana URL is made."""
    text = _text(value)
    if text and not re.fullmatch(r"[a-z0-9_-]+", text):
        raise ValueError("a Kibana space id takes lowercase letters, digits, '_' and '-'")
    return text


_space.allowed = "lowercase letters, digits, _ and -"


def _text_list(value: Any) -> str:
    """Comma-separated names, or (from local_settings.py) a list or tuple of them. A name holding
    whitespace or `;` is several run together (`lab-a lab-b`): as one name it matched no lab, and
    both labs' boots were looked for as LAVA ones without a word."""
    text = ",".join(_text(item) for item in value) if isinstance(value, (list, tuple)) else _text(value)
    for name in text.split(","):
        if re.search(r"[\s;]", name.strip()):
            raise ValueError("%s holds several names: separate them with commas" % _quoted(name.strip()))
    return text


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    kind = type(value).__name__
    return ("an %s" if kind[:1] in "aeiou" else "a %s") % kind


def _ascii_number_text(value: Any, expected: str) -> str:
    """`value` as text for int() or float(), refused (ValueError saying `expected`) when it holds
    digits other than 0-9."""
    text = str(value).strip()
    if foreign_digits(text):
        raise ValueError("%s, in the digits 0-9" % expected)
    return text


def _integer(minimum: int, maximum: int) -> Callable[[Any], int]:
    """A parser of whole numbers from `minimum` to `maximum`, which says its range (`allowed`)."""
    expected = "expected a whole number from %d to %d" % (minimum, maximum)

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(expected)
        text = _ascii_number_text(value, expected)
        if not whole_number_spelling(text):  # int() reads "1_0" as 10 and "+3" as 3
            raise ValueError(expected)
        try:
            number = int(text)
        except ValueError:  # not a number, or more digits than Python converts
            raise ValueError(expected) from None
        if not minimum <= number <= maximum:
            raise ValueError(expected)
        return number

    parse.allowed = "%d to %d" % (minimum, maximum)
    return parse


def _number(minimum: float, maximum: float) -> Callable[[Any], float]:
    """A parser of numbers from `minimum` to `maximum`, which says its range (`allowed`)."""
    allowed = "%s to %s" % (_number_text(minimum), _number_text(maximum))
    expected = "expected a number from %s" % allowed

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(expected)
        text = _ascii_number_text(value, expected)
        if not decimal_number_spelling(text):  # float() reads "1_0" as 10 and "+1" as 1
            raise ValueError(expected)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(expected) from None
        if not minimum <= number <= maximum:  # NaN and the infinities included
            raise ValueError(expected)
        return number or 0.0  # -0 is 0: messages said "within -0s"

    parse.allowed = allowed
    return parse


def _number_text(number: float) -> str:
    """`0.1`, `3600`: a bound as the README and messages show it."""
    return "%d" % number if float(number).is_integer() else "%g" % number


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError("must be one of %s" % ", ".join(allowed))
        return text

    parse.allowed = ", ".join(allowed)
    return parse


def _workers(value: Any) -> Any:
    """A number of worker processes, or "auto": one per usable core."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return _worker_count(value)
    except ValueError:
        raise ValueError("expected auto, or a whole number from %s" % _worker_count.allowed) from None


_worker_count = _integer(0, MAX_CONCURRENCY)
_workers.allowed = "auto, or %s" % _worker_count.allowed


def _url_list(value: Any) -> tuple:
    """Comma-separated http(s) URLs: one Logstash input, or several to spread batches across."""
    items = _list_items(value)
    urls = tuple(_url(item, several=LIST_SEPARATOR) for item in items if str(item).strip())
    if not urls:
        raise ValueError("needs at least one URL")
    return urls


# What a URL setting that takes one URL, or an item of a list of them, says of several URLs run
# together (`http://es1:9200,http://es2:9200`, `http://a:8338 http://b:8338`): their host part
# would otherwise read as one odd host name, refused only at the first connection, or as a port.
ONE_URL_ONLY = "this setting takes one URL"
LIST_SEPARATOR = "separate them with commas"
_URL_START = re.compile(r"https?://", re.IGNORECASE)
_URL_SEPARATORS = ",;|"


def _holds_another_url(text: str) -> bool:
    """Whether a URL starts in `text` after something else, on its first line, with whitespace,
    `,`, `;` or `|` between them. Each URL's start is looked back from once, over the whitespace
    before it: a regular expression trying each place a separator could be took time quadratic in
    a run of whitespace (16,000 spaces in a value, a second)."""
    if not text or text[0].isspace():
        return False
    first_line_end = text.find("\n", 1)
    if first_line_end < 0:
        first_line_end = len(text)
    for url in _URL_START.finditer(text, 2):
        separator = url.start()
        while separator > 1 and text[separator - 1].isspace():
            separator -= 1
        if separator > 1 and text[separator - 1] in _URL_SEPARATORS:
            separator -= 1
        elif separator == url.start():
            continue
        # The separator itself may be the first line's end; what comes before it may not hold one.
        return separator <= first_line_end
    return False


def _list_items(value: Any) -> list:
    """The items of a list setting: a list or tuple's, or the text's between commas. Credentials
    are refused first, in the text whole: a password holding a comma (`http://u:pa,ss@ls`) would
    otherwise be split into items, one refused for its port `pa`."""
    if isinstance(value, (list, tuple)):
        return list(value)
    text = _text(value)
    if "@" in text:
        raise ValueError("put credentials in their own settings, not in the URL")
    return text.split(",")


def _quoted(text: str) -> str:
    """`text` quoted in a reason, masked, and cut as `_parse` cuts a value: an item of a list
    pasted with the rest of a line would otherwise be quoted whole after the cut value."""
    return _cut(repr(masked_value(text)))


def _cut(shown: str) -> str:
    if len(shown) <= SHOWN_VALUE_CHARACTERS:
        return shown
    return "%s... (%d characters)" % (shown[:SHOWN_VALUE_CHARACTERS], len(shown))


def _url(value: Any, several: str = ONE_URL_ONLY) -> str:
    # `ES_HOST = None` in local_settings.py is no URL "None" to give a scheme to (http://None).
    text = _text(value)
    if _SURROGATE.search(text):
        # An environment in another encoding than UTF-8 (`\xff`, kept as `\udcff`), or half of a
        # character in local_settings.py: a URL is sent, logged and recorded as UTF-8 text (the
        # ledger names each destination by its URLs), which cannot hold it.
        raise ValueError("%s holds bytes that are not UTF-8 text: write the URL in UTF-8 (or percent-encoded)"
                         % _quoted(text))
    if _holds_another_url(text):
        raise ValueError("%s holds several URLs: %s" % (_quoted(text), several))
    if text.endswith((",", ";", "|")):
        # `ES_HOST=http://es:9200,`, written as a list of inputs is: its port would read as
        # "9200," and the URL be refused for a port that is no number.
        raise ValueError("%s ends with %r: %s" % (_quoted(text), text[-1], several))
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%s is not an http(s) URL%s" % (_quoted(text), _scheme_hint(text)))
    ambiguous = urls.authority_problem(text)
    if ambiguous is not None:
        raise ValueError("%s is not a usable URL: %s" % (_quoted(text), ambiguous))
    # Any "@": a password holding "/", "?" or "#" unencoded (`http://u:1234/x@host`) ends the
    # host part there for urllib.parse, which then reads no credentials but a port and a path;
    # no base URL of a service needs an "@" in its path.
    if parts.username or parts.password or "@" in text:
        raise ValueError("put credentials in their own settings, not in the URL")
    _check_port(parts)
    _check_host_name(parts)
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("a base URL takes no query string or fragment (tokens go in their own settings)")
    return text.rstrip("/")


def _scheme_hint(text: str) -> str:
    """What a URL given without its scheme lacks: `localhost:9200` is read as the scheme
    `localhost`, and `8337`, a port alone, as no URL at all. A number that is no port (0, 99999,
    a long one pasted) gets no hint: http://localhost:99999 would be refused in its turn."""
    if text.isdigit():
        if ascii_digits(text) and len(text) <= 5 and 1 <= int(text) <= 65535:
            return ": a port alone names no host; give the whole URL, e.g. http://localhost:%s" % text
        return ""
    if "://" in text or "@" in text:
        return ""
    try:
        _url("http://" + text)
    except ValueError:
        return ""
    return ": give its scheme, e.g. http://%s" % text


def _optional_url(value: Any) -> str:
    return _url(value) if _text(value) else ""


def _check_port(parts) -> None:
    """Refuse a port that is not a number from 1 to 65535: urlsplit reads one only when asked,
    and a URL with a port no connection can use would fail only later, as if the host were down."""
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")


# The characters of a host name (letters, digits, hyphens; underscores too, which container and
# cluster names use), as urllib.parse gives it, in lower case, and those of an IPv4 address.
_HOST_NAME = re.compile(r"[a-z0-9._-]+", re.ASCII)


def _check_host_name(parts) -> None:
    """Refuse a host name holding a character no host name has (`es,http` from two URLs run
    together, `a%2Cb`, `a!b`): no resolver finds it, so the run would fail only at its first
    connection, saying the host is unknown. An IPv6 address (in brackets) is urllib.parse's to
    check. Refuse too a host name with an empty label (`a..b`) or a label of more than 63
    characters: the HTTP clients encode the name (IDNA) before they connect, and fail there, as
    if the host were down or with an error of their own, instead of naming the setting."""
    name = parts.hostname
    if ":" not in name and not _HOST_NAME.fullmatch(name):
        odd = next(character for character in name if not _HOST_NAME.fullmatch(character))
        raise ValueError("the host name %r holds %r, which no host name has" % (one_line(name, 80), odd))
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise ValueError("the host name %r has an empty part or a part longer than 63 characters"
                         % one_line(parts.hostname, 80)) from None


def _host(value: Any) -> str:
    """A host name or address, optionally with :port: what KCI_HOST names (no scheme or path)."""
    if not isinstance(value, str):  # `KCI_HOST = None` is no host named "None"
        raise ValueError("expected a host name, optionally with :port, as a string")
    text = value.strip()
    if "@" in text:
        raise ValueError("put credentials in their own settings, not in the host")
    scheme, given, rest = text.partition("://")
    if given and scheme.lower() in ("http", "https") and _is_host(rest.rstrip("/")):
        # The URL of the site, as a browser shows it: say which two settings it is.
        raise ValueError("expected a host name, optionally with :port, without a scheme: set KCI_SCHEME=%s "
                         "and KCI_HOST=%s" % (scheme.lower(), rest.rstrip("/")))
    if _is_ipv6(text):
        raise ValueError("expected a host name, optionally with :port; an IPv6 address goes in brackets: [%s]" % text)
    try:
        parts = urlsplit("//" + text)
    except ValueError:  # an IPv6 address without its closing bracket
        raise ValueError("expected a host name, optionally with :port") from None
    if (not parts.hostname or parts.path or parts.query or parts.fragment or any(c.isspace() for c in text)
            or urls.authority_problem("http://" + text) is not None):
        raise ValueError("expected a host name, optionally with :port (no scheme or path)")
    _check_port(parts)
    _check_host_name(parts)
    return text


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    try:
        _host(text)
    except ValueError:
        return False
    return True


def _origin_list(value: Any) -> tuple:
    """Comma-separated origins (scheme://host[:port]), e.g. of artifact storage hosts."""
    items = _list_items(value)
    found = []
    for item in items:
        text = _url(item, several=LIST_SEPARATOR) if str(item).strip() else ""
        if text and urlsplit(text).path not in ("", "/"):
            raise ValueError("%s is not an origin: give scheme://host[:port] without a path" % _quoted(text))
        if text:
            found.append(text)
    return tuple(found)


def _ca_bundle(value: Any) -> str:
    """A CA bundle file or a directory of hashed certificates; empty means the system store.

    Checked here because requests reports a missing bundle only at the first request, as an
    OSError that looks like a network failure."""
    text = _optional_path(value)
    if text and not os.path.exists(text):
        raise ValueError("no such file or directory")
    if text and not (os.path.isfile(text) or os.path.isdir(text)):
        # A FIFO would hold the run at the first connection, waiting for a writer, for good.
        raise ValueError("neither a regular file (a PEM bundle) nor a directory of certificates")
    if text and not os.access(text, os.R_OK):
        raise ValueError("not readable")
    return text


# What the README's table says each kind of value takes (numbers and choices say it themselves).
_url.allowed = "an http(s) URL"
_optional_url.allowed = "an http(s) URL, or empty"
_url_list.allowed = "http(s) URLs, comma-separated"
_host.allowed = "host[:port]"
_origin_list.allowed = "scheme://host[:port], comma-separated"

# Up to the last "@" of the URL or host: a password may hold "/", "?" or "#" unencoded.
_USERINFO = re.compile(r"(^|[\s,'\"])((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^\s,'\"]*@")
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")


def mask_credentials(text: str) -> str:
    """`http://user:password@host` -> `http://***@host` (and `user:password@host` -> `***@host`),
    and no query string or fragment (either may hold a token: `#access_token=...` is where an
    OAuth sign-in leaves one), for messages that quote a URL or host setting. Masked before the
    query is cut: `http://user:pass?word@host` would otherwise show `http://user:pass`."""
    return _QUERY_OR_FRAGMENT.split(_USERINFO.sub(r"\1\2***@", text), 1)[0]


def masked_value(text: str) -> str:
    """A setting's value (a URL, a list of them, a host, or what Python shows of one given in
    local_settings.py) as a message may quote it: from after the scheme it begins with (or from
    its start) up to its last "@" it is `***`, and its query string or fragment is cut. A setting holds nothing but
    URLs or a host, so whatever comes before its last "@" may be a password's: one may hold a
    space, a comma or a quote (a passphrase), where mask_credentials, made to find each URL of
    a text, stops and shows the user and the start of the password."""
    at = text.rfind("@")
    if at >= 0:
        scheme = _LEADING_SCHEME.match(text)
        start = scheme.end() if scheme and scheme.end() <= at else 0
        text = text[:start] + "***" + text[at:]
    return _QUERY_OR_FRAGMENT.split(text, 1)[0]


# The scheme a setting's value begins with (`http://`), also as Python shows a list or tuple of
# URLs (`['http://`): what masked_value keeps before the `***`. Nothing else of the value is kept.
_LEADING_SCHEME = re.compile(r"""[\[(]?\s*['"]?[A-Za-z][A-Za-z0-9+.-]*://""")


@dataclass(frozen=True)
class Spec:
    default: Any
    parse: Callable[[Any], Any]
    help: str


SPECS: Mapping[str, Spec] = {
    # Upstream (KernelCI)
    "KCI_SOURCE": Spec("legacy", _choice("legacy", "samples", "api"), "where feed_es reads from"),
    "KCI_HOST": Spec("kernelci.org", _host, "legacy KernelCI web host (the _ajax API)"),
    "KCI_SCHEME": Spec("https", _choice("http", "https"), "scheme for KCI_HOST"),
    "KCI_STORAGE_URL": Spec("", _optional_url, "storage base URL; empty means <scheme>://storage.<host>, "
                            "which a KCI_HOST that is an IP address has not: the legacy source refuses it"),
    "KCI_NON_LAVA_LABS": Spec("lab-baylibre-seattle", _text_list, "comma-separated labs that publish boot-<board>.json"),
    "KCI_DAYS": Spec(2, _integer(1, MAX_DAYS), "default crawl window in days"),
    "KCI_PAGE_SIZE": Spec(1000, _integer(1, MAX_PAGE_SIZE), "listing items per _ajax page"),
    "KCI_THREADS": Spec(4, _integer(1, MAX_CONCURRENCY), "concurrent downloads"),
    "KCING_WORKERS": Spec("auto", _workers, "processes building documents while feeding; auto means one per usable "
                          "core; 1 builds them in the feed's own process but for a file of 4 MiB or more, "
                          "0 every file"),
    "KCING_BUILD_TIMEOUT": Spec(600.0, _number(0, MAX_SECONDS), "seconds a worker process may take to build one "
                                "object's documents (a 100 MB LAVA log takes about 10); a slower one is killed and "
                                "its object rejected, so that no input stalls the run, and one not ready as long after "
                                "it started is killed too; 0 waits without limit"),
    "KCI_TIMEOUT": Spec(60.0, _number(0.1, MAX_REQUEST_SECONDS),
                        "seconds to wait for an upstream response (for a connection, 10 at most)"),
    "KCI_MAX_RETRIES": Spec(3, _integer(1, MAX_ATTEMPTS), "attempts per upstream request"),
    "KCI_RETRY_BACKOFF": Spec(1.0, _number(0, MAX_REQUEST_SECONDS),
                              "seconds of the first upstream retry wait; each next one doubles, up to 30 s or this "
                              "value if larger (each drawn between half of it and all of it)"),
    "KCI_GIVE_UP_AFTER": Spec(10, _integer(0, 1_000_000), "upstream requests in a row one host may leave unanswered "
                              "after all their attempts (refused, timed out, no such host) before the run asks it "
                              "nothing more: what is left to fetch from it fails at once, for the next run; 0 never "
                              "gives up"),
    "KCI_MAX_OBJECT_BYTES": Spec(100_000_000, _integer(1024, MAX_BYTES), "largest upstream file or page taken "
                                 "(bytes); a larger one is rejected while it streams"),
    "KCI_DOWNLOAD_DEADLINE": Spec(300.0, _number(0.1, MAX_SECONDS), "seconds one upstream download may take in "
                                  "all, from sending the request to the last byte; a slower one fails and the next "
                                  "run tries again"),
    "KCI_CA_BUNDLE": Spec("", _ca_bundle, "CA bundle for upstream TLS; empty means certifi's bundle (Mozilla's CAs)"),
    "KCI_SAMPLES_DIR": Spec("samples", _path, "directory of saved upstream files"),
    # Upstream: the current KernelCI API (--source api)
    "KCI_API_URL": Spec("https://api.kernelci.org/latest", _url, "KernelCI API base URL, version included"),
    "KCI_API_TOKEN": Spec("", _token, "token sent as `Authorization: Bearer`; reading needs none"),
    "KCI_API_STORAGE_URL": Spec("https://files.kernelci.org", _optional_url,
                                "base URL for artifact paths the API gives as relative"),
    "KCI_ARTIFACT_ORIGINS": Spec(("https://files-staging.kernelci.org", "https://kciapistagingstorage1.file.core.windows.net"), _origin_list,
                                 "other origins artifacts may be fetched from, besides those of KCI_HOST, "
                                 "KCI_STORAGE_URL, KCI_API_URL and KCI_API_STORAGE_URL"),
    "KCI_API_OVERLAP_MINUTES": Spec(10, _integer(0, 7 * 24 * 60),
                                    "minutes before the watermark each run lists again"),
    "KCI_API_PAGE_SIZE": Spec(500, _integer(1, MAX_PAGE_SIZE), "nodes per /nodes page"),
    # Delivery (Logstash HTTP inputs; the ES_* names are kept from the original tool)
    "ES_BUILD": Spec(("http://localhost:8337",), _url_list, "Logstash input(s) for build documents"),
    "ES_LAVA": Spec(("http://localhost:8338",), _url_list, "Logstash input(s) for LAVA documents"),
    "ES_BOOT": Spec(("http://localhost:8007",), _url_list, "Logstash input(s) for boot documents"),
    "ES_REGRESSION": Spec(("http://localhost:8339",), _url_list, "Logstash input(s) for regression documents"),
    "ES_MAX_RETRIES": Spec(3, _integer(1, MAX_ATTEMPTS), "failed attempts on a batch before the run stops"),
    "ES_LOAD_INTERVAL": Spec(0.0, _number(0, MAX_REQUEST_SECONDS), "seconds to wait between batches"),
    "ES_PARALLEL_POSTS": Spec(2, _integer(1, MAX_CONCURRENCY),
                              "batches posted at the same time (spread over the route's URLs); "
                              "`--output` writes one at a time, in order"),
    "ES_MAX_DOCS_PER_SECOND": Spec(0.0, _number(0, 1_000_000), "documents per second cap; 0 means no cap; one at "
                                   "which a whole batch (LS_PIPELINE_BATCH_SIZE) would wait more than 3600 s is refused"),
    "ES_RETRY_BACKOFF": Spec(1.0, _number(0, MAX_REQUEST_SECONDS),
                             "seconds of the first delivery retry wait (and of an admin command's wait for a busy "
                             "Elasticsearch); each next one doubles, up to 30 s or this value if larger (each drawn "
                             "between half of it and all of it)"),
    "ES_TIMEOUT": Spec(60.0, _number(0.1, MAX_REQUEST_SECONDS),
                       "seconds each wait for Logstash may take, to take more of a batch or to answer it (to "
                       "accept a connection, 10 at most)"),
    "ES_POST_DEADLINE": Spec(120.0, _number(0.1, MAX_SECONDS), "seconds Logstash may take in all to take a batch and "
                             "answer it, from sending it (ES_TIMEOUT bounds each wait); then the batch is retried"),
    "LS_PIPELINE_BATCH_SIZE": Spec(500, _integer(1, 100_000), "documents per POST (and Logstash batch size)"),
    "LS_BATCH_MAX_BYTES": Spec(5_000_000, _integer(1024, MAX_BYTES), "bytes per POST at most; a single document "
                           "larger than that is posted alone, and Logstash's max_content_length decides"),
    "ES_QUEUE_MAX_BYTES": Spec(200_000_000, _integer(1024, MAX_BYTES),
                               "bytes of documents built and waiting to be sent at most: past it, downloads "
                               "pause until Logstash (or --output) takes them; the next object to be sent is "
                               "downloaded whatever its size"),
    "LS_USER": Spec("", _credential, "basic-auth user for the Logstash inputs"),
    "LS_PASSWORD": Spec("", _credential, "basic-auth password for the Logstash inputs"),
    "LS_CA_BUNDLE": Spec("", _ca_bundle, "CA bundle for Logstash TLS (a PEM file, or a directory of hashed "
                         "certificates); empty means the system store (OpenSSL's default paths)"),
    # Ledger and retention
    "KCING_OUTPUT_MAX_BYTES": Spec(100_000_000, _integer(1024, MAX_BYTES),
                                   "bytes an `--output` file takes before the next batch goes into the route's "
                                   "next file (`lava.part000002.ndjson`, ...); under Elasticsearch's 100 MB "
                                   "http.max_content_length, each file can be posted to `_bulk` whole"),
    "KCING_DB": Spec("kcing.db", _ledger_file, "SQLite ledger of what was delivered"),
    "KCING_DB_LOCK_WAIT": Spec(30.0, _number(0, MAX_SECONDS), "seconds a ledger write waits for another process "
                               "holding its database lock before the run stops (exit 4)"),
    "KCING_PROGRESS_EVERY": Spec(10.0, _number(1, 24 * 3600), "seconds between the `progress:` lines of feed_es, "
                                 "reconcile and gen_samples, and the `still waiting` lines of setup_es, setup_kbn "
                                 "and backup_kbn, when stderr is not a terminal (cron, a pipe, a log file)"),
    "DRP_DAYS": Spec(3, _integer(FEWEST_DAYS_KEPT, MAX_DAYS), "days of data to keep (must exceed KCI_DAYS)"),
    # Elasticsearch and Kibana administration
    "ES_HOST": Spec("http://localhost:9200", _url, "Elasticsearch URL for admin commands"),
    "ES_USER": Spec("", _credential, "basic-auth user for Elasticsearch"),
    "ES_PASSWORD": Spec("", _credential, "basic-auth password for Elasticsearch"),
    "ES_API_KEY": Spec("", _token, "API key for Elasticsearch"),
    "ES_CA_BUNDLE": Spec("", _ca_bundle, "CA bundle for Elasticsearch TLS, trusted with the system store; empty means "
                         "certifi's bundle (Mozilla's CAs), with the system store too"),
    "ES_REQUEST_DEADLINE": Spec(60.0, _number(0.1, MAX_SECONDS), "seconds one request of setup_es, drp or "
                                "reconcile may take in all, from sending it to the last byte of the answer"),
    "ES_READY_TIMEOUT": Spec(60.0, _number(0, MAX_SECONDS), "seconds setup_es waits for the cluster to be ready"),
    "ES_VERIFY_DELAY": Spec(30.0, _number(0, MAX_SECONDS), "seconds feed_es --verify waits for Logstash to pass "
                            "the events on before checking Elasticsearch"),
    "KB_URL": Spec("http://localhost:5601", _url, "Kibana URL"),
    "KB_USER": Spec("", _credential, "basic-auth user for Kibana"),
    "KB_PASSWORD": Spec("", _credential, "basic-auth password for Kibana"),
    "KB_API_KEY": Spec("", _token, "API key for Kibana (the encoded value Elasticsearch returns), instead of "
                       "KB_USER and KB_PASSWORD"),
    "KB_CA_BUNDLE": Spec("", _ca_bundle, "CA bundle for Kibana TLS; empty means certifi's bundle (Mozilla's CAs)"),
    "KB_SPACE": Spec("", _space, "Kibana space id; empty means the default space"),
    "KB_REQUEST_DEADLINE": Spec(300.0, _number(0.1, MAX_SECONDS), "seconds one request of setup_kbn or "
                                "backup_kbn may take in all, from sending it to the last byte of the answer"),
    # Logstash configuration written by setup_ls
    "LS_HOME": Spec("", _optional_path, "Logstash home; setup_ls writes LS_HOME/config/pipelines.yml"),
    "LS_PATH_SETTINGS": Spec("", _optional_path, "Logstash's settings directory (path.settings), where setup_ls writes "
                             "pipelines.yml instead of LS_HOME/config: /etc/logstash for the deb and rpm packages"),
    "LS_PATH_CONFIG": Spec("", _optional_path, "pipeline file for pipelines.yml; empty means this checkout's logstash/pipeline/kcing.conf"),
    "LS_QUEUE_TYPE": Spec("persisted", _choice("persisted", "memory"), "Logstash queue type, written by setup_ls"),
    "LS_NUM_WORKERS": Spec(0, _integer(0, 1024),
                           "Logstash pipeline workers, written by setup_ls; 0 writes none, leaving logstash.yml's "
                           "pipeline.workers (by default one per CPU core)"),
    "LS_QUEUE_MAX_EVENTS": Spec(0, _integer(0, MAX_JAVA_INT),
                                "events the persisted queue holds, written by setup_ls; 0 writes none, leaving "
                                "logstash.yml's queue.max_events (by default no limit)"),
    "LS_QUEUE_MAX_BYTES": Spec("1gb", _text, "bytes the persisted queue holds, written by setup_ls, which alone reads and "
                               "checks it: a size Logstash reads, at least 64mb, e.g. 1gb"),
}


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed and validated. Field names are the user-facing setting names."""

    KCI_SOURCE: str
    KCI_HOST: str
    KCI_SCHEME: str
    KCI_STORAGE_URL: str
    KCI_NON_LAVA_LABS: str
    KCI_DAYS: int
    KCI_PAGE_SIZE: int
    KCI_THREADS: int
    KCING_WORKERS: Any  # a number, or "auto"
    KCING_BUILD_TIMEOUT: float
    KCI_TIMEOUT: float
    KCI_MAX_RETRIES: int
    KCI_RETRY_BACKOFF: float
    KCI_GIVE_UP_AFTER: int
    KCI_MAX_OBJECT_BYTES: int
    KCI_DOWNLOAD_DEADLINE: float
    KCI_CA_BUNDLE: str
    KCI_SAMPLES_DIR: str
    KCI_API_URL: str
    KCI_API_TOKEN: str
    KCI_API_STORAGE_URL: str
    KCI_ARTIFACT_ORIGINS: tuple
    KCI_API_OVERLAP_MINUTES: int
    KCI_API_PAGE_SIZE: int
    ES_BUILD: tuple
    ES_LAVA: tuple
    ES_BOOT: tuple
    ES_REGRESSION: tuple
    ES_MAX_RETRIES: int
    ES_LOAD_INTERVAL: float
    ES_PARALLEL_POSTS: int
    ES_MAX_DOCS_PER_SECOND: float
    ES_RETRY_BACKOFF: float
    ES_TIMEOUT: float
    ES_POST_DEADLINE: float
    LS_PIPELINE_BATCH_SIZE: int
    LS_BATCH_MAX_BYTES: int
    ES_QUEUE_MAX_BYTES: int
    LS_USER: str
    LS_PASSWORD: str
    LS_CA_BUNDLE: str
    KCING_OUTPUT_MAX_BYTES: int
    KCING_DB: str
    KCING_DB_LOCK_WAIT: float
    KCING_PROGRESS_EVERY: float
    DRP_DAYS: int
    ES_HOST: str
    ES_USER: str
    ES_PASSWORD: str
    ES_API_KEY: str
    ES_CA_BUNDLE: str
    ES_REQUEST_DEADLINE: float
    ES_READY_TIMEOUT: float
    ES_VERIFY_DELAY: float
    KB_URL: str
    KB_USER: str
    KB_PASSWORD: str
    KB_API_KEY: str
    KB_CA_BUNDLE: str
    KB_SPACE: str
    KB_REQUEST_DEADLINE: float
    LS_HOME: str
    LS_PATH_SETTINGS: str
    LS_PATH_CONFIG: str
    LS_QUEUE_TYPE: str
    LS_NUM_WORKERS: int
    LS_QUEUE_MAX_EVENTS: int
    LS_QUEUE_MAX_BYTES: str

    def __repr__(self) -> str:
        shown = ("%s=%r" % (f.name, "***" if f.name in SECRET_NAMES and getattr(self, f.name) else getattr(self, f.name))
                 for f in fields(self))
        return "Settings(%s)" % ", ".join(shown)

    @property
    def storage_url(self) -> str:
        if self.KCI_STORAGE_URL:
            return self.KCI_STORAGE_URL
        return "%s://storage.%s" % (self.KCI_SCHEME, self.KCI_HOST)

    @property
    def frontend_url(self) -> str:
        return "%s://%s" % (self.KCI_SCHEME, self.KCI_HOST)

    @property
    def upstream_origins(self) -> frozenset:
        """The origins upstream requests and redirects may reach (kcing/urls.py)."""
        return urls.origins((self.frontend_url, self.storage_url, self.KCI_API_URL, self.KCI_API_STORAGE_URL)
                            + tuple(self.KCI_ARTIFACT_ORIGINS))

    @property
    def non_lava_labs(self) -> frozenset:
        return frozenset(lab.strip() for lab in self.KCI_NON_LAVA_LABS.split(",") if lab.strip())

    def with_overrides(self, overrides: Mapping[str, Any], origins: Optional[Mapping[str, str]] = None) -> "Settings":
        """Return a copy with `overrides` (raw values, e.g. from flags) parsed and applied;
        `origins` names where each came from (the flag), for error messages."""
        origins = origins or {}
        parsed = {name: _parse(name, value, origins.get(name, "command line"))
                  for name, value in overrides.items() if value is not None}
        settings = replace(self, **parsed)
        _check_pace(settings)
        return settings


def warn_short_retention(settings: Settings) -> None:
    """Warn when drp (DRP_DAYS) forgets what the legacy crawl (KCI_DAYS) lists again."""
    if settings.DRP_DAYS <= settings.KCI_DAYS:
        # feed_es lists the last KCI_DAYS days again on every run and skips what the ledger says
        # was delivered: forgetting those rows would download and send those objects again.
        log.warning("DRP_DAYS=%d is not more than KCI_DAYS=%d: ledger rows of objects the next crawl lists "
                    "again would be forgotten, and those objects downloaded and sent again",
                    settings.DRP_DAYS, settings.KCI_DAYS)


def warn_crawl_past_retention(settings: Settings) -> None:
    """Warn a legacy crawl whose window (KCI_DAYS, the feed's --days) begins before the first day
    drp (DRP_DAYS) keeps: said by each such run, since each lists those days again.

    Not when the two are equal, which a cron line chooses on purpose: both count whole UTC days
    before today, so the window begins on the first day drp keeps, and drp forgets only rows first
    seen before it, of objects the crawl no longer lists. drp and `setup_es --ilm`, where the
    retention is set, still ask for a day more than the window (`warn_short_retention`): a margin
    for the backend's clock, which dates the listing, against this host's, which dates drp. Said
    by every hourly feed, that advice would be cron's mail of the same line every hour, for a
    window that loses nothing."""
    if settings.DRP_DAYS < settings.KCI_DAYS:
        # The days before DRP_DAYS are deleted by drp and listed by every run: their objects, whose
        # rows drp forgot, are downloaded and sent again, and make the deleted indices again.
        log.warning("DRP_DAYS=%d is less than KCI_DAYS=%d: the crawl lists days whose indices drp deletes and whose "
                    "ledger rows it forgets; their objects are downloaded and sent again, and make those indices "
                    "again", settings.DRP_DAYS, settings.KCI_DAYS)


def _check_pace(settings: Settings) -> None:
    """Refuse a documents-per-second cap so low that the pause it makes before one batch (the
    batch's size over the cap) would outlast the longest pause between batches ES_LOAD_INTERVAL
    may ask for: ES_MAX_DOCS_PER_SECOND=1e-9 held the first batch's successor for centuries, and
    the run with it."""
    rate, batch = settings.ES_MAX_DOCS_PER_SECOND, settings.LS_PIPELINE_BATCH_SIZE
    if rate and batch / rate > MAX_REQUEST_SECONDS:
        raise ConfigError("ES_MAX_DOCS_PER_SECOND=%g would pause %.4g s before a batch of %d documents "
                          "(LS_PIPELINE_BATCH_SIZE, or --batch-size), more than the %d s a pause between batches may "
                          "last: set it to at least %s, or to 0 for no cap"
                          % (rate, batch / rate, batch, MAX_REQUEST_SECONDS, _rounded_up(batch / MAX_REQUEST_SECONDS)))


def _rounded_up(number: float) -> str:
    """`number` rounded up to three significant digits, as a message suggests a bound."""
    step = 10.0 ** (math.floor(math.log10(number)) - 2)
    return "%g" % (math.ceil(round(number / step, 6)) * step)


# How much of a refused value the error line shows.
SHOWN_VALUE_CHARACTERS = 80


def _parse(name: str, value: Any, origin: str) -> Any:
    spec = SPECS.get(name)
    if spec is None:
        raise ConfigError("unknown setting %s (from %s)%s" % (name, origin, _misnamed(str(name), same_prefix=False)))
    try:
        if _too_many_digits(value):
            raise ValueError("a number of more than %d digits, which no setting takes" % sys.get_int_max_str_digits())
        return spec.parse(value)
    except (TypeError, ValueError) as error:
        if name in SECRET_NAMES:
            shown = "***"
        else:
            shown = repr(masked_value(value)) if isinstance(value, str) else masked_value(_repr(value))
            if len(shown) > SHOWN_VALUE_CHARACTERS:  # a value pasted twice, 10**400: the line stays readable
                # The reason may quote the value again ("'...' is not an http(s) URL"), whole or cut.
                error = str(error).replace(shown, "it").replace(_cut(shown), "it")
                shown = _cut(shown)
        raise ConfigError("invalid %s=%s (from %s): %s" % (name, shown, origin, error)) from None


def _repr(value: Any) -> str:
    """`repr(value)`, or what it is when Python will not write it out: an int of more digits
    than it converts to text (`10**5000` in local_settings.py), alone or inside a list or dict."""
    try:
        return repr(value)
    except ValueError:
        return "%s holding a number too long to show" % _type_name(value)


def _too_many_digits(value: Any) -> bool:
    """Whether `value` holds an int of more digits than Python converts to text: every parser
    would fail on it with Python's own advice (sys.set_int_max_str_digits), and so would its
    quoting in the message."""
    try:
        repr(value)
    except ValueError:
        return True
    return False


def read_local_settings(path: Path) -> dict:
    """Return the settings a local_settings.py file names (empty when the file is absent)."""
    if not path.is_absolute() and not _working_directory_exists():
        # The file would read as absent, and the run go on with the defaults (Logstash on
        # localhost) where a cron line's `cd` meant its settings.
        raise ConfigError("cannot look for %s: the working directory is gone (removed, or replaced by a new one "
                          "of its name); change into it again" % path)
    if not path.is_file():
        if os.path.lexists(str(path)):
            # A link to a file moved away, a directory: the settings would go unread without a word.
            raise ConfigError("cannot load %s: %s" % (path, "it is a directory" if path.is_dir() else
                                                      "it is a link to nothing (%s)" % os.readlink(str(path))
                                                      if path.is_symlink() else "it is not a regular file"))
        return {}
    # As Python runs a script: the file's own directory first on the path, so that it may import
    # a module beside it (passwords kept in a file of their own, say).
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)
    try:
        namespace = runpy.run_path(str(path))
    except (Exception, SystemExit) as error:  # the user's file: any error in it (even sys.exit) is a configuration error
        # File, line and class only: the message of a NameError or SyntaxError quotes the
        # source (`name 'pw_...' is not defined`), which is where passwords are written.
        line = _failing_line(error, path)
        raise ConfigError("cannot load %s: %s%s (the text is not shown: it may hold a secret)"
                          % (path, type(error).__name__, " at line %d" % line if line else "")) from None
    finally:
        if directory in sys.path:
            sys.path.remove(directory)
    given = namespace.get("settings")
    # dict.items itself, not the user's: a subclass of dict may say otherwise, or raise.
    found = {_setting_name(name, path): value for name, value in dict.items(given)} if isinstance(given, dict) else {}
    if given is not None and not isinstance(given, (dict, ModuleType)):
        log.warning("%s: `settings` is %s, not a dict of settings; it is ignored", path, _type_name(given))
    found.update({name: value for name, value in namespace.items() if _read_as_setting(name)})
    # A name that is no setting is refused as such (load), whatever its value: only a setting's is read.
    found = {name: _plain(value, name, path) if _read_as_setting(name) else value
             for name, value in found.items()}
    for name in sorted(namespace):
        if not _read_as_setting(name) and not name.startswith("_"):
            mistake = _misnamed(name, same_prefix=False)
            if mistake:
                log.warning("%s: %s is not a kcing setting and is ignored%s", path, name, mistake)
    return found


def _under_current_names(given: Mapping[str, Any], origin: str) -> Dict[str, Tuple[Any, str]]:
    """{name: (value, where it came from)} of `given` (settings from `origin`), each of the
    original tool's names (FORMER_NAMES) replaced by kcing's, whose own value, when given too,
    wins. A value given under a former name comes from `origin`, "as" that name: a message about
    it names the name the user wrote."""
    current = {name: (value, origin) for name, value in given.items() if name not in FORMER_NAMES}
    for former, name in FORMER_NAMES.items():
        if former in given:
            current.setdefault(name, (given[former], "%s, as %s" % (origin, former)))
    return current


# What a value of local_settings.py may be made of, which the parsers read (and a message quotes)
# without running any code of the user's: Python's own types.
_PLAIN_SCALARS = (str, int, float, bool, type(None), bytes, bytearray, complex, Decimal, Fraction)
_PLAIN_CONTAINERS = (list, tuple, set, frozenset)
_PLAIN_DEPTH = 8  # a list of URLs is one level; the dict `settings` two


def _plain(value: Any, name: str, path: Path, depth: int = 0) -> Any:
    """`value`, given to setting `name` in local_settings.py, as Python's own types: a subclass of
    str, int or float as its base type's value, a list's items so too, a path as its text. Any
    other object is refused (ConfigError) without being shown: reading it, even to quote it, runs
    the user's code (its __str__, __repr__ or __eq__), which may do anything, raise included."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    # The base type's own conversion, which copies the value without calling the subclass's methods.
    for base, as_base in ((str, str.__str__), (int, int.__int__), (float, float.__float__)):
        if isinstance(value, base):
            return as_base(value)
    if isinstance(value, _PLAIN_CONTAINERS + (dict,)) and depth >= _PLAIN_DEPTH:
        # A list that holds itself (`x = []; x.append(x)`), or nested beyond any use: Python's own
        # repr() and the walk below would recurse without end (RecursionError).
        raise ConfigError("invalid %s (from %s): %s nested more than %d deep (or holding itself), which no setting "
                          "takes" % (name, path, _type_name(value), _PLAIN_DEPTH))
    for base in _PLAIN_CONTAINERS:
        if isinstance(value, base):
            return base(_plain(item, name, path, depth + 1) for item in base.__iter__(value))
    if isinstance(value, dict):
        return {_plain(key, name, path, depth + 1): _plain(item, name, path, depth + 1)
                for key, item in dict.items(value)}
    if isinstance(value, os.PathLike):
        try:
            text = os.fspath(value)
        except Exception as error:  # the user's own __fspath__: their file's error, as any in running it
            raise ConfigError("invalid %s (from %s): a path whose __fspath__ raised %s"
                              % (name, path, type(error).__name__)) from None
        return _plain(text, name, path)
    raise ConfigError("invalid %s (from %s): %s, which no setting takes: give text, a number or a list of them"
                      % (name, path, _type_name(value)))


def _setting_name(key: Any, path: Path) -> str:
    """A key of local_settings.py's `settings` dict: a setting's name, so text (a subclass's
    value as plain str); any other key is refused without running its code to show it."""
    if isinstance(key, str):
        return str.__str__(key)
    raise ConfigError("%s: `settings` has a key that is %s, not a setting's name" % (path, _type_name(key)))


def _working_directory_exists() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


# The original tool's names of settings kcing names otherwise, read as kcing's own, so that its
# local_settings.py and cron environment work unchanged: it took the one lab without LAVA, kcing a
# list of them. Where both names are given in one place, kcing's wins.
FORMER_NAMES = {"KCI_NON_LAVA_LAB": "KCI_NON_LAVA_LABS"}


def _read_as_setting(name: str) -> bool:
    """Whether `name` is read as a setting: kcing's own name, or the original tool's for one."""
    return name in SPECS or name in FORMER_NAMES


SETTING_PREFIXES = ("KCI_", "KCING_", "ES_", "LS_", "KB_", "DRP_")
# What Logstash reads from the environment for kcing's pipeline (logstash/pipeline/kcing.conf):
# set where kcing may run too, and no misspelt setting.
PIPELINE_VARIABLES = frozenset(("ES_HOSTS", "LS_HTTP_USER", "LS_HTTP_PASSWORD"))


def _misnamed(name: str, same_prefix: bool) -> str:
    """Why `name`, not a setting, looks meant as one (" (did you mean ES_HOST?)"), or "" when it
    does not: a setting's name in lower case, a near miss of one, or a name with a setting's
    prefix. With `same_prefix` (the environment, which other programs share: ES_JAVA_OPTS,
    LS_COLORS, ES_HOME, CURL_CA_BUNDLE), only a near miss of a setting of the same prefix counts.
    Without it (local_settings.py, whose upper-case names are meant for kcing), a near miss in
    upper case counts whatever its prefix: the typo may be in the prefix itself (KIC_HOST,
    DRPDAYS, KCNG_DB); a name in lower case is a helper of the file's own unless it is a setting's."""
    if name.upper() in SPECS:
        return " (setting names are upper-case: %s)" % name.upper()
    if same_prefix:
        if not name.startswith(SETTING_PREFIXES):
            return ""
        prefix = name.split("_", 1)[0] + "_"
        candidates = [known for known in SPECS if known.split("_", 1)[0] + "_" == prefix]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.8)
        return " (did you mean %s?)" % close[0] if close else ""
    close = difflib.get_close_matches(name, list(SPECS), n=1, cutoff=0.8) if name.isupper() else []
    if close:
        return " (did you mean %s?)" % close[0]
    return " (the README's settings table lists them all)" if name.startswith(SETTING_PREFIXES) else ""


def warn_of_unknown_environment(environ: Mapping[str, str]) -> None:
    """Warn of an environment variable that looks meant as a setting but is none (ES_HOTS):
    it would be ignored without a word, and the setting left at its default."""
    for name in sorted(environ):
        if not _read_as_setting(name) and name not in PIPELINE_VARIABLES:
            mistake = _misnamed(name, same_prefix=True)
            if mistake:
                log.warning("environment variable %s is not a kcing setting and is ignored%s", name, mistake)


def _failing_line(error: BaseException, path: Path) -> Optional[int]:
    """The line of `path` where running it failed, or None if it is not known."""
    if isinstance(error, SyntaxError):
        return error.lineno
    found = None
    traceback = error.__traceback__
    target = os.path.abspath(str(path))
    while traceback is not None:
        if os.path.abspath(traceback.tb_frame.f_code.co_filename) == target:
            found = traceback.tb_lineno
        traceback = traceback.tb_next
    return found


def load(environ: Optional[Mapping[str, str]] = None, local_file: Optional[Path] = None,
         overrides: Optional[Mapping[str, Any]] = None, origins: Optional[Mapping[str, str]] = None) -> Settings:
    """Build Settings from defaults <- local_settings.py <- environment <- overrides (flags).

    Only the value in effect is parsed: one a higher layer replaces is never used, so it must not
    stop the run. A CA bundle local_settings.py names that this host lacks, replaced by the
    environment's, or a KCING_DB the environment gives that --db replaces, refused every command
    while the value it would use was right."""
    environ = os.environ if environ is None else environ
    local_file = Path("local_settings.py") if local_file is None else local_file
    local = read_local_settings(local_file)
    for name, value in local.items():
        if not _read_as_setting(name):
            _parse(name, value, str(local_file))  # a key of `settings` that is no setting: refused
    # name -> (value as given, where it came from), the highest layer's
    given = _under_current_names(local, str(local_file))
    warn_of_unknown_environment(environ)
    given.update(_under_current_names({name: environ[name] for name in (*SPECS, *FORMER_NAMES)
                                       if name in environ and environ[name].strip() != ""}, "environment"))
    origins = origins or {}
    for name, value in (overrides or {}).items():
        if value is not None:
            given[name] = (value, origins.get(name, "command line"))
    values = {name: spec.default for name, spec in SPECS.items()}
    values.update((name, _parse(name, value, origin)) for name, (value, origin) in given.items())
    settings = Settings(**values)
    _check_pace(settings)
    return settings


def markdown_table() -> str:
    """The README's settings table, generated so the two can never disagree; a number's range
    is the one its parser enforces."""
    rows = ["| setting | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, spec in SPECS.items():
        default = spec.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "`%s`" % default if default != "" else "(empty)"
        allowed = getattr(spec.parse, "allowed", "")
        rows.append("| `%s` | %s | %s | %s |" % (name, shown, allowed, spec.help.replace("|", "\\|")))
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
