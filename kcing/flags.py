"""Command-line flags that are not settings: parsed here, with errors naming the flag."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Optional

from kcing.digits import decimal_number_spelling, foreign_digits, whole_number_spelling
from kcing.errors import ConfigError


# The most objects --how-many or --sample-size may ask for of each kind: more than upstream holds.
MAX_COUNT = 1_000_000_000
# The longest --wait or --verify-delay: a day (as the settings they stand for; far larger
# numbers overflow the timers that wait).
MAX_WAIT = 86_400


def positive_int(args: dict, flag: str, maximum: int = MAX_COUNT) -> Optional[int]:
    """A whole number from 1 to `maximum`, or None when the flag was not given."""
    value = args.get(flag)
    if value is None:
        return None
    if foreign_digits(value):  # int() would read them; nothing else does
        raise ConfigError("%s expects a whole number in the digits 0-9, not %r" % (flag, _shortened(value)))
    try:
        number = int(value)
    except ValueError:  # not a number, or more digits than Python converts
        raise ConfigError("%s expects a whole number, not %r" % (flag, _shortened(value))) from None
    if not 1 <= number <= maximum:
        raise ConfigError("%s must be a whole number from 1 to %d" % (flag, maximum))
    if not whole_number_spelling(value.strip()):  # int() reads "1_0" as 10 and "+3" as 3
        raise ConfigError("%s expects a whole number, not %r" % (flag, _shortened(value)))
    return number


def seconds(args: dict, flag: str, default: float, maximum: float = MAX_WAIT) -> float:
    """A duration from 0 to `maximum` seconds, or the default when the flag was not given."""
    value = args.get(flag)
    if value is None:
        return default
    if foreign_digits(value):  # float() would read them; nothing else does
        raise ConfigError("%s expects seconds in the digits 0-9, not %r" % (flag, _shortened(value)))
    try:
        number = float(value)
    except ValueError:
        raise ConfigError("%s expects seconds, not %r" % (flag, _shortened(value))) from None
    if not 0 <= number <= maximum:  # NaN and the infinities included
        raise ConfigError("%s must be from 0 to %g seconds" % (flag, maximum))
    if not decimal_number_spelling(value.strip()):  # float() reads "1_0" as 10 and "+1" as 1
        raise ConfigError("%s expects seconds, not %r" % (flag, _shortened(value)))
    return number or 0.0  # -0 is 0: messages said "within -0s"


def _shortened(value: str, size: int = 40) -> str:
    """A flag's value for a message: a pasted page of digits is not repeated whole."""
    return value if len(value) <= size else value[:size] + "..."


def a_date(args: dict, flag: str) -> Optional[datetime]:
    """A date or time (anything python-dateutil reads; UTC unless it names a zone), or None."""
    value = args.get(flag)
    if value is None:
        return None
    return _flag_date(flag, value, "%s %r is outside the years 1 to 9999 in UTC" % (flag, value))


def _flag_date(flag: str, value: str, out_of_range: str) -> datetime:
    """`utc_date(value)`, each reason it is refused said in one line naming `flag`;
    `out_of_range` for a date whose offset takes it outside the years a time holds."""
    try:
        return utc_date(value)
    except AmbiguousDate as ambiguous:
        raise ConfigError(ambiguous_message(flag, value, ambiguous)) from None
    except SignedZoneName as signed:
        raise ConfigError("%s %r gives its offset after %s, which POSIX reads west of Greenwich and "
                          "ISO 8601 east: give the offset alone, such as '2020-11-04 09:41 +03:00'"
                          % (flag, value, signed.name)) from None
    except UnknownZone:
        raise ConfigError("%s expects a time zone as a UTC offset, such as '2020-11-04 09:41 +01:00' or "
                          "'2020-11-04 09:41 UTC', not %r" % (flag, value)) from None
    except IncompleteDate:
        raise ConfigError("%s expects a date with its year, month and day, such as 2020-11-04 or "
                          "'2020-11-04 09:41', not %r" % (flag, value)) from None
    except OutOfRange:
        raise ConfigError(out_of_range) from None
    except WrongWeekday as wrong:
        raise ConfigError(weekday_message(flag, value, wrong)) from None
    except MisplacedOffset as misplaced:
        raise ConfigError(misplaced_message(flag, value, misplaced)) from None
    except (ValueError, OverflowError):
        raise ConfigError("%s expects a date such as 2020-11-04 or '2020-11-04 09:41', not %r"
                          % (flag, value)) from None


def misplaced_message(flag: str, value: str, misplaced: MisplacedOffset) -> str:
    """The one line refusing a date that gives two offsets or times, or its offset first: read as
    python-dateutil reads it, the time would be another than the one meant, without a word."""
    return "%s %r %s: give one time, then one offset (try '2024-10-16 08:00 +01:00')" % (flag, value, misplaced.what)


def ambiguous_message(flag: str, value: str, ambiguous: "AmbiguousDate") -> str:
    return ("%s %r could mean %s (%s): write the date year first, as YYYY-MM-DD"
            % (flag, value, " or ".join(day.isoformat() for day in ambiguous.readings), ambiguous.why))


def weekday_message(flag: str, value: str, wrong: "WrongWeekday") -> str:
    return ("%s %r names %s, but %s is a %s: check the date, or leave the weekday out"
            % (flag, value, wrong.named, wrong.day.isoformat(), weekday_name(wrong.day)))


def a_document_date(args: dict, flag: str) -> Optional[datetime]:
    """`a_date`, refused unless documents can be dated by it (their index names a day from 1970
    to 9998): a day outside those would date no document, and every file would be rejected."""
    value = args.get(flag)
    if value is None:
        return None
    from kcing.documents.coerce import EARLIEST_YEAR, LATEST_YEAR  # here: only local files are dated so

    outside = "%s expects a day from %d to %d, not %r" % (flag, EARLIEST_YEAR, LATEST_YEAR, value)
    when = _flag_date(flag, value, outside)  # past 9999 in UTC is outside the index years too
    if not EARLIEST_YEAR <= when.year <= LATEST_YEAR:
        raise ConfigError(outside)
    return when


class IncompleteDate(ValueError):
    """A text python-dateutil reads as a date only by filling in what it leaves out from today."""


class AmbiguousDate(ValueError):
    """A text whose numbers python-dateutil could read as day and month either way round
    ("01/12/2026": 12 January as it reads it, 1 December in most of the world)."""

    def __init__(self, text: str, readings, why: str = "countries write day and month in different orders"):
        self.readings = sorted(readings)
        self.why = why
        super().__init__("%r could be %s" % (text, " or ".join(day.isoformat() for day in self.readings)))


class OutOfRange(ValueError):
    """A date whose time in UTC falls outside the years 1 to 9999 that a time is held in
    ("9999-12-31T23:59:59-01:00" is in the year 10000 in UTC): a date, but none kcing
    can count with."""


class WrongWeekday(ValueError):
    """A text naming a weekday that is not its date's ("Thursday 2020-11-04", a Wednesday):
    python-dateutil reads the date and drops the weekday, so one of the two is a mistake and
    nothing says which."""

    def __init__(self, text: str, named: str, day: date):
        self.named = named
        self.day = day
        super().__init__("%r names %s, but %s is a %s" % (text, named, day.isoformat(), weekday_name(day)))


def weekday_name(day: date) -> str:
    """The English name of `day`'s weekday, whatever the host's locale (strftime's %A follows it)."""
    return ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")[day.weekday()]


class UnknownZone(ValueError):
    """A text naming its time zone by an abbreviation ("BST", "EST") rather than an offset."""


class MisplacedOffset(ValueError):
    """A date giving two offsets, two times of day, or its offset before its time (`what`)."""

    def __init__(self, text: str, what: str):
        super().__init__("%r %s" % (text, what))
        self.what = what


class SignedZoneName(UnknownZone):
    """A text giving its offset after "UTC", "GMT" or "Z" ("UTC+3"), whose sign readers take two
    ways. `name` is the name as the text wrote it, upper-cased ("Z (UTC)" for Z): the message
    names what the user wrote, not a UTC or GMT that is not in it."""

    def __init__(self, message: str, name: str = "UTC or GMT"):
        super().__init__(message)
        self.name = name


# "UTC+3" or "GMT-05:00": POSIX TZ rules, and python-dateutil with them, count such an offset
# west of Greenwich (UTC+3 is 3 hours behind), while ISO 8601 and most people count it east.
# python-dateutil takes "Z" for UTC's name as well: "10:00Z+03:00" was read as 13:00 UTC, and
# "10:00 Z +3" as 10:00 UTC, the offset dropped.
_SIGNED_ZONE_NAME = re.compile(r"(UTC|GMT|(?<![a-z])Z)\s*[-+]\s*[0-9]", re.IGNORECASE)
# An offset written apart (after a space: not a date's `-10` nor ISO 8601's `08:00+01:00`), and a
# time of day (h:mm, not an offset's). python-dateutil reads `2024-10-16 -05:00 08:00` as 08:00
# UTC, the offset taken for a time the next replaced, and of two offsets or times keeps the last.
_OFFSET_APART = re.compile(r"(?<=\s)[+-][0-9]{1,2}(?::?[0-9]{2})?(?![0-9:])", re.ASCII)
_TIME_OF_DAY = re.compile(r"(?<![+\-0-9:])[0-9]{1,2}:[0-9]{2}", re.ASCII)


def _offset_misplaced(text: str) -> Optional[str]:
    """What is wrong with where `text` gives its offset or time, if anything: two offsets, two
    times of day, or an offset before the time it is the offset of."""
    offsets, times = list(_OFFSET_APART.finditer(text)), list(_TIME_OF_DAY.finditer(text))
    if len(offsets) > 1:
        return "gives two offsets"
    if len(times) > 1:
        return "gives two times of day"
    if offsets and times and offsets[0].start() < times[0].start():
        return "gives its offset before its time of day"
    return None


def _offset_only(name: Optional[str], offset: Optional[int]) -> Optional[int]:
    """python-dateutil's `tzinfos` hook: a UTC offset ("+05:45", and "UTC", "GMT", "Z", which it
    reads as 0) is kept; an abbreviation is refused. Left to itself python-dateutil reads one as
    this host's zone when it is one of this host's names ("BST" under TZ=Europe/London) and
    drops it with a warning otherwise, so the same flag meant a different time on each host."""
    if name is None or offset is not None:  # no zone (UTC, the caller's rule), or an offset
        return offset
    raise UnknownZone("%r is not a UTC offset" % name)


# Two days that differ in year, month and day: what a text leaves out shows as a difference.
_FILLERS = (datetime(2000, 1, 1), datetime(2001, 2, 2))

# A date written year first, as ISO 8601 writes it (2026-12-01, 2026/12/01, 2026 12 01, 20261201):
# nobody writes the day before the month after the year, though python-dateutil's dayfirst reads it so.
_YEAR_FIRST = re.compile(r"(?<![0-9])[0-9]{4}(?:[-/.][0-9]{1,2}[-/.]|\s+[0-9]{1,2}\s+)[0-9]{1,2}(?![0-9])", re.ASCII)
# Eight digits, and the hours and minutes (and seconds) when they follow without a `T`
# (202612011030, as `date +%Y%m%d%H%M` writes it): python-dateutil reads these year first only.
_COMPACT_YEAR_FIRST = re.compile(r"\s*[0-9]{8}(?:[0-9]{4}(?:[0-9]{2})?)?(?![0-9])", re.ASCII)
# Twelve digits are also what `date +%y%m%d%H%M%S` writes: 261201101500, 1 December 2026 at
# 10:15:00, which python-dateutil reads as 10 January 2612 at 15:00.
_TWO_DIGIT_YEAR_TIME = "%y%m%d%H%M%S"


def _parsed(text: str, **options) -> datetime:
    """python-dateutil's reading of `text`. It reads a time's parts as Decimal numbers, and a run of
    digits too long for one (a timestamp pasted after a time's colon) raises decimal's
    InvalidOperation, an ArithmeticError: a ValueError here, as for any text that is no date."""
    from dateutil import parser as dateparser  # here: most runs never read a date, and it takes a while to import

    try:
        return dateparser.parse(text, **options)
    except OverflowError:
        raise
    except ArithmeticError:
        raise ValueError("%r is not a date: a number in it is too long" % text) from None


def _orders_agree(text: str, read: datetime) -> None:
    """AmbiguousDate when `text`, not written year first, names another day read with the day
    before the month or the year first ("01/12/2026", "01/12/26"): python-dateutil reads the
    month first, the American order, so a user elsewhere was given another day without a word."""
    if _YEAR_FIRST.search(text):
        return
    compact = _COMPACT_YEAR_FIRST.match(text)
    if compact:
        _four_digit_year_only(text, compact.group().strip(), read)
        return
    readings = {read.date()}
    for dayfirst, yearfirst in ((True, False), (False, True), (True, True)):
        try:
            readings.add(_parsed(text, default=_FILLERS[0], dayfirst=dayfirst, yearfirst=yearfirst,
                                 tzinfos=_offset_only).date())
        except (ValueError, OverflowError):  # that order names no day: it is not a reading
            pass
    if len(readings) > 1:
        raise AmbiguousDate(text, readings)


_WORD = re.compile(r"[A-Za-z]+", re.ASCII)


def _weekday_agrees(text: str, read: datetime) -> None:
    """WrongWeekday when `text` names a weekday (in any of python-dateutil's spellings: "Wed",
    "Wednesday") other than the weekday of the day it names, in its own zone as written."""
    from dateutil import parser as dateparser

    names = dateparser.parserinfo()
    for word in _WORD.findall(text):
        weekday = names.weekday(word)
        if weekday is not None and weekday != read.weekday():
            raise WrongWeekday(text, word, read.date())


def _four_digit_year_only(text: str, digits: str, read: datetime) -> None:
    """AmbiguousDate when the twelve `digits` python-dateutil read as YYYYMMDDhhmm are also a
    time written with a two-digit year and its seconds (YYMMDDhhmmss) on another day."""
    if len(digits) != 12:
        return
    try:
        short = datetime.strptime(digits, _TWO_DIGIT_YEAR_TIME)
    except ValueError:  # no such time: the four-digit year is the only reading
        return
    if short.date() != read.date():
        raise AmbiguousDate(text, {read.date(), short.date()},
                            why="twelve digits are YYYYMMDDhhmm or, as `date +%y%m%d%H%M%S` writes them, YYMMDDhhmmss")


# A day with a zone but no time ("2026-12-01 +05:30", "2026-12-01Z", "2026-12-01 UTC"), which
# python-dateutil does not read: it reads a zone only after a time of day.
_ZONE_AFTER_A_DAY = re.compile(r"(?P<day>[^:]*[0-9])\s*(?P<zone>Z|[A-Za-z]{2,5}|[+-][0-9]{2}(?::?[0-9]{2})?)\s*",
                               re.ASCII)


def _at_midnight(text: str) -> Optional[str]:
    """`text` with the start of its day written in, when it is a day with a zone and no time:
    the day begins at midnight in that zone, as a day without a zone begins at midnight UTC.
    None when the day is none ("2026-02-30" is not 2026-02 at offset -30) or what follows it
    is no zone: "2026-12-01 PM" would be read as noon, "2026-12-01 at" as the day alone."""
    match = _ZONE_AFTER_A_DAY.fullmatch(text)
    if match is None or not _names_a_day(match.group("day")):
        return None
    midnight = "%s 00:00 %s" % (match.group("day"), match.group("zone"))
    try:
        read = _parsed(midnight, default=_FILLERS[0], tzinfos=_offset_only)
    except UnknownZone:
        raise  # a zone, named by an abbreviation: said as such
    except (ValueError, OverflowError):
        return None
    return midnight if read.tzinfo is not None and read.time() == datetime.min.time() else None


def _names_a_day(text: str) -> bool:
    """Whether `text` alone is a date that names its year, month and day."""
    try:
        utc_date(text)
    except (AmbiguousDate, WrongWeekday):  # a day: reading the whole text with its zone says what is wrong
        return True
    except (ValueError, OverflowError):
        return False
    return True


def utc_date(text: str) -> datetime:
    """`text` read by python-dateutil as aware UTC (no zone means UTC). Raises ValueError or
    OverflowError for what is not a date, and IncompleteDate for a text that does not name its
    year, month and day: python-dateutil takes those from today (`-1` is the first of this month,
    `2020` today's day of 2020), so the day read would depend on the day kcing ran. UnknownZone
    for a zone named by an abbreviation, which would be read by this host's zone, or written as
    "UTC+3", whose sign python-dateutil reads as POSIX does. AmbiguousDate for a text whose day
    and month (or year) could be read the other way round, WrongWeekday for one naming a
    weekday that is not its day's. OutOfRange for a date whose offset
    takes it outside the years 1 to 9999 in UTC. Digits other than 0-9 are refused
    as a pasted mistake."""
    if foreign_digits(text):  # python-dateutil reads any script's digits as 0-9; no other tool does
        raise ValueError("%r is not written in the digits 0-9" % text)
    misplaced = _offset_misplaced(text)
    if misplaced:
        raise MisplacedOffset(text, misplaced)
    signed = _SIGNED_ZONE_NAME.search(text)
    if signed:
        name = signed.group(1).upper()
        name = "Z (UTC)" if name == "Z" else name
        raise SignedZoneName("%r gives an offset after %s, which is read with either sign" % (text, name), name)
    try:
        first, second = (_parsed(text, default=filler, tzinfos=_offset_only) for filler in _FILLERS)
    except ValueError:
        midnight = _at_midnight(text)
        if midnight is None:
            raise
        return utc_date(midnight)
    if first.date() != second.date():
        raise IncompleteDate("%r does not name a year, a month and a day" % text)
    _orders_agree(text, first)
    _weekday_agrees(text, first)
    if first.tzinfo is None:
        return first.replace(tzinfo=timezone.utc)
    try:
        return first.astimezone(timezone.utc)
    except OverflowError:  # said as such: the text is a date, only not one a time can hold in UTC
        raise OutOfRange("%r is outside the years 1 to 9999 in UTC" % text) from None


def utc_text(when: datetime, seconds: bool = False) -> str:
    """`when` (a UTC time) as "YYYY-MM-DD HH:MM[:SS] UTC", the year in four digits: strftime's
    %Y writes the years before 1000 without their leading zeros ("1-01-01")."""
    text = "%04d-%02d-%02d %02d:%02d" % (when.year, when.month, when.day, when.hour, when.minute)
    return "%s:%02d UTC" % (text, when.second) if seconds else text + " UTC"
