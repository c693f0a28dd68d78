"""Write documents as NDJSON files for the Elasticsearch `_bulk` API instead of posting them.

A file only ever holds whole records (an action line and its document), so it stays valid
`_bulk` input whatever happens: a write that fails (a full disk) is cut back to where it
started, and a file left with a torn tail by a killed run is cut back to its last whole record
before anything is appended to it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import threading
from pathlib import Path
from typing import Dict, List, Set

from kcing.errors import ConfigError, KcingError, StorageFailed
from kcing.files import file_error, is_directory, make_directories, open_own_file, path_exists
from kcing.runlock import RunLock
from kcing.sinks import ndjson_destination
from kcing.sinks.batching import Batch
from kcing.sinks.encoding import ndjson_record

# Bytes read at a time while looking for the last whole record from the end of a file.
TAIL_BLOCK = 1 << 16
# The lock a run writing into an output directory holds there: `<dir>/ndjson.lock`.
LOCK_STEM = "ndjson"
# Bytes a file takes before the next batch goes into the route's next file (KCING_OUTPUT_MAX_BYTES),
# so that each file can be posted to `_bulk` as it is. Besides the 100 MB a node takes in one
# request (http.max_content_length), it refuses (429) a request whose documents need more than a
# tenth of its heap (indexing_pressure.memory.limit), counting a document at about 1.2 times its
# bytes: a 100 MB file was refused by a node of 1 GB of heap; 10 MB fit one of 128 MB.
OUTPUT_MAX_BYTES = 10_000_000


def part_name(route: str, part: int) -> str:
    """`<route>.ndjson` for a route's first file, then `<route>.part000002.ndjson` and on.

    The names sort in the order the files were written (`lava.ndjson` before `lava.part...`, the
    numbers zero-padded), in the C locale as in others: a replay posting `lava*.ndjson` in the
    shell's order posts a document delivered again after its older version, which Elasticsearch
    then keeps (`lava.000002.ndjson` sorted before `lava.ndjson`)."""
    return "%s.ndjson" % route if part == 1 else "%s.part%06d.ndjson" % (route, part)


def last_part(directory: Path, route: str) -> int:
    """The number of the route's newest file in `directory` (1 when there is none yet)."""
    pattern = re.compile(r"%s\.part(\d{6,})\.ndjson\Z" % re.escape(route))
    numbers = [int(found.group(1)) for found in map(pattern.match, os.listdir(directory)) if found]
    return max(numbers, default=1)


# The members of the action lines the sink writes (encoding.ndjson_record): a KernelCI API
# node's documents carry their version too.
ACTION_MEMBERS = ({"_index", "_id"}, {"_index", "_id", "version", "version_type"})


def is_action_line(line: bytes) -> bool:
    """True for a `{"index": {"_index": ..., "_id": ...}}` line, with or without its `version`
    and `version_type` (a document never has that shape)."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return False
    return (isinstance(parsed, dict) and list(parsed) == ["index"] and isinstance(parsed["index"], dict)
            and set(parsed["index"]) in ACTION_MEMBERS)


def _last_newline_before(fd: int, end: int) -> int:
    """Offset of the last b"\\n" in the file before `end`, or -1 when there is none."""
    position = end
    while position > 0:
        start = max(0, position - TAIL_BLOCK)
        found = os.pread(fd, position - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        position = start
    return -1


def whole_records_end(fd: int) -> int:
    """Where the file's last whole record ends: past a torn last line, and past an action line
    whose document was never written."""
    size = os.fstat(fd).st_size
    end = _last_newline_before(fd, size) + 1
    if end == 0:
        return 0
    line_start = _last_newline_before(fd, end - 1) + 1
    if is_action_line(os.pread(fd, end - line_start, line_start)):
        return line_start
    return end


class NdjsonDirSink:
    """Appends each batch to `<dir>/<route>.ndjson`: an `index` action line, then the document.

    A file can be replayed with `curl -H 'Content-Type: application/x-ndjson' --data-binary @FILE
    http://localhost:9200/_bulk`; the action carries the index and id, so a replay is idempotent.
    A file that would grow past `max_file_bytes` is left as it is and the batch goes into the
    route's next file (`<route>.part000002.ndjson`, ...): a file is never larger than Elasticsearch
    takes in one request, but for a single batch larger than that, alone in its file.
    """

    name = "NDJSON files"
    kept_on_stop = "what was written to the NDJSON files"
    # One batch written at a time, in the order the feed made them: a file is then the same,
    # byte for byte, for the same input (a lock serialises the appends anyway).
    posts_in_flight = 1

    def __init__(self, directory: str, create: bool = True, max_file_bytes: int = OUTPUT_MAX_BYTES):
        """`create`: make the directory now (a dry run, which writes nothing, leaves it to the run)."""
        self.directory = Path(directory)
        # The directories this sink makes, the output first, then the missing parents it needs:
        # a run refused before it began removes them again (`unmake`).
        self._made: List[Path] = []
        self._made_unsynced: List[Path] = []  # of those, the ones whose names are not flushed yet
        if path_exists(self.directory, "--output") and not is_directory(self.directory, "--output"):
            # Said so by the run as by its dry run: mkdir's "File exists" says nothing of what to fix.
            raise ConfigError("--output %s is not a directory: name a directory for the NDJSON files" % directory)
        if create:
            missing = self.directory
            while not path_exists(missing, "--output") and missing != missing.parent:
                self._made.append(missing)
                missing = missing.parent
            try:
                make_directories(self.directory)
            except OSError as error:
                raise ConfigError("cannot create output directory %s: %s" % (directory, error.strerror)) from None
            self._made_unsynced = list(self._made)
        # Posts run in parallel; two appends to one file must not interleave, nor a cut-back
        # after a failed write remove another batch's records.
        self._lock = threading.Lock()
        self._checked: Set[Path] = set()
        self.max_file_bytes = max_file_bytes
        self._parts: Dict[str, int] = {}  # route -> the number of the file its batches go into
        # Resolved once: the ledger asks for it for every object it records.
        self._destination = ndjson_destination(str(self.directory))

    def unmake(self) -> None:
        """Remove the directories this sink made while nothing is in them: called when the run
        is refused before it began (a KCING_DB that is no kcing ledger), to leave no trace."""
        for made in self._made:
            try:
                made.rmdir()
            except OSError:  # something is in it after all: left as it is, and its parents
                return

    def run_lock_made(self) -> bool:
        """Whether the lock file of `run_lock` is there (made by an earlier run, or one writing
        into the directory now)."""
        return os.path.lexists(str(self.run_lock().path))

    def run_lock(self) -> RunLock:
        """One run at a time writes into the directory, whatever ledger it keeps: another run's
        first append would take the tail of a file still being written for a torn one, and cut
        it back under a run that then records those documents as delivered."""
        return RunLock(str(self.directory / LOCK_STEM))

    def destination(self, kind: str) -> str:
        """What the ledger records as where objects were delivered: this directory."""
        return self._destination

    def destinations_key(self) -> str:
        return self._destination

    # Records end with a newline: an object's records are joined with nothing between them.
    separator = b""

    encode = staticmethod(ndjson_record)

    @staticmethod
    def sent_size(batch: Batch) -> int:
        """The bytes `send` appends for `batch` (the run's summary and metrics count them)."""
        return batch.documents_size

    def send(self, batch: Batch) -> None:
        """Append and flush to disk; only then does the pipeline record the objects as delivered.

        Raises StorageFailed (the file cut back to its last whole record) when it cannot."""
        data = batch.joined()
        with self._lock:
            route = batch.route
            if route not in self._parts:
                try:
                    self._parts[route] = last_part(self.directory, route)
                except OSError as error:
                    raise type(file_error(self.directory, error))("cannot read the output directory %s: %s" % (
                        self.directory, error.strerror)) from None
            while True:
                path = self.directory / part_name(route, self._parts[route])
                fd = open_output_file(path)
                try:
                    if self._append(fd, path, route, data):
                        return
                finally:
                    os.close(fd)
                self._parts[route] += 1  # this one is full: the batch opens the next

    def _append(self, fd: int, path: Path, route: str, data: bytes) -> bool:
        """Append `data` unless the file holds records and would grow past max_file_bytes (False)."""
        start = None
        try:
            if path not in self._checked:
                whole = whole_records_end(fd)
                if whole < os.fstat(fd).st_size:
                    os.ftruncate(fd, whole)
                self._checked.add(path)
            start = os.fstat(fd).st_size
            if start and start + len(data) > self.max_file_bytes:
                return False
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if not start:
                # A file's records outlive a power loss only once its name does: the directory
                # holding it (and those this sink made, in their parents) is flushed too.
                self._sync_directories()
            return True
        except OSError as error:
            cut = start is not None and _cut_back(fd, start)
            raise StorageFailed("cannot write the output file %s: %s; %s" % (
                path, error.strerror or error,
                "it was cut back to its last whole record" if cut else
                "its torn tail is cut back before the next run appends to it")) from None

    def _sync_directories(self) -> None:
        for directory in [self.directory] + [path.parent for path in self._made_unsynced]:
            sync_directory(directory)
        self._made_unsynced = []


def sync_directory(directory: Path) -> None:
    """fsync `directory`, so that the names made in it are on disk. A file system that cannot
    (EINVAL: some network and FUSE ones) is left to keep them as it does."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def open_output_file(path: Path) -> int:
    """Open (creating if needed) the output file at `path` for appending; return its fd.

    As kcing.files.open_own_file opens any file kcing writes: a symlink there is refused, never
    followed, and so is anything but a plain file with one name. kcing cuts a torn tail off the
    file before it appends, so a link planted at the name would have it cut and write into
    whatever the link points at.
    """
    def failure(error: OSError) -> KcingError:
        # A path to fix (a directory at the name, no permission) is exit 2, a failing disk exit 5.
        return type(file_error(path, error))("cannot open the output file %s: %s" % (path, error.strerror))

    # 0644 less the umask, as every file kcing makes: under a umask of 0 others could otherwise
    # write documents into a file that is replayed into Elasticsearch.
    return open_own_file(path, os.O_RDWR | os.O_APPEND, "output file", failure)


def _cut_back(fd: int, size: int) -> bool:
    """Remove what a failed write left past `size`; False when even that fails."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
        return True
    except OSError:
        return False
