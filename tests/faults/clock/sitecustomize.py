"""Set this directory on the PYTHONPATH of a kcing process, with KCING_TEST_CLOCK_SHIFT (seconds,
a float), and that process's wall clock (`datetime.now`, `utcnow`) runs that far from this host's:
a test runs the real program on a day of its choosing, as cron would on that day. Nothing else of
the process changes: its monotonic clock, timeouts and sleeps are the host's."""
import os

_SHIFT = os.environ.get("KCING_TEST_CLOCK_SHIFT")

if _SHIFT:
    import datetime as _datetime

    _DELTA = _datetime.timedelta(seconds=float(_SHIFT))
    _HOST = _datetime.datetime

    class _Shifted(_HOST):
        """datetime, whose now is the shifted one; imported by everything after this module."""

        @classmethod
        def now(cls, tz=None):
            return cls._of(_HOST.now(tz) + _DELTA)

        @classmethod
        def utcnow(cls):
            return cls._of(_HOST.utcnow() + _DELTA)

        @classmethod
        def _of(cls, moment):
            return cls(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
                       moment.microsecond, moment.tzinfo, fold=moment.fold)

    _Shifted.__name__ = _Shifted.__qualname__ = "datetime"
    _Shifted.__module__ = "datetime"
    _datetime.datetime = _Shifted
