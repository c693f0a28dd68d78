"""Logging set-up (called only by the CLI): progress and errors to stderr, optionally a file."""
from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import Deque, Iterable, Optional

from kcing import progress, secrecy
from kcing.errors import kept_on_one_line, length_kept_on_one_line
from kcing.files import ledger_in_the_way
# What the CLI prints without logging (the line a failed command ends with) is masked alike.
from kcing.secrecy import masked

# Times in UTC, with the zone: a log read next to another host's must not need guessing.
FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


def formatter() -> logging.Formatter:
    made = logging.Formatter(FORMAT, DATE_FORMAT)
    made.converter = time.gmtime
    return made


def busy_in_this_thread(error: Optional[BaseException]) -> bool:
    """Whether `error` is a buffered stream's refusal of a write from the thread that is inside
    a write to it already: a signal's handler, run in the main thread while that thread's write
    waits (a pipe nobody reads fast, a FIFO), logging its line."""
    return isinstance(error, RuntimeError) and str(error).startswith("reentrant call")


class HeldWhileBusy:
    """For a handler whose stream a signal's handler may find this thread writing to: the record
    waits, and is written once that write returns (by the write's own emit, the next record,
    or the handler's close at exit), rather than refused with "--- Logging error ---" and a
    traceback, and lost. Each record is written by whichever emit takes it off the list."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: Deque[logging.LogRecord] = deque()

    def emit(self, record: logging.LogRecord) -> None:
        self._waiting.append(record)
        self.write_waiting()

    def write_waiting(self) -> None:
        while True:
            try:
                record = self._waiting.popleft()
            except IndexError:
                return
            try:
                self.write_now(record)
            except RuntimeError as error:
                if not busy_in_this_thread(error):
                    raise
                self._waiting.appendleft(record)
                return

    def write_now(self, record: logging.LogRecord) -> None:
        raise NotImplementedError

    def handleError(self, record: logging.LogRecord) -> None:
        if busy_in_this_thread(sys.exc_info()[1]):
            raise  # to write_waiting, which keeps the record for later
        super().handleError(record)

    def close(self) -> None:
        self.write_waiting()
        super().close()


class TerminalHandler(HeldWhileBusy, logging.StreamHandler):
    """stderr, sharing the terminal with a live progress line (kcing/progress.py)."""

    def write_now(self, record: logging.LogRecord) -> None:
        progress.clear_live_line(self.stream)
        logging.StreamHandler.emit(self, record)


class RedactSecrets(logging.Filter):
    """Replaces any configured secret that reaches a log record with `***`, and the values of
    signature and token parameters in URLs (signed artifact URLs; urllib3's `-d` request lines)
    (`kcing.secrecy.Masker`), and makes the message one bounded line (`logged_line`).

    A record's traceback becomes part of its message only with `tracebacks` (--debug): a library
    that logs one with a warning (urllib3 does, for a header line it cannot parse) would print
    it on a routine run, where a line is all a user needs.
    """

    def __init__(self, secrets: Iterable[str], tracebacks: bool = True):
        super().__init__()
        self.masked = secrecy.Masker(secrets)
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "kcing_written", False):
            return True  # done by the filter of another handler (stderr's, then the log file's)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed call: let the handler report it as logging does
        message = logged_line(self.masked(message))
        if record.exc_info:
            # A traceback (with --debug) can quote a URL or header holding a secret too. It is the
            # one record written over several lines, after its message.
            if self.tracebacks:
                message += "\n" + self.masked(logging.Formatter().formatException(record.exc_info))
            record.exc_info, record.exc_text = None, None
        record.msg, record.args, record.kcing_written = message, None, True
        return True


# How many characters of a log message a record keeps: what a message quotes is bounded where it
# is quoted; this bounds what was not (a library's message, an answer quoted whole).
LOG_MESSAGE_CHARACTERS = 8000


def logged_line(message: str) -> str:
    """`message` as one line of the log: its control characters (line breaks, terminal escapes)
    written as escapes (`kept_on_one_line`), whatever outside text it quotes, so that no record
    spans lines, forges a line of kcing's own or sends a terminal a command; and cut to
    LOG_MESSAGE_CHARACTERS, the length it says being that of the whole message escaped."""
    length = len(message)
    if not message.isprintable():  # the usual message is printable: one C call, no regex
        # An escape is never shorter than the character it writes, so the escaped message's
        # start is its start escaped: the rest, megabytes maybe, is counted, not escaped.
        length = length_kept_on_one_line(message)
        message = kept_on_one_line(message[:LOG_MESSAGE_CHARACTERS])
    if length > LOG_MESSAGE_CHARACTERS:
        message = "%s... (%d characters)" % (message[:LOG_MESSAGE_CHARACTERS], length)
    return message


# How much of a ledger statement a debug line shows (see BoundedStatements): the statement whole
# up to this many characters, this many parameters, each up to this many characters.
SQL_CHARACTERS = 2000
SQL_PARAMETERS = 20
SQL_PARAMETER_CHARACTERS = 60
# `?, ?, ?, ...` (an IN list) and `(?, ?), (?, ?), ...` (the rows of a multi-row INSERT).
_PLACEHOLDER_RUN = re.compile(r"\?(?:\s*,\s*\?){9,}")
_ROW_RUN = re.compile(r"(\((?:\s*\?\s*,)*\s*\?\s*\))(?:\s*,\s*\1){2,}")


def bounded_statement(sql: str, parameters) -> str:
    """A ledger statement and its parameters for a debug line, bounded in size: a run of
    placeholders or of rows is said by its count, a long parameter (document ids as bytes, a
    pasted error message) by its start and length, and parameters past the first few by their
    count. What statement ran stays readable; the line stays a line."""
    text = _ROW_RUN.sub(lambda found: "%s, ... (%d rows)" % (found.group(1), found.group(0).count("(")), sql)
    text = _PLACEHOLDER_RUN.sub(lambda found: "?, ... (%d values)" % found.group(0).count("?"), text)
    if len(text) > SQL_CHARACTERS:
        text = "%s... (%d characters)" % (text[:SQL_CHARACTERS], len(text))
    values = list(parameters or ())
    shown = [_bounded_parameter(value) for value in values[:SQL_PARAMETERS]]
    if len(values) > SQL_PARAMETERS:
        shown.append("... and %d more (%d in all)" % (len(values) - SQL_PARAMETERS, len(values)))
    return "%s; parameters [%s]" % (text, ", ".join(shown))


def _bounded_parameter(value) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "<%d bytes>" % len(value)  # document ids: binary, no reader's business in a log
    shown = repr(value)
    if len(shown) > SQL_PARAMETER_CHARACTERS:
        return "%s... (%d characters)" % (shown[:SQL_PARAMETER_CHARACTERS], len(shown))
    return shown


class BoundedStatements(logging.Filter):
    """On peewee's logger, which logs each statement as the tuple (sql, parameters): the record
    becomes `bounded_statement`'s text. Unbounded, a write of document ids made 80 KB lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        statement = record.msg
        if isinstance(statement, tuple) and len(statement) == 2 and isinstance(statement[0], str) and not record.args:
            record.msg, record.args = bounded_statement(statement[0], statement[1]), None
        return True


BOUNDED_STATEMENTS = BoundedStatements()


class LogFileHandler(HeldWhileBusy, logging.handlers.WatchedFileHandler):
    """A log file that says once, in one line, that it cannot be written (a full disk), instead
    of printing a traceback for every record; the run and its stderr log go on.

    A file moved away or removed during the run (logrotate, whose `compress` removes it once
    gzip has read it) is opened again at its name before the next line: the rest of the trail,
    the summary and how the run ended included, goes where the operator looks for it."""

    failed = False

    def _open(self):
        # Opened without waiting: a FIFO no process reads (a log shipper that is down) would hold
        # the open for good, and cron would start another run, held there too, every hour. Then
        # ENXIO refuses it; with a reader, it is written as any log file.
        # 0644 less the umask, as every file kcing makes: not a log others may write lines into.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        os.set_blocking(fd, True)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def write_now(self, record: logging.LogRecord) -> None:
        # Opening the file again happens outside FileHandler's own guard: a directory gone or
        # made unwritable meanwhile would otherwise raise into whatever code logged the line.
        try:
            logging.handlers.WatchedFileHandler.emit(self, record)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if busy_in_this_thread(sys.exc_info()[1]):
            raise  # kept for later (HeldWhileBusy): the file is not failing
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            reason = getattr(error, "strerror", None) or error
            sys.stderr.write(kept_on_one_line("kcing: cannot write the log file %s: %s; its later lines are lost "
                                              "(stderr has them)" % (self.baseFilename, reason)) + "\n")


def log_file_refusal(path: str, ledger: Optional[str] = None) -> Optional[str]:
    """Why `path` must not be opened as the log file, or None: a ledger (`-l kcing.db` for
    `--db kcing.db`), or another SQLite database, which log lines appended would damage; with
    `ledger` (KCING_DB), that ledger's name too, before the run has made it."""
    written_over = ledger_in_the_way(Path(path), ledger)
    if written_over:
        return "it is %s, which log lines would damage: name another file, e.g. kcing.log" % written_over
    return None


def configure(debug: bool = False, log_file: Optional[str] = None, secrets: Iterable[str] = (),
              quiet: bool = False) -> None:
    """Log to stderr and, with `log_file`, to that file too. `quiet` (--quiet) keeps stderr to
    warnings and errors, and the progress to the log file: a cron job prints only what is wrong."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    redact = RedactSecrets(secrets, tracebacks=debug)
    # What is written without logging (a failed command's last line, answers quoted in errors)
    # is masked alike.
    secrecy.remember(redact.masked)
    terminal = TerminalHandler(sys.stderr)
    if quiet:
        terminal.setLevel(logging.WARNING)
    progress.live_allowed = not quiet
    handlers = [terminal]
    if log_file:
        # A name that is not UTF-8 (lone surrogates) is written escaped, as stderr writes it:
        # strict, the file refused the line and every line after it.
        handlers.append(LogFileHandler(log_file, encoding="utf-8", errors="backslashreplace"))
    for handler in handlers:
        handler.setFormatter(formatter())
        handler.addFilter(redact)
        root.addHandler(handler)
    # Library chatter (one line per pooled connection) drowns the progress lines otherwise.
    for noisy in ("urllib3", "peewee"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("peewee").addFilter(BOUNDED_STATEMENTS)  # added once, however often configured
    # The Elasticsearch client warns once per failed attempt; kcing reports the outcome itself.
    logging.getLogger("elastic_transport").setLevel(logging.DEBUG if debug else logging.ERROR)


def in_log_file_only(level: int, message: str, name: str) -> None:
    """Write `message` to the -l log file, if there is one, and not to stderr (which has it
    already, said otherwise)."""
    record = logging.LogRecord(name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogFileHandler):
            handler.handle(record)


class CopiedToLogFile:
    """stdout, each whole line of it also written to the -l log file: what a command prints (its
    summary, all that setup_es, drp or setup_kbn say) belongs to the trail a cron job leaves, as
    it does under --quiet. Everything else (fileno, isatty, encoding) is stdout's own."""

    def __init__(self, stream, name: str):
        self._stream, self._name, self._partial = stream, name, ""

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            in_log_file_only(logging.INFO, line, self._name)
        return written

    def finish(self) -> None:
        """The last line, if the command ended without its newline."""
        if self._partial:
            in_log_file_only(logging.INFO, self._partial, self._name)
            self._partial = ""

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
