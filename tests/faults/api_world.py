"""One fault scenario's world for `kcing feed_es --source api`: a Maestro replica whose node
history evolves, a front before it, and the Logstash emulators.

The replica's nodes change as KernelCI's do: checkout trees appear (all of a tree's nodes with
one `updated` time), a LAVA job listed `running` finishes (its result, device and callback set),
its tests are made when it finishes (or, now and then, while it still runs), a kbuild finishes
with its build log, tests change result, regressions pass again, KCIDB's bridge marks nodes
processed; some updates move a node to the end of the natural order. A finished job never changes
its verdict or device again, and the runs a regression names keep theirs: another node's documents
carry them.

The world keeps every version of every node (`versions`), so what the feed must end with is
computed from the newest version with `kcing.documents.documents_for` over an envelope built here
(not by kcing's source), and a stored document that differs can be recognised as an older
version's ("older version won"). Files and pages are counted (`Hooks`); faults and kills are
armed at counts, as in tests/faults/world.py.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from kcing.documents import documents_for
from kcing.errors import RejectedInput
from kcing.records import NODE_KINDS
from kcing.sources.gzipped import gunzip
from tests.fakes.api_corpus import parse_api_time
from tests.fakes.api_data import _Tree, _callback_producer, _job_data, regression, revision
from tests.fakes.api_replica import ApiReplica
from tests.fakes.logstash_emulator import LogstashCluster, LogstashEmulator
from tests.fakes.rogue_http import RogueFront
from tests.faults.world import FeedRunner, HookedStore, Hooks, RunResult, canonical_stored
from tests.feedrun import api_feed_environ

DocKey = Tuple[str, str]
# What another node's documents take of a related node (README: Tests and their job; Regressions).
RELATED_FIELDS = ("id", "kind", "name", "path", "group", "parent", "created", "result", "state")
RELATED_DATA = ("kernel_revision", "job_id", "device", "platform", "runtime", "error_code", "error_msg",
                "arch", "defconfig", "config_full", "compiler")
REVISION_FIELDS = ("tree", "url", "branch", "commit", "describe")
LOG_ARTIFACTS = {"job": "callback_data", "kbuild": "build_log"}


def extract(node: Optional[dict]) -> Optional[dict]:
    """What an envelope carries of a related node."""
    if node is None:
        return None
    data = node.get("data") or {}
    kept = {name: data[name] for name in RELATED_DATA if data.get(name) is not None}
    if isinstance(kept.get("kernel_revision"), dict):
        kept["kernel_revision"] = {name: kept["kernel_revision"][name] for name in REVISION_FIELDS
                                   if name in kept["kernel_revision"]}
    return dict({name: node.get(name) for name in RELATED_FIELDS}, data=kept)


class ApiWorld(FeedRunner):
    """The replica (behind a RogueFront), the Logstash emulators, a ledger path and the feed."""

    def __init__(self, workdir: Path, rng: random.Random, with_logs: bool = False, second_urls: Sequence[str] = ()):
        super().__init__(workdir, Hooks())
        self.rng = rng
        self.with_logs = with_logs
        self.replica = ApiReplica()
        self.front = RogueFront()
        self.store = HookedStore(self.hooks)
        self.logstash = LogstashCluster(store=self.store)
        # A second Logstash input for some routes: batches are spread over both (README: ES_LAVA).
        self.second = {route: LogstashEmulator(store=self.store, name=route + "-2") for route in second_urls}
        self.versions: Dict[str, List[dict]] = {}  # node id -> every version, oldest first
        self.files: Dict[str, object] = {}  # artifact path -> bytes, or a function making them
        self.lost_files: Dict[str, str] = {}  # artifact path -> why the source goes without it, for good
        self.running_jobs: List[str] = []
        self.running_kbuilds: List[str] = []
        self.stable: set = set()  # nodes whose result other nodes' documents carry: never changed
        self.trees = 0

    # Lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "ApiWorld":
        self.replica.start()
        self.front.upstream = urlsplit(self.replica.url)
        self.front.start()
        self.logstash.start()
        for emulator in self.second.values():
            emulator.start()
        self.replica.on_page(self._on_page)
        return self

    def __exit__(self, *exc_info) -> None:
        self.front.stop()
        for emulator in self.second.values():
            emulator.stop()
        self.logstash.stop()
        self.replica.stop()
        self.logstash.clear()

    @property
    def emulators(self) -> List[LogstashEmulator]:
        return list(self.logstash.emulators.values()) + list(self.second.values())

    def emulators_by_route(self, route: str) -> List[LogstashEmulator]:
        return [self.logstash.emulators[route]] + ([self.second[route]] if route in self.second else [])

    @property
    def files_url(self) -> str:
        return self.front.url + "/files"

    @property
    def api_url(self) -> str:
        return self.front.url + "/latest"

    # The corpus --------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.replica.now()

    def _noted(self, node: dict) -> dict:
        node_id = node["id"]
        self.versions.setdefault(node_id, []).append(copy.deepcopy(self.replica.corpus.get(node_id)))
        return node

    def _artifact_urls(self, name: str, node_id: str, files: Dict[str, Tuple[str, object]]) -> Dict[str, str]:
        """Artifact name -> URL under `<name>-<id>/`, each file served (and counted) from now on; a
        log artifact may be lost for good (never uploaded: 404) or stored cut short, as
        `break_next_artifact` asked."""
        urls = {}
        for key, (file_name, content) in files.items():
            path = "%s-%s/%s" % (name, node_id, file_name)
            urls[key] = "%s/%s" % (self.files_url, path)
            if content is None:
                continue
            broken = self._artifact_fault if key in LOG_ARTIFACTS.values() else None
            if broken is not None:
                self._artifact_fault = None
                self.hooks.fired.append(self._artifact_fault_label)
            if broken == "404":
                self.lost_files[path] = "HTTP 404"
                continue
            if broken == "truncated gzip":
                whole = content() if callable(content) else content
                whole = whole if whole[:2] == b"\x1f\x8b" else gzip.compress(whole)
                content = whole[:max(10, len(whole) * 2 // 3)]
            self.files[path] = content
            self.replica.corpus.add_file(path, self._served(path))
        return urls

    def _served(self, path: str) -> Callable[[], bytes]:
        def served() -> bytes:
            self.hooks.notice("get")
            content = self.files[path]
            return content() if callable(content) else content
        return served

    def file_content(self, path: str) -> Optional[bytes]:
        content = self.files.get(path)
        return content() if callable(content) else content

    _artifact_fault: Optional[str] = None
    _artifact_fault_label: object = None

    def break_next_artifact(self, how: str) -> None:
        """The next log artifact made is lost ("404") or stored cut short ("truncated gzip"); the
        fault counts as fired (`Hooks.fired`) once it is."""
        self._artifact_fault, self._artifact_fault_label = how, self.hooks.label

    def update(self, node_id: str, relocate: bool = False, **changes) -> dict:
        """Change a node as the API does: `updated` moves to now (never back, never equal)."""
        old = parse_api_time(self.replica.corpus.get(node_id)["updated"])
        when = max(self.now(), old + timedelta(milliseconds=1))
        return self._noted(self.replica.corpus.update(node_id, when=when, relocate=relocate, **changes))

    def _tree(self, seed: str, kernel_revision: dict) -> "_SoakTree":
        return _SoakTree(self, self.now(), seed, kernel_revision)

    def new_tree(self, lab_jobs: int = 2) -> None:
        """A checkout with a kbuild or two, LAVA jobs (some still running), a KUnit job and their
        tests, all made at one moment: one `updated` time for the whole tree."""
        self.trees += 1
        rng, number = self.rng, self.trees
        describe = "v6.%d-rc%d-%d-g%08x" % (12 + number % 3, number, rng.randint(1, 99), rng.getrandbits(32))
        tree = self._tree("soak-%d-%d" % (number, rng.getrandbits(16)), revision("mainline", "master", describe))
        made: List[dict] = []
        checkout = tree.node("checkout", "checkout", None, 0, result=None)
        tree.checkout = checkout
        made.append(checkout)
        for arch, compiler in rng.sample([("arm64", "gcc-12"), ("x86_64", "clang-17"), ("riscv", "gcc-13")],
                                         rng.randint(1, 2)):
            running = rng.random() < 0.3
            kbuild = self._kbuild(tree, arch, compiler, running)
            made.append(kbuild)
            for board in range(rng.randint(1, lab_jobs)):
                made.extend(self._lab_job(tree, kbuild, board, running or rng.random() < 0.4))
        kunit = tree.node("job", "kunit-%s" % tree.seed, checkout, 0,
                          dict(_job_data(made[1]), platform="kubernetes", runtime="k8s-all", job_id="kci-kunit"),
                          group="kunit-%s" % tree.seed, artifacts={"test_log": ("test_log", b"ok 1 - example\n")})
        made.append(kunit)
        cases = [tree.child("test", "kunit-case-%d" % n, kunit, 0, result=rng.choice(("pass", "pass", "fail")))
                 for n in range(rng.randint(1, 3))]
        made.extend(cases)
        failed = [case for case in cases if case["result"] == "fail"]
        if failed and rng.random() < 0.7:
            # Its passing run: a test of an earlier tree when there is one (KernelCI's tracker).
            passing = rng.choice(self._latest("test", changeable=False) or [cases[0]])
            self.stable.update((failed[0]["id"], passing["id"]))
            made.append(regression(self.replica.corpus, failed[0], passing, kunit, tree.base))
        for node in made:
            self._noted(node)

    def _kbuild(self, tree: "_SoakTree", arch: str, compiler: str, running: bool) -> dict:
        data = {"arch": arch, "defconfig": "defconfig", "config_full": "defconfig+lab-setup", "compiler": compiler,
                "fragments": ["lab-setup"], "platform": None, "runtime": "k8s-all", "kernel_type": "image",
                "job_id": "kci-%s-kbuild" % tree.seed, "job_context": "gke-cluster", "error_code": None,
                "error_msg": None, "regression": None}
        name = "kbuild-%s-%s" % (compiler, arch)
        if running:
            node = tree.node("kbuild", name, tree.checkout, 0, data, result=None, state="running", group=name)
            self.running_kbuilds.append(node["id"])
            return node
        return tree.node("kbuild", name, tree.checkout, 0, data, result=self.rng.choice(("pass", "pass", "fail")),
                         group=name, artifacts=self._build_files())

    def _build_files(self) -> dict:
        log = b"CC init/main.o\n" + b"fs/x.c:1:2: warning: unused\n" * self.rng.randint(0, 3)
        if self.rng.random() < 0.3:
            log += b"arch/x86/y.c:3:4: error: undeclared\n"
        return {"build_log": ("build.log", log), "_config": (".config", b"CONFIG_X=y\n")}

    def _lab_job(self, tree: "_SoakTree", kbuild: dict, board: int, running: bool) -> List[dict]:
        """A LAVA job below `kbuild` (running, or done with its callback) and the nodes below it."""
        platform = "board-%d-%s" % (board, kbuild["data"]["arch"])
        job_number = int(hashlib.sha1(("%s/%d" % (tree.seed, board)).encode()).hexdigest()[:6], 16) + 8_000_000
        data = dict(_job_data(kbuild), platform=platform, runtime="lava-collabora", job_id=str(job_number),
                    job_context=None, test_source=None, test_revision=None)
        name = "baseline-%s-%d" % (kbuild["data"]["arch"], board)
        if running:
            job = tree.node("job", name, kbuild, 0, data, result=None, state="running", group=name)
            self.running_jobs.append(job["id"])
            # Now and then a node below it comes first (README: it waits for the job).
            return [job] + (self._tests_of(tree, job) if self.rng.random() < 0.2 else [])
        verdict = self._verdict(data)
        data["device"] = verdict.pop("device")
        data.update(verdict.pop("data"))
        job = tree.node("job", name, kbuild, 0, data, group=name, artifacts=self._job_files(data, verdict["result"]),
                        **verdict)
        return [job] + self._tests_of(tree, job)

    def _verdict(self, data: dict) -> dict:
        """How a job ends: state, result, device, and the error of an incomplete one."""
        result = self.rng.choice(("pass", "pass", "fail", "incomplete"))
        errors = {"error_code": "Infrastructure", "error_msg": "lab error"} if result == "incomplete" else {}
        return {"state": "done", "result": result, "device": "%s-cbg-%d" % (data["platform"], self.rng.randint(1, 3)),
                "data": errors}

    def _job_files(self, data: dict, result: str) -> dict:
        kernel = data["kernel_revision"]
        callback = _callback_producer(kernel["tree"], kernel["branch"], kernel["describe"], data["arch"],
                                      data["compiler"], data["platform"], "lava-collabora", int(data["job_id"]),
                                      result == "pass", self.rng.randint(2, 30))
        return {"lava_log": ("log.txt.gz", gzip.compress(b"[    0.0] Booting Linux\n")),
                "callback_data": ("lava_callback.json.gz", callback)}

    def _tests_of(self, tree: "_SoakTree", job: dict) -> List[dict]:
        setup = tree.child("job", "setup", job, 0)
        made = [setup, tree.child("test", "login", setup, 0)]
        for n in range(self.rng.randint(0, 2)):
            made.append(tree.child("test", "case-%d" % n, setup, 0, result=self.rng.choice(("pass", "fail"))))
        return made

    # Changes, as KernelCI makes them -------------------------------------------------------------

    def mutate(self, count: int = 1, tests_only: bool = False) -> List[str]:
        """`count` random changes (`tests_only`: of tests listed already, in place or moved to the
        end of the natural order, so that one run lists two versions); returns what they were."""
        done = []
        for _ in range(count):
            if tests_only:
                choice = self.rng.choice(("test result", "relocate"))
                if getattr(self, "_" + choice.replace(" ", "_"))():
                    done.append(choice)
                continue
            choices = ["new tree", "test result", "bridge flag", "relocate"]
            if self.running_jobs:
                choices += ["job finishes"] * 3 + ["tests of a running job"]
            if self.running_kbuilds:
                choices += ["kbuild finishes"]
            if any(node[-1]["kind"] == "regression" and node[-1]["result"] == "fail" for node in self.versions.values()):
                choices += ["regression passes"]
            choice = self.rng.choice(choices)
            if getattr(self, "_" + choice.replace(" ", "_"))():
                done.append(choice)
        return done

    def _latest(self, kind: str, changeable: bool = True) -> List[dict]:
        return [versions[-1] for node_id, versions in self.versions.items() if versions[-1]["kind"] == kind
                and not (changeable and node_id in self.stable)]

    def _new_tree(self) -> bool:
        self.new_tree()
        return True

    def _job_finishes(self) -> bool:
        """A running job ends (result, device and callback in one update); its callback makes
        the nodes below it, most often."""
        job = self.replica.corpus.get(self.running_jobs.pop(self.rng.randrange(len(self.running_jobs))))
        verdict = self._verdict(job["data"])
        device, errors = verdict.pop("device"), verdict.pop("data")
        files = self._artifact_urls(job["name"], job["id"], self._job_files(job["data"], verdict["result"]))
        job = self.update(job["id"], data=dict(errors, device=device), artifacts=files, **verdict)
        if self.rng.random() < 0.8:
            self._made_later(job)
        return True

    def _made_later(self, job: dict) -> None:
        tree = self._tree("soak-later-%d" % self.rng.getrandbits(32), job["data"]["kernel_revision"])
        for node in self._tests_of(tree, job):
            self._noted(node)

    def _tests_of_a_running_job(self) -> bool:
        self._made_later(self.replica.corpus.get(self.rng.choice(self.running_jobs)))
        return True

    def _kbuild_finishes(self) -> bool:
        node = self.replica.corpus.get(self.running_kbuilds.pop(self.rng.randrange(len(self.running_kbuilds))))
        self.update(node["id"], state="done", result=self.rng.choice(("pass", "fail")),
                    artifacts=self._artifact_urls(node["name"], node["id"], self._build_files()))
        return True

    def _test_result(self, relocate: bool = False) -> bool:
        tests = self._latest("test")
        if not tests:
            return False
        test = self.rng.choice(tests)
        flipped = {"pass": "fail", "fail": "skip", "skip": "pass"}.get(test["result"], "pass")
        self.update(test["id"], relocate=relocate, result=flipped, state="done")
        return True

    def change_tests(self, count: int, relocate: bool = False, among: Optional[List[str]] = None) -> List[str]:
        """Change `count` tests (of `among`, if given), in place or moved to the end; their ids."""
        tests = [node["id"] for node in self._latest("test") if among is None or node["id"] in among]
        chosen = self.rng.sample(tests, min(count, len(tests)))
        for node_id in chosen:
            result = self.replica.corpus.get(node_id)["result"]
            self.update(node_id, relocate=relocate, state="done",
                        result={"pass": "fail", "fail": "skip", "skip": "pass"}.get(result, "pass"))
        return chosen

    def _relocate(self) -> bool:
        return self._test_result(relocate=True)

    def _bridge_flag(self) -> bool:
        nodes = [versions[-1] for node_id, versions in self.versions.items()
                 if not versions[-1].get("processed_by_kcidb_bridge") and node_id not in self.running_jobs]
        if not nodes:
            return False
        self.update(self.rng.choice(nodes)["id"], processed_by_kcidb_bridge=True)
        return True

    def _regression_passes(self) -> bool:
        active = [node for node in self._latest("regression", changeable=False) if node["result"] == "fail"]
        node = self.rng.choice(active)
        sequence = list(node["data"].get("node_sequence") or []) + [node["data"]["fail_node"]]
        self.update(node["id"], result="pass", data={"node_sequence": sequence})
        return True

    def settle(self) -> None:
        """Every running job and kbuild finishes (and the tests still to come are made)."""
        while self.running_jobs:
            self._job_finishes()
        while self.running_kbuilds:
            self._kbuild_finishes()

    # What the feed must end with ---------------------------------------------------------------

    def node_now(self, node_id: str) -> Optional[dict]:
        return self.replica.corpus.get(node_id)

    def _job_of(self, node: dict) -> Optional[dict]:
        group, path = node.get("group"), node.get("path") or []
        if group not in path[:-1]:
            return None
        current = node
        while current.get("parent"):
            current = self.node_now(current["parent"])
            if current is None:
                return None
            if current["name"] == group and current["group"] not in current["path"][:-1]:
                return current
        return None

    def envelope(self, node: dict) -> dict:
        wrapped = {"node": node, "viewer_url": "%s/viewer?node_id=%s" % (self.api_url, node["id"])}
        if node["kind"] in ("job", "test", "node"):
            job = self._job_of(node)
            if job is not None:
                wrapped["job_node"] = extract(job)
        elif node["kind"] == "regression":
            fail, passed = (self.node_now(node["data"][name]) for name in ("fail_node", "pass_node"))
            wrapped["viewer_urls"] = {name: "%s/viewer?node_id=%s" % (self.api_url, node["data"][name])
                                      for name in ("fail_node", "pass_node")}
            if fail is not None:
                wrapped["fail_node"] = extract(fail)
                if self._job_of(fail):
                    wrapped["fail_job_node"] = extract(self._job_of(fail))
            if passed is not None:
                wrapped["pass_node"] = extract(passed)
        artifact = LOG_ARTIFACTS.get(node["kind"]) if self.with_logs else None
        url = (node.get("artifacts") or {}).get(artifact) if artifact else None
        if url:
            path = urlsplit(url).path[len("/files/"):]
            if path in self.lost_files:
                wrapped["artifact_errors"] = {artifact: self.lost_files[path]}
                return wrapped
            content = self.file_content(path)
            if content[:2] == b"\x1f\x8b":
                try:
                    content = gunzip(content, 256 << 20)
                except ValueError as error:
                    wrapped["artifact_errors"] = {artifact: str(error)}
                    return wrapped
            wrapped[artifact] = content.decode("utf-8", "replace")
            if artifact == "build_log":
                wrapped["build_log_bytes"] = len(content)
        return wrapped

    def documents_of(self, node: dict) -> Dict[DocKey, str]:
        content = json.dumps(self.envelope(node)).encode()
        try:
            documents = documents_for(node["kind"], content, parse_api_time(node["created"]))
        except RejectedInput:
            return {}
        return {(document.index, document.doc_id): canonical_stored(dict(document.body,
                                                                         **{"@timestamp": document.timestamp}))
                for document in documents}

    def listed_nodes(self) -> List[dict]:
        return [node for node in self.replica.corpus.nodes() if node.get("kind") in NODE_KINDS]

    def expected(self) -> Tuple[Dict[DocKey, str], Dict[DocKey, str]]:
        """(document key -> canonical newest document, document key -> node id)."""
        expected, owner = {}, {}
        for node in self.listed_nodes():
            for key, document in self.documents_of(node).items():
                expected[key] = document
                owner[key] = node["id"]
        return expected, owner

    def older_documents(self, node_id: str) -> List[Dict[DocKey, str]]:
        return [self.documents_of(version) for version in self.versions.get(node_id, [])[:-1]]

    def stored(self) -> Dict[DocKey, str]:
        return {key: canonical_stored(document) for key, document in self.store.snapshot().items()}

    def newest_versions(self) -> Dict[Tuple[str, str], dict]:
        """(kind, version id) -> node, for the newest version of every listed node."""
        found = {}
        for node in self.listed_nodes():
            stamp = node["updated"].replace("-", "").replace(":", "")
            found[(node["kind"], "%s.%s" % (node["id"], stamp))] = node
        return found

    # Pages --------------------------------------------------------------------------------------

    def _on_page(self, replica, query, number) -> None:
        self.hooks.notice("page")
        self.hooks.notice("page:" + dict(query).get("kind", ""))

    # The feed process ---------------------------------------------------------------------------

    def environ(self, **settings) -> Dict[str, str]:
        base = dict(KCI_RETRY_BACKOFF="0.01", ES_RETRY_BACKOFF="0.01", LS_PIPELINE_BATCH_SIZE="25")
        base.update({name: str(value) for name, value in settings.items()})
        env = api_feed_environ(self.replica, self.logstash, self.db, **base)
        env.update(KCI_API_URL=self.api_url, KCI_API_STORAGE_URL=self.files_url)
        for route, emulator in self.second.items():
            name = "ES_" + route.upper()
            env[name] = "%s,%s" % (env[name], emulator.url)
        return env

    def run(self, env: Dict[str, str], arm: Callable[[], None] = lambda: None,
            commit_kill: Optional[Tuple[int, float]] = None, kill_after: Optional[float] = None,
            timeout: float = 120.0) -> RunResult:
        """Run `kcing feed_es` once (`--with-logs` when the world has logs), with the faults `arm`
        sets up; then clear every fault."""
        return self._run_with(["--with-logs"] if self.with_logs else [], env, arm, commit_kill, kill_after, timeout)

    def _set_up_run(self) -> None:
        self.replica.on_page(self._on_page)

    def _emulators(self) -> List[LogstashEmulator]:
        return self.emulators

    def hold_pages(self, seconds: float, count: int) -> None:
        """Hold the next `count` listing pages for `seconds` (past the client's timeout)."""
        left = [count]

        def held(replica, query, number):
            self._on_page(replica, query, number)
            if left[0] > 0:
                left[0] -= 1
                time.sleep(seconds)
        self.replica.on_page(held)
        self.held_for(seconds)

    def clear_faults(self) -> None:
        self.replica.clear_faults()
        self.replica.on_page(self._on_page)
        for emulator in self.emulators:
            emulator.clear_faults()
            emulator.up()
        self.front.clear()

    # The ledger ---------------------------------------------------------------------------------

    def ledger_states(self) -> Dict[Tuple[str, str], str]:
        """(kind, version id) -> state; delivered wins over the other destinations' rows."""
        if not self.db.exists():
            return {}
        with closing(sqlite3.connect(str(self.db))) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'upstream_file'").fetchone():
                return {}
            states: Dict[Tuple[str, str], str] = {}
            for kind, upstream_id, state in conn.execute("SELECT kind, upstream_id, state FROM upstream_file"):
                if states.get((kind, upstream_id)) != "delivered":
                    states[(kind, upstream_id)] = state
            return states


class _SoakTree(_Tree):
    """api_data's tree builder, its nodes' artifacts served through the world (counted, and
    broken when the world was asked to)."""

    def __init__(self, world: ApiWorld, base: datetime, seed: str, kernel_revision: dict):
        super().__init__(world.replica.corpus, world.files_url, base, seed, kernel_revision, time_ordered_ids=True)
        self.world = world

    def node(self, *args, **options) -> dict:
        """`_Tree.node`, made now: `updated` is `created` (the whole tree at one moment)."""
        corpus, self.corpus = self.corpus, _Capture()
        try:
            made = super().node(*args, **options)
        finally:
            self.corpus = corpus
        made["updated"] = made["created"]
        return corpus.add(made)

    def _artifacts(self, name: str, node_id: str, files: Optional[dict]) -> Optional[dict]:
        return self.world._artifact_urls(name, node_id, files) if files else None


class _Capture:
    """Stands for the corpus while `_SoakTree.node` makes a node: hands it back unadded."""

    @staticmethod
    def add(node: dict) -> dict:
        return node
