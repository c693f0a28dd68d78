"""A LAVA callback (`lava-json-<board>.json`, or the raw notify body) -> boot, test and log documents.

Needed: an integer job `id` and a `definition` whose `metadata:` names the kernel tree
(`kernel.tree`), kernel (`kernel.version`), architecture (`job.arch`) and board (`device.type`,
or the definition's `device_type`). `results` and `log` are optional: a job without them makes
a boot document only. A `results` or `log` that is present but unreadable refuses the file.

- one `boot` document: the job fields plus the boot outcome (see `lava_results.boot_outcome`);
- one `test` document per test case of every suite in `results`;
- one `log` document per log line, `lineno` counted from 1.

Every document carries the fields in `fields.LAVA_COMMON`. All go to indices dated by the job's
own date (end, start, then submit time; else the listing date); a test document's @timestamp is
its `logged` time and a log document's its `dt`, when they have one.
"""
from __future__ import annotations

import re
from datetime import datetime
from itertools import count
from json.encoder import encode_basestring
from typing import Any, Iterator, List, Mapping, Optional, Tuple

from kcing.documents import lava_job, lava_results
from kcing.documents.coerce import EARLIEST_YEAR, LATEST_YEAR, as_date, as_keyword, as_text, compact_json
from kcing.documents.identity import IdPrefix, index_name, iso_timestamp
from kcing.documents.lava_log import LogText, message_text, read_log_text
from kcing.documents.typed import without_missing
from kcing.documents.validate import check_field_names, serialised
from kcing.errors import RejectedInput
from kcing.records import Document


class _JobContext:
    """What every document of one callback shares: identity, dates and common fields."""

    def __init__(self, identity: tuple, when: datetime, common: dict):
        self.identity = identity
        self.ids = {kind: IdPrefix(kind, *identity) for kind in ("boot", "test", "log")}
        self.indices = {kind: index_name(kind, when) for kind in ("boot", "test", "log")}
        self.timestamp = iso_timestamp(when)
        self.common = without_missing(common)
        self._log_prefix: Optional[str] = None

    def document(self, kind: str, extra_identity: tuple, fields: Mapping[str, Any],
                 when: Optional[datetime] = None, timestamp: Optional[str] = None) -> Document:
        body = dict(self.common)
        body.update(without_missing(fields))
        return Document(
            kind,
            index=self.indices[kind],
            doc_id=self.ids[kind].make(*extra_identity),
            timestamp=timestamp or (iso_timestamp(when) if when is not None else self.timestamp),
            body=body,
        )

    def log_prefix(self) -> str:
        """The JSON of a log body up to its own fields: the shared fields' JSON, encoded once per
        job (a job has thousands of lines), without its closing brace and with a trailing comma
        when it has members. Empty when a line field would replace a shared one in place: then
        each body is encoded whole."""
        if self._log_prefix is None:
            if LOG_FIELDS.intersection(self.common):
                self._log_prefix = ""
            else:
                check_field_names([*self.common, *LOG_FIELDS])
                shared = serialised(self.common)
                self._log_prefix = shared[:-1] + ("," if len(shared) > 2 else "")
        return self._log_prefix


# The fields of a log document besides the job's shared ones (names safe to splice into JSON).
LOG_FIELDS = frozenset(("lineno", "level", "message"))


def lava_documents(callback: Mapping[str, Any], created: Optional[datetime],
                   listed_lab: Optional[str] = None) -> List[Document]:
    documents, lines = lava_parts(callback, created, listed_lab)
    if lines is not None:
        documents.extend(lines.documents())
    return documents


def lava_parts(callback: Mapping[str, Any], created: Optional[datetime],
               listed_lab: Optional[str] = None) -> Tuple[List[Document], Optional[LogLines]]:
    """`lava_documents`, with the log documents, which come last, still to be made: (the
    other documents, the job's LogLines or None)."""
    job_id = lava_job.lava_job_id(callback)
    definition = lava_job.read_definition(callback, job_id)
    fields = lava_job.job_fields(callback, definition, job_id, listed_lab)
    boot_fields = lava_job.boot_only_fields(callback, definition)
    suites = lava_results.read_suites(callback.get("results"))
    log = read_log(callback.get("log"))
    outcome = lava_results.boot_outcome(suites.get("lava", []), boot_fields["job_status"])
    common = dict(fields, boot_result=outcome["boot_result"], boot_failure=outcome["boot_failure"],
                  boot_time=outcome["boot_time"])
    context = _JobContext(
        identity=(fields["lab_name"], job_id, fields["board"]),
        when=lava_job.job_date(callback, created, job_id),
        common=common,
    )
    boot_fields.update(outcome, **lava_results.bootloader_addresses(suites.get("lava", [])))
    problem = repetition_problem(shared_bytes(context.common), suites, len(log))
    if problem is not None:
        raise RejectedInput("LAVA job %d: %s" % (job_id, problem))
    documents = [context.document("boot", (), boot_fields)]
    documents.extend(_test_documents(context, suites))
    made, lines = _log_parts(context, log)
    documents.extend(made)
    return documents, lines


def log_parts(identity: tuple, when: datetime, common: dict,
              log: LogText) -> Tuple[List[Document], Optional[LogLines]]:
    """The log documents of the job `identity` names (an API lab job's, kcing/documents/nodes.py),
    dated `when`, whose lines share the fields `common`, as `lava_parts` gives them: (documents
    made, or their LogLines)."""
    return _log_parts(_JobContext(identity, when, common), log)


# Each document of a job holds the job's shared fields (kernel, board, lab, ...; a test's suite
# too) in full. Real ones take well under a kilobyte; a file may make them megabytes long and
# still have a line of log per few bytes, and its documents would then take the product of the
# two: gigabytes from a file of one or two megabytes, built in memory before anything is sent.
# What the documents repeat beyond REPEATED_FREE_BYTES each may add up to REPEATED_MAX_BYTES,
# so that a job's documents take at most what they would with shared fields of that size.
REPEATED_FREE_BYTES = 4096
REPEATED_MAX_BYTES = 64 << 20


def repetition_problem(shared: int, suites: Mapping[str, list], log_lines: int) -> Optional[str]:
    """What is wrong with a job whose documents (a test for each case of `suites`, a log line for
    each of `log_lines`) would repeat `shared` bytes of shared fields (`shared_bytes`), and its
    suites' names, more than REPEATED_MAX_BYTES beyond REPEATED_FREE_BYTES a document (see
    above); None when nothing is."""
    largest = shared
    beyond = max(0, shared - REPEATED_FREE_BYTES) * log_lines
    for suite, cases in suites.items():
        # A test document holds its suite's name twice (suite, suite_name), as JSON text.
        each = shared + 2 * len(encode_basestring(suite).encode("utf-8", "replace"))
        beyond += max(0, each - REPEATED_FREE_BYTES) * len(cases)
        largest = max(largest, each) if cases else largest
    if beyond <= REPEATED_MAX_BYTES:
        return None
    return ("its %d test and log documents would each repeat up to %d bytes of the job's fields (kernel, board, "
            "lab, a test's suite), %d MiB beyond %d bytes a document, more than %d MiB"
            % (log_lines + sum(map(len, suites.values())), largest, beyond >> 20, REPEATED_FREE_BYTES,
               REPEATED_MAX_BYTES >> 20))


def shared_bytes(common: Mapping[str, Any]) -> int:
    """The bytes of the JSON of the fields `common` that every document of a job repeats (0 when
    they are no JSON: the job's first document says why, as it always did)."""
    try:
        return len(serialised(without_missing(common)).encode("utf-8"))
    except RejectedInput:
        return 0


def _log_parts(context: _JobContext, log: LogText) -> tuple:
    if not len(log):
        return [], None
    if not context.log_prefix():
        return _log_documents_one_by_one(context, log.marked()[0]), None
    return [], _log_lines(context, log)


def read_log(log: Any) -> LogText:
    """The items of a callback's `log` YAML text (none when there is no log)."""
    if log is None:
        return LogText.of_items([])
    if not isinstance(log, str):
        raise RejectedInput("log is not YAML text")
    return read_log_text(log)


def _test_documents(context: _JobContext, suites: Mapping[str, list]) -> Iterator[Document]:
    seen = set()
    for suite, cases in suites.items():
        for position, case in enumerate(cases):
            fields = lava_results.case_fields(suite, case)
            identity = _test_identity(suite, fields, position, seen)
            yield context.document("test", identity, fields, timestamp=fields["logged"])


def _test_identity(suite: str, fields: Mapping[str, Any], position: int, seen: set) -> tuple:
    """(suite, LAVA case id), or (suite, name, position) for a case without a usable id.

    Position only breaks ties, so ids stay distinct even in a file that repeats a case id.
    """
    case_id = fields["test_case_id"]
    identity = (suite, case_id) if case_id is not None else (suite, fields["name"], position)
    if identity in seen:
        identity = identity + (position,)
    seen.add(identity)
    return identity


class LogLines:
    """A LAVA job's log documents, one a line, before they are made: what is the same for all
    of them once (index, the shared fields and their JSON) and, per line, its own fields, the
    JSON of its own members, its @timestamp and id. `documents()` makes the Documents; a sink's
    block encoder (kcing/sinks/encoding.py) writes their encoding straight from these parts."""

    __slots__ = ("index", "common", "prefix", "own_fields", "own_json", "timestamps", "ids", "version")

    def __init__(self, index: str, common: dict, prefix: str):
        self.index = index
        self.version: Optional[int] = None  # the job's, as a Document's (records.Document.version)
        self.common = common
        self.prefix = prefix  # the body's JSON up to the line's own members (`log_prefix`)
        self.own_fields: List[tuple] = []  # (lineno, level or None, message or None)
        self.own_json: List[str] = []  # '"lineno":N' and the level and message members
        self.timestamps: List[str] = []
        self.ids: List[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def bodies_json(self) -> List[str]:
        prefix = self.prefix
        return [prefix + own + "}" for own in self.own_json]

    def documents(self) -> List[Document]:
        common, index = self.common, self.index
        documents = []
        for (lineno, level, message), body_json, timestamp, doc_id in zip(
                self.own_fields, self.bodies_json(), self.timestamps, self.ids):
            body = dict(common)
            body["lineno"] = lineno
            if level is not None:
                body["level"] = level
            if message is not None:
                body["message"] = message
            documents.append(Document("log", index, doc_id, timestamp, body, body_json, self.version))
        return documents


def _log_lines(context: _JobContext, log: LogText) -> LogLines:
    """The parts of a job's log documents (see LogLines), one a line, in order, with each
    body's JSON made of the job's shared part (see `_JobContext.log_prefix`, not empty here)
    and the line's own members."""
    lines = LogLines(context.indices["log"], context.common, context.log_prefix())
    maker = _LinePartsMaker(lines, context.timestamp)
    if log.lines is None:
        maker.add_items(*log.marked())
    else:
        maker.add_read_lines(log.lines, log.apart)
    lines.ids = context.ids["log"].numbered(len(lines.own_json))
    return lines


class _LinePartsMaker:
    """Adds log lines' parts to a LogLines, numbered from 1 on across calls.

    A line is cheap to make here and a job has thousands of them, so the loops do per line only
    what differs between lines: what the shared fields give is computed once per job, a level
    once per level text, the calendar check of a time once per second.
    """

    def __init__(self, lines: LogLines, job_time: str):
        self.lines = lines
        self.job_time = job_time  # a line's @timestamp when it has no usable time of its own
        self.lineno = 0
        self.levels = {}  # lvl text -> (level, its JSON member): a log uses a handful of levels
        self.times = _LineTimes()
        self.seconds = {}  # "YYYY-MM-DDTHH:MM:SS" -> whether it is its own timestamp (`_written_as_is`)

    def add_read_lines(self, read_lines: List[Tuple[str, str, str, str]], apart: dict) -> None:
        """Add the lines of a log read line by line (`lava_log.LogText`): a usual line's texts
        go into its parts as they stand in the line, which is their JSON; the items of every
        other line go through `add_items`."""
        lines = self.lines
        own_fields, own_json, timestamps = lines.own_fields, lines.own_json, lines.timestamps
        levels, seconds, job_time = self.levels, self.seconds, self.job_time
        lineno = self.lineno
        for dt, lvl, msg, other in read_lines:
            if other:
                self.lineno = lineno
                self.add_items(*apart[other])
                lineno = self.lineno
                continue
            lineno += 1
            known = levels.get(lvl)
            level, level_json = known if known is not None else _level_member(lvl, levels)
            # msg is the message's JSON as it stands in the line, without its quotes.
            own_fields.append((lineno, level, msg if "\\" not in msg else message_text(msg)))
            own_json.append(f'"lineno":{lineno}{level_json},"message":"{msg}"')
            # dt is a date, a time and 3 to 6 digits of a second: `_LineTimes.of`'s answer, its
            # text as it stands when the date and time are written as is, else their reading
            # (hour 24, the next midnight), else the job's time.
            second = dt[:19]
            written = seconds.get(second)
            if written is None:
                written = seconds[second] = _written_as_is(second)
            timestamps.append(dt[:23] + "Z" if written else line_timestamp(dt) or job_time)
        self.lineno = lineno

    def add_items(self, items: List[Any], plain: List[bool]) -> None:
        """Add the lines of log `items`; `plain` tells, per item, whether its texts need no JSON
        escaping (see `lava_log.parse_log_marked`)."""
        if len(plain) != len(items):  # zip would drop lines
            raise ValueError("%d plain-line marks for %d log items" % (len(plain), len(items)))
        lines = self.lines
        own_fields, own_json, timestamps = lines.own_fields, lines.own_json, lines.timestamps
        levels, times, job_time = self.levels, self.times, self.job_time
        for lineno, item, plain_line in zip(count(self.lineno + 1), items, plain):
            if isinstance(item, dict):
                lvl, message, dt = item.get("lvl"), item.get("msg"), item.get("dt")
            else:
                lvl, message, dt = None, item, None
            level = None
            level_json = message_json = ""
            if lvl is not None:
                known = levels.get(lvl) if type(lvl) is str else None
                level, level_json = known if known is not None else _level_member(lvl, levels)
            if type(message) is str:
                # A text of a plain line has nothing to escape (`lava_log.parse_log_marked`).
                message_json = (',"message":"' + message + '"' if plain_line
                                else ',"message":' + encode_basestring(message))
            elif message is not None:
                message = _message(message)
                if message is not None:
                    message_json = ',"message":' + encode_basestring(message)
            if not (message_json.isascii() and level_json.isascii()):
                _check_unicode(level_json + message_json)
            own_fields.append((lineno, level, message))
            own_json.append('"lineno":%d%s%s' % (lineno, level_json, message_json))
            timestamps.append(times.of(dt) or job_time)
        self.lineno += len(items)


def _log_documents_one_by_one(context: _JobContext, items: List[Any]) -> List[Document]:
    """The log documents, each body encoded whole: when a shared field is named like a line's."""
    documents = []
    for lineno, item in enumerate(items, 1):
        fields, dt = _log_line(lineno, item)
        documents.append(context.document("log", (lineno,), fields, timestamp=line_timestamp(dt)))
    return documents


def _log_documents(context: _JobContext, items: List[Any], plain: Optional[List[bool]] = None) -> List[Document]:
    """One document per log line, in order."""
    made, lines = _log_parts(context, LogText.of_items(items, plain))
    return made if lines is None else lines.documents()


def _level_member(lvl: Any, known: dict) -> tuple:
    """(as_keyword(lvl), ',"level":<its JSON>'), or (None, "") when it is no keyword; remembered
    in `known` when `lvl` is text."""
    level = as_keyword(lvl)
    member = (None, "") if level is None else (level, ',"level":' + encode_basestring(level))
    if type(lvl) is str:
        known[lvl] = member
    return member


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RejectedInput("document text is not valid Unicode (a lone surrogate)") from None


def log_line_fields(lineno: int, item: Any) -> tuple:
    """(fields, own time) of the log document for one `log` item; the time is its `dt`, if any."""
    fields, dt = _log_line(lineno, item)
    return fields, as_date(dt)


def _log_line(lineno: int, item: Any) -> tuple:
    entry = item if isinstance(item, dict) else {"msg": item}
    fields = {"lineno": lineno, "level": as_keyword(entry.get("lvl")), "message": _message(entry.get("msg"))}
    return fields, entry.get("dt")


# What LAVA writes in `dt`: naive UTC, microseconds. Read by string for speed (thousands per job).
_LAVA_DT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(\d{1,6}))?\Z", re.ASCII)


def line_timestamp(dt: Any) -> Optional[str]:
    """`iso_timestamp(as_date(dt))`, or None when `dt` is not a date."""
    if type(dt) is str:
        match = _LAVA_DT.match(dt)
        if match is not None and _written_as_is(dt[:19]):
            return "%s.%sZ" % (dt[:19], ((match.group(1) or "") + "000")[:3])
    when = as_date(dt)
    return iso_timestamp(when) if when is not None else None


def _written_as_is(second: str) -> bool:
    """Whether a `dt`'s date and time to the second, "YYYY-MM-DDThh:mm:ss", is a real calendar
    date and time in the years an index is named after: its text is then the timestamp's. Any
    other (hour 24, the next midnight; month 13, no date) is left to `as_date`."""
    try:
        read = datetime.fromisoformat(second)
    except ValueError:
        return False
    # Read back as written, or the text is another time's: the fromisoformat of Python 3.14 on
    # reads hour 24 as the next midnight, which 3.11's refuses.
    return read.isoformat() == second and EARLIEST_YEAR <= read.year <= LATEST_YEAR


class _LineTimes:
    """`line_timestamp` for the lines of one log, in order.

    A log is written in time order, many lines per second: the calendar check of a line's
    date and time is remembered for its second and done again only when the second changes.
    """

    def __init__(self):
        self._second = None
        self._valid = False

    def of(self, dt: Any) -> Optional[str]:
        if type(dt) is str and len(dt) >= 23:
            second = dt[:19]
            if second == self._second:
                # The same second as the line before, which matched _LAVA_DT: this line
                # matches it too if the rest is "." and 1 to 6 ASCII digits.
                if len(dt) <= 26 and dt[19] == "." and dt[20:].isdigit() and dt.isascii() and self._valid:
                    return dt[:23] + "Z"
            elif _LAVA_DT.match(dt) is not None:
                self._second = second
                self._valid = _written_as_is(second)
                if self._valid:
                    return dt[:23] + "Z"
        return line_timestamp(dt)


def _message(msg: Any) -> Optional[str]:
    if msg is None:
        return None
    if isinstance(msg, str):
        return msg
    return as_text(msg) if isinstance(msg, (int, float, bool)) else compact_json(msg)

