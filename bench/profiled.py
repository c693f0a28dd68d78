#!/usr/bin/env python3
"""Run a Python script under cProfile timed by CPU, not wall clock; dump the stats to a file.

    python bench/profiled.py STATS_FILE SCRIPT [ARG...]

`python -m cProfile` times with the wall clock, so on a loaded machine every function seems
slow by however long the process waited for a core. `time.process_time` counts only what the
process itself spent, which is what a breakdown of kcing's cost needs.
"""
import cProfile
import runpy
import sys
import time


def main() -> int:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    stats_file, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    profiler = cProfile.Profile(time.process_time)
    code = 0
    profiler.enable()
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        code = done.code
    finally:
        profiler.disable()
        profiler.dump_stats(stats_file)
    return code


if __name__ == "__main__":
    sys.exit(main())
