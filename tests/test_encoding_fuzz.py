"""Odd upstream values, encoded: every document strict JSON, decoding to the reference's (see
tests/encoding_fuzz.py). A fixed seed by default; KCING_FUZZ_SEED picks another ("random": a new
one each run, printed on failure)."""
from __future__ import annotations

from tests.encoding_fuzz import run, through_kcing
from tests.test_documents_fuzz import SEED

# Enough cases for each seed payload to get a few dozen mutations, in a few seconds.
CASES = 200
KCING_CASES = 60


def test_odd_values_encode_as_the_reference_does():
    failures = run(CASES, SEED, report=lambda line: None)
    shown = [(kind, change[:200], problems) for kind, change, _, problems in failures[:3]]
    assert not failures, "seed %d: %s" % (SEED, shown)


def test_odd_values_fed_by_kcing_are_written_as_the_reference_encodes_them(tmp_path):
    assert through_kcing(KCING_CASES, SEED, tmp_path) == [], "seed %d" % SEED
