"""drp: delete kcing's date-suffixed indices older than the retention, and forget old ledger rows.

Selection is a pure function of the index names, a `today` and a number of days. Deletion is by
exact names only: Elasticsearch 8 refuses wildcards in DELETE (`action.destructive_requires_name`),
and a listing filtered by kcing's own strict pattern is the only way never to touch an index that
merely looks similar (`.kibana_1`, `logs-foo-2019.01.01`, `build-latest`, `kcing-unrouted-...`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from elasticsearch import ApiError, Elasticsearch, TransportError

from kcing.admin.elastic import elastic_errors, error_type, not_served, reason_of, translate
from kcing.errors import kept_short
from kcing.keptdays import cutoff_day, day_start
from kcing.plural import counted, verb
from kcing.records import DOCUMENT_KINDS

log = logging.getLogger(__name__)

# ASCII digits and the end of the name: `\d` would also take other scripts' digits (which int()
# reads as 0-9), and `$` a name that goes on with a newline.
KCING_INDEX = re.compile(r"(%s)-([0-9]{4})\.([0-9]{2})\.([0-9]{2})" % "|".join(DOCUMENT_KINDS))
# What drp lists: every index named like one of kcing's (the strict pattern then picks kcing's).
KCING_PATTERNS = ",".join("%s-*" % kind for kind in DOCUMENT_KINDS)
# Index names per request that names them in its URL (a DELETE, `_settings`, `_resolve/index`):
# a node refuses a request line over 4096 bytes (http.max_initial_line_length) with 400
# too_long_http_line_exception; 50 of kcing's names (21 characters at most) stay far below it.
NAMES_PER_REQUEST = 50
# How a node names each index whose block stops a DELETE (index.blocks.read_only or .metadata, or
# a cluster-wide read-only block): `index [build-2019.05.31] blocked by: [FORBIDDEN/5/index
# read-only (api)];`, one after the other. It then deletes none of the indices named.
_BLOCKED_INDEX = re.compile(r"index \[([^\]\[]+)\] blocked by: \[([^\]]*)\];")


def index_day(name: str) -> Optional[date]:
    """The day in a kcing index name (`boot-2019.05.31`), or None for any other name."""
    match = KCING_INDEX.fullmatch(name)
    if not match:
        return None
    try:
        return date(int(match.group(2)), int(match.group(3)), int(match.group(4)))
    except ValueError:  # build-2019.13.45 is not ours to judge
        return None


def expired_indices(names: Iterable[str], today: date, days: int) -> List[str]:
    """The kcing indices among `names` dated before `today - days`, sorted."""
    first_kept = cutoff_day(today, days)
    dated = ((name, index_day(name)) for name in set(names))
    return sorted(name for name, day in dated if day is not None and day < first_kept)


def ledger_cutoff(today: date, days: int) -> datetime:
    """Ledger rows first seen before this instant (UTC midnight of the first day kept) are forgotten."""
    return day_start(cutoff_day(today, days))


def chunks(names: Sequence[str], size: int = NAMES_PER_REQUEST) -> Iterator[List[str]]:
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, len(names), size):
        yield list(names[start:start + size])


def list_indices(client: Elasticsearch, host: str) -> List[str]:
    """Every index named like a kcing index: open, closed and hidden (_cat leaves hidden ones out
    unless asked, and a kcing index someone hid still expires).

    Asked by kcing's patterns: a node refuses the whole `_cat/indices` when one index it lists has
    a metadata block (index.blocks.metadata), and someone else's index so blocked must not stop
    the retention. When one of kcing's own is, `_resolve/index`, which that block does not stop,
    names them instead (drp then says that it cannot delete it)."""
    action = "listing indices (%s)" % KCING_PATTERNS
    try:
        rows = client.cat.indices(index=KCING_PATTERNS, format="json", h="index", expand_wildcards="all")
    except ApiError as error:
        if error_type(error) != "cluster_block_exception":
            raise translate(error, host, action) from None
        with elastic_errors(host, action):
            resolved = client.indices.resolve_index(name=KCING_PATTERNS, expand_wildcards="all")
        return [item["name"] for item in resolved.body.get("indices", [])
                if isinstance(item, dict) and isinstance(item.get("name"), str)]
    except TransportError as error:
        raise translate(error, host, action) from None
    return [row["index"] for row in rows.body if isinstance(row, dict) and row.get("index")]


def blocked_indices(error: ApiError, names: Sequence[str]) -> Dict[str, str]:
    """{index: its blocks} of the `names` a refusal (a DELETE's, a `_settings`') says are blocked;
    {} for any other refusal."""
    if error_type(error) != "cluster_block_exception":
        return {}
    envelope = error.body.get("error") if isinstance(error.body, dict) else None
    reason = str(envelope.get("reason", "")) if isinstance(envelope, dict) else ""
    # Quoted by drp, one line per index: controls written as escapes, cut.
    found = {name: kept_short(blocks, BLOCKS_CHARACTERS) for name, blocks in _BLOCKED_INDEX.findall(reason)}
    return {name: found[name] for name in names if name in found}


# How many characters of an index's blocks drp quotes (`FORBIDDEN/5/index read-only (api)`, a few
# of them at most).
BLOCKS_CHARACTERS = 300


def past_blocks(request: Callable[[List[str]], Any], names: Sequence[str]) -> Tuple[Any, List[str], Dict[str, str]]:
    """`request(names)`, asked again without the indices a refusal says are blocked: a node
    refuses a whole request (403 cluster_block_exception) naming each index whose block stops
    it, and does none of it. Return (the answer, the names it was given for, {index: its blocks}
    of those left out); (None, [], ...) when every one was. Any other refusal is raised as
    Elasticsearch gave it."""
    refused_all: Dict[str, str] = {}
    remaining = list(names)
    while remaining:
        try:
            return request(remaining), remaining, refused_all
        except ApiError as error:
            refused = blocked_indices(error, remaining)
            if not refused:
                raise
            refused_all.update(refused)
            remaining = [name for name in remaining if name not in refused]
    return None, [], refused_all


def delete_indices(client: Elasticsearch, host: str, names: Sequence[str],
                   size: int = NAMES_PER_REQUEST) -> Tuple[List[str], Dict[str, str]]:
    """Delete `names` (exact names, never patterns) in chunks; return the names deleted and
    {name: its blocks} of those Elasticsearch refuses to delete because of an index block.
    The error raised when Elasticsearch refuses a DELETE (a 4xx answer) has `untouched`: the
    names of `names` that are certainly still there.

    One blocked index makes Elasticsearch refuse the whole DELETE: the others of its chunk are
    deleted again without it, so that one index someone made read-only does not keep every
    other expired index on the disk."""
    deleted: List[str] = []
    blocked: Dict[str, str] = {}
    for chunk in chunks(names, size):
        for name in chunk:
            if not KCING_INDEX.fullmatch(name):
                raise ValueError("refusing to delete %r: not a kcing index name" % name)
        try:
            # ILM (setup_es --ilm) may delete an index between our listing and this call; a
            # missing one must not fail the chunk, which ES would then not delete at all.
            _, gone, refused = past_blocks(lambda remaining: client.indices.delete(
                index=remaining, ignore_unavailable=True, expand_wildcards="none"), chunk)
        except (ApiError, TransportError) as error:
            failure = translate(error, host, "deleting %s (%s ... )" % (counted(len(chunk), "index", "indices"),
                                                                        chunk[0]))
            if isinstance(error, ApiError) and 400 <= error.meta.status < 500:
                # Refused, not lost on the way: this chunk and those after it are all still there.
                done = set(deleted)
                failure.untouched = [name for name in names if name not in done]
            if deleted:
                # The run stops here, and `drp -q` from cron mails this line alone: it says what
                # was done before, which the next run need not do again.
                failure.args = ("%s (%d of the %d expired indices %s deleted before it; the next drp deletes "
                                "the others and forgets the ledger rows)"
                                % (failure, len(deleted), len(names), verb(len(deleted), "was", "were")),)
            raise failure from None
        for name, blocks in refused.items():
            log.warning("Elasticsearch refuses to delete %s: it is blocked by [%s]", name, blocks)
        blocked.update(refused)
        if gone:
            deleted.extend(gone)
            log.info("deleted %s: %s", counted(len(gone), "index", "indices"), ",".join(gone))
    return deleted, blocked


# The blocks a node names when they stop a DELETE, by the setting that sets each, in the order
# its refusal names them.
DELETE_BLOCKS = {"index.blocks.metadata": "FORBIDDEN/9/index metadata (api)",
                 "index.blocks.read_only": "FORBIDDEN/5/index read-only (api)"}


def settings_past_metadata_blocks(client: Elasticsearch, names: Sequence[str], setting: str,
                                  expand_wildcards: str) -> Tuple[Dict[str, dict], Dict[str, str]]:
    """The `setting` filter of the index settings of `names`: ({index: its answer}, {index: its
    blocks} of the indices a metadata block keeps from being read).

    A node refuses the settings of every index asked for (403 cluster_block_exception) when one
    has a metadata block, naming each such index: those are taken from the refusal and the others
    asked again (`past_blocks`). Any other refusal is raised as Elasticsearch gave it."""
    answer, _, refused = past_blocks(lambda remaining: client.indices.get_settings(
        index=remaining, name=setting, flat_settings=True, ignore_unavailable=True,
        expand_wildcards=expand_wildcards), names)
    return getattr(answer, "body", answer) or {}, refused


def blocked_from_deletion(client: Elasticsearch, host: str, names: Sequence[str],
                          size: int = NAMES_PER_REQUEST) -> Dict[str, str]:
    """{index: its blocks} of the `names` a DELETE would be refused for (what `delete_indices`
    reports), found by reading their block settings, for a dry run to say what a run would do.

    A metadata block refuses the read too, naming each index it blocks (see
    `settings_past_metadata_blocks`). index.blocks.read_only_allow_delete and index.blocks.write
    do not stop a delete. Where settings are not served at all, the dry run says what it would
    try, as the run itself deletes without reading them."""
    blocked: Dict[str, str] = {}
    for chunk in chunks(names, size):
        action = "reading the blocks of %s (%s ... )" % (counted(len(chunk), "index", "indices"), chunk[0])
        try:
            answer, refused = settings_past_metadata_blocks(client, chunk, ",".join(DELETE_BLOCKS), "none")
        except (ApiError, TransportError) as error:
            if not_served(error):
                log.warning("Elasticsearch at %s does not answer GET /.../_settings (%d, %s): which expired index "
                            "a block would keep is not known, and every one is listed", host, error.meta.status,
                            reason_of(error))
                return blocked
            raise translate(error, host, action) from None
        blocked.update(refused)
        for name, found in answer.items():
            settings = found.get("settings") if isinstance(found, dict) else None
            if name not in chunk or name in refused or not isinstance(settings, dict):
                continue
            blocks = [block for setting, block in DELETE_BLOCKS.items()
                      if str(settings.get(setting)).lower() == "true"]
            if blocks:
                blocked[name] = ", ".join(blocks)
    return blocked


@dataclass(frozen=True)
class RetentionPlan:
    """What drp deletes: the expired indices, the ledger rows first seen before `ledger_cutoff`,
    and the runs started before it that nothing reads any more (`Ledger.runs_started_before`)."""

    today: date
    days: int
    indices: Tuple[str, ...]
    ledger_cutoff: datetime
    ledger_rows: Optional[int]  # None when there is no ledger yet
    runs: Tuple[int, ...] = ()

    @property
    def first_kept(self) -> date:
        return cutoff_day(self.today, self.days)


def plan(client: Elasticsearch, host: str, ledger, today: date, days: int,
         running: Optional[int] = None) -> RetentionPlan:
    """Look, change nothing: this is the whole of a dry run. `running`: the row of this drp run."""
    names = expired_indices(list_indices(client, host), today, days)
    cutoff = ledger_cutoff(today, days)
    rows = ledger.seen_before(cutoff) if ledger is not None else None
    runs = tuple(ledger.runs_started_before(cutoff, running)) if ledger is not None else ()
    return RetentionPlan(today, days, tuple(names), cutoff, rows, runs)


def blocked_message(host: str, blocked: Dict[str, str], deleted: int) -> str:
    """The one-line error of a drp run that left expired indices because of their blocks."""
    names = sorted(blocked)
    shown = ", ".join("%s [%s]" % (name, blocked[name]) for name in names[:5])
    more = " and %d more" % (len(names) - 5) if len(names) > 5 else ""
    if any("cluster read-only" in blocks for blocks in blocked.values()):
        # A cluster-wide block names every index; it is removed from the cluster's settings.
        how = ('the cluster\'s: PUT /_cluster/settings {"persistent": {"cluster.blocks.read_only": null, '
               '"cluster.blocks.read_only_allow_delete": null}}')
    else:
        how = 'an index\'s: PUT /<index>/_settings {"index.blocks.read_only": null, "index.blocks.metadata": null}'
    return ("Elasticsearch at %s refused to delete %s because of a block: %s%s; remove the block "
            "(%s) and run drp again; the %s %s deleted"
            % (host, counted(len(names), "expired index", "expired indices"), shown, more, how,
               counted(deleted, "other expired index", "other expired indices"), verb(deleted, "was", "were")))
