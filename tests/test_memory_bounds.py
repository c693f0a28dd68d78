"""The feed's own memory over a long backlog: the ids a legacy listing keeps until it ends
(bench/targets.py measures the whole feed, target 5)."""
import tracemalloc

import pytest

from kcing.sources.listed import ListedIds

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


@pytest.mark.parametrize("other", [
    "0x" + "0" * 21 + "1", " " + "0" * 22 + "1", "0" * 23 + "1" + "0" * 2, "invalid-0123456789abcdef", "0" * 23 + "A",
])
def test_a_page_taken_at_once_keeps_each_id_as_one_taken_alone_would_be(other):
    object_id = "0" * 23 + "1"
    page = [object_id, other, "f" * 24]
    at_once, alone = ListedIds(), ListedIds()
    at_once.update(page)
    for upstream_id in page:
        alone.add(upstream_id)
    for taken in (at_once, alone):
        assert len(taken) == 3 and all(upstream_id in taken for upstream_id in page)
        assert taken.holds_all(page) and taken.not_taken(set(page)) == set()
        assert "0" * 23 + "2" not in taken and taken.not_taken({"0" * 23 + "2", object_id}) == {"0" * 23 + "2"}
    fresh = ListedIds()
    fresh.add(object_id)
    assert fresh.not_taken(set(page)) == {other, "f" * 24}
    assert not fresh.holds_all(page)


def test_uppercase_hex_is_another_id_than_its_lowercase():
    # Listings lower-case every ObjectId before it is taken; one that is not is not the same text.
    taken = ListedIds()
    taken.add("5fb6aaaaaaaaaaaaaaaaaaaa")
    assert "5FB6AAAAAAAAAAAAAAAAAAAA" not in taken


def _retained_after_a_listing(keeper) -> int:
    """Bytes `keeper` holds once it took OBJECT_IDS page by page, each page's ids fresh texts (as
    a listing's JSON gives them), dropped once taken as a listing drops its pages."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, len(OBJECT_IDS), 100):
            keeper.update([object_id.encode().decode() for object_id in OBJECT_IDS[start:start + 100]])
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_listing_of_100k_objects_keeps_their_ids_in_less_memory_than_their_text():
    as_text = _retained_after_a_listing(set())
    taken = ListedIds()
    as_numbers = _retained_after_a_listing(taken)
    assert len(taken) == len(OBJECT_IDS) and all(object_id in taken for object_id in OBJECT_IDS[::997])
    # A number takes 40 bytes where its text takes 73 (65 from Python 3.12, whose texts lost a
    # pointer), each beside about 42 bytes of the set's own: 29% less (23% from Python 3.12).
    assert as_numbers < 0.8 * as_text
