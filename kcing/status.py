"""`kcing status`: what the ledger holds, as a plain dict, then as text or JSON."""
from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Dict, List, Optional, Tuple

from kcing import keptdays
from kcing.errors import kept_short, one_line
from kcing.ledger.ledger import Ledger
from kcing.ledger.models import DELIVERED, DOWNLOADED, FAILED, REJECTED, TOO_LARGE, Run, UpstreamFile
from kcing.ledger.runs import RESENT_BY, RUNS_SHOWN
from kcing.runlock import lock_holder
from kcing.strictjson import no_constants

# The outcome shown for a run that has no end in the ledger and is not running.
UNRECORDED_END = "ended without a record (killed, or the ledger could not be written)"
# `downloaded` means fetched but not yet acknowledged by the sink: the next run sends it.
# `too_large`: Logstash refused a document as too large; the next run sends it again.
STATE_LABELS = ((DELIVERED, "delivered"), (FAILED, "failed"), (REJECTED, "rejected"), (DOWNLOADED, "pending"),
                (TOO_LARGE, "too_large"))
# Not a state: of the undelivered objects (counted in their state already), those reconcile found
# missing in Elasticsearch and no delivery has cleared since, dated from the first day drp keeps
# on (`kcing reconcile --resend` sends them).
MISSING_IN_ES = "missing_in_es"
COLUMNS = tuple(name for _, name in STATE_LABELS) + (MISSING_IN_ES,)
# The source whose runs take the objects an earlier run did not deliver from the ledger, once
# they are out of its window of days, until the first day drp keeps (kcing/listing.py): before
# it, they are given up. (A KernelCI API node that failed holds the watermark instead.)
RETRYING_SOURCE = "legacy"
UNDELIVERED_COLUMNS = ("failed", "pending", "too_large")


def report(ledger: Ledger, runs: int = RUNS_SHOWN, errors: int = 5, first_kept: Optional[date] = None,
           held_before: Tuple[str, ...] = ()) -> dict:
    """Return counts per source and kind, the last runs and the most frequent errors of the objects
    not delivered (see `error_cause`); `first_kept` (kcing/keptdays.py), the first day whose
    undelivered legacy objects are still tried again, as `retried_from`.

    Read by the caller in one snapshot (Ledger.snapshot), begun after `held_before` (see
    `lock_holders`) was asked: a run is running when its pid held the lock then or holds it now."""
    objects: Dict[str, Dict[str, Dict[str, int]]] = {}
    destinations: Dict[str, Dict[str, Dict[str, Dict[str, int]]]] = {}
    # Held as missing, as reconcile holds them: those dated before the first day kept are given
    # up (their index is drp's to delete), counted in their state alone.
    missing = ledger.missing_counts(kept_from=keptdays.day_start(first_kept) if first_kept is not None else None)
    counted = [((source, kind, destination, dict(STATE_LABELS).get(state, state)), count)
               for (source, kind, destination, state), count in ledger.counts().items()]
    counted += [((source, kind, destination, MISSING_IN_ES), count)
                for (source, kind, destination), count in missing.items()]
    for (source, kind, destination, label), count in sorted(counted):
        per_kind = objects.setdefault(source, {}).setdefault(kind, dict.fromkeys(COLUMNS, 0))
        per_kind[label] = per_kind.get(label, 0) + count
        at = (destinations.setdefault(destination or "(unnamed)", {}).setdefault(source, {})
              .setdefault(kind, dict.fromkeys(COLUMNS, 0)))
        at[label] = at.get(label, 0) + count
    last_reconcile = ledger.last_run("reconcile")
    running = _running_run(ledger, held_before)
    return {"ledger": ledger.path, "objects": objects, "destinations": destinations,
            "runs": _last_runs(runs, running),
            "errors": _frequent_errors(errors),
            "watermarks": _watermarks(ledger),
            "last_reconcile": _run(last_reconcile, running) if last_reconcile is not None else None,
            "retried_from": first_kept.isoformat() if first_kept is not None else None}


def _watermarks(ledger: Ledger) -> Dict[str, Dict[str, str]]:
    """{source: {destination: position}}: a source crawled for two destinations has two."""
    found: Dict[str, Dict[str, str]] = {}
    for (source, destination), when in sorted(ledger.watermarks().items()):
        found.setdefault(source, {})[destination or "(unnamed)"] = when.isoformat()
    return found


def lock_holders(ledger: Ledger) -> Tuple[str, ...]:
    """The pids the run holding the lock beside the ledger is known by now, () when none does."""
    if ledger.path == ":memory:":
        return ()
    return lock_holder(ledger.path) or ()


def _running_run(ledger: Ledger, held_before: Tuple[str, ...] = ()) -> Optional[Tuple[int, str]]:
    """(row id, pid) of the run in progress: the newest row, when it has no end and the process
    holding the lock beside the ledger started it (its pid is in the row's counts; a row from a
    kcing that kept no pid: taken as the holder's). Every other row without an end belongs to a
    run that was killed or could not write its end (the ledger locked or its disk full).

    Only the newest row can be the run's: rows are written by the process holding the lock, one
    closed before the next is begun. A pid alone does not tell: in containers each run may get the
    same one (1, the first process of a `docker run` or a Kubernetes job), and the row of a run
    killed there named the pid of the run holding the lock after it, which showed it `running`
    while that run checked Elasticsearch after its feed (`feed_es --verify`), its own row closed.

    The rows are read from a snapshot: a run that ended after it was taken, its row still open
    there, held the lock before it (`held_before`), and one that started since holds it now."""
    holder = held_before + tuple(pid for pid in lock_holders(ledger) if pid not in held_before)
    if not holder:
        return None
    newest = Run.select(Run.id, Run.ended, Run.counts).order_by(Run.id.desc()).first()
    if newest is None or newest.ended is not None:
        return None
    counts = _counts(newest.counts)
    if "pid" not in counts:
        return (newest.id, holder[0])
    pid = str(counts["pid"])
    return (newest.id, pid) if pid in holder else None


def _counts(text: Optional[str]) -> dict:
    try:
        # Not NaN nor Infinity (a row edited by hand): `--json` would print them, which no strict reader takes.
        counts = json.loads(text, parse_constant=no_constants) if text else {}
    except ValueError:
        return {}
    return counts if isinstance(counts, dict) else {}


def _last_runs(limit: int, running: Optional[Tuple[int, str]]) -> List[dict]:
    return [_run(row, running) for row in Run.select().order_by(Run.id.desc()).limit(limit)]


def _run(row: Run, running: Optional[Tuple[int, str]]) -> dict:
    outcome = row.outcome
    if outcome is None:
        outcome = "running (pid %s)" % running[1] if running and running[0] == row.id else UNRECORDED_END
    return {"command": row.command, "started": _iso(row.started), "ended": _iso(row.ended),
            "outcome": outcome, "counts": _counts(row.counts)}


# A URL: its origin (kept: which service failed says much) and its path, query and fragment.
# A scheme is read to 255 characters at most: from each word of a long run such as `a.a.a...`
# (no URL), an unbounded one was read to the run's end before `://` was missed, in time
# quadratic in the run. A longer scheme broken by `.`, `+` or `-` is still found from a later
# word of it, with the same text left; one of 256 letters or digits unbroken (no scheme is) is
# left as it is, its path too.
_URL = re.compile(r"""\b([A-Za-z][A-Za-z0-9+.-]{0,254}://[^/\s'"<>]+)(/[^\s'"<>]*)?""")
# An object id as KernelCI gives them (a MongoDB ObjectId: 24 hex digits), with the time a node
# was updated when it names one version of a KernelCI API node (`<node id>.20241017T070000.000000`,
# as a newer version that took an older one's place is named).
_OBJECT_ID = re.compile(r"\b[0-9a-f]{24}(?:\.[0-9]{8}T[0-9]{6}\.[0-9]{6})?\b")
# A file's SHA-256 as kcing's messages write it, whole or its first 12 hex digits (`sha256
# 7255d0b0b344, the file's 879d68746639`): each file has its own. Document ids (40 digits) stay.
_DIGEST = re.compile(r"\b[0-9a-f]{12}(?:[0-9a-f]{52})?\b")
# Where in its file a decoder stopped (`line 12 column 5 (char 300)`, `not UTF-8 text (byte 11)`),
# and the job a LAVA callback is of (`LAVA job 2783047 has no definition text`).
_POSITION = re.compile(r"\b(line|column|char|byte|LAVA job) \d+\b")
# The size of one object or document (`a document of 1405 bytes`, `announced 9000001 bytes`,
# `boot-1.json: 123456 bytes, more than ...`); a limit (`the limit of 8000000 bytes`, `longer
# than 512 bytes`) is the same for every object and stays.
_OWN_SIZE = re.compile(r"(?<!limit of )(?<!than )\b\d+ bytes\b")
# A LAVA job's own figures when its documents would repeat too much (documents/lava.py:
# `its 8023 test and log documents ... 572 MiB beyond 4096 bytes`); the limit (`more than 64 MiB`) stays.
_OWN_FIGURES = re.compile(r"(?<=\bits )\d+(?= test and log documents)|\b\d+(?= MiB beyond)")
# What a path found in a message may end with that belongs to the sentence, not to the path.
_SENTENCE_END = ".,;:)]}"


def error_cause(message: str, url: str = "", upstream_id: str = "") -> str:
    """`message` with what names one object taken out, so that objects failing for one cause
    count together: the object's own URL (a local file's name), the path of any URL (its origin
    stays), object ids (with its time, a node version's) and LAVA job ids, a file's SHA-256,
    the object's own size in bytes and where in the file a decoder stopped. `GET https://storage.kernelci.org/<path> failed 3 times (last: HTTP 503)`
    stands for every file that storage failed to serve so."""
    text = message
    if url and "://" not in url and len(url) > 1:
        text = text.replace(url, "<file>")
    if len(upstream_id) >= 8:  # short ids ("1", "ab") could be any word's part
        text = text.replace(upstream_id, "<id>")
    text = _URL.sub(_url_origin, text)
    text = _OWN_SIZE.sub("<n> bytes", text)
    text = _OWN_FIGURES.sub("<n>", text)
    text = _POSITION.sub(r"\1 <n>", text)
    text = _OBJECT_ID.sub("<id>", text)
    return _DIGEST.sub("<sha256>", text)


def _url_origin(match: "re.Match") -> str:
    path = match.group(2) or ""
    kept = path.rstrip(_SENTENCE_END)
    if kept in ("", "/"):
        return match.group(0)
    return match.group(1) + "/<path>" + path[len(kept):]


def _frequent_errors(limit: int) -> List[dict]:
    """The `limit` most frequent causes (`error_cause`) of the undelivered objects' last errors,
    each with how many objects and one whole message as an example."""
    rows = (UpstreamFile.select(UpstreamFile.state, UpstreamFile.last_error, UpstreamFile.url,
                                UpstreamFile.upstream_id)
            .where(UpstreamFile.state.in_([FAILED, REJECTED, TOO_LARGE]) & UpstreamFile.last_error.is_null(False))
            .order_by(UpstreamFile.id).tuples().iterator())
    counts: Dict[Tuple[str, str], int] = {}
    examples: Dict[Tuple[str, str], str] = {}
    for state, message, url, upstream_id in rows:
        key = (state, error_cause(message, url or "", upstream_id or ""))
        counts[key] = counts.get(key, 0) + 1
        examples.setdefault(key, message)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0][1], item[0][0]))[:limit]
    return [{"state": state, "error": cause, "objects": count, "example": examples[(state, cause)]}
            for (state, cause), count in ranked]


# The counts a run's line shows, in this order, with the words its own summary uses; a reconcile
# count that is 0 for what could not be checked, held or marked is left out.
RUN_COUNTS = (("delivered", "delivered", True), ("rejected", "rejected", True), ("failed", "failed", True),
              ("too_large", "too large", True), ("documents", "documents", True), ("checked", "checked", True),
              ("present", "present", True), ("missing", "missing", True),
              ("not_checkable", "not checkable (delivered before ids were kept)", False),
              ("expired", "not checked (index past retention)", False),
              ("unreadable", "not checked (index closed or unreadable)", False),
              ("empty", "with no documents", False),
              ("write_blocked", "not marked (index refuses writes)", False),
              ("marked", "marked undelivered", False),
              ("held_missing", "held missing", False),
              ("indices_deleted", "indices deleted", True),
              ("indices_blocked", "indices not deleted (blocked)", False),
              ("forgotten", "ledger rows forgotten", True),
              ("runs_forgotten", "runs forgotten", False))


def _summary(counts: dict) -> str:
    return ", ".join("%s %s" % (label, counts[name]) for name, label, always in RUN_COUNTS
                     if name in counts and (always or counts[name]))


def _where(counts: dict) -> str:
    """'  (legacy to logstash http://...)': which of the feeds sharing the ledger a run was."""
    source, destination = counts.get("source"), counts.get("destination")
    if not source and not destination:
        return ""
    # As the row holds them: a row edited by hand may give a number, or a list, for either.
    where = " to ".join(str(part) for part in (source, destination) if part)
    # A re-send of what reconcile found missing lists nothing upstream: not the feed's own run.
    resent_by = counts.get(RESENT_BY)
    return "  (%s%s)" % (where, "; re-sent by %s" % resent_by if resent_by else "")


def _iso(value) -> str:
    # The ledger keeps naive UTC times; a value edited by hand is shown as it is.
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds") + " UTC"
    return "" if value is None or value == "" else "%s (not a time)" % one_line(str(value), 40)


def as_text(data: dict) -> str:
    lines = ["ledger: %s" % data["ledger"], ""]
    # As wide as the longest kind: the KernelCI API's `regression` and `checkout` are longer than
    # the legacy kinds, and a row wider than its header no longer lines up under it.
    width = max([6] + [len(kind) for sources in data["destinations"].values() for kinds in sources.values()
                       for kind in kinds])
    header = "%-8s %-*s %10s %8s %9s %8s %9s %13s" % ("source", width, "kind", "delivered", "failed", "rejected",
                                                      "pending", "too large", "missing in ES")
    if not data["destinations"]:
        lines.append(header)
        lines.append("(no objects yet: run `kcing feed_es`)")
    for destination, sources in data["destinations"].items():
        # Delivered means delivered there: feed_es skips only what reached its own destination.
        lines.append("to %s:" % destination)
        lines.append("  " + header)
        for source, kinds in sources.items():
            for kind, counts in kinds.items():
                lines.append("  %-8s %-*s %10d %8d %9d %8d %9d %13d" % (
                    source, width, kind, counts["delivered"], counts["failed"], counts["rejected"], counts["pending"],
                    counts["too_large"], counts[MISSING_IN_ES]))
        lines.append("")
    if data["destinations"]:
        lines.pop()
    retries = _retries(data)
    if retries:
        lines += ["", retries]
    lines += ["", "last runs:"]
    for run in data["runs"]:
        lines.append(("  %-9s %s -> %s  %s  %s" % (run["command"], run["started"], run["ended"], run["outcome"],
                                                    _summary(run["counts"])) + _where(run["counts"])).rstrip())
    if not data["runs"]:
        lines.append("  none yet")
    reconciled = data.get("last_reconcile")
    lines += ["", "last reconcile (does Elasticsearch hold what was delivered?):"]
    if reconciled is None:
        lines.append("  never: run `kcing reconcile`")
    else:
        # As a run line: no trailing spaces where there are no counts (a run killed at once).
        lines.append(("  %s -> %s  %s  %s" % (reconciled["started"], reconciled["ended"], reconciled["outcome"],
                                              _summary(reconciled["counts"]))).rstrip())
    if data.get("watermarks"):
        lines += ["", "watermarks (the next run lists what changed since, minus the overlap):"]
        lines += ["  %-8s %s  to %s" % (source, when, destination) for source, positions in data["watermarks"].items()
                  for destination, when in positions.items()]
    if data["errors"]:
        lines += ["", "most frequent errors:"]
        lines += ["  %4d %-8s %s" % (error["objects"], error["state"], error["error"]) for error in data["errors"]]
    # What the report quotes from the ledger (errors, names, destinations) may hold line breaks or
    # terminal escapes, written there by an older kcing or by hand: each line stays one, bounded.
    return "\n".join(kept_short(line, REPORT_LINE_CHARACTERS) for line in lines)


# How many characters of one line of the report are shown: an error the ledger holds can be as
# long as what an older kcing, or a hand, wrote into it.
REPORT_LINE_CHARACTERS = 2000


def _retries(data: dict) -> Optional[str]:
    """The line saying from which day on the legacy objects not delivered are still tried again,
    when the table counts any: an operator reads in it which failures are given up."""
    undelivered = sum(counts.get(column, 0) for sources in data["destinations"].values()
                      for counts in sources.get(RETRYING_SOURCE, {}).values() for column in UNDELIVERED_COLUMNS)
    if not undelivered or not data.get("retried_from"):
        return None
    # As the listing takes them (kcing/listing.py, Ledger.undelivered_before): for its own
    # destination only, one without a date by when its row was first seen, and out of the window
    # of days neither a file gone from storage nor one reconcile found missing, which
    # `reconcile --resend` sends.
    return ("%s objects not delivered (failed, pending, too large) are tried again by every run to their destination "
            "while dated %s or later (the first day drp keeps; one without a date while first seen then or later; a "
            "file the storage answered 404 or 410 for, or one reconcile found missing in Elasticsearch, only while "
            "within the run's --days, the latter sent by reconcile --resend); those dated before are given up"
            % (RETRYING_SOURCE, data["retried_from"]))
