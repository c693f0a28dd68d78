"""The feed's own memory over a long backlog: the ids a legacy listing keeps, and the large
blocks glibc's malloc gives back (bench/targets.py measures the whole feed, target 5)."""
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from kcing import heap
from kcing.sources.listed import ListedIds

REPO = Path(__file__).resolve().parent.parent
OBJECT_IDS = ["5fb6%020x" % number for number in range(100_000)]


def test_an_id_taken_once_is_known_whatever_its_form():
    taken = ListedIds()
    bad_item = "invalid-0123456789abcdef"  # as long as an ObjectId, and no ObjectId
    taken.update([OBJECT_IDS[0], bad_item])
    taken.add(OBJECT_IDS[1])
    assert len(taken) == 3
    assert OBJECT_IDS[0] in taken and OBJECT_IDS[1] in taken and bad_item in taken
    assert OBJECT_IDS[2] not in taken and None not in taken
    assert taken.holds_all(OBJECT_IDS[:2]) and not taken.holds_all(OBJECT_IDS[:3])
    assert not taken.holds_all([OBJECT_IDS[0], None])  # an item without an id is never taken
    assert taken.not_taken({OBJECT_IDS[0], OBJECT_IDS[2], bad_item}) == {OBJECT_IDS[2]}


def test_ids_taken_one_at_a_time_are_each_counted_once_and_known_for_the_whole_listing():
    taken = ListedIds()
    for object_id in OBJECT_IDS[:2500] + OBJECT_IDS[:2500:7]:  # some taken again (a page shifted)
        taken.add(object_id)
        assert object_id in taken
    taken.add("invalid-0123456789abcdef")
    taken.add("invalid-0123456789abcdef")
    assert len(taken) == 2501
    assert all(object_id in taken for object_id in OBJECT_IDS[:2500])
    assert OBJECT_IDS[2500] not in taken
    taken.update(OBJECT_IDS[2490:2510])  # a delivered page, partly taken already
    assert len(taken) == 2511
    assert taken.holds_all(OBJECT_IDS[:2510]) and not taken.holds_all(OBJECT_IDS[:2511])
    assert taken.not_taken(set(OBJECT_IDS[2505:2515])) == set(OBJECT_IDS[2510:2515])


@pytest.mark.parametrize("other", [
    "0x" + "0" * 21 + "1",  # texts of 24 characters that int(_, 16) also reads as 1
    "0_" + "0" * 21 + "1",
    " " + "0" * 22 + "1",
    "0" * 22 + "1\n",  # 23 digits and a line break
    "0" * 24 + "1",  # 25 digits, the same number
])
def test_no_other_text_passes_for_an_object_id(other):
    object_id = "0" * 23 + "1"
    taken = ListedIds()
    taken.add(object_id)
    assert other not in taken
    taken.add(other)
    assert len(taken) == 2 and other in taken


def test_uppercase_hex_is_another_id_than_its_lowercase():
    # Listings lower-case every ObjectId before it is taken; one that is not is not the same text.
    taken = ListedIds()
    taken.add("5fb6aaaaaaaaaaaaaaaaaaaa")
    assert "5FB6AAAAAAAAAAAAAAAAAAAA" not in taken


def test_a_listing_of_100k_objects_keeps_their_ids_in_less_memory_than_their_text():
    text = [object_id.encode().decode() for object_id in OBJECT_IDS]  # fresh strings, as pages give
    tracemalloc.start()
    try:
        as_text = set(text)
        text_bytes = tracemalloc.get_traced_memory()[0]
        del as_text
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        taken = ListedIds()
        taken.update(text)
        taken_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The set of texts holds only the set (the texts are `text`'s); ListedIds holds its numbers too.
    texts_themselves = sum(sys.getsizeof(each) for each in text)
    assert len(taken) == len(OBJECT_IDS)
    assert taken_bytes < 0.75 * (text_bytes + texts_themselves)


FREED_BLOCKS = """
import json, os, sys
sys.path.insert(0, %(repo)r)
from kcing import heap
kept = heap.keep_mmap_threshold() if sys.argv[1] == "kept" else None

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

big = bytearray(16 << 20)  # a large file freed: glibc raises its threshold to this size
del big
start = rss()
blocks, small = [], []
for _ in range(64):
    blocks.append(bytearray(512 << 10))  # documents of an object, a batch
    small.append(bytearray(2000))  # what a thread keeps meanwhile, between them
del blocks
print(json.dumps({"kept": kept, "held_mb": (rss() - start) / 2 ** 20}))
"""


def _freed_blocks(mode, **environment):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"}
    env.update(environment)
    answer = subprocess.run([sys.executable, "-c", FREED_BLOCKS % {"repo": str(REPO)}, mode], env=env,
                            capture_output=True, text=True, check=True, timeout=60)
    return json.loads(answer.stdout)


glibc_only = pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
                                reason="glibc's malloc settings")


@glibc_only
def test_the_feed_gives_freed_large_blocks_back_where_glibc_would_keep_them():
    adapting = _freed_blocks("adapting")
    kept = _freed_blocks("kept")
    assert adapting["held_mb"] > 24  # glibc's own behaviour, which the fix is for: 32 MB kept
    assert kept["kept"] is True
    assert kept["held_mb"] < 4


@glibc_only
@pytest.mark.parametrize("setting", [{"MALLOC_MMAP_THRESHOLD_": "1048576"}, {"MALLOC_TRIM_THRESHOLD_": "0"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}])
def test_a_users_own_malloc_setting_is_kept(setting):
    assert _freed_blocks("kept", **setting)["kept"] is False


def test_feed_es_fixes_the_threshold_before_it_lists(monkeypatch):
    # kcing/commands/feed_es.py calls it; a run with the user's own setting does not change it.
    source = (REPO / "kcing" / "commands" / "feed_es.py").read_text()
    assert "heap.keep_mmap_threshold()" in source
    assert heap.MMAP_THRESHOLD_BYTES == 128 << 10
