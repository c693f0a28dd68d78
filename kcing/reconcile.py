"""`kcing reconcile`: does Elasticsearch hold every document the ledger says was delivered?

Logstash's http input answers 200 once events are queued, before Elasticsearch indexes them; a
mapping error or an event dropped after that is invisible to the sender. The ledger keeps the
ids of the documents each delivered object produced (ledger/docids.py). Reconcile reads the
delivered rows a chunk at a time, asks Elasticsearch for their ids with `_mget` in bounded
batches (no `_source`), and sends every object with a missing document back to undelivered,
so the next feed that lists it sends it again. Memory stays flat whatever the window: one
chunk of rows, one bounded read of their ids and one `_mget` batch at a time.

Planning and tallying are pure functions; `Reconciler` does the I/O.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from kcing.admin.elastic import elastic_errors
from kcing.admin.retention import index_day
from kcing.errors import ElasticsearchError, Interrupted, UpstreamError
from kcing.ledger import docids
from kcing.ledger.ledger import DeliveredRow, Ledger
from kcing.ledger.models import MISSING_IN_ELASTICSEARCH
from kcing.progress import Progress, eta_text
from kcing.sinks import LOGSTASH
from kcing.records import UpstreamObject

log = logging.getLogger(__name__)

# Ledger rows read at a time (the window query's chunk).
CHUNK = 500
# Document ids per _mget request at most.
MGET_BATCH = 1000
# Kept ids read from the ledger at a time at most (one object with more is read alone).
READ_BUDGET = 20_000
# Missing objects named per kind in the summary.
EXAMPLES = 5
# Seconds between progress lines in the log.
PROGRESS_EVERY = 10.0
# Keep the answer small: only what tells present from missing.
MGET_FILTER = "docs._id,docs.found,docs.error.type,docs.error.reason"

# Sources whose objects can be fetched again from the URL the ledger keeps.
RESENDABLE = ("legacy", "samples", "files")


# Pure parts -------------------------------------------------------------------------------------

@dataclass
class KindTally:
    """Objects of one kind: checked = present + missing; the others could not be checked."""

    present: int = 0
    missing: int = 0
    not_checkable: int = 0  # delivered before the ledger kept ids
    expired: int = 0  # every document in an index older than the retention (drp deletes those)
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

    def kind(self, name: str) -> KindTally:
        return self.kinds.setdefault(name, KindTally())

    def total(self, name: str) -> int:
        return sum(getattr(tally, name) for tally in self.kinds.values())

    @property
    def missing(self) -> int:
        return self.total("missing")

    @property
    def exit_code(self) -> int:
        return 1 if self.missing else 0

    @property
    def outcome(self) -> str:
        if self.missing:
            return "missing"
        return "ok" if self.total("checked") else "nothing checked"

    def as_counts(self) -> dict:
        """The counts the runs table keeps (and `kcing status` shows)."""
        counts = {name: self.total(name) for name in ("checked", "present", "missing", "not_checkable", "expired",
                                                     "documents", "documents_missing")}
        counts["marked"] = self.marked
        counts["scope"] = self.scope
        return counts


@dataclass
class ObjectCheck:
    """One delivered object while its ids are being looked up."""

    row: DeliveredRow
    asked: int = 0
    missing: int = 0
    expired: int = 0
    damaged: bool = False
    first_missing: Optional[str] = None

    def verdict(self) -> str:
        if self.missing or self.damaged:
            return "missing"
        if self.asked == 0 and self.expired:
            return "expired"
        return "present"

    def example(self) -> str:
        if self.damaged:
            return "%s (its kept ids do not match their count; a resend rewrites them)" % self.row.upstream_id
        return "%s: %d of %d documents, e.g. %s" % (self.row.upstream_id, self.missing, self.asked, self.first_missing)


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


class LookupFailed(Exception):
    """Elasticsearch could not say whether a document exists (not the same as: it does not)."""


def is_present(doc_id: str, answer) -> bool:
    """Read one entry of an _mget answer. A missing index is a missing document, not an error."""
    if not isinstance(answer, dict) or answer.get("_id") != doc_id:
        raise LookupFailed("the answer for %s is out of order or malformed: %.200r" % (doc_id, answer))
    found = answer.get("found")
    if found is True:
        return True
    if found is False:
        return False
    error = answer.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    if kind == "index_not_found_exception":
        return False
    reason = error.get("reason") if isinstance(error, dict) else error
    raise LookupFailed("%s: %s" % (kind or "error", reason))


def summary_lines(report: Report, host: str) -> List[str]:
    """What reconcile prints: per kind checked, present, missing, and the first missing objects."""
    lines = ["reconcile: %s, against Elasticsearch at %s" % (report.scope, host)]
    if not report.kinds:
        lines.append("reconcile: no delivered objects to check")
    for name, tally in sorted(report.kinds.items()):
        extra = "".join(", %s %d" % (label, value) for label, value in
                        (("not checkable (delivered before ids were kept)", tally.not_checkable),
                         ("not checked (index past retention)", tally.expired)) if value)
        lines.append("reconcile: %-8s checked %d, present %d, missing %d%s; documents: %d checked, %d missing"
                     % (name, tally.checked, tally.present, tally.missing, extra, tally.documents,
                        tally.documents_missing))
        lines += ["  missing %s %s" % (name, example) for example in tally.examples]
        if tally.missing > len(tally.examples):
            lines.append("  ... and %d more %s objects" % (tally.missing - len(tally.examples), name))
    missing = report.missing
    if not missing:
        if report.total("checked"):
            lines.append("reconcile: Elasticsearch holds every document checked")
        elif report.kinds:
            lines.append("reconcile: no object could be checked")
    elif report.dry_run:
        lines.append("reconcile: dry run: %d objects have missing documents; nothing was changed" % missing)
    else:
        lines.append("reconcile: %d objects have missing documents; %d marked undelivered (%s): the next feed_es "
                     "that lists them sends them again, `kcing reconcile --resend` does it now"
                     % (missing, report.marked, MISSING_IN_ELASTICSEARCH))
    return lines


# I/O --------------------------------------------------------------------------------------------

class Reconciler:
    """Checks chunks of delivered rows against Elasticsearch; marks the incomplete ones unless
    `mark` is False (a dry run)."""

    def __init__(self, client, host: str, ledger: Ledger, report: Report, mark: bool = True,
                 first_kept: Optional[date] = None, batch: int = MGET_BATCH, budget: int = READ_BUDGET):
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

    def run(self, chunks: Iterable[List[DeliveredRow]], stop: Optional[threading.Event] = None,
            progress: Optional[Progress] = None, total: Optional[int] = None) -> Report:
        """Check every chunk; `total` (objects in all chunks), when known, gives the progress an ETA."""
        progress = progress or Progress("reconcile", live=False, every=PROGRESS_EVERY)
        started, seen = time.monotonic(), [0]

        def text() -> str:
            elapsed = max(time.monotonic() - started, 1e-9)
            return ("%d objects checked, %d missing, %d documents asked for (%.0f/s)%s"
                    % (self.report.total("checked"), self.report.missing, self.report.total("documents"),
                       self.report.total("documents") / elapsed, eta_text(seen[0], total, elapsed)))

        try:
            for rows in chunks:
                self.check_chunk(rows)
                seen[0] += len(rows)
                if stop is not None and stop.is_set():
                    raise Interrupted("stopped by a signal; the objects checked so far are recorded")
                progress.update(text)
        finally:
            progress.finish(text)
        return self.report

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
                    log.warning("%s %s: the ledger's kept ids do not match their count (%d); counted as missing",
                                row.kind, row.upstream_id, row.kept_ids)
                    check.damaged = True
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

    def _look_up(self, batch: List[Tuple[int, str, str]], checks: Dict[int, ObjectCheck]) -> None:
        with elastic_errors(self.host, "checking %d documents with _mget" % len(batch)):
            answer = self.client.mget(docs=mget_request(batch), filter_path=MGET_FILTER)
        body = getattr(answer, "body", answer)
        found = body.get("docs") if isinstance(body, dict) else None
        if not isinstance(found, list) or len(found) != len(batch):
            raise ElasticsearchError("Elasticsearch at %s answered an _mget of %d documents with %s entries"
                                     % (self.host, len(batch), len(found) if isinstance(found, list) else "no"))
        for (owner, index, doc_id), entry in zip(batch, found):
            try:
                present = is_present(doc_id, entry)
            except LookupFailed as error:
                raise ElasticsearchError("Elasticsearch at %s could not look up document %s in %s: %s"
                                         % (self.host, doc_id, index, error)) from None
            if not present:
                check = checks[owner]
                check.missing += 1
                if check.first_missing is None:
                    check.first_missing = "%s/%s" % (index, doc_id)

    def _settle(self, checks: List[ObjectCheck]) -> None:
        incomplete = []
        for check in checks:
            tally = self.report.kind(check.row.kind)
            verdict = check.verdict()
            if verdict == "expired":
                tally.expired += 1
                continue
            tally.documents += check.asked
            tally.documents_missing += check.missing
            if verdict == "present":
                tally.present += 1
                continue
            tally.missing += 1
            if len(tally.examples) < EXAMPLES:
                tally.examples.append(check.example())
            incomplete.append(check.row.id)
            log.warning("%s %s: %s missing in Elasticsearch", check.row.kind, check.row.upstream_id,
                        "kept ids damaged" if check.damaged else "%d of %d documents" % (check.missing, check.asked))
        if incomplete and self.mark:
            self.report.marked += self.ledger.mark_missing(incomplete)


class MissingObjects:
    """A source listing what reconcile sent back to undelivered, fetched by `fetcher` (a source
    of the same kind, whose `fetch` needs only the URL and date the ledger kept)."""

    def __init__(self, ledger: Ledger, name: str, fetcher):
        self.ledger = ledger
        self.name = name
        self.fetcher = fetcher

    def list_objects(self) -> Iterator[UpstreamObject]:
        return self.ledger.missing_objects(self.name, destination_prefix=LOGSTASH)

    def fetch(self, obj: UpstreamObject) -> bytes:
        try:
            return self.fetcher.fetch(obj)
        except UpstreamError as error:
            # Keep the mark: Elasticsearch still lacks the object, and the next --resend (not
            # only a feed that happens to list it again) must try it again.
            raise UpstreamError("%s; re-send failed: %s" % (MISSING_IN_ELASTICSEARCH, error)) from None
