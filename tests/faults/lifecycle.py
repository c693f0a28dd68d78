"""A cron user's weeks, simulated: `feed_es`, `reconcile`, `drp` and `status` run day after day
against one ledger, with documents lost on the Elasticsearch side in between.

Legacy KernelCI publishes a few builds and LAVA boots each simulated day (some dated the day
before: a lab late to report); the Logstash emulators store what they accept and forward it to
the Elasticsearch emulator through its `_bulk` API (tests/fakes/elastic_forward.py), which
`reconcile` and `drp` then read, as a real stack's would. Every kcing process runs on the
simulated day through tests/faults/clock/sitecustomize.py, the replica's backend lists by it.

What each command must do is worked out here from the ledger's rows and the emulator's indices,
read before the command runs, never from kcing's code: that is the oracle `Life.check_*` holds
each command's exit status and effects to.
"""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from elasticsearch import Elasticsearch

from kcing.admin.retention import index_day
from kcing.admin.templates import install, templates_for
from kcing.ledger import docids
from tests.fakes.elastic_forward import ForwardingStore
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.legacy_corpus import LegacyCorpus
from tests.fakes.legacy_data import at, boot_item, boot_path, build_item, build_json, lava_json
from tests.fakes.legacy_replica import LegacyReplica
from tests.fakes.logstash_emulator import LogstashCluster
from tests.fakes.serving import ManualClock
from tests.faults.world import stored_form
from tests.feedrun import REPO, feed_environ

DocKey = Tuple[str, str]
ObjectKey = Tuple[str, str]

CLOCK_SITE = Path(__file__).with_name("clock")
FIRST_DAY = date(2024, 10, 1)
KCI_DAYS = 1  # the crawl window: today and the day before
DRP_DAYS = 3  # the retention: a day more than the window, and one
SHORTER_DRP_DAYS = 2  # a `drp --drp-days` by hand, still longer than the window
KINDS = ("build", "boot", "test", "log", "regression")


@dataclass(frozen=True)
class Published:
    """An object upstream lists from `day` (its date) on, published on `published`."""

    kind: str
    upstream_id: str
    day: date
    published: date
    documents: FrozenSet[DocKey]

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.upstream_id)


@dataclass
class Ran:
    """One command the scenario ran, and what came of it."""

    day: int
    args: Tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    fault: str = ""
    killed: bool = False

    def describe(self) -> str:
        tail = " | ".join(self.stderr.strip().splitlines()[-2:])[-300:]
        return "day %d: kcing %s%s -> %s%s" % (self.day, " ".join(self.args), " [%s]" % self.fault if self.fault else "",
                                             "SIGKILL" if self.killed else self.returncode, "; " + tail if tail else "")


def lava_on(item: dict, job_id: int, when: datetime) -> bytes:
    """A LAVA callback for boot `item` whose job ran at `when`: its documents are dated by it."""
    callback = json.loads(lava_json(item, job_id, log_lines=2))
    stamp = when.strftime("%Y-%m-%d %H:%M:%S.000000+00:00")
    callback.update(submit_time=stamp, start_time=stamp, end_time=stamp)
    return json.dumps(callback).encode()


class HookedForwardingStore(ForwardingStore):
    """Forwards as the pipeline would; `after_write` is called once a POST is stored, before it
    is answered (where a SIGKILL leaves Logstash holding what the ledger never recorded)."""

    def __init__(self, es_url: str):
        super().__init__(es_url)
        self.after_write: Optional[Callable[[], None]] = None

    def write(self, events) -> int:
        stored = super().write(events)
        if self.after_write is not None:
            self.after_write()
        return stored


class Life:
    """The services, the upstream corpus and the ledger of one scenario."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.db = workdir / "kcing.db"
        self.es = ElasticsearchEmulator()
        self.corpus = LegacyCorpus()
        self.replica = LegacyReplica(self.corpus, today=FIRST_DAY, clock=ManualClock())
        self.store: Optional[HookedForwardingStore] = None
        self.logstash: Optional[LogstashCluster] = None
        self.published: Dict[ObjectKey, Published] = {}
        self.runs: List[Ran] = []
        self.events: List[str] = []  # what happened, runs and losses, in order
        self.day = 0
        self.slot = 0
        # The first day kept by the drp runs recorded so far (the latest day of any), which
        # reconcile and the feed respect; and the day before which no index may come back.
        self.drp_kept: Optional[date] = None
        self.closed: Set[str] = set()
        self._process: Optional[subprocess.Popen] = None
        self._killed = False
        self._lock = threading.Lock()

    def __enter__(self) -> "Life":
        self.es.start()
        install(Elasticsearch(self.es.url), self.es.url, templates_for(None), None)
        self.store = HookedForwardingStore(self.es.url)
        self.logstash = LogstashCluster(store=self.store)
        self.logstash.start()
        self.replica.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.replica.stop()
        self.logstash.stop()
        self.es.stop()

    # Simulated days -------------------------------------------------------------------------

    @property
    def today(self) -> date:
        return FIRST_DAY + timedelta(days=self.day)

    def next_day(self) -> None:
        self.day += 1
        self.slot = 0
        self.replica.frontend.today = self.today

    def moment(self) -> datetime:
        """When the next command runs: each its own hour of the day, and a minute that differs
        by several from that of the same hour on the days before, so that no window a command
        counts in whole days from it starts within a minute of another command's deliveries."""
        return datetime.combine(self.today, datetime.min.time(), tzinfo=timezone.utc) + timedelta(
            hours=1 + 2 * self.slot, minutes=(7 * self.day + self.slot) % 60)

    def publish(self, rng) -> None:
        """Upstream's new objects of the day: builds and their LAVA boots, maybe one dated the day before."""
        days = [(self.today, n) for n in range(rng.randint(1, 2))]
        if self.day and rng.random() < 0.5:
            days.append((self.today - timedelta(days=1), 9))
        for day, number in days:
            kernel = "v6.%d-%d-%d" % (self.day, day.day, number)
            built = at(day, 0, 0, 10 + number) if day == self.today else at(day, 0, 23, number)
            build = build_item("mainline", kernel, "arm64", "defconfig", built)
            content = build_json(build)
            self.corpus.add_build(build, content)
            self._published("build", build, day, stored_form("build", content, built))
            booted = built + timedelta(minutes=5)
            boot = boot_item(build, "lab-baylibre", "board-%d" % number, booted)
            lava = lava_on(boot, 400_000 + 100 * self.day + number + 50 * (day != self.today), booted)
            self.corpus.add_boot(boot, boot_path(boot), lava)
            self._published("lava", boot, day, stored_form("lava", lava, booted, "lab-baylibre"))

    def _published(self, kind: str, item: dict, day: date, form) -> None:
        obj = Published(kind, item["_id"]["$oid"], day, self.today, frozenset(key for key, _ in form))
        assert obj.documents and all(index_day(index) == day for index, _ in obj.documents), form
        self.published[obj.key] = obj

    # Running kcing --------------------------------------------------------------------------

    def environ(self, when: datetime, **extra) -> Dict[str, str]:
        settings = dict(ES_HOST=self.es.url, KCI_DAYS=str(KCI_DAYS), DRP_DAYS=str(DRP_DAYS), KCI_RETRY_BACKOFF="0.01",
                        ES_RETRY_BACKOFF="0.01", LS_PIPELINE_BATCH_SIZE="7", KCING_WORKERS="0")
        settings.update(extra)
        env = feed_environ(self.replica, self.logstash, self.db, **settings)
        env["PYTHONPATH"] = str(CLOCK_SITE)
        env["KCING_TEST_CLOCK_SHIFT"] = "%.6f" % (when - datetime.now(timezone.utc)).total_seconds()
        return env

    def run(self, args: Tuple[str, ...], fault: str = "", **extra) -> Ran:
        when = self.moment()
        self.slot += 1
        env = self.environ(when, **extra)
        with self._lock:
            self._killed = False
            self._process = subprocess.Popen([sys.executable, str(REPO / "kcing.py"), *args], env=env,
                                             cwd=str(self.workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True)
        try:
            stdout, stderr = self._process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            raise AssertionError("kcing %s did not end within 120 s" % " ".join(args)) from None
        ran = Ran(self.day, tuple(args), self._process.returncode, stdout, stderr, fault, self._killed)
        self.runs.append(ran)
        self.events.append(ran.describe())
        return ran

    def kill(self) -> None:
        """SIGKILL the command running (from a server's thread) and wait until it is gone."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None or self._killed:
                return
            process.send_signal(signal.SIGKILL)
            process.wait()
            self._killed = True

    def kill_at_request(self, wanted: Callable[[str, str], bool]) -> Callable[[], None]:
        """SIGKILL the command when Elasticsearch gets the first request `wanted(method, target)`
        says, which is then answered as usual (Elasticsearch had it); returns the undo."""
        answer = self.es.handle

        def killing(method, target, headers, body):
            if wanted(method, target):
                self.kill()
            return answer(method, target, headers, body)

        self.es.handle = killing
        return lambda: setattr(self.es, "handle", answer)

    def slow_at_request(self, wanted: Callable[[str, str], bool], seconds: float) -> Callable[[], None]:
        """Answer the first request `wanted(method, target)` says `seconds` late, past a deadline
        the command is given; returns the undo, which waits for that answer: made later, it would
        take a fault armed for the next command."""
        answer = self.es.handle
        slowed, answered = threading.Event(), threading.Event()

        def slow(method, target, headers, body):
            if not wanted(method, target) or slowed.is_set():
                return answer(method, target, headers, body)
            slowed.set()
            time.sleep(seconds)
            try:
                return answer(method, target, headers, body)
            finally:
                answered.set()

        def undo() -> None:
            self.es.handle = answer
            if slowed.is_set():
                assert answered.wait(30), "the request held %.1f s was never answered" % seconds

        self.es.handle = slow
        return undo

    # What Elasticsearch and the ledger hold ----------------------------------------------------

    def es_documents(self) -> Dict[str, Set[str]]:
        """{index: ids} of kcing's indices, closed ones included."""
        return {name: set(self.es.documents(name)) for name in self.es.index_names() if index_day(name) is not None}

    def ledger_rows(self) -> List[dict]:
        if not self.db.exists():
            return []
        with closing(sqlite3.connect(str(self.db))) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute("SELECT * FROM upstream_file ORDER BY id")]

    def kept(self) -> Dict[int, Set[DocKey]]:
        """{row id: its kept (index, id)}."""
        if not self.db.exists():
            return {}
        kept: Dict[int, Set[DocKey]] = {}
        with closing(sqlite3.connect(str(self.db))) as conn:
            for row_id, index, blob in conn.execute(
                    "SELECT upstream_file_id, index_name, ids FROM delivered_documents"):
                kept.setdefault(row_id, set()).update((index, doc_id) for doc_id in docids.unpack(blob))
        return kept

    def runs_table(self) -> List[Tuple[str, Optional[str]]]:
        with closing(sqlite3.connect(str(self.db))) as conn:
            return conn.execute("SELECT command, outcome FROM run ORDER BY id").fetchall()

    def integrity(self) -> str:
        with closing(sqlite3.connect(str(self.db))) as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]

    def first_kept(self, drp_days: int = DRP_DAYS) -> date:
        """The first day a check today keeps: DRP_DAYS's, or a later one a drp run kept."""
        by_setting = self.today - timedelta(days=drp_days)
        return max(by_setting, self.drp_kept) if self.drp_kept else by_setting
