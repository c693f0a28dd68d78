"""One exception root; the CLI maps each class to an exit code in one place."""
import os
import re
import select
import sys
from typing import Any


class KcingError(Exception):
    """Base of every error kcing raises on purpose."""

    exit_code = 1


class ConfigError(KcingError):
    """A setting, flag or local file is wrong; nothing was changed."""

    exit_code = 2


class UpstreamError(KcingError):
    """The upstream listing or storage did not give what was asked for."""

    exit_code = 1


class UpstreamAnsweredError(UpstreamError):
    """Upstream kept answering a request with an HTTP error status (`status`, the last one)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ObjectTooLarge(UpstreamError):
    """An upstream body is larger than KCI_MAX_OBJECT_BYTES: its object is rejected (fetching it
    again gives the same), and a listing page that large stops the run."""


class ObjectUndecodable(UpstreamError):
    """An upstream body does not decode as its Content-Encoding says: not retried (the same bytes
    come again); a source may take the object without that file, as with a broken gzip file."""


class ObjectTooSlow(UpstreamError):
    """An upstream body did not arrive whole within KCI_DOWNLOAD_DEADLINE. Not retried within the
    run, so one slow object holds the others up for one deadline at most; the next run tries again."""


class RejectedInput(KcingError):
    """An upstream file cannot become documents (not JSON, or lacks a needed field).

    The reason is recorded in the ledger and the run goes on.
    """

    exit_code = 1


class SinkUnavailable(KcingError):
    """Logstash could not be reached (or kept failing) after all retries."""

    exit_code = 3


class SinkRejected(KcingError):
    """Logstash refused a request in a way that retrying cannot fix (a 4xx)."""

    exit_code = 3


class BatchTooLarge(Exception):
    """A Logstash input answered 413: the pipeline splits the batch and sends the halves."""

    def __init__(self, url: str, size: int):
        super().__init__("%s answered 413 for %d bytes" % (url, size))
        self.url = url
        self.size = size


class LockHeld(KcingError):
    """Another kcing run holds the lock beside the database."""

    exit_code = 4


class LedgerBusy(KcingError):
    """Another process held the ledger's database lock for longer than KCING_DB_LOCK_WAIT (or, once
    a signal stopped the run, than the grace the batch in flight gets).

    Same exit status as LockHeld: something else is using the ledger; try again later."""

    exit_code = 4


class StorageFailed(KcingError):
    """The ledger or an output file could not be written (disk full, I/O error, read-only).

    What was written is whole: the ledger rolled the transaction back, an output file was cut
    back to its last whole record. Whatever was not recorded is sent again by the next run."""

    exit_code = 5


class NothingChecked(KcingError):
    """reconcile found nothing it could check: no object delivered to Logstash in its window, or
    only objects in indices past the retention or from before the ledger kept ids."""

    exit_code = 6


class Interrupted(KcingError):
    """SIGINT or SIGTERM: the batch in flight was finished and recorded, then the run stopped."""

    exit_code = 130


class RunFailing(KcingError):
    """A wait cut short because the run is already ending with another error (a post's that no
    retry fixes, the ledger locked: `Stop.fail`). The feed ends the run with that error, never
    with this one."""


class ElasticsearchError(KcingError):
    """Elasticsearch could not be reached, was not ready in time, or refused an admin request
    (setup_es, drp) in a way that retrying cannot fix. Bad credentials, TLS or versions are ConfigError."""

    exit_code = 3


# A bug, not a condition of the machine or the services: the CLI says so in one line (and shows
# the traceback with -d). 70 is EX_SOFTWARE of sysexits.h.
INTERNAL_ERROR = 70


def exit_status(error: BaseException) -> int:
    """The exit status a run ended by `error` reports (and records in its run row)."""
    if isinstance(error, KcingError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return Interrupted.exit_code
    if isinstance(error, BrokenPipeError) and stdout_reader_gone():
        return STDOUT_CLOSED  # the CLI ends the command so, quietly, as SIGPIPE ends other tools
    return INTERNAL_ERROR


# C0 and C1 controls (0x9b is the 8-bit CSI, which a terminal obeys as ESC [), DEL, the
# Unicode line and paragraph separators, and the bidirectional controls (marks, embeddings,
# overrides, isolates): a name holding U+202E shows the rest of the line reversed, so that
# `board \u202egnp.exe` reads `board exe.png` on a terminal that orders text as Unicode says.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def kept_on_one_line(text: str) -> str:
    """`text` with each control character (a newline, a carriage return, an escape) written as
    Python writes it in a string (`\\n`): the last line kcing prints must stay one line whatever
    it quotes (a file name may hold a newline: `--db $'a\\nb'`), and a terminal must not take
    part of it for a command."""
    return _LINE_BREAKING.sub(lambda found: repr(found.group())[1:-1], text)


# The controls of _LINE_BREAKING by the escape each is written as: `\\n` (two characters) for
# the three of _SHORT_ESCAPED, `\\x1b` (four) for the rest of _LATIN1_CONTROLS, `\\u2028` (six)
# for _WIDE_CONTROLS.
_SHORT_ESCAPED = (b"\t", b"\n", b"\r")
_LATIN1_CONTROLS = bytes(range(0x20)) + bytes(range(0x7f, 0xa0))
_WIDE_CONTROLS = "\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def length_kept_on_one_line(text: str) -> int:
    """len(kept_on_one_line(text)), counted without writing the escapes: a log line says the
    length of a message it cuts, and escaping five megabytes of controls (an answer quoted whole)
    to count them took a second and a half."""
    latin1 = text.encode("latin-1", "replace")  # each wider character a "?": its controls are counted below
    controls = len(latin1) - len(latin1.translate(None, _LATIN1_CONTROLS))
    short = sum(latin1.count(control) for control in _SHORT_ESCAPED)
    # A text of Latin-1 only (most) has none of these: each count returns at once.
    wide = sum(text.count(control) for control in _WIDE_CONTROLS)
    return len(text) + short + 3 * (controls - short) + 5 * wide


def kept_short(text: Any, limit: int = 80) -> str:
    """A value a server gave (a version number, a cluster's status), fit to stand in a line of
    kcing's: its control characters written as escapes (`kept_on_one_line`), cut to `limit`."""
    text = kept_on_one_line(str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: Any, limit: int = 160) -> str:
    """A reason fit for one ledger line: whitespace collapsed, the other control characters
    written as escapes (`kept_on_one_line`: a reason quotes upstream text, such as the start of
    a web page, whose escape sequences a terminal would obey), long text cut."""
    return kept_short(" ".join(str(text).split()), limit)


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` to quote an upstream value in a reason, cut to `limit` characters: a name
    can be megabytes long, and the reason goes on one log line and into the ledger."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unexpected_failure(what: str, error: Exception) -> str:
    """The rejection reason for an object whose fetch or documents raised something kcing does
    not raise on purpose: input no check foresaw must cost that object only, never the run (a
    run that crashed on it would crash again on every retry, and deliver nothing ever after).
    One line, the same whether the documents were made in the feed's process or in a worker."""
    return one_line("%s: %s (%s)" % (what, type(error).__name__, error))


def reading_failure(error: Exception) -> str:
    """Why a file could not be read, in words: the system's reason without Python's
    "[Errno 20] ...: 'path'" wrapping (the caller names the file), "not UTF-8 text", or a JSON
    error's own message."""
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text (byte %d)" % error.start
    if isinstance(error, OSError):
        return error.strerror or one_line(error)
    return one_line(error)


# A stdout whose reader has gone (`kcing status | head -3`) ends the command quietly with the
# status of a process ended by SIGPIPE (128 + 13), as it ends other tools (Python ignores SIGPIPE
# for its sockets' sake); what the command records of how it ended (a feed_es run's --metrics
# file) says the same.
STDOUT_CLOSED = 141

# Once found gone, stdout points at /dev/null, where a second look finds a reader: each later
# look (a command's, then the CLI's) must still say it was gone.
_found_gone = False


def stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose reader has closed it; stdout then goes to /dev/null, so
    that the interpreter's last flush of what is buffered does not fail again."""
    global _found_gone
    if _found_gone:
        return True
    try:
        descriptor = sys.stdout.fileno()
        poller = select.poll()
        poller.register(descriptor, select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False
    if gone:
        _found_gone = True
        to_devnull(sys.stdout)
    return gone


def to_devnull(stream) -> None:
    """Point `stream`'s descriptor at /dev/null: what it could not take is lost anyway, and no
    later write or flush of it (the interpreter's at exit included) fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
