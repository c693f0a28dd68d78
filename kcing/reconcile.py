"""`kcing reconcile`: does Elasticsearch hold every document the ledger says was delivered?

Logstash's http input answers 200 once events are queued, before Elasticsearch indexes them; a
mapping error or an event dropped after that is invisible to the sender. The ledger keeps the
ids of the documents each delivered object produced (ledger/docids.py). Reconcile reads the
delivered rows a chunk at a time, asks Elasticsearch for their ids with `_mget` in bounded
batches (no `_source`), and sends every object with a missing document back to undelivered,
so the next feed that lists it sends it again. Memory stays flat whatever the window: one
chunk of rows, one bounded read of their ids and one `_mget` batch at a time.

Some kcing index names cannot be read by id: a closed index, one with a read block, an alias of
several indices, a data stream, one whose mapping requires a routing. Their documents are not
checked (counted, and named with what to do), never counted missing, never marked. Documents
missing from an index that refuses writes (a write block) are missing, but a resend could not
write them: their objects are not marked either, nor are those with a document in such an
index beside the ones missing (a resend posts every document of an object, and Logstash retries
a refused write without end). Whether a name is a data stream, or blocks writes, is asked only
about the names of objects that miss documents, once per run.

Planning and tallying are pure functions; `Reconciler` does the I/O.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from elasticsearch import ApiError, AuthenticationException, AuthorizationException

from kcing.admin.elastic import elastic_errors, not_served, reason_of
from kcing.admin.retention import chunks, index_day, settings_past_metadata_blocks
from kcing.errors import ConfigError, ElasticsearchError, Interrupted, UpstreamError, kept_short, one_line
from kcing.http import seconds_text
from kcing.ledger import docids
from kcing.ledger.ledger import DeliveredRow, Ledger
from kcing.ledger.models import MISSING_IN_ELASTICSEARCH, column_text
from kcing.ledger.runs import RESENT_BY
from kcing.plural import counted, verb
from kcing.progress import Progress, eta_text
from kcing.sinks import LOGSTASH
from kcing.records import OBJECT_KINDS, UpstreamObject
from kcing.shutdown import cut_by_a_stop
from kcing.sources.localfiles import LOCAL_SOURCES

log = logging.getLogger(__name__)

# Ledger rows read at a time (the window query's chunk).
CHUNK = 500
# Document ids per _mget request at most.
MGET_BATCH = 1000
# Kept ids read from the ledger at a time at most (one object with more is read alone).
READ_BUDGET = 20_000
# Missing objects named per kind in the summary.
EXAMPLES = 5
# Missing objects logged one by one as warnings in a run; the rest are logged with -d only. An
# index lost whole misses every object delivered into it: a cron run's mail of a line per object
# (hundreds of thousands) would say no more than the count.
MISSING_LOGGED = 20
# Seconds between progress lines in the log.
PROGRESS_EVERY = 10.0
# Keep the answer small: only what tells present from missing.
MGET_FILTER = "docs._id,docs.found,docs.error.type,docs.error.reason"
# How a run stopped while Elasticsearch had yet to answer says so.
ASKING = "while waiting for Elasticsearch; the objects checked so far are recorded"

# Sources whose objects can be fetched again from the URL the ledger keeps.
RESENDABLE = ("legacy", "samples", "files")
# Index names named per reason in the summary.
NAMED_INDICES = 5

# Why the documents of an index could not be checked (an _mget entry's error, or what the
# index name turned out to be), and what the summary says about them.
CLOSED = "closed"
READ_BLOCK = "read block"
ALIAS = "alias"
DATA_STREAM = "data stream"
UNASSIGNED = "unassigned shards"
ROUTING = "routing required"
UNCHECKED_ORDER = (CLOSED, READ_BLOCK, ALIAS, DATA_STREAM, UNASSIGNED, ROUTING)
# What _mget answers for a document of an index whose primary shard is not assigned (the index is
# red: its node left, its disk filled): the document cannot be read now, wherever it is.
NO_SHARD_ERRORS = ("no_shard_available_action_exception", "unavailable_shards_exception")
# What _mget answers for the documents of a shard request the node turned away for now (its get
# queue full, a memory circuit breaker): back-pressure, per document. Asked again after a pause.
REJECTIONS = ("es_rejected_execution_exception", "circuit_breaking_exception")
REJECTED_ATTEMPTS = 4
REJECTED_PAUSE = 1.0  # seconds before the first new ask; doubled before each next one
# Index blocks under which Elasticsearch refuses every write.
WRITE_BLOCKS = ("index.blocks.write", "index.blocks.read_only", "index.blocks.read_only_allow_delete")


# Pure parts -------------------------------------------------------------------------------------

@dataclass
class KindTally:
    """Objects of one kind: checked = present + missing; the others could not be checked."""

    present: int = 0
    missing: int = 0
    not_checkable: int = 0  # delivered before the ledger kept ids
    expired: int = 0  # every document in an index older than the retention (drp deletes those)
    unreadable: int = 0  # no document checked: they are in closed or otherwise unreadable indices
    empty: int = 0  # delivered making no document (a KernelCI API checkout): nothing to look for
    documents: int = 0
    documents_missing: int = 0
    examples: List[str] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return self.present + self.missing


@dataclass
class Report:
    """What one reconcile found, per object kind; `marked` objects went back to undelivered."""

    scope: str
    dry_run: bool = False
    kinds: Dict[str, KindTally] = field(default_factory=dict)
    marked: int = 0
    # {reason: Unchecked}: documents not checked because of where they are.
    unchecked: Dict[str, "Unchecked"] = field(default_factory=dict)
    # Objects with missing documents left delivered: every one of those is in an index that refuses
    # writes ({index: its block}).
    held: int = 0
    write_blocked: Dict[str, str] = field(default_factory=dict)
    # Objects found missing by this check or an earlier one that this run leaves undelivered (not
    # re-sent): Elasticsearch still lacks them, whatever this check found.
    held_missing: int = 0
    # {(source, kind, destination): objects} this check found missing that a re-send could
    # write: what a dry run's plan counts, since it marks nothing in the ledger.
    found_missing: Dict[Tuple[str, str, str], int] = field(default_factory=dict)
    # {source: the earliest object date of those}: where a feed must list from to send again the
    # objects of a source a re-send cannot fetch (the KernelCI API's nodes; None: no date known).
    found_since: Dict[str, Optional[datetime]] = field(default_factory=dict)
    # Objects this check found missing, dated before the first day drp keeps: marked, and given up
    # (neither a feed nor a re-send sends them again: `Ledger.missing_counts`), so in neither of
    # the two above.
    given_up: int = 0
    # The row of the runs table that records this check (None: a dry run records none).
    run_id: Optional[int] = None
    # The first day whose indices the check looked in: DRP_DAYS's, or a later one a drp run with a
    # shorter --drp-days kept (None until the check starts).
    first_kept: Optional[date] = None
    # Whether that day is a drp run's, not DRP_DAYS's.
    kept_by_drp: bool = False

    def kind(self, name: str) -> KindTally:
        return self.kinds.setdefault(name, KindTally())

    def total(self, name: str) -> int:
        # A copy: the progress thread asks while the check may add a kind.
        return sum(getattr(tally, name) for tally in list(self.kinds.values()))

    @property
    def missing(self) -> int:
        return self.total("missing")

    @property
    def exit_code(self) -> int:
        return 1 if self.missing else 0

    @property
    def outcome(self) -> str:
        if self.missing or self.held_missing:
            return "missing"
        return "ok" if self.total("checked") else "nothing checked"

    def as_counts(self) -> dict:
        """The counts the runs table keeps (and `kcing status` shows)."""
        counts = {name: self.total(name) for name in ("checked", "present", "missing", "not_checkable", "expired",
                                                     "unreadable", "empty", "documents", "documents_missing")}
        counts["marked"] = self.marked
        counts["write_blocked"] = self.held
        counts["held_missing"] = self.held_missing
        counts["scope"] = self.scope
        return counts


@dataclass
class Unchecked:
    """Documents not checked for one reason: how many, of how many objects, in which indices
    ({index: detail}, e.g. the indices an alias points to)."""

    documents: int = 0
    objects: int = 0
    indices: Dict[str, str] = field(default_factory=dict)


@dataclass
class ObjectCheck:
    """One delivered object while its ids are being looked up."""

    row: DeliveredRow
    asked: int = 0
    missing: int = 0
    expired: int = 0
    damaged: bool = False
    first_missing: Optional[str] = None
    unchecked: Dict[str, int] = field(default_factory=dict)  # {reason: documents asked but not checkable}
    missing_blocked: int = 0  # missing documents in indices that refuse writes
    indices: Set[str] = field(default_factory=set)  # where its documents were asked for
    write_blocked: bool = False  # one of them refuses writes: a resend would be refused there

    @property
    def checked(self) -> int:
        return self.asked - sum(self.unchecked.values())

    def verdict(self) -> str:
        if self.missing or self.damaged:
            return "missing"
        if self.checked == 0 and self.unchecked:
            return "unreadable"
        if self.checked == 0 and self.expired:
            return "expired"
        return "present"

    def resendable(self) -> bool:
        """False when a document of the object is in an index that refuses writes: a resend posts
        them all, and the one refused there would be retried by Logstash without end."""
        return not self.write_blocked and not self.missing_blocked and (self.damaged or self.missing > 0)

    def finding(self) -> str:
        """What the check found of an object that is not all there, as its warning says it: a
        damaged row was not asked about, so nothing is said missing in Elasticsearch."""
        if self.damaged:
            kept = self.row.kept_ids if self.row.kept_ids >= 0 else "not a count"
            return "the ledger's kept ids do not match their count (%s); counted as missing" % kept
        return "%d of %s missing in Elasticsearch" % (self.missing, counted(self.asked, "document"))

    def example(self) -> str:
        if self.damaged:
            return "%s (its kept ids do not match their count; a resend rewrites them)" % self.row.upstream_id
        return "%s: %d of %s, e.g. %s" % (self.row.upstream_id, self.missing, counted(self.asked, "document"),
                                          self.first_missing)


def read_groups(rows: Sequence[DeliveredRow], budget: int = READ_BUDGET) -> Iterator[List[DeliveredRow]]:
    """Split rows so that one read of their kept ids holds at most `budget` ids (or one object)."""
    group: List[DeliveredRow] = []
    held = 0
    for row in rows:
        size = row.kept_ids or 0
        if group and held + size > budget:
            yield group
            group, held = [], 0
        group.append(row)
        held += size
    if group:
        yield group


def expired_index(name: str, first_kept: Optional[date]) -> bool:
    """A kcing index dated before the first day the retention keeps (drp or ILM delete it)."""
    day = index_day(name)
    return first_kept is not None and day is not None and day < first_kept


def mget_request(batch: Sequence[Tuple[int, str, str]]) -> List[dict]:
    """The `docs` of an _mget for (owner, index, id) items: existence only, no source."""
    return [{"_index": index, "_id": doc_id, "_source": False} for _, index, doc_id in batch]


class _NoMetadata(Exception):
    """The user may read documents but not index metadata (no view_index_metadata privilege), or
    what answers at ES_HOST serves no such request (`served` False)."""

    def __init__(self, status: int, served: bool = True, reason: str = ""):
        super().__init__(status)
        self.status, self.served, self.reason = status, served, reason


class LookupFailed(Exception):
    """Elasticsearch could not say whether a document exists (not the same as: it does not)."""


class LookupDenied(LookupFailed):
    """The configured user may not read the document's index (a per-document security_exception)."""


# What one _mget entry says: present, missing, no such index, or a reason it cannot be checked.
PRESENT, MISSING, NO_INDEX = "present", "missing", "no index"
_SEVERAL = re.compile(r"^alias \[[^\]]*\] has more than one index associated with it \[([^\]]*)\]")


def _rejected(entry) -> bool:
    """Whether an _mget entry is a document the node turned away for now (back-pressure)."""
    error = entry.get("error") if isinstance(entry, dict) else None
    return isinstance(error, dict) and error.get("type") in REJECTIONS


def lookup_result(doc_id: str, answer) -> Tuple[str, str]:
    """(PRESENT | MISSING | NO_INDEX | an unchecked reason, detail) of one entry of an _mget answer.

    A missing index is missing documents, not an error (unless the name is a data stream, which
    the caller asks about). A closed index, a read block, an alias of several indices and a
    primary shard not assigned, and a mapping requiring a routing make the document uncheckable;
    any other error is LookupFailed."""
    if not isinstance(answer, dict) or answer.get("_id") != doc_id:
        raise LookupFailed("the answer for %s is out of order or malformed: %.200r" % (doc_id, answer))
    found = answer.get("found")
    if found is True:
        return PRESENT, ""
    if found is False:
        return MISSING, ""
    error = answer.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    reason = error.get("reason") if isinstance(error, dict) else error
    if kind == "index_not_found_exception":
        return NO_INDEX, ""
    if kind == "index_closed_exception":
        return CLOSED, ""
    if kind == "cluster_block_exception" and "index read" in str(reason):
        return READ_BLOCK, ""
    if kind in NO_SHARD_ERRORS:
        return UNASSIGNED, ""
    if kind == "routing_missing_exception":
        return ROUTING, ""
    if kind == "security_exception":
        raise LookupDenied(str(reason))
    several = _SEVERAL.match(str(reason)) if kind == "illegal_argument_exception" else None
    # What Elasticsearch says goes into a summary line and the line a failed run ends with: one
    # line, bounded, whatever the node wrote.
    if several:
        return ALIAS, kept_short(several.group(1), 300)
    raise LookupFailed(one_line("%s: %s" % (kind or "error", reason), 300))


def is_present(doc_id: str, answer) -> bool:
    """Read one entry of an _mget answer as present or not (a missing index: not present)."""
    result, _ = lookup_result(doc_id, answer)
    if result in (PRESENT, MISSING, NO_INDEX):
        return result == PRESENT
    raise LookupFailed("the index is unreadable (%s)" % result)


def held_elsewhere(counts: Dict[tuple, int], destination_of: Callable[[str], str]) -> Dict[str, Dict[str, int]]:
    """{source: {destination: objects}} of the objects held as missing in Elasticsearch (`counts`:
    {(source, kind, destination): objects}, as `Ledger.missing_counts` gives them) whose row is
    of other Logstash inputs than `destination_of(kind)`, where these settings send their kind.
    Only a delivery to its own destination clears a row: a re-send through these settings
    could not. (A kind kcing does not know is no one's: the re-send names it in a warning.)"""
    elsewhere: Dict[str, Dict[str, int]] = {}
    for (source, kind, destination), count in counts.items():
        destination = column_text(destination)  # a row edited by hand may hold anything
        if kind in OBJECT_KINDS and destination.startswith(LOGSTASH) and destination != destination_of(kind):
            where = elsewhere.setdefault(source, {})
            where[destination] = where.get(destination, 0) + count
    return elsewhere


@dataclass
class ResendPlan:
    """What `reconcile --resend` does with objects held as missing: `sendable` it fetches again
    and sends; `unfetchable` ({source: objects}) it cannot fetch from the ledger alone (the API's
    nodes: feed_es lists them again); `elsewhere` ({source: {destination: objects}}) were delivered
    through other Logstash inputs than the settings name; `unknown` are of a kind kcing does not
    make documents of, skipped with a warning."""

    sendable: int = 0
    unfetchable: Dict[str, int] = field(default_factory=dict)
    elsewhere: Dict[str, Dict[str, int]] = field(default_factory=dict)
    unknown: int = 0


def resend_plan(counts: Dict[tuple, int], destination_of: Callable[[str], str]) -> ResendPlan:
    """The plan for `counts` ({(source, kind, destination): objects}, as `Ledger.missing_counts`
    gives them) under settings sending each kind to `destination_of(kind)`. Objects delivered
    to NDJSON files are not in Elasticsearch, so not in any plan."""
    plan = ResendPlan(elsewhere={source: where for source, where in held_elsewhere(counts, destination_of).items()
                                 if source in RESENDABLE})
    for (source, kind, destination), count in counts.items():
        destination = column_text(destination)
        if not destination.startswith(LOGSTASH):
            continue
        if source not in RESENDABLE:
            plan.unfetchable[source] = plan.unfetchable.get(source, 0) + count
        elif kind not in OBJECT_KINDS:
            plan.unknown += count
        elif destination == destination_of(kind):
            plan.sendable += count
    return plan


def named(names: Iterable[str], limit: int = NAMED_INDICES) -> str:
    """A short list of index names: the first `limit`, then how many more."""
    names = sorted(names)
    text = ", ".join(names[:limit])
    return text + (" and %d more" % (len(names) - limit) if len(names) > limit else "")


def unchecked_line(reason: str, unchecked: Unchecked) -> str:
    """The summary line for documents not checked for `reason`: where they are and what to do."""
    head = "reconcile: not checked: %s of %s in " % (counted(unchecked.documents, "document"),
                                                     counted(unchecked.objects, "object"))
    indices = unchecked.indices
    if reason == CLOSED:
        return head + ("closed indices (%s): open them (POST /<index>/_open) and run reconcile again to check them"
                       % named(indices))
    if reason == READ_BLOCK:
        return head + ("indices with a read block (%s): remove the block (index.blocks.read) to check them"
                       % named(indices))
    if reason == UNASSIGNED:
        return head + ("indices whose primary shards are not assigned (%s): Elasticsearch cannot read them until "
                       "they are (GET /_cluster/allocation/explain says why); run reconcile again then"
                       % named(indices))
    if reason == ROUTING:
        return head + ("indices whose mapping requires a routing (%s), which kcing's documents are written without "
                       "(Logstash's writes there are refused) and cannot be looked up without: take `_routing` out "
                       "of the template that maps them (one of yours, above kcing's priority 200), then let drp "
                       "delete those indices" % named(indices))
    if reason == ALIAS:
        what = "; ".join("%s, an alias of several indices (%s)" % (name, indices[name]) for name in sorted(indices))
        return head + what + ": a document cannot be looked up by id through it; point it at one index to check them"
    # The stream before its template: Elasticsearch refuses to delete a template a data stream uses.
    several = len(indices) > 1
    return head + ("%s, %s: kcing's documents cannot be looked up by id there, nor written (Logstash's index action "
                   "is refused); delete the data %s (DELETE /_data_stream/<name>), then the template that makes "
                   "%s (`kcing setup_es` names it; Elasticsearch refuses to delete it first), then run reconcile again"
                   % (named(indices), "data streams" if several else "a data stream", "streams" if several else "stream",
                      "them" if several else "it"))


def summary_lines(report: Report, host: str, advise_refeed: bool = True) -> List[str]:
    """What reconcile prints: per kind checked, present, missing, and the first missing objects.
    `advise_refeed`: also name the feed that sends again the objects found missing that no feed
    from the watermark lists again (the KernelCI API's nodes)."""
    lines = ["reconcile: %s, against Elasticsearch at %s" % (report.scope, host)]
    if not report.kinds:
        lines.append("reconcile: no delivered objects to check")
    for name, tally in sorted(report.kinds.items()):
        extra = "".join(", %s %d" % (label, value) for label, value in
                        (("not checkable (delivered before ids were kept)", tally.not_checkable),
                         ("not checked (index past retention)", tally.expired),
                         ("not checked (index closed or unreadable)", tally.unreadable),
                         ("with no documents", tally.empty)) if value)
        lines.append("reconcile: %-8s checked %d, present %d, missing %d%s; documents: %d checked, %d missing"
                     % (name, tally.checked, tally.present, tally.missing, extra, tally.documents,
                        tally.documents_missing))
        lines += ["  missing %s %s" % (name, example) for example in tally.examples]
        if tally.missing > len(tally.examples):
            lines.append("  ... and %s" % counted(tally.missing - len(tally.examples), "more %s object" % name))
    lines += [unchecked_line(reason, report.unchecked[reason]) for reason in UNCHECKED_ORDER
              if reason in report.unchecked]
    if report.held:
        lines.append("reconcile: %s with missing documents %s not marked undelivered: Elasticsearch refuses "
                     "writes to %s; remove the block and run reconcile again"
                     % (counted(report.held, "object"), verb(report.held, "was", "were"),
                        ", ".join("%s (%s)" % (name, block)
                                  for name, block in sorted(report.write_blocked.items())[:NAMED_INDICES])))
    missing = report.missing
    if not missing:
        if report.total("checked"):
            lines.append("reconcile: Elasticsearch holds every document checked")
        elif report.kinds:
            lines.append("reconcile: no object could be checked")
    elif report.dry_run:
        lines.append("reconcile: dry run: %s missing documents; nothing was changed" % objects_have(missing))
    elif report.marked or not report.held:
        unfetchable = {}
        for (source, _kind, _destination), count in report.found_missing.items():
            if source not in RESENDABLE:
                unfetchable[source] = unfetchable.get(source, 0) + count
        head = "reconcile: %s missing documents; %d marked undelivered (%s)" % (
            objects_have(missing), report.marked, MISSING_IN_ELASTICSEARCH)
        if sum(unfetchable.values()) < sum(report.found_missing.values()) or not (unfetchable or report.given_up):
            lines.append(head + ": the next feed_es that lists them sends them again, `kcing reconcile --resend` "
                                "does it now")
        else:
            lines.append(head)
        if report.given_up and report.first_kept is not None:
            lines.append("reconcile: %d of them %s dated before %s, the first day drp keeps: given up, neither "
                         "feed_es nor --resend sends them again" % (report.given_up, verb(report.given_up, "is", "are"),
                                                                   report.first_kept.isoformat()))
        # A node of the KernelCI API is listed again only by a feed from before its last update:
        # not by the next one, which starts from the watermark, nor by a re-send. Not said by a
        # caller that names that feed itself, for every object of the source held as missing.
        if advise_refeed:
            lines += ["reconcile: %d of them %s of the %s source: %s" % (count, verb(count, "is", "are"), source,
                                                                        refeed_advice(source,
                                                                                      report.found_since.get(source)))
                      for source, count in sorted(unfetchable.items())]
    return lines


def objects_have(number: int) -> str:
    """`1 object has`, `2 objects have`: the start of a line about objects with missing documents."""
    return "%s %s" % (counted(number, "object"), verb(number, "has", "have"))


# The "no date yet" of `earliest`: later than any object's date.
EPOCH_END = datetime.max


def earliest(known: Optional[datetime], when: Optional[datetime]) -> Optional[datetime]:
    """The earlier of two object dates; None (a row without a readable date) wins, as it makes
    the date of a set of objects unknown."""
    if known is None or when is None:
        return None
    return min(known.replace(tzinfo=None), when.replace(tzinfo=None))


def refeed_advice(source: str, since: Optional[datetime]) -> str:
    """Why objects of `source` that reconcile found missing need a feed of their own, and which."""
    return ("no feed from the watermark lists them again, nor can `kcing reconcile --resend` fetch them: "
            + refeed_command(source, since))


def refeed_command(source: str, since: Optional[datetime]) -> str:
    """The feed that sends again objects of `source` a re-send cannot fetch from the ledger: one
    listing from `since` (their earliest date, UTC), written so that it can be pasted."""
    if since is None or since == EPOCH_END:
        return "`kcing feed_es --source %s --since DATE` (DATE before their last update) sends them again" % source
    return "`kcing feed_es --source %s --since %s` sends them again" % (
        source, since.replace(tzinfo=None, microsecond=0).isoformat() + "Z")


# I/O --------------------------------------------------------------------------------------------

def unchecked_reasons(report: Report, drp_days: int, empty: bool = True) -> List[str]:
    """Why the objects of a check that checked none were not (reconcile, feed_es --verify): how
    many in indices past the retention (DRP_DAYS's, or a drp run's with a shorter --drp-days, which
    deleted them: naming DRP_DAYS alone, far longer, said nothing of why), delivered before the
    ledger kept ids, in closed or unreadable indices, or (with `empty`) making no documents."""
    expired, old, unreadable = report.total("expired"), report.total("not_checkable"), report.total("unreadable")
    made_none = report.total("empty") if empty else 0
    reasons = []
    if expired:
        retention = ("dated before %s, which a drp run deleted" % report.first_kept.isoformat()
                     if report.kept_by_drp and report.first_kept is not None else "DRP_DAYS=%d" % drp_days)
        reasons.append("%d in indices past the retention (%s)" % (expired, retention))
    if old:
        reasons.append("%d delivered before the ledger kept document ids" % old)
    if unreadable:
        indices = {name for unchecked in report.unchecked.values() for name in unchecked.indices}
        reasons.append("%d in closed or unreadable indices (%s)" % (unreadable, named(indices)))
    if made_none:
        reasons.append("%d that made no documents" % made_none)
    return reasons


def warn_unchecked(report: Report) -> None:
    """Say as warnings what could not be checked: a run that exits 0 prints no summary with -q
    (cron), and documents in a closed index or a data stream would go unchecked unseen."""
    for reason in UNCHECKED_ORDER:
        if reason in report.unchecked:
            log.warning("%s", unchecked_line(reason, report.unchecked[reason])[len("reconcile: "):])


class Reconciler:
    """Checks chunks of delivered rows against Elasticsearch; marks the incomplete ones unless
    `mark` is False (a dry run)."""

    def __init__(self, client, host: str, ledger: Ledger, report: Report, mark: bool = True,
                 first_kept: Optional[date] = None, batch: int = MGET_BATCH, budget: int = READ_BUDGET,
                 sleep: Callable[[float], None] = time.sleep):
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.client = client
        self.host = host
        self.ledger = ledger
        self.report = report
        self.mark = mark
        self.first_kept = first_kept
        self.batch = batch
        self.budget = budget
        self.sleep = sleep
        # What the index names with missing documents are: {name: (DATA_STREAM, "") or
        # ("write block", the block setting) or None}, asked once per name and run.
        self.facts: Dict[str, Optional[Tuple[str, str]]] = {}
        self.facts_unknown = False
        self.stop: Optional[threading.Event] = None
        # Objects found missing and marked in this run: the first MISSING_LOGGED are logged one by one.
        self.missing_marked = 0

    def run(self, chunks: Iterable[List[DeliveredRow]], stop: Optional[threading.Event] = None,
            progress: Optional[Progress] = None, total: Optional[int] = None) -> Report:
        """Check every chunk; `total` (objects in all chunks), when known, gives the progress an ETA."""
        progress = progress or Progress("reconcile", live=False, every=PROGRESS_EVERY)
        started, seen = time.monotonic(), [0]
        self.stop = stop

        def text() -> str:
            elapsed = max(time.monotonic() - started, 1e-9)
            return ("%s checked, %d missing, %s asked for (%.0f/s)%s"
                    % (counted(self.report.total("checked"), "object"), self.report.missing,
                       counted(self.report.total("documents"), "document"),
                       self.report.total("documents") / elapsed, eta_text(seen[0], total, elapsed)))

        try:
            # Kept up also while an _mget waits for its answer (up to ES_REQUEST_DEADLINE).
            with progress.kept_up(text):
                for rows in chunks:
                    self.check_chunk(rows)
                    seen[0] += len(rows)
                    if stop is not None and stop.is_set():
                        raise Interrupted("stopped by a signal; the objects checked so far are recorded")
                    progress.update(text)
        finally:
            progress.finish(text)
            self._say_missing_not_logged()
        return self.report

    def _say_missing_not_logged(self) -> None:
        unlogged = self.missing_marked - MISSING_LOGGED
        if unlogged > 0:
            log.warning("%d more %s missing in Elasticsearch (each is logged with -d)",
                        unlogged, verb(unlogged, "object is", "objects are"))

    def check_chunk(self, rows: Sequence[DeliveredRow]) -> None:
        checks: Dict[int, ObjectCheck] = {}
        pending: List[Tuple[int, str, str]] = []
        checkable = []
        for row in rows:
            if row.kept_ids is None:
                self.report.kind(row.kind).not_checkable += 1
            else:
                checkable.append(row)
        for group in read_groups(checkable, self.budget):
            kept = self.ledger.kept_documents([row.id for row in group])
            for row in group:
                check = checks[row.id] = ObjectCheck(row)
                entries = kept.get(row.id, [])
                if sum(len(blob) for _, blob in entries) != row.kept_ids * docids.ID_BYTES:
                    check.damaged = True  # logged with the objects found missing (_settle), once
                    continue
                for index, blob in entries:
                    if expired_index(index, self.first_kept):
                        check.expired += docids.count(blob)
                        continue
                    for doc_id in docids.unpack(blob):
                        check.asked += 1
                        pending.append((row.id, index, doc_id))
                        if len(pending) >= self.batch:
                            self._look_up(pending, checks)
                            pending = []
        if pending:
            self._look_up(pending, checks)
        self._settle(list(checks.values()))

    def _ask(self, batch: List[Tuple[int, str, str]]) -> list:
        """The _mget entries of `batch`, in its order."""
        # A signal ends the wait for an answer at once: nothing of this chunk is recorded yet.
        asking = "checking %s with _mget" % counted(len(batch), "document")
        with cut_by_a_stop(self.stop, ASKING), elastic_errors(self.host, asking):
            answer = self.client.mget(docs=mget_request(batch), filter_path=MGET_FILTER)
        body = getattr(answer, "body", answer)
        found = body.get("docs") if isinstance(body, dict) else None
        if not isinstance(found, list) or len(found) != len(batch):
            raise ElasticsearchError("Elasticsearch at %s answered an _mget of %s with %s"
                                     % (self.host, counted(len(batch), "document"),
                                        counted(len(found), "entry", "entries") if isinstance(found, list)
                                        else "no entries"))
        return found

    def _answers(self, batch: List[Tuple[int, str, str]]) -> list:
        """The _mget entries of `batch`, the documents the node turned away for now (REJECTIONS)
        asked again after a growing pause, up to REJECTED_ATTEMPTS times in all."""
        found = self._ask(batch)
        for attempt in range(1, REJECTED_ATTEMPTS):
            rejected = [position for position, entry in enumerate(found) if _rejected(entry)]
            if not rejected:
                break
            pause = REJECTED_PAUSE * 2 ** (attempt - 1)
            log.warning("Elasticsearch at %s turned away %d of %s asked for (%s); asking again in %s",
                        self.host, len(rejected), counted(len(found), "document"),
                        found[rejected[0]]["error"].get("type"),
                        seconds_text(pause))
            with cut_by_a_stop(self.stop, ASKING):
                self.sleep(pause)
            for position, entry in zip(rejected, self._ask([batch[position] for position in rejected])):
                found[position] = entry
        return found

    def _look_up(self, batch: List[Tuple[int, str, str]], checks: Dict[int, ObjectCheck]) -> None:
        found = self._answers(batch)
        results = []
        for (owner, index, doc_id), entry in zip(batch, found):
            try:
                results.append(lookup_result(doc_id, entry))
            except LookupDenied as error:
                # The same for every document of the index, and mended only by granting a role.
                raise ConfigError("Elasticsearch at %s denied the configured user reading %s (403): %s; reconcile "
                                  "needs the read privilege on kcing's indices (ES_USER/ES_PASSWORD or ES_API_KEY)"
                                  % (self.host, index, one_line(error, 300))) from None
            except LookupFailed as error:
                raise ElasticsearchError("Elasticsearch at %s could not look up document %s in %s: %s"
                                         % (self.host, doc_id, index, error)) from None
        self._learn({index for (_, index, _), (result, _) in zip(batch, results) if result in (MISSING, NO_INDEX)})
        for (owner, index, doc_id), (result, detail) in zip(batch, results):
            check = checks[owner]
            check.indices.add(index)
            if result == PRESENT:
                continue
            fact = self.facts.get(index)
            if result == NO_INDEX and fact is not None and fact[0] == DATA_STREAM:
                result = DATA_STREAM
            if result in UNCHECKED_ORDER:
                check.unchecked[result] = check.unchecked.get(result, 0) + 1
                self.report.unchecked.setdefault(result, Unchecked()).indices[index] = detail
                continue
            check.missing += 1
            if self._write_block(index):
                check.missing_blocked += 1
            if check.first_missing is None:
                check.first_missing = "%s/%s" % (index, doc_id)

    def _note_write_blocks(self, check: ObjectCheck) -> None:
        """Whether an index the object's present documents are in refuses writes (asked once per name)."""
        self._learn(check.indices)
        for index in sorted(check.indices):
            if self._write_block(index):
                check.write_blocked = True

    def _write_block(self, index: str) -> Optional[str]:
        """The block that makes `index` refuse writes, as learnt (and named in the report), or None."""
        fact = self.facts.get(index)
        if fact is None or fact[0] != "write block":
            return None
        self.report.write_blocked[index] = fact[1]
        return fact[1]

    def _learn(self, names) -> None:
        """Find out which of `names` (where documents were missing) are data streams or refuse writes."""
        names = sorted(name for name in names if name not in self.facts)
        if not names or self.facts_unknown:
            return
        for name in names:
            self.facts[name] = None
        # A few names per request: they go in its URL, and a node refuses a long one (a backfill
        # of a year that Elasticsearch lost misses documents in hundreds of indices at once).
        for some in chunks(names):
            if not self._learn_some(some):
                return

    def _learn_some(self, names: List[str]) -> bool:
        """`_learn` for a few names; False when the user may not ask (then nothing more is asked)."""
        try:
            with cut_by_a_stop(self.stop, ASKING), elastic_errors(self.host, "asking what %s are" % named(names)):
                try:
                    resolved = self.client.indices.resolve_index(name=",".join(names), expand_wildcards="all",
                                                                 ignore_unavailable=True)
                    concrete = [item.get("name") for item in resolved.get("indices", []) if item.get("name") in names]
                    # An alias of one index is read through as that index, and writes go to it.
                    behind = {item["name"]: item["indices"][0] for item in resolved.get("aliases", [])
                              if item.get("name") in names and len(item.get("indices") or []) == 1}
                    blocks = self._block_settings(sorted(set(concrete) | set(behind.values())))
                except (AuthenticationException, AuthorizationException) as error:
                    raise _NoMetadata(error.meta.status) from None
                except ApiError as error:
                    if not not_served(error):
                        raise
                    raise _NoMetadata(error.meta.status, served=False, reason=reason_of(error)) from None
        except _NoMetadata as refused:
            if not refused.served:
                log.warning("Elasticsearch at %s does not answer the requests that say which indices are data "
                            "streams or refuse writes (GET /_resolve/index/..., GET /.../_settings: %d, %s): documents "
                            "missing there are marked undelivered as any other", self.host, refused.status,
                            refused.reason)
                self.facts_unknown = True
                return False
            # `read` alone does not let a user see index metadata: the check still works, only
            # a data stream reads as a missing index and a write block goes unnoticed.
            log.warning("Elasticsearch at %s refused (%s) to say which indices are data streams or refuse writes: "
                        "documents missing there are marked undelivered as any other; grant view_index_metadata "
                        "on the kcing indices to tell them apart", self.host, refused)
            self.facts_unknown = True
            return False
        for stream in resolved.get("data_streams", []):
            if stream.get("name") in self.facts:
                self.facts[stream["name"]] = (DATA_STREAM, "")
        for name, index in [(name, name) for name in concrete] + sorted(behind.items()):
            settings = (blocks.get(index) or {}).get("settings") or {}
            block = next((setting for setting in WRITE_BLOCKS if str(settings.get(setting)).lower() == "true"), None)
            if name in self.facts and block:
                self.facts[name] = ("write block", block)
        return True

    def _block_settings(self, names: List[str]) -> Dict[str, dict]:
        """{index: {"settings": its index.blocks.* settings}} of `names`.

        An index with a metadata block refuses to be described (see
        `settings_past_metadata_blocks`): whether it refuses writes cannot be known, and its
        documents missing are marked as any other. A refusal that names no index is a privilege
        the user lacks."""
        found, refused = settings_past_metadata_blocks(self.client, names, "index.blocks.*", "all")
        if refused:
            log.warning("Elasticsearch at %s refuses to describe %s (%s): whether they refuse writes is unknown, "
                        "and documents missing there are marked undelivered as any other; remove the metadata "
                        "block (index.blocks.metadata) to tell", self.host, named(refused),
                        "; ".join(sorted(set(refused.values()))))
        return found

    def _given_up(self, row: DeliveredRow) -> bool:
        """Whether an object held as missing is dated before the first day drp keeps, as the ledger
        reads the rows a re-send takes (`Ledger.missing_counts`; one without a date goes by when it
        was first seen, which its row here lacks: taken as kept)."""
        if self.first_kept is None or row.object_date is None:
            return False
        return row.object_date < datetime.combine(self.first_kept, datetime.min.time())

    def _settle(self, checks: List[ObjectCheck]) -> None:
        incomplete = []
        for check in checks:
            tally = self.report.kind(check.row.kind)
            verdict = check.verdict()
            for reason, documents in check.unchecked.items():
                unchecked = self.report.unchecked[reason]
                unchecked.documents += documents
                unchecked.objects += 1
            if verdict == "expired":
                tally.expired += 1
                continue
            if verdict == "unreadable":
                tally.unreadable += 1
                continue
            if verdict == "present" and not check.asked and not check.expired:
                # Not "present": Elasticsearch was not asked, and a check of such objects alone
                # must not read as one that found everything (it would with Elasticsearch down).
                tally.empty += 1
                continue
            tally.documents += check.checked
            tally.documents_missing += check.missing
            if verdict == "present":
                tally.present += 1
                continue
            tally.missing += 1
            if len(tally.examples) < EXAMPLES:
                tally.examples.append(check.example())
            if check.missing and not check.missing_blocked:
                self._note_write_blocks(check)
            if not check.resendable():
                # A document of it is in an index that refuses writes: a resend would be refused.
                self.report.held += 1
                continue
            incomplete.append(check.row.id)
            if self._given_up(check.row):
                self.report.given_up += 1
            else:
                key = (check.row.source, check.row.kind, check.row.destination)
                self.report.found_missing[key] = self.report.found_missing.get(key, 0) + 1
                self.report.found_since[check.row.source] = earliest(
                    self.report.found_since.get(check.row.source, EPOCH_END), check.row.object_date)
            one_by_one = self.missing_marked < MISSING_LOGGED
            self.missing_marked += 1
            log.log(logging.WARNING if one_by_one else logging.DEBUG, "%s %s: %s", check.row.kind,
                    check.row.upstream_id, check.finding())
        if incomplete and self.mark:
            self.report.marked += self.ledger.mark_missing(incomplete)


class MissingObjects:
    """A source listing what reconcile sent back to undelivered, fetched by `fetcher` (a source
    of the same kind, whose `fetch` needs only the URL and date the ledger kept)."""

    def __init__(self, ledger: Ledger, name: str, fetcher, destination_of: Optional[Callable[[str], str]] = None,
                 kept_from: Optional[datetime] = None):
        self.ledger = ledger
        # Those dated before it (midnight of the first day drp keeps) are given up: re-sent, they
        # would make again an index drp deleted.
        self.kept_from = kept_from
        self.name = name
        self.fetcher = fetcher
        # kind -> where the re-send delivers it: only the objects held for that destination are
        # listed, since the delivery clears the row of its own destination alone.
        self.destination_of = destination_of
        self._storages: Optional[Set[str]] = None  # those the ledger's runs recorded, read once

    def list_objects(self) -> Iterator[UpstreamObject]:
        for obj in self.ledger.missing_objects(self.name, destination_prefix=LOGSTASH,
                                               destination_of=self._destination_of, kept_from=self.kept_from):
            if obj.kind in OBJECT_KINDS:
                yield obj
            else:
                # A row edited by hand: no route takes such an object, and no fetch knows it.
                log.warning("%s %s: the ledger gives it the kind %s, which kcing does not know; it is not sent "
                            "again (fix the row's kind, or delete the row)", self.name,
                            one_line(obj.upstream_id, 80), one_line(repr(obj.kind), 40))

    def _destination_of(self, kind: str) -> Optional[str]:
        # An unknown kind is listed whatever its destination, to be named in the warning below.
        if self.destination_of is None or kind not in OBJECT_KINDS:
            return None
        return self.destination_of(kind)

    @property
    def recorded_with_run(self) -> dict:
        """What the fetcher's own feed runs record (the legacy storage): the rows sent again
        hold URLs built at it. And that reconcile re-sent them (RESENT_BY): a re-send lists
        nothing upstream, so its row is no success of the feed (`Ledger.last_success`)."""
        return dict(getattr(self.fetcher, "recorded_with_run", {}), **{RESENT_BY: "reconcile"})

    def complete(self, obj: UpstreamObject) -> UpstreamObject:
        """`obj` with what the ledger does not keep and the fetcher can find again (a sample's
        listing item), for the documents to be made as they were the first time; a legacy
        object's file asked for at the storage this run is given, not at the one its row names
        (KCI_STORAGE_URL may name a mirror since)."""
        relocate = getattr(self.fetcher, "at_this_storage", None)
        if relocate is not None:
            if self._storages is None:
                self._storages = self.ledger.storages_recorded(self.name)
            obj = relocate(obj, self._storages)
            if obj.problem:
                return obj
        restore = getattr(self.fetcher, "restore", None)
        return obj if restore is None else restore(obj)

    def fetch(self, obj: UpstreamObject) -> bytes:
        try:
            content = self.fetcher.fetch(obj)
        except UpstreamError as error:
            # Keep the mark: Elasticsearch still lacks the object, and the next --resend (not
            # only a feed that happens to list it again) must try it again.
            raise UpstreamError("%s; re-send failed: %s" % (MISSING_IN_ELASTICSEARCH, error)) from None
        delivered = obj.facts.get("sha256")
        if self.name in LOCAL_SOURCES and delivered:
            # A copy kept here (a sample, a local file) stands for what was delivered: edited since,
            # it would put other documents, or other ids, in place of those Elasticsearch lost.
            now = hashlib.sha256(content).hexdigest()
            if now != delivered:
                raise UpstreamError("%s; re-send refused: %s changed since it was delivered (sha256 %s, now %s); "
                                    "put back the file that was delivered" % (
                                        MISSING_IN_ELASTICSEARCH, obj.url, delivered[:12], now[:12]))
        return content
