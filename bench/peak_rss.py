#!/usr/bin/env python3
"""Run a command; print its CPU time and peak RSS as JSON on stderr; exit with its status.

Started as a fresh, small process, so the child it forks does not inherit a large parent's
pages into its peak RSS figure.
"""
import json
import os
import subprocess
import sys

process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
print(json.dumps({"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                  "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1)}), file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
