#!/usr/bin/env python3
"""Run a command; print its CPU time and peak RSS as JSON on stderr; exit with its status.

Started as a fresh, small process, so the child it forks does not inherit a large parent's
pages into its peak RSS figure. The command's own worker processes count too: the process tree
is sampled every 20 ms for the sum of its RSS (`peak_tree_rss_mb`), and the peaks of every
process seen are added up (`tree_peaks_sum_mb`, an upper bound of the tree's peak: the
processes need not peak at the same moment).
"""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path


def _status(pid: str) -> dict:
    fields = {}
    for line in (Path("/proc") / pid / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def _tree(root: int) -> list:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_status(entry.name)["PPid"]), []).append(entry.name)
            except (OSError, KeyError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(str(pid))
        todo.extend(int(child) for child in children.get(pid, ()))
    return found


def _kb(value: str) -> int:
    return int(value.split()[0]) if value else 0


def sample(root: int, done: threading.Event, figures: dict) -> None:
    peaks = {}
    while not done.wait(0.02):
        total = 0
        for pid in _tree(root):
            try:
                status = _status(pid)
            except OSError:
                continue
            total += _kb(status.get("VmRSS", ""))
            peaks[pid] = max(peaks.get(pid, 0), _kb(status.get("VmHWM", "")))
        figures["tree"] = max(figures.get("tree", 0), total)
        figures["peaks"] = sum(peaks.values())


process = subprocess.Popen(sys.argv[1:])
done, figures = threading.Event(), {}
sampler = threading.Thread(target=sample, args=(process.pid, done, figures), daemon=True)
sampler.start()
_, status, usage = os.wait4(process.pid, 0)
done.set()
sampler.join()
print(json.dumps({"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                  "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
                  "peak_tree_rss_mb": round(figures.get("tree", 0) / 1024.0, 1),
                  "tree_peaks_sum_mb": round(figures.get("peaks", 0) / 1024.0, 1)}), file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
