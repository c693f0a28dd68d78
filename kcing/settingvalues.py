"""How a setting's value is read: the parser of each kind of value `kcing.settings.SPECS` names,
the bounds of the numeric ones, and how a value is shown in a message (masked, and cut).

A parser takes what local_settings.py, the environment or a flag gave (text, or a Python value
from local_settings.py) and returns the value kcing uses, or raises ValueError saying why in
words a user can act on; `kcing.settings` names the setting and where its value came from. Its
`allowed` attribute, where it has one, is what the README's settings table says it takes.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from kcing import urls
from kcing.digits import ascii_digits, decimal_number_spelling, foreign_digits, whole_number_spelling
from kcing.errors import one_line

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


def plain_text(value: Any) -> str:
    """Text: a string (or a path, or a number, from local_settings.py). Anything else is refused
    rather than written out as Python shows it: `LS_USER = None` would be the user "None", and
    `KCING_DB = None` a ledger named None."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected text (a string), not %s" % type_name(value))
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


def credential(value: Any) -> str:
    """A user name or password: text sent in UTF-8, so never bytes the environment's encoding
    could not read (Python keeps them as lone surrogates, which no encoding can send)."""
    text = plain_text(value)
    if any("\udc80" <= character <= "\udcff" for character in text):
        raise ValueError("it holds bytes that are not UTF-8 text")
    return text


def token(value: Any) -> str:
    """A token or API key, sent as it is in an HTTP header: printable ASCII without spaces."""
    text = plain_text(value)
    if not all("!" <= character <= "~" for character in text):
        raise ValueError("a token is printable ASCII without spaces")
    return text


token.allowed = "printable ASCII"


def required_path(value: Any) -> str:
    """A file or directory name: never empty, which would name the working directory (a ledger
    "." refused as a directory, samples saved among whatever is there)."""
    text = optional_path(value)
    if not text:
        raise ValueError("expected a file or directory name, not an empty one")
    return text


def ledger_file(value: Any) -> str:
    """The ledger's file name: one SQLite takes for a file. This SQLite reads a name beginning
    with `file:` as a URI (`?mode=memory` keeps it in memory; otherwise it names another file
    than the run lock's `<name>.lock` does), and `:memory:` as a database kept in memory: a run
    would record its deliveries nowhere."""
    text = required_path(value)
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


ledger_file.allowed = "a file name (not `:memory:`, nor one beginning with `file:` or ending with `/`)"


def directory_name_problem(path: str, file_name: str) -> str:
    """Why `path`, meant to name a file, names a directory instead (it ends with a slash), or "".
    Python's file calls drop that slash (a log file's handler, pathlib), so `-l /var/log/kcing/`
    with that directory not made yet became a file /var/log/kcing, where a shell refuses the name."""
    if not path.endswith(("/", os.sep)):
        return ""
    return "ends with /, which names a directory: name the file in it, e.g. %s%s" % (path, file_name)


def optional_path(value: Any) -> str:
    """A file or directory name, or empty. Never one holding a NUL character (which only
    local_settings.py can give): no file name can, and every system call refuses it."""
    text = plain_text(value)
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


def kibana_space(value: Any) -> str:
    """A Kibana space id (empty: the default space), checked here so that a bad one is named as
    the setting it came from, not found only when the Kibana URL is made."""
    text = plain_text(value)
    if text and not re.fullmatch(r"[a-z0-9_-]+", text):
        raise ValueError("a Kibana space id takes lowercase letters, digits, '_' and '-'")
    return text


kibana_space.allowed = "lowercase letters, digits, _ and -"


def text_list(value: Any) -> str:
    """Comma-separated names, or (from local_settings.py) a list or tuple of them. A name holding
    whitespace or `;` is several run together (`lab-a lab-b`): as one name it matched no lab, and
    both labs' boots were looked for as LAVA ones without a word."""
    text = ",".join(plain_text(item) for item in value) if isinstance(value, (list, tuple)) else plain_text(value)
    for name in text.split(","):
        if re.search(r"[\s;]", name.strip()):
            raise ValueError("%s holds several names: separate them with commas" % _quoted(name.strip()))
    return text


def type_name(value: Any) -> str:
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


def _number_in_range(value: Any, expected: str, spelled_right: Callable[[str], bool], convert: Callable[[str], Any],
                     minimum: float, maximum: float) -> Any:
    """`value` read by `convert` when it is spelled as kcing takes a number (`spelled_right`: only
    the digits 0-9, no `_` or `+`) and lies from `minimum` to `maximum`; ValueError(`expected`)
    otherwise. True and False are no numbers, though Python counts them as 1 and 0."""
    if isinstance(value, bool):
        raise ValueError(expected)
    text = _ascii_number_text(value, expected)
    if not spelled_right(text):
        raise ValueError(expected)
    try:
        number = convert(text)
    except ValueError:
        raise ValueError(expected) from None
    if not minimum <= number <= maximum:
        raise ValueError(expected)
    return number


def integer_between(minimum: int, maximum: int) -> Callable[[Any], int]:
    """A parser of whole numbers from `minimum` to `maximum`, which says its range (`allowed`)."""
    expected = "expected a whole number from %d to %d" % (minimum, maximum)

    def parse(value: Any) -> int:
        # int() reads "1_0" as 10 and "+3" as 3; it refuses more digits than Python converts.
        return _number_in_range(value, expected, whole_number_spelling, int, minimum, maximum)

    parse.allowed = "%d to %d" % (minimum, maximum)
    return parse


def number_between(minimum: float, maximum: float) -> Callable[[Any], float]:
    """A parser of numbers from `minimum` to `maximum`, which says its range (`allowed`)."""
    allowed = "%s to %s" % (number_text(minimum), number_text(maximum))
    expected = "expected a number from %s" % allowed

    def parse(value: Any) -> float:
        # float() reads "1_0" as 10, "+1" as 1 and "nan"; 1e999 reads as infinite, beyond every range.
        number = _number_in_range(value, expected, decimal_number_spelling, float, minimum, maximum)
        return number or 0.0  # -0 is 0: messages said "within -0s"

    parse.allowed = allowed
    return parse


def number_text(number: float) -> str:
    """`0.1`, `3600`: a bound as the README and messages show it."""
    return "%d" % number if float(number).is_integer() else "%g" % number


def one_of(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError("must be one of %s" % ", ".join(allowed))
        return text

    parse.allowed = ", ".join(allowed)
    return parse


def workers(value: Any) -> Any:
    """A number of worker processes, or "auto": one per usable core."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return _worker_count(value)
    except ValueError:
        raise ValueError("expected auto, or a whole number from %s" % _worker_count.allowed) from None


_worker_count = integer_between(0, MAX_CONCURRENCY)
workers.allowed = "auto, or %s" % _worker_count.allowed


def url_list(value: Any) -> tuple:
    """Comma-separated http(s) URLs: one Logstash input, or several to spread batches across."""
    items = _list_items(value)
    urls = tuple(http_url(item, several=LIST_SEPARATOR) for item in items if str(item).strip())
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
    text = plain_text(value)
    if "@" in text:
        raise ValueError("put credentials in their own settings, not in the URL")
    return text.split(",")


def _quoted(text: str) -> str:
    """`text` quoted in a reason, masked, and cut as `_parse` cuts a value: an item of a list
    pasted with the rest of a line would otherwise be quoted whole after the cut value."""
    return shortened(repr(masked_value(text)))


def shortened(shown: str) -> str:
    if len(shown) <= SHOWN_VALUE_CHARACTERS:
        return shown
    return "%s... (%d characters)" % (shown[:SHOWN_VALUE_CHARACTERS], len(shown))


def http_url(value: Any, several: str = ONE_URL_ONLY) -> str:
    # `ES_HOST = None` in local_settings.py is no URL "None" to give a scheme to (http://None).
    text = plain_text(value)
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
        http_url("http://" + text)
    except ValueError:
        return ""
    return ": give its scheme, e.g. http://%s" % text


def optional_url(value: Any) -> str:
    return http_url(value) if plain_text(value) else ""


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


def host(value: Any) -> str:
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
        host(text)
    except ValueError:
        return False
    return True


def origin_list(value: Any) -> tuple:
    """Comma-separated origins (scheme://host[:port]), e.g. of artifact storage hosts."""
    items = _list_items(value)
    found = []
    for item in items:
        text = http_url(item, several=LIST_SEPARATOR) if str(item).strip() else ""
        if text and urlsplit(text).path not in ("", "/"):
            raise ValueError("%s is not an origin: give scheme://host[:port] without a path" % _quoted(text))
        if text:
            found.append(text)
    return tuple(found)


def ca_bundle(value: Any) -> str:
    """A CA bundle file or a directory of hashed certificates; empty means the system store.

    Checked here because requests reports a missing bundle only at the first request, as an
    OSError that looks like a network failure."""
    text = optional_path(value)
    if text and not os.path.exists(text):
        raise ValueError("no such file or directory")
    if text and not (os.path.isfile(text) or os.path.isdir(text)):
        # A FIFO would hold the run at the first connection, waiting for a writer, for good.
        raise ValueError("neither a regular file (a PEM bundle) nor a directory of certificates")
    if text and not os.access(text, os.R_OK):
        raise ValueError("not readable")
    return text


# What the README's table says each kind of value takes (numbers and choices say it themselves).
http_url.allowed = "an http(s) URL"
optional_url.allowed = "an http(s) URL, or empty"
url_list.allowed = "http(s) URLs, comma-separated"
host.allowed = "host[:port]"
origin_list.allowed = "scheme://host[:port], comma-separated"


# How much of a refused value the error line shows.
SHOWN_VALUE_CHARACTERS = 80


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
