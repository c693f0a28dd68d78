"""No document differs from before: today's output against the digests of the reference code."""
from __future__ import annotations

import json

from tests.fakes.api_data import real_files_present
from tests.reference_output import REFERENCE, current_digests, differences, digest_lines


def test_documents_are_byte_for_byte_those_of_the_reference():
    expected = json.loads(REFERENCE.read_text())
    actual = current_digests()
    assert set(actual) >= {"samples", "legacy replica", "api replica"}
    assert sum(index["documents"] for origin in actual.values() for index in origin.values()) > 5000
    if not real_files_present():
        # The reference's API replica served the real nodes beside the repository (../shared)
        # too: without them it serves another corpus, whose output the reference cannot judge.
        del expected["api replica"], actual["api replica"]
    assert differences(expected, actual) == []


def test_one_changed_byte_is_named_by_origin_and_index():
    before = {"samples": digest_lines([("lava-2019.05.31", b'{"a":1}\n'), ("build-2019.05.31", b'{"b":1}\n')])}
    after = {"samples": digest_lines([("lava-2019.05.31", b'{"a":2}\n'), ("build-2019.05.31", b'{"b":1}\n')])}
    found = differences(before, after)
    assert len(found) == 1 and found[0].startswith("samples, lava-2019.05.31: ")
