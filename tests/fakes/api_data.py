"""Nodes for the KernelCI API replica: the real example payloads, and synthesized node trees.

`real_nodes(files_url)` adopts the real nodes of shared/data/upstream/maestro: their artifact
URLs are moved onto the replica's file server (path and SAS query string kept), and the real
raw LAVA callback in shared/data/upstream/legacy becomes the job's `callback_data`.
`checkout_tree(...)` makes one realistic checkout -> kbuild -> job -> test tree (upstream.md
§2.6): a LAVA baseline job with setup/login, a kselftest job, a failed build and a KUnit job
on Kubernetes hanging off the checkout, with artifact files (gzip where upstream gzips), and
the regression node KernelCI's tracker makes for the kselftest case that failed (its passing
run is in the `previous` tree, or, without one, in no tree the replica holds).
`bench_tree(...)` makes the benchmark's shape: one kbuild and four LAVA jobs, each with a
callback of `log_lines` lines in the real shapes (block YAML results, Decimal tags in the log)
and two test nodes.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit, urlunsplit

from tests.fakes.api_corpus import ApiCorpus, api_time
from tests.fakes.legacy_data import lava_json, object_id_at

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "upstream"
MAESTRO = SHARED / "maestro"
LEGACY = SHARED / "legacy"
REAL_JOB = "job-node-lava-tast-staging-2024-10.json"
REAL_CHECKOUT = "checkout-node-get-api-doc.json"
REAL_LIST = "nodes-list-parent-null-api-doc.txt"
RAW_CALLBACK = "lava-callback-raw-incomplete-qemu.json"


def object_id(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()[:24]


def real_files_present() -> bool:
    return all((MAESTRO / name).is_file() for name in (REAL_JOB, REAL_CHECKOUT, REAL_LIST))


def real_nodes(corpus: ApiCorpus, files_url: str) -> List[dict]:
    """Add the real nodes (the 2023 list's `_id` items too, as kind `node`); return them."""
    job = json.loads((MAESTRO / REAL_JOB).read_text())
    for name, url in list(job["artifacts"].items()):
        parts = urlsplit(url)
        moved = urlsplit(files_url + parts.path)
        job["artifacts"][name] = urlunsplit((moved.scheme, moved.netloc, moved.path, parts.query, ""))
        path = parts.path.lstrip("/")
        if name == "callback_data" and (LEGACY / RAW_CALLBACK).is_file():
            raw = json.loads((LEGACY / RAW_CALLBACK).read_text())
            raw.pop("token", None)  # the pipeline stores the callback without it
            corpus.add_file(path, gzip.compress(json.dumps(raw).encode()))
        elif name == "lava_log":
            corpus.add_file(path, gzip.compress(b"[    0.000000] Booting Linux on physical CPU 0x0\n"))
    listed = json.loads("{" + (MAESTRO / REAL_LIST).read_text())["items"]
    nodes = [json.loads((MAESTRO / REAL_CHECKOUT).read_text()), job] + listed
    return [corpus.add(node) for node in nodes]


def revision(tree: str, branch: str, describe: str) -> dict:
    return {
        "tree": tree, "url": "https://git.kernel.org/pub/scm/linux/kernel/git/%s/linux.git" % tree,
        "branch": branch, "commit": hashlib.sha1(describe.encode()).hexdigest(), "describe": describe,
        "version": {"version": 6, "patchlevel": 12, "sublevel": None, "extra": "-rc3", "name": None},
        "patchset": None, "commit_tags": [], "commit_message": describe, "tip_of_branch": True,
    }


class _Tree:
    """Makes the nodes of one checkout's tree, each `minutes` after the checkout was created."""

    def __init__(self, corpus: ApiCorpus, files_url: str, base: datetime, seed: str, kernel_revision: dict,
                 time_ordered_ids: bool = False):
        self.corpus, self.files_url, self.base, self.seed = corpus, files_url, base, seed
        self.time_ordered_ids = time_ordered_ids
        self.revision = kernel_revision
        self.treeid = hashlib.sha256(seed.encode()).hexdigest()
        self.checkout: Optional[dict] = None

    def node(self, kind: str, name: str, parent: Optional[dict], minutes: float, data: Optional[dict] = None,
             result: Optional[str] = "pass", state: str = "done", artifacts: Optional[dict] = None,
             group: Optional[str] = None) -> dict:
        created = self.base + timedelta(minutes=minutes)
        seed = "%s/%s/%s" % (self.seed, "/".join((parent or {}).get("path", [])), name)
        node_id = object_id_at(created, seed) if self.time_ordered_ids else object_id(seed)
        node = {
            "id": node_id, "kind": kind, "name": name, "path": (parent or {}).get("path", []) + [name],
            "group": group, "parent": parent["id"] if parent else None, "state": state, "result": result,
            "artifacts": self._artifacts(name, node_id, artifacts),
            "data": dict({"kernel_revision": self.revision}, **(data or {})),
            "debug": None, "jobfilter": None, "platform_filter": [],
            "created": api_time(created), "updated": api_time(created + timedelta(minutes=5)),
            "timeout": api_time(created + timedelta(hours=6)), "holdoff": None,
            "owner": "production", "submitter": "service:pipeline", "treeid": self.treeid,
            "user_groups": [], "processed_by_kcidb_bridge": False, "retry_counter": 0,
        }
        return self.corpus.add(node)

    def _artifacts(self, name: str, node_id: str, files: Optional[dict]) -> Optional[dict]:
        """Artifact name -> URL under `<name>-<id>/`; each (file name, content) is served."""
        if not files:
            return None
        urls = {}
        for key, (file_name, content) in files.items():
            path = "%s-%s/%s" % (name, node_id, file_name)
            if content is not None:
                self.corpus.add_file(path, content)
            urls[key] = "%s/%s" % (self.files_url, path)
        return urls

    def kbuild(self, arch: str, compiler: str, minutes: float, result: str = "pass", log: bytes = b"") -> dict:
        data = {"arch": arch, "defconfig": "defconfig", "config_full": "defconfig+lab-setup", "compiler": compiler,
                "fragments": ["lab-setup"], "platform": None, "runtime": "k8s-all", "kernel_type": "image",
                "job_id": "kci-%s-kbuild" % self.seed, "job_context": "gke-cluster", "error_code": None,
                "error_msg": None, "regression": None}
        name = "kbuild-%s-%s" % (compiler, arch)
        files = {"build_log": ("build.log", log or b"make -j8\n"), "_config": (".config", b"CONFIG_X=y\n"),
                 "kernel": ("Image", None), "modules": ("modules.tar.xz", None)}
        return self.node("kbuild", name, self.checkout, minutes, data, result=result, artifacts=files, group=name)

    def lab_job(self, name: str, parent: dict, minutes: float, platform: str, job_number: int,
                result: str = "pass", log_lines: int = 3, runtime: str = "lava-collabora",
                booted: bool = True, real_shapes: bool = False) -> dict:
        data = dict(_job_data(parent), platform=platform, device="%s-cbg-1" % platform, runtime=runtime,
                    job_id=str(job_number), job_context=None, test_source=None, test_revision=None)
        callback = _callback_producer(self.revision["tree"], self.revision["branch"], self.revision["describe"],
                                      data["arch"], data["compiler"], platform, runtime, job_number, booted, log_lines,
                                      real_shapes)
        files = {"lava_log": ("log.txt.gz", gzip.compress(b"[    0.000000] Booting Linux\n")),
                 "callback_data": ("lava_callback.json.gz", callback)}
        return self.node("job", name, parent, minutes, data, result=result, artifacts=files, group=name)

    def child(self, kind: str, name: str, parent: dict, minutes: float, result: Optional[str] = "pass",
              **options) -> dict:
        """A node below a job: `data` copied from the job as the callback handler does."""
        data = {key: parent["data"].get(key) for key in ("kernel_revision", "kernel_type", "arch", "defconfig",
                                                         "config_full", "compiler", "platform", "runtime")}
        data.update(options.pop("data", None) or {})
        return self.node(kind, name, parent, minutes, data, result=result, group=parent["group"], **options)


def _job_data(kbuild: dict) -> dict:
    return {key: kbuild["data"].get(key) for key in ("kernel_revision", "arch", "defconfig", "compiler",
                                                     "kernel_type")} | {"config_full": "+lab-setup"}


def checkout_tree(corpus: ApiCorpus, files_url: str, base: datetime, seed: str = "tree-1",
                  tree: str = "mainline", branch: str = "master", describe: str = "v6.12-rc3-45-gc862449c840a",
                  log_lines: int = 3, case_results: tuple = ("pass", "fail", "skip"),
                  previous: Optional[Dict[str, dict]] = None) -> Dict[str, dict]:
    """One checkout's tree (17 nodes) created from `base` on; returns the nodes by short name.

    Its kselftest cases end with `case_results`; a failing second case gets a regression node
    whose passing run is `previous["case-1"]`.
    """
    builder = _Tree(corpus, files_url, base, seed, revision(tree, branch, describe))
    checkout = builder.node("checkout", "checkout", None, 0, result=None,
                            artifacts={"tarball": ("linux-%s.tar.gz" % describe, None)})
    # Older deployments gave artifact paths relative to their storage; keep one such.
    corpus.update(checkout["id"], when=builder.base + timedelta(minutes=30),
                  artifacts={"tarball": "linux-%s-%s-%s.tar.gz" % (tree, branch, describe)})
    builder.checkout = corpus.get(checkout["id"])
    arm64 = builder.kbuild("arm64", "gcc-12", 1, log=b"CC init/main.o\nfs/x.c:1:2: warning: unused variable\n")
    x86 = builder.kbuild("x86_64", "clang-17", 2, result="fail",
                         log=b"arch/x86/y.c:3:4: error: undeclared\nfs/z.c:5:6: warning: shadow\nmake: *** Error 1\n")
    baseline = builder.lab_job("baseline-arm64-meson", arm64, 10, "meson-gxbb-p200", 7700001, log_lines=log_lines)
    setup = builder.child("job", "setup", baseline, 11)
    login = builder.child("test", "login", setup, 11.5)
    kernelmsg = builder.child("test", "kernelmsg", setup, 11.6)
    kselftest = builder.lab_job("kselftest-exec", arm64, 12, "qemu-arm64", 7700002, result="fail",
                                runtime="lava-baylibre", log_lines=log_lines)
    suite = builder.child("job", "kselftest-exec", kselftest, 13, result="fail")
    cases = [builder.child("test", "exec_execveat_%d" % n, suite, 13 + n / 10, result=result,
                           data={"misc": {"measurement": 1.5 * n}} if n == 1 else None)
             for n, result in enumerate(case_results)]
    kunit = builder.node("job", "kunit-x86_64", builder.checkout, 3,
                         dict(_job_data(x86), platform="kubernetes", runtime="k8s-all", job_id="kci-kunit"),
                         group="kunit-x86_64", artifacts={"test_log": ("test_log", b"ok 1 - example\n")})
    kunit_cases = [builder.child("test", "kunit-case-%d" % n, kunit, 4 + n / 10) for n in range(2)]
    running = builder.child("test", "kunit-case-slow", kunit, 4.5, result=None, state="running")
    nodes = {"checkout": builder.checkout, "kbuild-arm64": arm64, "kbuild-x86": x86, "baseline": baseline,
             "setup": setup, "login": login, "kernelmsg": kernelmsg, "kselftest": kselftest, "suite": suite,
             "kunit": kunit, "running": running}
    nodes.update({"case-%d" % n: node for n, node in enumerate(cases)})
    nodes.update({"kunit-case-%d" % n: node for n, node in enumerate(kunit_cases)})
    if cases[1]["result"] == "fail":
        passed = (previous or {}).get("case-1") or {"id": object_id("%s/previous/%s" % (seed, cases[1]["name"]))}
        nodes["regression"] = regression(corpus, cases[1], passed, kselftest, builder.base + timedelta(minutes=20))
    return nodes


def regression(corpus: ApiCorpus, failed: dict, passed: dict, job: dict, created: datetime) -> dict:
    """The node KernelCI's regression tracker makes for `failed` after `passed` (upstream.md §2.5).

    Like the tracker's: no parent, the failing node's name, path and group, its configuration,
    its kernel revision as `failed_kernel_revision`, and the logs of its job as artifacts.
    """
    data = failed["data"]
    node = {
        "id": object_id("regression/%s/%s" % (failed["id"], passed["id"])), "kind": "regression",
        "name": failed["name"], "path": failed["path"], "group": failed["group"], "parent": None,
        "state": "done", "result": "fail",
        "artifacts": {name: url for name, url in (job.get("artifacts") or {}).items() if "log" in name} or None,
        "data": {"fail_node": failed["id"], "pass_node": passed["id"], "node_sequence": [],
                 "failed_kernel_revision": data.get("kernel_revision"), "arch": data.get("arch"),
                 "defconfig": data.get("defconfig"), "config_full": data.get("config_full"),
                 "compiler": data.get("compiler"), "platform": data.get("platform"), "device": None,
                 "error_code": data.get("error_code"), "error_msg": data.get("error_msg")},
        "debug": None, "jobfilter": None, "platform_filter": [],
        "created": api_time(created), "updated": api_time(created), "timeout": api_time(created + timedelta(hours=6)),
        "holdoff": None, "owner": "production", "submitter": "service:pipeline", "treeid": None,
        "user_groups": [], "processed_by_kcidb_bridge": False, "retry_counter": 0,
    }
    return corpus.add(node)


def sample_envelopes(base: datetime, callback: Optional[Path] = None) -> List[tuple]:
    """(kind, envelope) of every node of two trees created from `base` on (the second's regression
    names the first's runs), each with what the API source adds with --with-logs (the `callback`
    file, when given and present, for the baseline job), and the real job node when present."""
    corpus = ApiCorpus()
    first = checkout_tree(corpus, "https://files.example", base)
    second = checkout_tree(corpus, "https://files.example", base + timedelta(days=1), seed="tree-2", previous=first)
    callback_data = callback.read_text() if callback is not None and callback.is_file() else None
    envelopes = []
    for name, node in list(first.items()) + list(second.items()):
        envelope = {"node": node}
        if name == "baseline" and callback_data:
            envelope["callback_data"] = callback_data
        elif node["kind"] == "kbuild":
            envelope["build_log"] = "fs/x.c:1:2: warning: unused variable\nmake: *** Error 1\n"
        elif node["kind"] == "test":
            envelope["job_node"] = first["baseline"]
        elif node["kind"] == "regression":
            envelope.update(fail_node=second["case-1"], pass_node=first["case-1"], fail_job_node=second["kselftest"])
        envelopes.append((node["kind"], envelope))
    if (MAESTRO / REAL_JOB).is_file():
        envelopes.append(("job", {"node": json.loads((MAESTRO / REAL_JOB).read_text())}))
    return envelopes


def bench_tree(corpus: ApiCorpus, files_url: str, base: datetime, number: int, log_lines: int,
               time_ordered_ids: bool = False) -> int:
    """One kbuild with four LAVA jobs of two test nodes each (13 objects); returns the count.

    `time_ordered_ids`: node ids start with their creation time, as the API's MongoDB ids do."""
    builder = _Tree(corpus, files_url, base, "bench-%d" % number,
                    revision("tree%d" % (number % 7), "master", "v6.%d-%d" % (number % 20, number)), time_ordered_ids)
    builder.checkout = {"id": object_id_at(base, "bench-%d" % number) if time_ordered_ids
                        else object_id("bench-%d" % number), "path": ["checkout"]}
    kbuild = builder.kbuild("arm64", "gcc-12", 0)
    for board in range(4):
        job = builder.lab_job("baseline-arm64-board-%d" % board, kbuild, 1 + board, "board-%d" % board,
                              8_000_000 + number * 4 + board, log_lines=log_lines, real_shapes=True)
        builder.child("test", "login", job, 1.5 + board)
        builder.child("test", "dmesg-crit", job, 1.6 + board)
    return 13


def _callback_producer(tree: str, branch: str, describe: str, arch: str, compiler: str, platform: str,
                       runtime: str, job_number: int, booted: bool, log_lines: int, real_shapes: bool = False):
    """A function making the job's gzip callback on each GET (big corpora stay small in memory)."""
    item = {"kernel": describe, "defconfig_full": "defconfig+lab-setup", "board": platform,
            "board_instance": "%s-cbg-1" % platform, "job": tree, "git_branch": branch,
            "git_commit": hashlib.sha1(describe.encode()).hexdigest(), "git_describe": describe, "arch": arch,
            "defconfig": "defconfig", "build_environment": compiler, "mach": "generic",
            "status": "PASS" if booted else "FAIL", "lab_name": runtime.replace("lava-", "lab-"),
            "file_server_resource": None}
    return lambda: _gzip_callback(json.dumps(item, sort_keys=True), job_number, log_lines, real_shapes)


@lru_cache(maxsize=64)
def _gzip_callback(item_json: str, job_number: int, log_lines: int, real_shapes: bool) -> bytes:
    callback: Dict[str, Any] = json.loads(lava_json(json.loads(item_json), job_number, log_lines, real_shapes))
    for extra in ("lab_name", "version", "boot_log_html"):  # added by the legacy backend only
        callback.pop(extra, None)
    return gzip.compress(json.dumps(callback).encode(), compresslevel=1)


def now_minus(days: float = 0, hours: float = 0) -> datetime:
    return datetime.now(timezone.utc) - timedelta(days=days, hours=hours)
