#!/usr/bin/env python3
"""Run a command; print its CPU time and peak RSS as JSON on stderr; exit with its status.

Started as a fresh, small process, so the child it forks does not inherit a large parent's
pages into its peak RSS figure.

The peak RSS is that of the whole process tree at once: the command and every process it
starts (worker processes included), summed, sampled every few milliseconds from /proc. The
kernel's own peak of the largest single process (`ru_maxrss`) bounds it from below, so a spike
between two samples of a one-process run is not missed. A sum of RSS counts pages that forked
processes share once per process: it errs on the high side, as a memory limit should.
The CPU time is the command's and every child it waited for (`wait4`); the wall time runs from
starting the command to its exit, so it includes the command's own start but not this one's.
The command's own CPU time, without its children's, is read from /proc once it has exited and
before it is reaped, so the split is exact.
"""
import json
import os
import subprocess
import sys
import threading
import time

SAMPLE_SECONDS = 0.01
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list:
    """`pid` and every process below it, read from /proc/<pid>/task/<tid>/children."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = os.listdir("/proc/%d/task" % current)
        except OSError:
            continue
        for task in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (current, task)) as children:
                    pending.extend(int(child) for child in children.read().split())
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open("/proc/%d/statm" % pid) as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process tree until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_bytes = 0
        self.most_processes = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            tree = descendants(self.pid)
            self.most_processes = max(self.most_processes, len(tree))
            self.peak_bytes = max(self.peak_bytes, sum(rss_bytes(pid) for pid in tree))


def own_cpu_seconds(pid: int):
    """CPU seconds `pid` spent itself (user and system, not its children's), or None."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            # Fields 14 and 15 (utime, stime), counted after the ")" that ends the command name.
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    started = time.perf_counter()
    process = subprocess.Popen(sys.argv[1:])
    sampler = TreeSampler(process.pid)
    sampler.start()
    own = None
    if hasattr(os, "waitid"):
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        own = own_cpu_seconds(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    largest_single_mb = usage.ru_maxrss / 1024.0
    print(json.dumps({"wall_seconds": round(wall, 3), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                      "own_cpu_seconds": own,
                      "peak_rss_mb": round(max(sampler.peak_bytes / 2 ** 20, largest_single_mb), 1),
                      "largest_process_rss_mb": round(largest_single_mb, 1),
                      "processes": max(1, sampler.most_processes)}), file=sys.stderr)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
