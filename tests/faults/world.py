"""One fault scenario's world: the legacy replica and the Logstash emulators around one corpus.

The world knows every object it has listed (`catalog`) and the bytes each file holds now, so what
the feed must end with is computed without kcing's pipeline, with `kcing.documents.documents_for`.
The servers count what they see (`Hooks`): listing pages, file GETs and POSTs Logstash accepted;
a fault plan arms faults, or kills the feed process, at given counts.

Each scenario gets fresh servers (about 40 ms): an emulator thread still sleeping on a
slow-response fault then writes into its own scenario's store, never into the next one's.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from kcing.documents import documents_for
from kcing.errors import RejectedInput
from tests.fakes.elastic_store import IndexStore
from tests.fakes.legacy_corpus import KIND_TO_COLLECTION, LegacyCorpus, storage_path
from tests.fakes.legacy_replica import LegacyReplica
from tests.fakes.logstash_emulator import LogstashCluster, LogstashEmulator
from tests.fakes.rogue_http import RogueFront
from tests.fakes.serving import ManualClock
from tests.feedrun import REPO, SAMPLES, feed_environ

ObjectKey = Tuple[str, str]  # (kind, upstream id)
DocKey = Tuple[str, str]  # (index, document id)

KCING = REPO / "kcing.py"
COMMIT_KILLER = Path(__file__).with_name("commit_kill.py")
# Fields the Logstash event gains on its way into Elasticsearch, besides the document's own.
ADDED_BY_LOGSTASH = ("@version",)
# tests/fakes/legacy_listing.py caches sorted listings by the id() and length of a corpus
# snapshot and by the query; a freed corpus can lend its id to the next world's snapshot. Each
# world asks for its own date_range (KCI_DAYS, all covering the samples), so no two worlds close
# together in time share a cache key.
_WORLD_NUMBERS = itertools.count()


@dataclass(frozen=True)
class CatalogObject:
    """One object the replica lists, and where its file lives in storage."""

    kind: str
    upstream_id: str
    path: str  # storage path, percent-decoded, without the leading slash
    created: datetime
    listing: dict = field(compare=False, hash=False, repr=False)

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.upstream_id)

    @property
    def collection(self) -> str:
        return KIND_TO_COLLECTION[self.kind]

    @property
    def lab(self) -> Optional[str]:
        """The lab the listing names, which the feed gives files that name none."""
        return self.listing.get("lab_name")


def listing_date(item: dict) -> datetime:
    return datetime.fromtimestamp(item["created_on"]["$date"] / 1000, tz=timezone.utc)


@lru_cache(maxsize=1)
def sample_objects() -> Tuple[Tuple[CatalogObject, bytes], ...]:
    """The bundled samples as (object, file bytes), read once."""
    manifest = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))
    objects = []
    for entry in manifest["objects"]:
        obj = CatalogObject(entry["kind"], entry["upstream_id"], storage_path(urlsplit(entry["url"]).path),
                            listing_date(entry["listing"]), entry["listing"])
        objects.append((obj, (SAMPLES / entry["path"]).read_bytes()))
    return tuple(objects)


@lru_cache(maxsize=512)
def stored_form(kind: str, content: bytes, created: datetime,
                lab: Optional[str] = None) -> Tuple[Tuple[DocKey, str], ...]:
    """((index, id), canonical JSON of the stored document) for each document a file makes."""
    try:
        documents = documents_for(kind, content, created, lab)
    except RejectedInput:
        return ()
    return tuple(((document.index, document.doc_id),
                  _canonical(dict(document.body, **{"@timestamp": document.timestamp}))) for document in documents)


def rejection_reason(kind: str, content: bytes, created: datetime, lab: Optional[str] = None) -> Optional[str]:
    """Why `documents_for` refuses this file, or None when it makes documents."""
    try:
        documents_for(kind, content, created, lab)
    except RejectedInput as error:
        return str(error)
    return None


def _canonical(document: dict) -> str:
    return json.dumps(document, sort_keys=True, ensure_ascii=False)


def canonical_stored(document: dict) -> str:
    """A stored document as `stored_form` writes it, without what Logstash adds."""
    return _canonical({name: value for name, value in document.items() if name not in ADDED_BY_LOGSTASH})


class Hooks:
    """Counts events seen by the servers during one run and fires actions at given counts."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self._pending: List[Tuple[str, int, Callable[[], None]]] = []
        self.label: object = None  # given to the actions registered from now on
        self.fired: List[object] = []  # labels of the actions that ran, over all runs

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self._pending.clear()

    def at(self, event: str, number: int, action: Callable[[], None]) -> None:
        """Call `action` when `event` has been seen `number` times in this run (0: now)."""
        label = self.label

        def fire() -> None:
            with self._lock:
                self.fired.append(label)
            action()
        if number <= 0:
            fire()
            return
        with self._lock:
            self._pending.append((event, number, fire))

    def notice(self, event: str) -> None:
        with self._lock:
            self.counts[event] += 1
            count = self.counts[event]
            due = [entry for entry in self._pending if entry[0] == event and entry[1] == count]
            for entry in due:
                self._pending.remove(entry)
        for _, _, action in due:
            action()


class HookedStore(IndexStore):
    """The emulators' shared store; each accepted POST is noticed after it is stored, before it is answered."""

    def __init__(self, hooks: Hooks):
        super().__init__()
        self.hooks = hooks

    def write(self, events) -> int:
        stored = super().write(events)
        self.hooks.notice("post")
        return stored


@dataclass
class RunResult:
    number: int
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    killed_at: Optional[str] = None

    @property
    def problems(self) -> Dict[ObjectKey, str]:
        """(kind, id) -> reason, from the `problem:` lines of the summary."""
        found = {}
        for line in self.stdout.splitlines():
            if line.startswith("  problem: "):
                kind, rest = line[len("  problem: "):].split(" ", 1)
                upstream_id, _, reason = rest.partition(": ")
                found[(kind, upstream_id)] = reason
        return found

    @property
    def error_line(self) -> Optional[str]:
        """The one-line error kcing printed when the run stopped, if any."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("kcing feed_es:")]
        return lines[-1] if lines else None

    def describe(self) -> str:
        tail = " | ".join(self.stderr.strip().splitlines()[-3:])
        killed = " (killed %s)" % self.killed_at if self.killed_at else ""
        return "run %d: exit %d%s in %.1fs; stderr ends: %s" % (self.number, self.returncode, killed, self.seconds,
                                                              tail[-400:])


def first_seed(variable: str, default: int) -> int:
    """The first scenario's seed: the environment `variable`'s number, a random one for
    "random", else `default`."""
    chosen = os.environ.get(variable, "")
    if chosen == "random":
        # pytest-xdist's workers must collect the same seeds: they share the run's id.
        shared = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        return (random.Random(shared) if shared else random.SystemRandom()).randrange(1, 10 ** 9)
    return int(chosen) if chosen else default


def kill_point(where: str) -> str:
    """The family of a run's `killed_at`, for the soaks' totals."""
    if where.startswith("SIGTERM"):
        return "sigterm"
    for word, point in (("listing", "listing"), ("GET", "download"), ("POST", "post"), ("COMMIT", "commit"),
                        ("random", "random")):
        if word in where:
            return point
    return where


class SoakTotals:
    """What a soak's scenarios did, for its summary line and its coverage test: each soak counts
    what is its own between `count_scenario`, `count_documents` and `count_kills`, in that order
    (the order of the line's counts)."""

    title = "fault suite"

    def __init__(self):
        self.counts: Counter = Counter()
        self.families: Counter = Counter()
        self.kills: Counter = Counter()
        self.started = time.monotonic()

    def count_scenario(self, world, faults) -> None:
        self.counts["scenarios"] += 1
        self.counts["runs"] += len(world.runs)
        self.counts["faults injected"] += sum(fault.units for fault in faults)
        for fault in faults:
            self.families[fault.family] += 1

    def count_documents(self, world, expected: int, lost: int, duplicates: int) -> None:
        self.counts["documents checked"] += expected
        self.counts["documents resent"] += len(world.store.rewritten())
        self.counts["losses"] += lost
        self.counts["duplicates"] += duplicates

    def count_kills(self, world) -> None:
        for run in world.runs:
            if run.killed_at:
                self.counts["SIGTERMs" if run.killed_at.startswith("SIGTERM") else "SIGKILLs"] += 1
                self.kills[kill_point(run.killed_at)] += 1

    def line(self) -> str:
        shown = ", ".join("%s %d" % item for item in self.counts.items())
        return "%s: %s in %.0fs" % (self.title, shown, time.monotonic() - self.started)


class FeedRunner:
    """`kcing feed_es` run as a child process, one run at a time, which a fault plan may SIGKILL
    (after some seconds, inside a ledger COMMIT under commit_kill.py, or from a server's hook in
    any thread) or SIGTERM; every run's result is kept in `runs`.

    A world (the servers around one corpus) says what a run sets up first (`_set_up_run`), which
    emulators must be idle before the next (`_emulators`) and how its faults are cleared
    (`clear_faults`)."""

    def __init__(self, workdir: Path, hooks: Hooks):
        self.workdir = workdir
        self.db = workdir / "kcing.db"
        self.hooks = hooks
        self.runs: List[RunResult] = []
        self.quiet_until = 0.0
        self.linger = 0.0  # seconds a held request may still be answered after a run
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._killed_at: Optional[str] = None

    def _set_up_run(self) -> None:
        raise NotImplementedError

    def _emulators(self) -> Iterable[LogstashEmulator]:
        raise NotImplementedError

    def clear_faults(self) -> None:
        raise NotImplementedError

    def _run_with(self, args: Sequence[str], env: Dict[str, str], arm: Callable[[], None],
                  commit_kill: Optional[Tuple[int, float]], kill_after: Optional[float], timeout: float) -> RunResult:
        """Run the feed once, with the faults `arm` sets up, once what the run before left has
        ended; then clear every fault."""
        self.quiet_down()
        self._set_up_run()
        arm()
        try:
            return self._run_feed(args, env, commit_kill, kill_after, timeout)
        finally:
            self.clear_faults()
            self.quiet_until = time.monotonic() + self.linger
            self.linger = 0.0

    def integrity(self) -> str:
        """The ledger's `PRAGMA integrity_check` ("ok" before any run made it)."""
        if not self.db.exists():
            return "ok"
        with closing(sqlite3.connect(str(self.db))) as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]

    def held_for(self, seconds: float) -> None:
        """Requests are held `seconds`: let them end before the next run starts."""
        self.linger = max(self.linger, seconds + 0.1)

    def quiet_down(self) -> None:
        """Let requests a killed or timed-out run left behind end before the next run starts."""
        for emulator in self._emulators():
            emulator.wait_idle(timeout=10)
        pause = self.quiet_until - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self.hooks.reset()

    def _run_feed(self, args: Sequence[str], env: Dict[str, str], commit_kill: Optional[Tuple[int, float]],
                  kill_after: Optional[float], timeout: float) -> RunResult:
        number = len(self.runs)
        script = KCING
        marker = self.workdir / ("commit-kill-%d.txt" % number)
        if commit_kill is not None:
            script = COMMIT_KILLER
            env = dict(env, KCING_FAULT_KILL_AT_COMMIT=str(commit_kill[0]),
                       KCING_FAULT_KILL_DELAY="%.6f" % commit_kill[1], KCING_FAULT_KILL_MARKER=str(marker))
        out, err = self.workdir / ("run-%d.out" % number), self.workdir / ("run-%d.err" % number)
        started = time.monotonic()
        with open(out, "w") as stdout, open(err, "w") as stderr, self._lock:
            self._process = subprocess.Popen([sys.executable, str(script), "feed_es", *args], env=env,
                                             cwd=str(self.workdir), stdout=stdout, stderr=stderr)
            self._killed_at = None
        timer = threading.Timer(kill_after, self.kill, args=("at a random moment (%.2fs)" % kill_after,)) \
            if kill_after is not None else None
        if timer is not None:
            timer.start()
        try:
            returncode = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise AssertionError("kcing feed_es run %d did not end within %.0fs" % (number, timeout)) from None
        finally:
            if timer is not None:
                timer.cancel()
        with self._lock:
            killed_at = self._killed_at
        if killed_at is None and marker.exists():
            killed_at = "inside the ledger " + marker.read_text().strip()
        result = RunResult(number, returncode, out.read_text(), err.read_text(), time.monotonic() - started, killed_at)
        self.runs.append(result)
        return result

    def kill(self, point: str) -> None:
        """SIGKILL the running feed (from any thread) and wait until it is gone."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None or self._killed_at is not None:
                return
            process.kill()
            process.wait()
            self._killed_at = point

    def terminate(self, point: str) -> None:
        """SIGTERM the running feed: it finishes the batch in flight and exits 130."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None or self._killed_at is not None:
                return
            process.send_signal(signal.SIGTERM)
            self._killed_at = "SIGTERM " + point


class World(FeedRunner):
    """Replica + Logstash emulators over the bundled samples, a ledger path, and the feed process."""

    def __init__(self, workdir: Path, objects=None):
        super().__init__(workdir, Hooks())
        self.corpus = LegacyCorpus()
        self.catalog: Dict[ObjectKey, CatalogObject] = {}
        self.files: Dict[str, Optional[bytes]] = {}
        self.redirects: Dict[str, str] = {}  # storage path -> Location, for good (redirect_for_good)
        for obj, content in (objects if objects is not None else sample_objects()):
            self.add_object(obj, content)
        self.today: date = self.corpus.latest_day()
        self.clock = ManualClock()
        self.replica = LegacyReplica(self.corpus, today=self.today, clock=self.clock)
        self.replica.frontend.on_page(self._on_page)
        self.store = HookedStore(self.hooks)
        self.logstash = LogstashCluster(store=self.store)
        # Fronts that answer what the emulators will not (redirects, trickles, bodies cut short or
        # endless); a run goes through them only when one of its faults needs it.
        self.faulty_fronts: Dict[str, RogueFront] = {}
        self.days = 30 + next(_WORLD_NUMBERS) % 300

    # Lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> "World":
        self.replica.start()
        self.logstash.start()
        self.faulty_fronts = {"storage": RogueFront(self.replica.storage_url)}
        self.faulty_fronts.update({route: RogueFront(url) for route, url in self.logstash.urls.items()})
        for front in self.faulty_fronts.values():
            front.start()
        return self

    def __exit__(self, *exc_info) -> None:
        for front in self.faulty_fronts.values():
            front.stop()
        self.logstash.stop()
        self.replica.stop()
        self.logstash.clear()  # events and requests: several MB per world

    @property
    def emulators(self):
        return self.logstash.emulators

    # The corpus ----------------------------------------------------------------------------

    def add_object(self, obj: CatalogObject, content: bytes) -> None:
        """List `obj` from now on, with its file."""
        self.catalog[obj.key] = obj
        self.files[obj.path] = content
        if obj.listing["_id"]["$oid"] not in {item.oid for item in self.corpus.items(obj.collection)}:
            self.corpus.add_item(obj.collection, obj.listing)
        self.corpus.add_file(obj.path, lambda: self._serve(obj.path))

    def set_file(self, path: str, content: Optional[bytes]) -> None:
        """Replace a file's bytes for good; None removes it (storage answers 404)."""
        self.files[path] = content
        if content is None:
            self.corpus.remove_file(path)

    def redirect_for_good(self, path: str, location: str) -> None:
        """Answer every GET of a file with a redirect to `location` from now on; the file then
        makes no documents (kcing must refuse a redirect off the upstream origins)."""
        self.redirects[path] = location

    def _serve(self, path: str) -> bytes:
        self.hooks.notice("get")
        return self.files[path]

    def _on_page(self, corpus, collection, query) -> None:
        self.hooks.notice("page")
        self.hooks.notice("page:" + collection)

    def content(self, obj: CatalogObject) -> Optional[bytes]:
        return None if obj.path in self.redirects else self.files.get(obj.path)

    # What the feed must end with -----------------------------------------------------------

    def documents_of(self, obj: CatalogObject) -> Dict[DocKey, str]:
        content = self.content(obj)
        if content is None:
            return {}
        return dict(stored_form(obj.kind, content, obj.created, obj.lab))

    def expected(self) -> Dict[DocKey, str]:
        """(index, id) -> canonical stored document, for every object listed with a usable file."""
        expected: Dict[DocKey, str] = {}
        for obj in self.catalog.values():
            expected.update(self.documents_of(obj))
        return expected

    def stored(self) -> Dict[DocKey, str]:
        return {key: canonical_stored(document) for key, document in self.store.snapshot().items()}

    # The feed process ----------------------------------------------------------------------

    def environ(self, **settings) -> Dict[str, str]:
        base = dict(KCI_RETRY_BACKOFF="0.01", ES_RETRY_BACKOFF="0.01", LS_PIPELINE_BATCH_SIZE="25",
                    KCI_DAYS=self.days)
        base.update({name: str(value) for name, value in settings.items()})
        return feed_environ(self.replica, self.logstash, self.db, **base)

    def front_settings(self) -> Dict[str, str]:
        """Settings that send a run's file GETs and POSTs through the fronts."""
        return {"KCI_STORAGE_URL": self.faulty_fronts["storage"].url, "ES_BUILD": self.faulty_fronts["build"].url,
                "ES_LAVA": self.faulty_fronts["lava"].url, "ES_BOOT": self.faulty_fronts["boot"].url}

    def run(self, env: Dict[str, str], arm: Callable[[], None] = lambda: None,
            commit_kill: Optional[Tuple[int, float]] = None, kill_after: Optional[float] = None,
            timeout: float = 120.0, args: Sequence[str] = ()) -> RunResult:
        """Run `kcing feed_es ARGS` once, with the faults `arm` sets up; then clear every fault.

        `commit_kill` = (COMMIT number, delay) runs it under commit_kill.py; `kill_after` sends
        SIGKILL that many seconds after the start.
        """
        return self._run_with(args, env, arm, commit_kill, kill_after, timeout)

    def _set_up_run(self) -> None:
        for path, location in self.redirects.items():
            self.replica.storage.redirect(path, location, count=None)

    def _emulators(self) -> Iterable[LogstashEmulator]:
        return self.emulators.values()

    def delay_upstream(self, server, path: str, seconds: float, count: int) -> None:
        """Hold `count` requests under `path` for `seconds`, and remember to let them end."""
        server.delay(path, seconds, count)
        self.held_for(seconds)

    def clear_faults(self) -> None:
        self.replica.frontend.clear_faults()
        self.replica.storage.clear_faults()
        for emulator in self.emulators.values():
            emulator.clear_faults()
            emulator.up()
        for front in self.faulty_fronts.values():
            front.clear()

    # The ledger ----------------------------------------------------------------------------

    def ledger_rows(self) -> Dict[ObjectKey, dict]:
        if not self.db.exists():
            return {}
        with closing(sqlite3.connect(str(self.db))) as conn:
            conn.row_factory = sqlite3.Row
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'upstream_file'").fetchone():
                return {}  # killed before the schema was created
            # The ledger keeps a row per destination, and runs through the fronts post to other
            # URLs than runs without: an object counts as delivered when any run delivered it
            # (every front leads to the same store), else its newest row says where it stands.
            rows: Dict[ObjectKey, dict] = {}
            for row in conn.execute("SELECT * FROM upstream_file ORDER BY id"):
                key = (row["kind"], row["upstream_id"])
                if rows.get(key, {}).get("state") != "delivered":
                    rows[key] = dict(row)
            return rows

