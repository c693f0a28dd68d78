"""The runs table as kcing reads it back: which rows stay read however old (drp forgets the others),
and the day a drp run's row says it kept from."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any, Dict, Iterable, Optional, Set, Tuple

# In the counts of the runs-table row of a feed that `reconcile --resend` ran: who re-sent.
RESENT_BY = "resent_by"
# The newest runs `kcing status` lists, which drp never forgets however old they are.
RUNS_SHOWN = 5


def drp_kept_day(started: Any, text: Optional[str]) -> Optional[date]:
    """The first day a drp run's row says it kept (None when it says none). A run records the day
    it kept from; a run recorded before it did counts from the day it started and the days it
    kept. A row edited by hand into something else says nothing."""
    try:
        counts = json.loads(text or "{}")
        if not isinstance(counts, dict):
            return None
        if isinstance(counts.get("first_kept"), str):
            return date.fromisoformat(counts["first_kept"])
        if isinstance(started, datetime) and type(counts.get("days")) is int:
            return started.date() - timedelta(days=counts["days"])
    except (ValueError, OverflowError):
        pass
    return None


def runs_still_read(newest_first: Iterable[tuple]) -> Set[int]:
    """The ids, of runs-table rows (id, command, started, ended, outcome, counts) given newest
    first and each looked at once, that kcing reads however old they are: the newest RUNS_SHOWN
    and the newest of each command (`kcing status`: the last runs, the last reconcile); the
    newest success of each feed, by source and destination (`Ledger.last_success`: `--metrics`,
    whose alert on its age must not move because drp ran); the newest feed run that recorded
    each storage of a source (`storages_recorded`: the earlier failures whose URLs were built
    there); and the drp run that kept from the latest day (`deleted_before`: what reconcile and
    the legacy feed take as deleted on purpose)."""
    read: Set[int] = set()
    newest: Dict[Any, int] = {}  # what each row may be the newest of -> its id
    latest_kept: Optional[Tuple[date, int]] = None
    for shown, (run_id, command, started, ended, outcome, text) in enumerate(newest_first):
        if shown < RUNS_SHOWN:
            read.add(run_id)
        newest.setdefault(("command", repr(command)), run_id)
        try:
            counts = json.loads(text or "{}")
        except ValueError:
            counts = None
        if not isinstance(counts, dict):
            continue  # a row edited by hand says nothing sure, to any of them
        source = counts.get("source")
        if outcome == "ok" and isinstance(ended, datetime) and isinstance(source, str) and RESENT_BY not in counts:
            newest.setdefault(("success", repr(command), source,
                               json.dumps(counts.get("destination"), sort_keys=True)), run_id)
        if command == "feed_es" and isinstance(source, str) and isinstance(counts.get("storage"), str):
            newest.setdefault(("storage", source, counts["storage"]), run_id)
        if command == "drp":
            kept = drp_kept_day(started, text)
            if kept is not None and (latest_kept is None or kept > latest_kept[0]):
                latest_kept = (kept, run_id)
    read.update(newest.values())
    if latest_kept is not None:
        read.add(latest_kept[1])
    return read
