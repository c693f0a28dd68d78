"""The document-building bench keeps working: a tiny run prints its figures (no timing asserted)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_a_tiny_build_bench_prints_cpu_per_object_and_document_and_its_profile():
    done = subprocess.run([sys.executable, str(BENCH / "build_cpu.py"), "--objects", "5", "--log-lines", "20",
                           "--passes", "1", "--profile"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^document building: [\d.]+ ms CPU per object, [\d.]+ us per document \(fastest of 1 passes "
                     r"over 5 objects, \d+ documents per object\)$", done.stdout, re.M), done.stdout
    assert "tottime" in done.stdout
