"""What the benchmarks share: running kcing as a user would, a counting Logstash, the yardsticks.

- `run_kcing` runs `kcing ARGS` in its own process tree (through peak_rss.py) and returns wall
  time including process start, CPU of the whole tree, and the tree's peak RSS; `profile=True`
  runs it once more under cProfile (CPU-timed, bench/profiled.py) with `-X importtime` and
  returns where the time went.
- `CountingLogstash` is the strict Logstash emulator that counts what it accepts instead of
  keeping it, so a large corpus does not fill the bench's own memory.
- `wire_yardstick` posts pre-serialised batches from a separate process (bench/wire_post.py);
  `in_process_wire` is the old yardstick, kept to show the difference.
- `parsing_floor` runs bench/floor.py on a corpus manifest in a fresh process.
"""
from __future__ import annotations

import compileall
import json
import pstats
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from tests.fakes.elastic_store import Unroutable, route  # noqa: E402
from tests.fakes.logstash_emulator import ROUTES, LogstashCluster, LogstashEmulator  # noqa: E402

sys.path.insert(0, str(BENCH))
from wire_post import write_batches  # noqa: E402  (this directory)

WORKERS_SETTING = "KCING_WORKERS"


@dataclass
class KcingRun:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    processes: int
    stdout: str
    stderr: str = ""
    profile: List[str] = field(default_factory=list)
    own_cpu_seconds: Optional[float] = None  # kcing's own process alone, without its workers


def run_kcing(env: Dict[str, str], cwd: Path, args: Sequence[str] = ("feed_es",), profile: bool = False,
              check: bool = True) -> KcingRun:
    """Run `kcing ARGS` once, measured from outside; with `profile`, once more to show where time goes.

    Through bench/peak_rss.py, a fresh small process: a child forked straight from this process
    would start with this process's pages (the replica corpus) counted in its RSS.
    """
    run = _measured(env, cwd, args, check)
    if profile:
        run.profile = _profile(env, cwd, args)
    return run


_bytecode_ready = False


def _ensure_bytecode() -> None:
    """Compile kcing's modules once, as installing a package does: with PYTHONDONTWRITEBYTECODE
    set (some shells and CI images set it), every run would otherwise compile each module it
    imports, and process start would measure the compiler instead of kcing."""
    global _bytecode_ready
    if not _bytecode_ready:
        compileall.compile_dir(str(REPO / "kcing"), quiet=1)
        compileall.compile_file(str(REPO / "kcing.py"), quiet=1)
        _bytecode_ready = True


def fastest_run(env: Dict[str, str], cwd: Path, args: Sequence[str] = ("feed_es",), profile: bool = False,
                passes: int = 2) -> KcingRun:
    """`run_kcing` `passes` times; the fastest run, with the profile of the last when asked. For
    runs that change nothing (a re-run over delivered objects): load on a shared machine only
    ever adds time."""
    runs = [run_kcing(env, cwd, args) for _ in range(passes - 1)] + [run_kcing(env, cwd, args, profile=profile)]
    fastest = min(runs, key=lambda run: run.seconds)
    fastest.profile = runs[-1].profile
    return fastest


def _measured(env, cwd, args, check, python_flags: Sequence[str] = ()) -> KcingRun:
    _ensure_bytecode()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.run([sys.executable, str(BENCH / "peak_rss.py"), sys.executable, *python_flags,
                                  str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd), stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        stderr = err.read()
        if check and process.returncode != 0:
            sys.exit("kcing %s failed (%d):\n%s" % (" ".join(args), process.returncode, stderr[-2000:]))
        figures = json.loads(stderr.strip().splitlines()[-1])
        return KcingRun(figures["wall_seconds"], figures["cpu_seconds"], figures["peak_rss_mb"], figures["processes"],
                        out.read(), stderr, own_cpu_seconds=figures.get("own_cpu_seconds"))


def _profile(env, cwd, args, top: int = 8) -> List[str]:
    """Lines saying where a run's time goes: imports (-X importtime), then the top functions by CPU."""
    with tempfile.TemporaryDirectory() as scratch:
        dump = Path(scratch) / "kcing.prof"
        run = _measured(env, cwd, args, True, ("-X", "importtime", str(BENCH / "profiled.py"), str(dump)))
        lines = ["profiled run (slower than the timed one): %.2f s wall, %.2f s CPU" % (run.seconds, run.cpu_seconds)]
        lines += _import_summary(run.stderr)
        stats = pstats.Stats(str(dump))
        total = stats.total_tt or 1e-9
        rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
        lines.append("top functions by own CPU time (of %.2f s profiled):" % total)
        for (filename, line, name), (_, calls, own, cumulative, _) in rows:
            lines.append("  %5.1f%%  %6.3f s own  %6.3f s cum  %8d calls  %s" % (
                100.0 * own / total, own, cumulative, calls, _where(filename, line, name)))
        return lines


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def _import_summary(stderr: str, top: int = 5) -> List[str]:
    top_level = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and not match.group(3):
            top_level.append((int(match.group(2)), match.group(4)))
    total = sum(micro for micro, _ in top_level)
    heaviest = sorted(top_level, reverse=True)[:top]
    return ["imports: %.2f s in all; heaviest: %s" % (total / 1e6, ", ".join(
        "%s %.2f s" % (name, micro / 1e6) for micro, name in heaviest))]


def _where(filename: str, line: int, name: str) -> str:
    if filename == "~":
        return name
    parts = Path(filename).parts
    for anchor in ("kcing", "site-packages", "python3.11", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + (0 if anchor == "kcing" else 1):]
            break
    return "%s:%d %s" % ("/".join(parts[-3:]), line, name)


def feed_supports_workers(env: Dict[str, str], cwd: Path) -> bool:
    """Whether `kcing feed_es --help` names a worker-count setting."""
    shown = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es", "--help"], env=env, cwd=str(cwd),
                           capture_output=True, text=True)
    return WORKERS_SETTING in shown.stdout + shown.stderr or "--workers" in shown.stdout


class CountingEmulator(LogstashEmulator):
    """The strict emulator (same answers, same decoding) that counts routed events, keeps none."""

    def __init__(self, **options):
        super().__init__(**options)
        self._count_lock = threading.Lock()
        self.accepted = 0
        self.unroutable = 0

    def _accept(self, events) -> None:
        routed = 0
        for event in events:
            try:
                route(event)
                routed += 1
            except Unroutable:
                pass
        with self._count_lock:
            self.accepted += routed
            self.unroutable += len(events) - routed


class CountingLogstash(LogstashCluster):
    def __init__(self):
        super().__init__(routes=())
        self.emulators = {name: CountingEmulator(name=name) for name in ROUTES}

    @property
    def accepted(self) -> int:
        return sum(emulator.accepted for emulator in self.emulators.values())

    @property
    def unroutable(self) -> int:
        return sum(emulator.unroutable for emulator in self.emulators.values())

    @property
    def posted_bytes(self) -> int:
        return sum(request.body_bytes for emulator in self.emulators.values() for request in emulator.requests)

    def reset(self) -> None:
        for emulator in self.emulators.values():
            emulator.requests.clear()
            emulator.trace.clear()
            emulator.accepted = emulator.unroutable = 0


Batches = List[Tuple[str, int, bytes]]  # route, documents, body


@dataclass
class Wire:
    seconds: float
    documents: int
    batches: int

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.seconds


def wire_yardstick(batches: Batches, urls: Dict[str, str], concurrency: int, repeats: int = 3) -> Wire:
    """POST `batches` from a separate process, `concurrency` at a time; its fastest of `repeats` passes."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "batches"
        write_batches(path, batches)
        done = subprocess.run([sys.executable, str(BENCH / "wire_post.py"), str(path), json.dumps(urls),
                               str(concurrency), str(repeats)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit("wire loop failed:\n" + done.stderr[-2000:])
        figures = json.loads(done.stdout)
        return Wire(figures["seconds"], figures["documents"], figures["batches"])


def in_process_wire(batches: Batches, urls: Dict[str, str]) -> Wire:
    """The former yardstick: one POST after another from the process hosting the emulators."""
    session = requests.Session()
    started = time.perf_counter()
    for route_name, _, body in batches:
        session.post(urls[route_name], data=body, headers={"Content-Type": "application/json"},
                     timeout=(10, 60)).raise_for_status()
    return Wire(time.perf_counter() - started, sum(count for _, count, _ in batches), len(batches))


def parsing_floor(manifest: List[dict], passes: int = 3) -> dict:
    """bench/floor.py's figures for the files in `manifest` (kind, path, created), fastest of `passes`."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "manifest.json"
        path.write_text(json.dumps(manifest))
        done = subprocess.run([sys.executable, str(BENCH / "floor.py"), str(path), str(passes)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit("parsing floor failed:\n" + done.stderr[-2000:])
        return json.loads(done.stdout)


