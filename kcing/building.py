"""Document building (upstream file -> documents -> encoded bytes), in worker processes.

Building holds the interpreter lock: in the feed's own process, download threads add nothing
once the network is fast, and a second core idles. `Builder.build` hands the file to a worker
process instead, waits for the encoded documents (the waiting thread releases the lock) and
returns them. The output is the same bytes either way: the worker runs the same functions.

- Lazy: workers start when the feed sees a backlog (`start`: more objects listed than its
  downloads hold), or once building in this process has taken a quarter of a second of CPU. A
  cron run of a few objects never starts one. Until a started worker is ready, builds go on
  here, so a start never stalls the run.
- Plain processes: each worker is a fresh interpreter (`python -c`, never a fork of this
  threaded process) that imports only the document code. Requests and answers are bytes
  in length-prefixed frames over its stdin and stdout.
- One object at a time per worker, so a worker that dies is blamed on exactly one object: it is
  built again on a fresh worker, and rejected if that one dies too. The run goes on.
- Workers ignore SIGINT and SIGTERM (the feed decides when to stop, then closes their stdin)
  and exit when their stdin closes or their parent dies, so no run leaves one behind. A run that
  stops (`abandon`) kills the workers building: their objects would be dropped unsent anyway, and
  the stop would otherwise wait for the slowest build, or for ever on a worker that hangs.
"""
from __future__ import annotations

import gc
import importlib
import logging
import os
import pickle
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # not on this platform: pipes keep their default size
    fcntl = None

from kcing.collector import collector_paused
from kcing.errors import RejectedInput, unexpected_failure
from kcing.sinks.batching import LOGSTASH_SEPARATOR, Encoded

log = logging.getLogger(__name__)

# CPU seconds of document building in this process before workers start: more than a cron run
# of a few objects spends, and about what starting a worker costs. A backlog reaches it within
# its first few dozen objects.
BUILD_SECONDS_BEFORE_WORKERS = 0.25
# Files at least this large are built in a worker whenever workers may run, started for them if
# need be, never in the feed's own process: building takes many times a file's size in memory
# (a LAVA log of short lines, 3 GB for 18 MB), and an out-of-memory kill then ends a worker,
# which costs its object alone, not the feed and the whole run with it.
IN_WORKER_BYTES = 4 << 20
# What a worker calls for each object ("module:function"); tests point it elsewhere.
TARGET = "kcing.building:encoded_documents"
# How much lower a worker's CPU priority is than the feed's (os.nice; 19 is the lowest).
WORKER_NICENESS = 10
# How long close() lets workers finish the object in hand before killing them.
CLOSE_GRACE = 2.0
# Seconds between two looks at whether the run is stopping, while a worker builds.
ABANDON_POLL = 0.1
# The least time a worker has to say it is ready, whatever the build time limit (0 still waits
# without limit): its imports take a fraction of a second, but several workers starting at once
# on a loaded machine take longer, and a limit meant for one object's build would kill them.
WORKER_READY_MIN_SECONDS = 10.0
# Bytes each pipe to and from a worker holds (Linux's default is 64 KiB; an unprivileged process
# may ask up to /proc/sys/fs/pipe-max-size, 1 MiB by default). A LAVA file's request and its
# answer, hundreds of KiB, then pass in one write and one read: with 64 KiB pipes the worker
# waited, its answer half written, until a thread of the feed's busy process took the
# interpreter back for each further 64 KiB, and sat idle meanwhile.
PIPE_BYTES = 1 << 20
# The feed's switch interval while workers build (Python's default is 5 ms). With workers, the
# feed's threads mostly hand files on and take answers back: a thread woken by a worker's answer,
# or about to give an idle worker its next file, would wait up to the whole interval for the
# thread that holds the interpreter, and the worker would idle meanwhile.
SWITCH_INTERVAL_WITH_WORKERS = 0.0005
# What a terminal or a service manager sends the feed's whole process group; the feed stops its
# workers itself (their stdin closed, or killed).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
# glibc's malloc settings in a worker's environment (a user's own values are kept). With its
# defaults, a worker gave the memory of each object back to the kernel when the object was done
# and took it again, page by page, for the next: about 400 page faults an object, a tenth of the
# worker's CPU time spent by the kernel. Below this size, freed memory stays for the next object;
# a file or a result above it (a large LAVA log) is still given back as soon as it is freed.
# Other C libraries ignore these names.
WORKER_MALLOC_BYTES = 8 << 20
WORKER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_HEADER = struct.Struct("!Q")
# The worker imports this checkout's kcing whatever its working directory, and (from Python
# 3.11, -P) no module from that directory either.
_ROOT = str(Path(__file__).resolve().parent.parent)
_WORKER_MAIN = "import sys; sys.path.insert(0, %r); import kcing.building as b; b.serve()" % _ROOT
_SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()


@dataclass
class Built:
    """Encoded documents of one object and the ids the ledger keeps ({index: packed ids})."""

    encoded: Encoded
    kept: Dict[str, bytes]

    @property
    def items(self) -> List[bytes]:
        return self.encoded.items()


def encoded_documents(kind: str, content: bytes, created: Optional[datetime], listed_lab: Optional[str],
                      encode: Callable, separator: bytes = LOGSTASH_SEPARATOR) -> Built:
    """The documents of one upstream file, encoded by `encode` (the sink's) and joined by
    `separator` (the sink's). Raises RejectedInput."""
    from kcing.documents import parts_for
    from kcing.ledger import docids
    from kcing.sinks.encoding import LINES_ENCODERS

    # The documents are dropped before the collector runs again: it has nothing of them to walk.
    with collector_paused():
        documents, lines = parts_for(kind, content, created, listed_lab)
        encode_lines = LINES_ENCODERS.get(encode)
        if lines is not None and encode_lines is None:
            documents.extend(lines.documents())
            lines = None
        items = [encode(document) for document in documents]
        kept = docids.by_index(documents)
        del documents
        if lines is None:
            return Built(Encoded.of(items, separator), kept)
        texts = encode_lines(lines)
        kept[lines.index] = docids.pack(lines.ids + list(docids.unpack(kept.get(lines.index, b""))))
        del lines
    return Built(_joined(items, texts, separator), kept)


def _joined(items: List[bytes], texts: List[str], separator: bytes) -> Encoded:
    """Encoded of `items` then of `texts` encoded as UTF-8: `Encoded.of(items + [t.encode()...])`,
    with the texts, nearly always ASCII, encoded at once."""
    if not texts:
        return Encoded.of(items, separator)
    joined = separator.decode("ascii").join(texts)
    if joined.isascii():
        data, sizes = joined.encode("ascii"), [len(text) for text in texts]
    else:
        encoded = [text.encode("utf-8") for text in texts]
        data, sizes = separator.join(encoded), [len(item) for item in encoded]
    if items:
        data = separator.join(items) + separator + data
        sizes = [len(item) for item in items] + sizes
    return Encoded(data, sizes, separator)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _name_of(function: Callable) -> Optional[str]:
    """"module:qualified.name" when a fresh interpreter can import `function`, else None."""
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        if _resolve("%s:%s" % (module, qualname)) is not function:
            return None
    except (ImportError, AttributeError):
        return None
    return "%s:%s" % (module, qualname)


def _resolve(name: str):
    module, _, qualname = name.partition(":")
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


class WorkerDied(Exception):
    """The worker process ended while building an object; `killed` when by SIGKILL."""

    def __init__(self, message: str, killed: bool = False):
        super().__init__(message)
        self.killed = killed


class BuildAbandoned(Exception):
    """The run is stopping: the worker building the object was killed, and the object is left
    to the next run (failed, as a download the stop cuts)."""


class WorkersKilled(Exception):
    """Every worker that built an object was killed (SIGKILL): the out-of-memory killer or an
    operator ended them, which says nothing certain of the object. It is not rejected but
    failed, and the next run builds it again."""


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.timed_out = False  # killed for building, or starting, past the builder's time limit

    def exchange(self, request: bytes, content: bytes) -> Tuple[tuple, Optional[bytes]]:
        """Hand the worker a request and the file's bytes; return its answer, and the encoded
        documents when it built them. The bytes go as they are, each in a frame of its own, not
        inside a pickle: pickling them would copy the file here and the documents there, and
        unpickling copy the documents again here (another gigabyte for a LAVA log of a million
        lines)."""
        try:
            _write_frame(self.process.stdin, request)
            _write_frame(self.process.stdin, content)
            answer = pickle.loads(_read_frame(self.process.stdout))
            return answer, _read_frame(self.process.stdout) if answer[0] == "ok" else None
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
            code, ended_here = self._exit_code()
            raise WorkerDied(_death_text(code), killed=code == -signal.SIGKILL and not ended_here) from error

    def death(self) -> str:
        return _death_text(self._exit_code()[0])

    def _exit_code(self) -> tuple:
        """(its exit code, whether this process had to kill it: its pipes broke, yet it lived on)."""
        try:
            return self.process.wait(timeout=5), False
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(), True


def _death_text(code: int) -> str:
    """How a worker that exited with `code` (Popen.returncode) ended."""
    if code < 0:
        try:
            return "killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exited with status %d" % code


# How the reason of an object rejected for the time its documents took to build begins (its own
# and that of an object not built again for it); `too_long_before` reads the limit back.
TOOK_TOO_LONG = "building its documents took longer than KCING_BUILD_TIMEOUT (%g s)"
_TOOK_TOO_LONG = re.compile(re.escape(TOOK_TOO_LONG).replace("%g", "([0-9.e+-]+)"))
# The fact (UpstreamObject.facts) the listing marks an object with whose last build, an earlier
# run's, took longer than the limit: (sha256 of the content, the limit in seconds).
BUILT_TOO_LONG = "built_too_long"


def too_long_before(reason: Optional[str]) -> Optional[float]:
    """The KCING_BUILD_TIMEOUT an object's rejection says building its documents took longer
    than; None for another reason."""
    match = _TOOK_TOO_LONG.match(reason or "")
    try:
        return float(match.group(1)) if match else None
    except ValueError:  # a reason edited into the ledger by hand
        return None


def not_built_again(obj, sha256: str, timeout: float) -> Optional[str]:
    """Why `obj`, downloaded with content `sha256`, is not built again (rejected at once), or
    None to build it: its last build, with this very content, took longer than a limit no
    shorter than `timeout` (0: none, it is built). It would hold a worker as long again, every
    run, a crawl window of hourly runs long; a content changed since, or a limit raised, is built."""
    earlier = obj.facts.get(BUILT_TOO_LONG)
    if not earlier or not timeout or earlier[0] != sha256 or timeout > earlier[1]:
        return None
    return (TOOK_TOO_LONG % earlier[1] + " in an earlier run, and the file is the same: not built again (raise "
            "KCING_BUILD_TIMEOUT above %g s to build it)" % earlier[1])


class Builder:
    """Builds documents here (workers <= 1) or in up to `workers` worker processes. With one
    (KCING_WORKERS=1, or auto on a machine with one usable core), every file is built here but
    one of IN_WORKER_BYTES or more, which one worker, started for it, builds; with 0, every file.

    A worker still building one object after `timeout` seconds (0: no limit) is killed and the
    object rejected: no input may hold the run for ever, and one that took that long would take
    as long in a second worker and in every later run. A build in this process has no such limit.
    A worker not ready `timeout` seconds (WORKER_READY_MIN_SECONDS at least) after it started is
    killed as one that could not start.

    Thread-safe: the feed's download threads call `build` at the same time. Close it (or use it
    as a context manager) after the last `build` returned.
    """

    def __init__(self, workers: int, encode: Callable, target: Optional[str] = None,
                 separator: bytes = LOGSTASH_SEPARATOR, abandon: Callable[[], bool] = lambda: False,
                 timeout: float = 0.0):
        self.encode = encode
        self.abandon = abandon
        self.timeout = timeout
        self.separator = separator
        self.target = target or TARGET
        encoder = _name_of(encode)
        if workers >= 1 and encoder is None:
            log.debug("the sink's encoder cannot be imported by a worker: building documents here")
        # One worker is there for large files alone: building the others here costs the same CPU
        # without a pipe's copies, and the memory a large one takes is what must not end the feed.
        self.large_files_only = workers == 1 and encoder is not None
        self.workers = workers if (workers >= 1 and encoder is not None) else 0
        self._encoder = encoder
        self._lock = threading.Lock()
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self._processes: List[subprocess.Popen] = []
        # The workers building or starting, by thread: since when, and their time limit (0: none).
        self._busy: Dict[int, Tuple[_Worker, float, float]] = {}
        self._watchdog: Optional[threading.Thread] = None
        # The threads waiting for a worker to say it is ready: `close` waits for them, so that a
        # worker that could not start is reported before the run's end, not after its summary.
        self._starters: List[threading.Thread] = []
        self._ready = 0
        self._starting = 0
        self._spent_here = 0.0  # CPU seconds of the builds done in this process
        self._closed = False
        self._broken = False
        self._switch_interval: Optional[float] = None  # the process's own, while workers run
        self.built_here = 0
        self.built_in_workers = 0
        self.restarts = 0
        self.started = 0  # worker processes started, restarts included

    def __enter__(self) -> "Builder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Building ------------------------------------------------------------------------------

    def build(self, kind: str, content: bytes, created: Optional[datetime],
              listed_lab: Optional[str], name: Optional[str] = None) -> Built:
        """Encoded documents of one object; RejectedInput when it cannot become documents.
        `name` (its kind and upstream id) says which object a worker died building."""
        if self.abandon():  # nothing built now would be sent, and a large file would be built here
            raise BuildAbandoned("not built: the run is stopping")
        if self.workers and self._use_workers(len(content)):
            built = self._build_in_worker(kind, content, created, listed_lab, name or kind)
            if built is not None:
                return built
            # No worker became ready (a large file waited for them to start): built here after all.
        started = time.thread_time()
        try:
            return _resolve(self.target)(kind, content, created, listed_lab, self.encode, self.separator)
        finally:
            with self._lock:
                self.built_here += 1
                self._spent_here += time.thread_time() - started

    def start(self, wait: bool = False) -> None:
        """Start the workers now rather than at the first backlog; with `wait`, until they are ready.
        A worker for large files alone starts for the first of them, not for a backlog."""
        if self.large_files_only:
            return
        with self._lock:
            if self.workers and not self._processes and not self._closed:
                for _ in range(self.workers):
                    self._start_worker()
        while wait:
            with self._lock:
                if self._ready >= self.workers or self._broken or self._closed:
                    return
            time.sleep(0.01)

    def _use_workers(self, size: int = 0) -> bool:
        """Whether to build a file of `size` bytes in a worker (starting them when it is time)."""
        with self._lock:
            if self._closed or self._broken:
                return False
            large = size >= IN_WORKER_BYTES
            if self.large_files_only and not large:
                return False
            if not self._processes and (large or self._spent_here >= BUILD_SECONDS_BEFORE_WORKERS):
                log.debug("%s: starting %d worker processes", "a file of %d bytes" % size if large else
                          "%.1f s of document building so far" % self._spent_here, self.workers)
                for _ in range(self.workers):
                    self._start_worker()
            # A large file waits for a worker that is starting (`_take_worker`).
            return self._ready > 0 or (large and self._starting > 0)

    def _build_in_worker(self, kind, content, created, listed_lab, name: str) -> Optional[Built]:
        """Built by a worker; None when there is none to take it (none started, and the builder
        is still open). `name` says which object a worker died building."""
        request = pickle.dumps((self.target, self._encoder, self.separator, kind, created, listed_lab),
                               protocol=pickle.HIGHEST_PROTOCOL)
        deaths: List[WorkerDied] = []
        while len(deaths) < 2:
            worker = self._take_worker()
            if worker is None:
                break
            try:
                with self._watched(worker):
                    answer, data = worker.exchange(request, content)
            except WorkerDied as died:
                self._lost(worker)
                if self.abandon():
                    raise BuildAbandoned("not built: the run is stopping") from died
                if worker.timed_out:
                    raise RejectedInput(TOOK_TOO_LONG % self.timeout + ": its worker process was killed") from died
                if self._closed:
                    raise
                deaths.append(died)
                log.warning("a document-building worker died building %s (%s)", name, died)
                continue
            if worker.timed_out:  # its answer came as it was killed: the answer stands, the worker not
                self._lost(worker)
            else:
                self._idle.put(worker)
            with self._lock:
                self.built_in_workers += 1
            status, *rest = answer
            if status == "ok":
                sizes, kept = rest
                return Built(Encoded(data, sizes, self.separator), kept)
            raise RejectedInput(rest[0])
        if not deaths:
            if self.abandon():  # its starting workers killed: the file is not built here instead
                raise BuildAbandoned("not built: the run is stopping")
            if not self._closed:
                return None
            raise RejectedInput("document building stopped: no worker process is running")
        how = "twice" if len(deaths) > 1 else "once, and no new one started"
        causes = "; ".join(map(str, deaths))
        if all(died.killed for died in deaths):
            raise WorkersKilled("the worker process building its documents was killed %s (%s: out of memory, or "
                                "killed from outside); built again by the next run" % (how, causes))
        raise RejectedInput("building its documents ended the worker process %s (%s)" % (how, causes))

    @contextmanager
    def _watched(self, worker: _Worker, limit: Optional[float] = None) -> Iterator[None]:
        """Within the block, `worker` is killed as soon as `abandon()` turns true, or once it has
        been in it for longer than `limit` (the time limit, when None; 0: no limit)."""
        with self._lock:
            self._busy[threading.get_ident()] = (worker, time.monotonic(), self.timeout if limit is None else limit)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
                self._watchdog.start()
        try:
            yield
        finally:
            with self._lock:
                del self._busy[threading.get_ident()]

    def _watch(self) -> None:
        """Kill the workers building or starting once the run stops, and those past the time
        limit; end when none builds or starts (restarted on need)."""
        while True:
            time.sleep(ABANDON_POLL)
            abandon = self.abandon()
            now = time.monotonic()
            with self._lock:
                if not self._busy:
                    self._watchdog = None
                    return
                # Marked and killed while still listed as building: one that finished meanwhile
                # is no longer listed, and so never killed once back among the idle ones.
                for worker, since, limit in self._busy.values():
                    if abandon or (limit and now - since > limit):
                        worker.timed_out = not abandon
                        worker.process.kill()

    def _take_worker(self) -> Optional[_Worker]:
        while True:
            try:
                return self._idle.get(timeout=0.2)
            except queue.Empty:
                with self._lock:
                    if self._closed or (self._ready == 0 and self._starting == 0):
                        return None

    # Worker processes ----------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Start one worker in the background; it joins the idle queue once it has imported."""
        # Started with the stop signals blocked, which the worker keeps until it ignores them: a
        # Ctrl-C (the terminal's SIGINT to the whole foreground group) while its interpreter
        # starts printed its KeyboardInterrupt traceback, and its start was said to have failed.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process = subprocess.Popen([sys.executable, *_SAFE_PATH, "-c", _WORKER_MAIN], env=_worker_environment(),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        except OSError as error:  # no memory, no process slots: the feed builds on by itself
            log.warning("cannot start a document-building worker (%s); building in the feed's process", error)
            self._broken = self._ready == 0 and self._starting == 0
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _widen_pipes(process)
        if self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_WITH_WORKERS))
        self._processes.append(process)
        self.started += 1
        self._starting += 1
        starter = threading.Thread(target=self._await_ready, args=(_Worker(process),), name="worker-start", daemon=True)
        self._starters.append(starter)
        starter.start()

    def _await_ready(self, worker: _Worker) -> None:
        started = time.monotonic()
        try:
            # Watched as a build is: a worker that never gets ready (its imports stuck on a hung
            # file system, the process stopped) held a large file waiting for it for ever, the
            # time limit and a stop notwithstanding.
            with self._watched(worker, self._ready_limit()):
                ready = _read_frame(worker.process.stdout) == b"ready"
        except (OSError, EOFError, ValueError):
            ready = False
        with self._lock:
            self._starting -= 1
            ready = ready and not worker.timed_out  # killed at the limit as its answer came
            if ready and not self._closed:
                self._ready += 1
                self._idle.put(worker)
                log.debug("worker %d ready in %.3f s", worker.process.pid, time.monotonic() - started)
                return
            if not self._closed:
                self._broken = self._ready == 0 and self._starting == 0
        if self._closed or self.abandon():
            return
        why = ("not ready within %g s (KCING_BUILD_TIMEOUT, %g s at least): killed"
               % (self._ready_limit(), WORKER_READY_MIN_SECONDS) if worker.timed_out else worker.death())
        log.warning("a document-building worker (process %d) did not start (%s); building in the feed's process",
                    worker.process.pid, why)

    def _ready_limit(self) -> float:
        return max(self.timeout, WORKER_READY_MIN_SECONDS) if self.timeout else 0

    def _lost(self, worker: _Worker) -> None:
        """A worker died: replace it, unless the run is closing or stopping."""
        with self._lock:
            self._ready -= 1
            if self._closed or self.abandon():
                return
            self.restarts += 1
            self._start_worker()

    def close(self) -> None:
        """Stop the workers: close their stdin, give them CLOSE_GRACE seconds, then kill them."""
        with self._lock:
            self._closed = True
            processes = list(self._processes)
            starters = list(self._starters)
            if self._switch_interval is not None:
                sys.setswitchinterval(self._switch_interval)
                self._switch_interval = None
        for process in processes:
            for stream in (process.stdin,):
                try:
                    stream.close()
                except OSError:
                    pass
        deadline = time.monotonic() + CLOSE_GRACE
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()
        # Each ends at once now that its worker has: its pipe is at its end, its exit code known.
        deadline = time.monotonic() + CLOSE_GRACE
        for starter in starters:
            starter.join(timeout=max(0.0, deadline - time.monotonic()))
        if processes or self.workers:
            log.debug("documents built: %d objects in worker processes (%d restarted), %d in this process",
                      self.built_in_workers, self.restarts, self.built_here)


def _worker_environment() -> Dict[str, str]:
    """This process's environment, with WORKER_MALLOC_SETTINGS where the user set none. Setting
    either alone would stop glibc adapting the other, so a user's one value keeps its default."""
    environment = dict(os.environ)
    if not any(name in environment for name in WORKER_MALLOC_SETTINGS):
        environment.update((name, str(WORKER_MALLOC_BYTES)) for name in WORKER_MALLOC_SETTINGS)
    return environment


def _widen_pipes(process: subprocess.Popen) -> None:
    """Make the worker's pipes hold PIPE_BYTES, or as much as this system lets them."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if set_size is None:
        return
    for stream in (process.stdin, process.stdout):
        try:
            fcntl.fcntl(stream.fileno(), set_size, PIPE_BYTES)
        except OSError:  # over pipe-max-size, or the user's pipe quota: the default size works too
            try:
                fcntl.fcntl(stream.fileno(), set_size, _pipe_max_bytes())
            except (OSError, ValueError):
                pass


def _pipe_max_bytes() -> int:
    with open("/proc/sys/fs/pipe-max-size") as limit:
        return min(PIPE_BYTES, int(limit.read()))


# Framing ---------------------------------------------------------------------------------


def _write_frame(stream, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream) -> bytes:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("pipe closed")
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError("pipe closed")
    return payload


# The worker process ----------------------------------------------------------------------


def serve() -> None:
    """A worker's main loop: read a request, answer it, until stdin closes or the parent dies."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)  # the feed stops its workers; one pending since the start is dropped
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _lower_priority()
    # The protocol owns the original stdout; anything printed goes to stderr instead.
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="orphan-watch", daemon=True).start()
    import kcing.documents  # noqa: F401  (imported before "ready": the first build pays nothing)
    gc.freeze()  # what the imports made lives as long as the worker: no collection need walk it again
    try:
        _write_frame(answers, b"ready")
    except OSError:  # the feed died (SIGKILL) while this worker started: no one is left to answer
        os._exit(1)  # not through the interpreter's exit, which would flush the pipe again
    while True:
        try:
            request = _read_frame(requests)
            content = _read_frame(requests)
        except EOFError:
            return
        target, encoder, separator, kind, created, listed_lab = pickle.loads(request)
        data = None
        try:
            built = _resolve(target)(kind, content, created, listed_lab, _resolve(encoder), separator)
            answer = ("ok", built.encoded.sizes, built.kept)
            data = built.encoded.data
            del built
        except RejectedInput as error:
            answer = ("rejected", str(error))
        except Exception as error:  # a fault in one object must cost only that object
            answer = ("rejected", unexpected_failure("documents could not be made", error))
        del content, request
        try:
            _write_frame(answers, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
            if data is not None:
                _write_frame(answers, data)  # the documents follow their sizes, as they are
        except OSError:
            return
        del data


def _lower_priority() -> None:
    """Yield the CPU to the feed's own process and to whatever shares the machine.

    Workers only build, and a backlog keeps them busy: at the same priority, they take cores
    from the feed's process, which downloads, posts and acknowledges, and from a Logstash or
    Elasticsearch on the same machine, which then takes batches more slowly than workers fill
    them. At a lower priority they run on what the others leave, which on an idle machine is
    every spare core.
    """
    try:
        os.nice(WORKER_NICENESS)
    except (AttributeError, OSError):  # not POSIX, or not allowed: build at the same priority
        pass


def _exit_when_orphaned(parent: int) -> None:
    # A parent killed by SIGKILL closes its pipes, which ends the loop above; this covers a
    # worker stuck inside one object when that happens.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)
