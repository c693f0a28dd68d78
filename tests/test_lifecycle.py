"""Weeks of cron, in seconds: `feed_es`, `reconcile`, `drp` and `status` interleaved over simulated days.

Each scenario is seeded: upstream (the legacy replica) publishes objects each day, a day's
commands run in a random order at their own hours of it, and between them Elasticsearch loses
what an operator or a failure takes (a document, an index deleted or closed by hand, events
Logstash acknowledged and then dropped, or held in a backlog), while reconcile meets 429s, 503s,
resets and answers past its deadline, and reconcile or drp is SIGKILLed mid-way. Every command's exit status and effect on the ledger and
the indices is held to what the README says, worked out from the ledger and Elasticsearch before
it ran (tests/faults/lifecycle.py); after a last clean drp, feed_es and reconcile, Elasticsearch
must hold exactly the documents of every object upstream lists within the days kept.

    KCING_LIFE_SCENARIOS=200 KCING_LIFE_SEED=random pytest -n 2 tests/test_lifecycle.py   # more, fresh seeds
    KCING_LIFE_SEED=1234 KCING_LIFE_SCENARIOS=1 pytest tests/test_lifecycle.py             # replay one
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from typing import Dict, Optional, Set, Tuple

import pytest
from elasticsearch import Elasticsearch, helpers

from kcing.admin.retention import index_day
from kcing.ledger.models import DELIVERED, FAILED, MISSING_IN_ELASTICSEARCH
from kcing.status import UNRECORDED_END
from tests.faults.lifecycle import DRP_DAYS, KCI_DAYS, SHORTER_DRP_DAYS, Life, Ran
from tests.faults.world import first_seed
from tests.summary import summary_line

pytestmark = [pytest.mark.faults]

DAYS = int(os.environ.get("KCING_LIFE_DAYS", "6"))
SCENARIOS = int(os.environ.get("KCING_LIFE_SCENARIOS", "2"))
FIRST_SEED = first_seed("KCING_LIFE_SEED", 70_000)
SEEDS = list(range(FIRST_SEED, FIRST_SEED + SCENARIOS))
# The commands a day may run besides its feed, and the faults each may meet.
EXTRA = ("reconcile", "resend", "drp", "short drp", "status", "feed", "verify", "dry reconcile", "dry drp")
RECONCILE_FAULTS = ("", "", "", "429", "503 x3", "reset", "timeout", "kill at _mget")
RESEND_FAULTS = RECONCILE_FAULTS + ("kill at re-sent POST",)
DRP_FAULTS = ("", "", "kill at DELETE", "kill at first request")
LOSSES = ("delete document", "delete index", "close index", "reopen", "Logstash drops", "Logstash backlog")
ROUTE = {"build": "build", "lava": "lava"}  # the Logstash input each kind goes to
TOTALS: Counter = Counter()
VARIANTS = ("--resend", "--verify", "--dry-run", "--drp-days")  # told apart in the totals
LOST = ("deleted index", "deleted ", "closed index", "will drop", "holds what it acknowledges")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc)


class Scenario:
    """One seeded sequence of days, and the oracle each command is held to."""

    def __init__(self, life: Life, seed: int):
        self.life = life
        self.rng = random.Random(seed)
        self.log = life.events
        self.backlog: Set[str] = set()  # routes whose Logstash acknowledges and holds events

    # Losses on the Elasticsearch side ------------------------------------------------------

    def lose(self, what: str) -> None:
        life, client = self.life, Elasticsearch(self.life.es.url)
        documents = life.es_documents()
        open_indices = sorted(name for name in documents if name not in life.closed)
        if what == "delete document":
            held = sorted((index, doc_id) for index in open_indices for doc_id in documents[index])
            if held:
                index, doc_id = self.rng.choice(held)
                helpers.bulk(client, [{"_op_type": "delete", "_index": index, "_id": doc_id}])
                self.log.append("day %d: deleted %s/%s" % (life.day, index, doc_id))
        elif what == "delete index" and open_indices:
            index = self.rng.choice(open_indices)
            client.indices.delete(index=index)
            self.log.append("day %d: deleted index %s" % (life.day, index))
        elif what == "close index":
            # Outside the crawl window, and holding none of what a re-send would write: Logstash
            # writing into a closed index is a failure of its own, not this test's.
            window = life.today - timedelta(days=KCI_DAYS)
            held = {index for row in life.ledger_rows() if held_missing(row)
                    for index, _ in life.kept().get(row["id"], ())}
            closable = [name for name in open_indices if index_day(name) < window and name not in held]
            if closable:
                index = self.rng.choice(closable)
                client.indices.close(index=index)
                life.closed.add(index)
                self.log.append("day %d: closed index %s" % (life.day, index))
        elif what == "reopen":
            self.reopen()
        elif what == "Logstash backlog":
            route = self.rng.choice(sorted(ROUTE.values()))
            life.logstash.emulators[route].hold_queue()
            self.backlog.add(route)
            self.log.append("day %d: Logstash's %s input holds what it acknowledges" % (life.day, route))
        elif what == "Logstash drops":
            waiting = [obj for obj in life.published.values() if obj.day >= life.today - timedelta(days=KCI_DAYS)
                       and not delivered(life, obj.key)]
            if waiting:
                obj = self.rng.choice(sorted(waiting, key=lambda o: o.key))
                life.store.drop = set(obj.documents)
                self.log.append("day %d: Logstash will drop %s %s" % (life.day, obj.kind, obj.upstream_id))

    def reopen_for(self, row_ids: Set[int]) -> bool:
        """Open the closed indices a re-send of these rows would write into, as reconcile's line
        on closed indices asks: Logstash's writes into a closed one are refused (the emulators'
        forwarding raises), a failure that is not this test's."""
        life = self.life
        keys = {(row["kind"], row["upstream_id"]) for row in life.ledger_rows() if row["id"] in row_ids}
        wanted = {index for key in keys for index, _ in life.published[key].documents} & life.closed
        client = Elasticsearch(life.es.url)
        for index in sorted(wanted):
            client.indices.open(index=index)
            life.closed.discard(index)
            self.log.append("day %d: reopened %s for a re-send" % (life.day, index))
        return bool(wanted)

    def release(self) -> None:
        """The backlogged Logstash catches up: what it acknowledged reaches Elasticsearch."""
        for route in sorted(self.backlog):
            self.life.logstash.emulators[route].release_queue()
            self.log.append("day %d: Logstash's %s input indexed what it held" % (self.life.day, route))
        self.backlog.clear()

    def held_back(self, kind: str) -> bool:
        return ROUTE[kind] in self.backlog

    def reopen(self) -> None:
        client = Elasticsearch(self.life.es.url)
        for index in sorted(self.life.closed):
            if index in self.life.es.index_names():
                client.indices.open(index=index)
            self.log.append("day %d: reopened %s" % (self.life.day, index))
        self.life.closed.clear()

    # The commands, each held to its oracle ---------------------------------------------------

    def feed(self, verify: bool = False) -> Ran:
        life = self.life
        dropping = set(life.store.drop)
        args = ("feed_es", "-q") + (("--verify", "--verify-delay", "0") if verify else ())
        waiting = {obj.key for obj in life.published.values() if not delivered(life, obj.key)}
        ran = life.run(args)
        life.store.drop = set()
        dropped = life.store.dropped & dropping
        life.store.dropped = set()
        window = life.today - timedelta(days=KCI_DAYS)
        sent = {obj.key for obj in life.published.values() if obj.key in waiting and obj.day >= window}
        lost_here = {obj.key for obj in life.published.values() if obj.documents & dropped}
        lost_here |= {key for key in sent if self.held_back(key[0])}
        expected = 1 if verify and lost_here else 0
        assert ran.returncode == expected, ran.describe()
        self.expect_outcome("feed_es", "missing" if expected else "ok")
        for obj in life.published.values():
            if obj.day >= window:
                if verify and obj.key in lost_here:
                    row = row_of(life, obj.key)
                    assert row["state"] == FAILED and held_missing(row), (obj, row)
                else:
                    assert delivered(life, obj.key), (obj, ran.describe())
                    if obj.key in waiting and obj.key not in lost_here:  # sent by this run
                        assert not missing_documents(life, obj.documents), (obj, missing_documents(life, obj.documents))
        return ran

    def reconcile(self, resend: bool, fault: str) -> Ran:
        life = self.life
        days = self.rng.randint(1, DRP_DAYS + 1)
        args = ("reconcile", "-q", "--days", str(days)) + (("--resend",) if resend else ())
        plan = self.plan_reconcile(days)
        if resend and self.reopen_for(plan["missing"] | plan["held"]):
            plan = self.plan_reconcile(days)  # what was closed is checked now
        states_before = {row["id"]: (row["state"], row["last_error"]) for row in life.ledger_rows()}
        undo = None
        if fault == "429":
            life.es.fail_next(429, "/_mget")
        elif fault == "503 x3":
            life.es.fail_next(503, "/_mget", count=3)
        elif fault == "reset":
            life.es.reset_next("/_mget")
        elif fault == "timeout":  # past ES_REQUEST_DEADLINE: not asked again
            undo = life.slow_at_request(lambda method, target: "_mget" in target, 1.5)
        elif fault == "kill at _mget":
            undo = life.kill_at_request(lambda method, target: "_mget" in target)
        elif fault == "kill at re-sent POST":
            life.store.after_write = life.kill
        try:
            ran = life.run(args, fault=fault, **({"ES_REQUEST_DEADLINE": "0.5"} if fault == "timeout" else {}))
        finally:
            life.es.clear_faults()
            life.store.after_write = None
            if undo is not None:
                undo()
        asks = plan["checked"] > 0
        if ran.killed:
            if fault == "kill at _mget":  # killed before anything was marked
                self.expect_outcome("reconcile", UNRECORDED_END)
                assert {row["id"]: (row["state"], row["last_error"]) for row in life.ledger_rows()} == states_before
            else:  # while re-sending: the check's row says what it left held, the re-send's has no end
                self.expect_outcome("reconcile", "missing")
                self.expect_outcome("feed_es", UNRECORDED_END)
                for row_id in plan["missing"] | plan["held"]:
                    assert held_missing(life_row(life, row_id)), life_row(life, row_id)
            return ran
        if fault in ("503 x3", "timeout") and asks:
            assert ran.returncode == 3, ran.describe()
            self.expect_outcome("reconcile", "error 3")
            assert {row["id"]: (row["state"], row["last_error"]) for row in life.ledger_rows()} == states_before
            return ran
        expected = plan["exit"](resend)
        assert ran.returncode == expected, (plan, ran.describe(), ran.stdout)
        self.expect_outcome("reconcile", {0: "ok", 1: "missing", 6: "nothing checked"}[expected])
        rows = {row["id"]: row for row in life.ledger_rows()}
        for row_id in plan["missing"]:
            row = rows[row_id]
            if resend:
                assert row["state"] == DELIVERED, (row, ran.describe())
            else:
                assert row["state"] == FAILED and held_missing(row), row
        if resend:
            for row_id in plan["missing"] | plan["held"]:
                row = rows[row_id]
                assert row["state"] == DELIVERED, (row, ran.describe(), ran.stdout)
                if not self.held_back(row["kind"]):
                    assert not missing_documents(life, life.kept()[row_id]), row
        return ran

    def plan_reconcile(self, days: int) -> dict:
        """What a reconcile over `days` must find, from the ledger and the indices as they are."""
        life = self.life
        since = life.moment() - timedelta(days=days)
        first_kept = life.first_kept()
        documents = life.es_documents()
        kept = life.kept()
        checked, missing, held = 0, set(), set()
        kept_from = midnight(first_kept)
        for row in life.ledger_rows():
            if held_by_reconcile(row, kept_from):
                held.add(row["id"])
            if row["state"] != DELIVERED or row["delivered_at"] is None or utc(row["delivered_at"]) < since:
                continue
            looked_up = [(index, doc_id) for index, doc_id in kept.get(row["id"], ())
                         if index_day(index) >= first_kept and index not in life.closed]
            if not looked_up:
                continue
            checked += 1
            if any(doc_id not in documents.get(index, ()) for index, doc_id in looked_up):
                missing.add(row["id"])

        def exit_status(resend: bool) -> int:
            if missing or (held and not resend):
                return 1
            return 0 if checked or held else 6
        return {"checked": checked, "missing": missing, "held": held, "exit": exit_status, "first_kept": first_kept}

    def drp(self, days: Optional[int], fault: str) -> Ran:
        life = self.life
        args = ("drp", "-q") + (("--drp-days", str(days)) if days is not None else ())
        kept_from = life.today - timedelta(days=days or DRP_DAYS)
        expiring = [name for name in life.es.index_names() if index_day(name) is not None
                    and index_day(name) < kept_from]
        undo = None
        if fault == "kill at DELETE":
            undo = life.kill_at_request(lambda method, target: method == "DELETE")
        elif fault == "kill at first request":
            undo = life.kill_at_request(lambda method, target: True)
        rows_before = life.ledger_rows()
        try:
            ran = life.run(args, fault=fault)
        finally:
            if undo is not None:
                undo()
        if ran.killed:
            self.expect_outcome("drp", UNRECORDED_END)
            assert life.ledger_rows() == rows_before  # nothing forgotten before every index is gone
            if fault == "kill at DELETE" and expiring:
                life.drp_kept = max(life.drp_kept or kept_from, kept_from)
            return ran
        assert ran.returncode == 0, ran.describe()
        self.expect_outcome("drp", "ok")
        life.drp_kept = max(life.drp_kept or kept_from, kept_from)
        assert not [name for name in life.es.index_names() if index_day(name) and index_day(name) < kept_from]
        life.closed &= set(life.es.index_names())
        cutoff = midnight(kept_from)
        assert not [row for row in life.ledger_rows() if utc(row["first_seen"]) < cutoff]
        return ran

    def dry_run(self, args: Tuple[str, ...]) -> Ran:
        """A dry run: the exit status the real run would have (a reconcile's without marking
        anything: what it holds as missing and what it found), and nothing changed."""
        life = self.life
        plan = self.plan_reconcile(KCI_DAYS) if args[0] == "reconcile" else None
        rows, runs, indices = life.ledger_rows(), life.runs_table(), life.es_documents()
        ran = life.run(args)
        expected = 0 if plan is None else plan["exit"](False)
        assert ran.returncode == expected, (plan, ran.describe(), ran.stdout)
        assert (life.ledger_rows(), life.runs_table(), life.es_documents()) == (rows, runs, indices)
        return ran

    def status(self) -> Ran:
        life = self.life
        ran = life.run(("status", "--json"))
        assert ran.returncode == 0, ran.describe()
        shown = json.loads(ran.stdout)
        counted: Counter = Counter()
        kept_from = midnight(life.first_kept())
        for row in life.ledger_rows():
            label = {"downloaded": "pending"}.get(row["state"], row["state"])
            counted[(row["destination"], row["kind"], label)] += 1
            if held_by_reconcile(row, kept_from):
                counted[(row["destination"], row["kind"], "missing_in_es")] += 1
        said: Counter = Counter()
        for destination, sources in shown["destinations"].items():
            for kinds in sources.values():
                for kind, columns in kinds.items():
                    for label, count in columns.items():
                        if count:
                            said[(destination, kind, label)] += count
        assert said == counted, (said, counted)
        assert shown["retried_from"] == life.first_kept().isoformat(), (shown["retried_from"], life.first_kept())
        reconciles = [outcome for command, outcome in life.runs_table() if command == "reconcile"]
        if reconciles:
            assert shown["last_reconcile"]["outcome"] == (reconciles[-1] or UNRECORDED_END), shown["last_reconcile"]
        table = life.runs_table()[::-1][:len(shown["runs"])]
        assert [(run["command"], run["outcome"]) for run in shown["runs"]] == [
            (command, outcome if outcome is not None else UNRECORDED_END) for command, outcome in table]
        return ran

    def expect_outcome(self, command: str, outcome: str) -> None:
        # The newest row of that command: a feed's --verify records a check of its own after
        # it, and a reconcile's --resend a feed (the re-send) after it.
        newest = [recorded for command_, recorded in self.life.runs_table()[-2:] if command_ == command]
        assert newest, self.life.runs_table()[-2:]
        assert (newest[-1] if newest[-1] is not None else UNRECORDED_END) == outcome, self.life.runs_table()[-2:]

    # After every command ------------------------------------------------------------------

    def invariants(self) -> None:
        life = self.life
        if not life.db.exists():
            return
        assert life.integrity() == "ok"
        if life.drp_kept is not None:
            back = [name for name in life.es.index_names() if index_day(name) and index_day(name) < life.drp_kept]
            assert not back, "indices a drp run deleted are back: %s" % back
        known = {obj.upstream_id for obj in life.published.values()}
        for row in life.ledger_rows():
            assert row["upstream_id"] in known

    # The days -------------------------------------------------------------------------------

    def play(self, days: int) -> None:
        for _ in range(days):
            self.life.publish(self.rng)
            todo = ["feed"] + self.rng.sample(EXTRA, self.rng.randint(1, 3))
            self.rng.shuffle(todo)
            for command in todo:
                if self.rng.random() < 0.4:
                    self.lose(self.rng.choice(LOSSES))
                if self.backlog and (command.endswith("drp") or self.rng.random() < 0.3):
                    # Before drp, or its late writes would make again an index drp deleted.
                    self.release()
                self.command(command)
                self.invariants()
            self.life.next_day()

    def command(self, name: str) -> None:
        if not self.life.db.exists() and name not in ("feed", "verify"):
            # Before the first feed: no ledger to read (2), and drp deletes indices alone.
            drp = name.endswith("drp")
            ran = self.life.run(("status",) if name == "status" else ("drp", "-q") if drp else ("reconcile",))
            assert ran.returncode == (0 if drp else 2), ran.describe()
            assert drp or "no ledger at" in ran.stderr, ran.describe()
            assert not self.life.db.exists()
            return
        if name == "feed":
            self.feed()
        elif name == "verify":
            self.feed(verify=True)
        elif name in ("reconcile", "resend"):
            faults = RESEND_FAULTS if name == "resend" else RECONCILE_FAULTS
            self.reconcile(name == "resend", self.rng.choice(faults))
        elif name == "drp":
            self.drp(None, self.rng.choice(DRP_FAULTS))
        elif name == "short drp":
            self.drp(SHORTER_DRP_DAYS, "")
        elif name == "status":
            self.status()
        elif name == "dry reconcile":
            self.dry_run(("reconcile", "-q", "--dry-run") + (("--resend",) if self.rng.random() < 0.5 else ()))
        elif name == "dry drp":
            self.dry_run(("drp", "-q", "--dry-run"))

    def finish(self) -> None:
        """A last clean drp, feed_es and reconcile: then Elasticsearch holds exactly the
        documents of every object upstream lists within the days kept."""
        life = self.life
        self.reopen()
        self.release()
        life.publish(self.rng)
        self.drp(None, "")
        self.feed()
        self.reconcile_clean(("reconcile", "-q", "--resend", "--days", "30"))
        final = self.reconcile_clean(("reconcile", "-q", "--days", "30"))
        assert final.returncode == 0, final.describe()
        self.invariants()
        self.status()
        first_kept = life.drp_kept
        expected: Dict[str, Set[str]] = {}
        for obj in life.published.values():
            if obj.day >= first_kept:
                for index, doc_id in obj.documents:
                    expected.setdefault(index, set()).add(doc_id)
        held = {index: ids for index, ids in life.es_documents().items() if ids}
        assert held == expected, diff(held, expected)
        for obj in life.published.values():
            if obj.day >= first_kept:
                assert delivered(life, obj.key), obj
        kept = life.kept()
        for row in life.ledger_rows():  # every row delivered has its documents, but in indices drp deleted
            if row["state"] == DELIVERED:
                assert kept.get(row["id"]), row
                kept_here = {(index, doc_id) for index, doc_id in kept[row["id"]] if index_day(index) >= first_kept}
                assert not missing_documents(life, kept_here), row

    def reconcile_clean(self, args: Tuple[str, ...]) -> Ran:
        plan = self.plan_reconcile(30)
        ran = self.life.run(args)
        assert ran.returncode == plan["exit"]("--resend" in args), (plan, ran.describe(), ran.stdout)
        return ran


def held_missing(row: dict) -> bool:
    error = row["last_error"] or ""
    return row["state"] != DELIVERED and (error == MISSING_IN_ELASTICSEARCH
                                          or error.startswith(MISSING_IN_ELASTICSEARCH + "; "))


def held_by_reconcile(row: dict, kept_from: datetime) -> bool:
    """Held as missing as reconcile holds it (and status counts it): one dated before the first
    day kept, `kept_from`, is given up, its index being drp's to delete."""
    return held_missing(row) and utc(row["object_date"] or row["first_seen"]) >= kept_from


def life_row(life: Life, row_id: int) -> dict:
    return next(row for row in life.ledger_rows() if row["id"] == row_id)


def row_of(life: Life, key) -> Optional[dict]:
    rows = [row for row in life.ledger_rows() if (row["kind"], row["upstream_id"]) == key]
    return rows[-1] if rows else None


def delivered(life: Life, key) -> bool:
    row = row_of(life, key)
    return row is not None and row["state"] == DELIVERED


def missing_documents(life: Life, keys) -> Set[Tuple[str, str]]:
    documents = life.es_documents()
    return {(index, doc_id) for index, doc_id in keys if doc_id not in documents.get(index, ())}


def diff(held: Dict[str, Set[str]], expected: Dict[str, Set[str]]) -> str:
    lines = []
    for index in sorted(set(held) | set(expected)):
        extra, lacking = held.get(index, set()) - expected.get(index, set()), expected.get(index, set()) - held.get(index, set())
        if extra or lacking:
            lines.append("%s: %d more than upstream lists, %d lacking" % (index, len(extra), len(lacking)))
    return "; ".join(lines)


@pytest.mark.parametrize("seed", SEEDS, ids=["seed%d" % seed for seed in SEEDS])
def test_weeks_of_cron_lose_nothing_resurrect_nothing_and_say_what_happened(seed, tmp_path):
    with Life(tmp_path) as life:
        scenario = Scenario(life, seed)
        try:
            scenario.play(DAYS)
            scenario.finish()
        except BaseException:
            print("seed %d; what happened:\n  %s" % (seed, "\n  ".join(scenario.log)))
            raise
        TOTALS.update(scenarios=1, runs=len(life.runs), days=life.day + 1, SIGKILLs=sum(ran.killed for ran in life.runs),
                      faults=sum(bool(ran.fault) for ran in life.runs), losses=len(scenario.log) - len(life.runs),
                      documents=sum(len(obj.documents) for obj in life.published.values()))
        for ran in life.runs:
            TOTALS[" ".join([ran.args[0]] + [arg for arg in ran.args if arg in VARIANTS])] += 1
            if ran.fault:
                TOTALS["fault: " + ran.fault] += 1
        for event in scenario.log:
            for loss in LOST if ": kcing " not in event else ():
                if loss in event:
                    TOTALS["loss: " + loss.strip()] += 1
                    break


def test_the_lifecycle_totals(request):
    """Last in this module: what the scenarios of this process ran, at the end of the session."""
    collected = sum(1 for item in request.session.items if item.path == request.path and "seed" in item.name)
    if TOTALS["scenarios"] != collected:
        pytest.skip("%d of the %d scenarios ran in this process" % (TOTALS["scenarios"], collected))
    summary_line("lifecycle soak: %s" % ", ".join("%d %s" % (TOTALS[name], name) for name in (
        "scenarios", "days", "runs", "faults", "SIGKILLs", "losses", "documents")))
    summary_line("lifecycle soak: %s" % ", ".join("%s %d" % (name, count) for name, count in sorted(TOTALS.items())
                                                  if name.startswith(("feed_es", "reconcile", "drp", "status",
                                                                      "fault: ", "loss: "))))
