"""Upstream's gzip files inflated as gzip reads them, within a limit that a bomb cannot pass."""
import gzip

import pytest

from kcing.sources.gzipped import MAX_GZIP_MEMBERS, gunzip


def test_gunzip_refuses_what_would_inflate_too_far():
    with pytest.raises(ValueError, match="larger than"):
        gunzip(gzip.compress(b"0" * (3 << 20)), 2 << 20)
    assert gunzip(gzip.compress(b"ok"), 10) == b"ok"
    # The limit is what may be taken: content of exactly that size is, one byte more is not.
    assert gunzip(gzip.compress(b"0" * 1000), 1000) == b"0" * 1000
    assert gunzip(gzip.compress(b"a" * 600) + gzip.compress(b"b" * 400), 1000) == b"a" * 600 + b"b" * 400
    with pytest.raises(ValueError, match="^larger than 1000 bytes once decompressed$"):
        gunzip(gzip.compress(b"0" * 1001), 1000)


@pytest.mark.parametrize("data", [
    gzip.compress(b"first\n", mtime=0) + gzip.compress(b"second\n", mtime=0),
    gzip.compress(b"first\n", mtime=0) + b"\0\0\0" + gzip.compress(b"second\n", mtime=0) + b"\0",  # zero padding, as gzip skips it
    gzip.compress(b"", mtime=0) + gzip.compress(b"only\n", mtime=0) + gzip.compress(b"", mtime=0),
    gzip.compress(bytes(range(256)) * 4096, mtime=0) + gzip.compress(b"tail", mtime=0),  # a first member of many slices
], ids=["two members", "padded", "empty members", "large first member"])
def test_gunzip_reads_every_member_as_gzip_does(data):
    assert gunzip(data, 10 << 20) == gzip.decompress(data)


@pytest.mark.parametrize("data, problem", [
    (gzip.compress(b"log", mtime=0) + b"GARBAGE", "not valid gzip (data after its last member is not gzip)"),
    (gzip.compress(b"log", mtime=0) + b"\x1f", "not valid gzip (data after its last member is not gzip)"),
    (gzip.compress(b"log", mtime=0) + gzip.compress(b"more", mtime=0)[:-4], "gzip data cut short"),
    (gzip.compress(b"log", mtime=0) + b"\x1f\x8b\x07" + bytes(20), "not valid gzip"),  # compression method 7
], ids=["garbage", "one byte", "second member cut short", "second member broken"])
def test_gunzip_refuses_what_gzip_refuses_after_the_first_member(data, problem):
    with pytest.raises(Exception):
        gzip.decompress(data)
    with pytest.raises(ValueError) as refused:
        gunzip(data, 1 << 20)
    assert str(refused.value).startswith(problem)


def test_gunzip_limits_the_content_of_all_members_together():
    member = gzip.compress(b"0" * (600 << 10))
    assert len(gunzip(member, 1 << 20)) == 600 << 10
    with pytest.raises(ValueError, match="^larger than 1048576 bytes once decompressed$"):
        gunzip(member + member, 1 << 20)
    with pytest.raises(ValueError, match="^larger than 1048576 bytes once decompressed$"):  # a bomb in the second member
        gunzip(gzip.compress(b"ok") + gzip.compress(b"0" * (64 << 20)), 1 << 20)


def test_gunzip_refuses_more_members_than_any_writer_makes():
    empty = gzip.compress(b"")
    assert gunzip(empty * MAX_GZIP_MEMBERS, 10) == b""
    with pytest.raises(ValueError, match="more than %d gzip members" % MAX_GZIP_MEMBERS):
        gunzip(empty * (MAX_GZIP_MEMBERS + 1), 10)
