"""A real small file system that fills up: a tmpfs mounted for one test."""
from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """`directory` as a tmpfs of `size` for the block (mounting needs root, or CAP_SYS_ADMIN);
    the test is skipped, saying why, where no tmpfs can be mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (%s): the full-disk tests need one" % mounted.stderr.strip())
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def resize(directory: Path, size: str) -> None:
    """Grow (or shrink) a tmpfs mounted by `small_tmpfs`, keeping its files."""
    subprocess.run(["mount", "-o", "remount,size=%s" % size, str(directory)], check=True)


def fill_leaving(directory: Path, free_kib: int) -> Path:
    """Fill the file system of `directory` so that about `free_kib` KiB stay free; return the
    filler file (remove it to free the space again). A kcing process writing there meanwhile may
    take some of the space counted: the filler then stops where the file system is full, and
    gives back `free_kib` KiB."""
    stats = os.statvfs(str(directory))
    available = stats.f_bavail * stats.f_frsize // 1024
    filler = directory / "filler"
    data = memoryview(b"\0" * max(0, available - free_kib) * 1024)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while data:
                data = data[handle.write(data):]
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            handle.truncate(max(0, handle.tell() - free_kib * 1024))
    return filler
