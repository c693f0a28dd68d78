"""gen_samples: save upstream files into a samples directory, with a manifest, safely.

File names are built here from validated parts (`<kind>/<upstream id>.json`), never taken from
upstream text, and every path is checked to stay inside the samples directory. Files are
written to a temporary name and renamed, so an interrupted run never leaves half a file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

from kcing.documents import json_object
from kcing.documents.identity import iso_timestamp
from kcing.errors import ConfigError, RejectedInput, UpstreamError
from kcing.files import holds, make_directories, remove_partial_files, write_atomically
from kcing.plural import counted
from kcing.progress import Progress, eta_text
from kcing.records import JOB, KBUILD, OBJECT_KINDS, UpstreamObject
from kcing.sources import completed
from kcing.sources.localfiles import (MANIFEST, MANIFEST_FORMAT, SAFE_ID, file_inside, read_bounded, read_manifest,
                                     sample_read_limit)

log = logging.getLogger(__name__)


def sample_path(root: Path, kind: str, upstream_id: str) -> Path:
    """Return `<root>/<kind>/<upstream_id>.json`, or raise ValueError for any unsafe part."""
    if kind not in OBJECT_KINDS:
        raise ValueError("unknown kind %r" % (kind,))
    if not isinstance(upstream_id, str) or not SAFE_ID.match(upstream_id) or ".." in upstream_id:
        raise ValueError("unsafe upstream id %r" % (upstream_id,))
    resolved_root = root.resolve()
    # The directory resolved, not the file's own name: a symlink there (to another sample) is
    # what a write replaces, never a file it leads to.
    directory = (resolved_root / kind).resolve()
    if directory != resolved_root and resolved_root not in directory.parents:
        raise ValueError("%r would leave %s" % (kind, root))
    return directory / (upstream_id + ".json")


@dataclass
class SampleRun:
    saved: int = 0
    unchanged: int = 0
    failed: int = 0
    refused: int = 0
    # Why the listing ended early (a page still refused after its retries): what it listed
    # before was saved all the same, and the run ends with it.
    listing_failure: Optional[UpstreamError] = None


# The keys of a manifest gen_samples writes.
MANIFEST_KEYS = ("format", "source", "objects")
# What gen_samples reads of each manifest entry it keeps (and writes back as it found it).
ENTRY_KEYS = ("kind", "upstream_id", "path", "sha256")
# The KernelCI API node kinds whose saved envelope holds a log with --with-logs (a job's LAVA
# callback, a kbuild's build.log): their entries say whether it was saved with one.
WITH_LOGS_KINDS = (JOB, KBUILD)


def create_samples_dir(root: str) -> None:
    try:
        make_directories(Path(root))
    except OSError as error:
        if os.path.lexists(root):  # a file there, or a link to none
            raise ConfigError("samples directory %s is not a directory: name a directory for the samples"
                              % root) from None
        raise ConfigError("cannot create samples directory %s: %s" % (root, error.strerror)) from None


class SamplesWriter:
    """Keeps the manifest of a samples directory and adds downloaded files to it.

    A manifest it cannot read whole is refused (ConfigError) and left as it is: rewriting it
    would drop the entries it could not read.
    """

    def __init__(self, root: str, source_name: str, max_bytes: int, with_logs: bool = False):
        self.root = Path(root)
        self.source_name = source_name
        self.with_logs = with_logs
        # KCI_MAX_OBJECT_BYTES: no download is larger (a node's envelope with its log may be).
        self.max_bytes = max_bytes
        create_samples_dir(root)
        manifest = self._read_manifest()
        self.entries: Dict[tuple, dict] = {(entry["kind"], entry["upstream_id"]): entry
                                           for entry in manifest.get("objects", [])}
        # What else a manifest edited by hand holds (a note on where the samples came from):
        # written back as it was, as entries' own keys are.
        self.kept = {key: value for key, value in manifest.items() if key not in MANIFEST_KEYS}
        # The caller holds the samples directory's lock: what is half written there, a killed
        # run's, is no other run's.
        left = sum(remove_partial_files(directory) for directory in
                   [self.root, *(self.root / kind for kind in OBJECT_KINDS)])
        if left:
            log.info("removed %s a stopped run left in %s", counted(left, "partly written file"), self.root)

    def _read_manifest(self) -> dict:
        path = self.root / MANIFEST
        manifest = read_manifest(path)
        if manifest is None:
            return {}
        if not isinstance(manifest, dict) or not isinstance(manifest.get("objects", []), list):
            raise ConfigError("%s is not a samples manifest (an object with an \"objects\" list); "
                              "fix or move it" % path)
        for number, entry in enumerate(manifest.get("objects", []), 1):
            if not isinstance(entry, dict):
                raise ConfigError("%s: entry %d is not an object with %s; fix or move the manifest"
                                  % (path, number, ", ".join(ENTRY_KEYS)))
            lacking = [key for key in ENTRY_KEYS if not isinstance(entry.get(key), str)]
            if lacking:
                # Which: "lacks one of kind, upstream_id, path, sha256" sent a user through all four,
                # where a hand-made manifest (which a replay takes) most often has no sha256.
                raise ConfigError("%s: entry %d lacks %s (as text): gen_samples keeps only entries whose file it "
                                  "can check; fix or move the manifest" % (path, number, " and ".join(lacking)))
        if manifest.get("source") not in (None, self.source_name):
            raise ConfigError("%s holds %s samples, not %s" % (self.root, manifest.get("source"), self.source_name))
        return manifest

    def already_saved(self, obj: UpstreamObject) -> bool:
        """True when the manifest lists the object and its file is there with the recorded hash."""
        entry = self.entries.get((obj.kind, obj.upstream_id))
        if entry is None:
            return False
        if self.with_logs and obj.kind in WITH_LOGS_KINDS and entry.get("with_logs") is not True:
            # Saved without its log (by a run without --with-logs, or before entries said):
            # this run saves it again, with it. The reverse keeps the file that has the log.
            return False
        try:
            path = sample_path(self.root, obj.kind, obj.upstream_id)
        except ValueError:  # add() refuses it, saying why
            return False
        if entry["path"] != path.relative_to(self.root.resolve()).as_posix():
            # An entry edited to name another file (a FIFO there would block the run, a device
            # never end): the object is saved again where gen_samples keeps it.
            return False
        if file_inside(self.root, entry["path"]) is None:
            # A link there leading outside the directory (a file moved to another disk and
            # linked back): the replay refuses to follow it, so the object is saved again, the
            # link replaced by the file.
            return False
        try:
            # As a replay reads it: a regular file, of at most the size a download may have or
            # the entry records.
            content = read_bounded(path, sample_read_limit(self.max_bytes, {
                "content_sha256": entry["sha256"], "content_size": entry.get("size")}))
        except UpstreamError:
            return False
        # Hex digits in either case, as the replay reads them (a hash recorded by hand in
        # capitals, as PowerShell's Get-FileHash prints it, is the same hash).
        now = hashlib.sha256(content).hexdigest()
        if now == entry["sha256"].lower():
            return True
        if content:
            # Edited by hand, its manifest entry left as it was, or corrupted: the file upstream
            # serves replaces it. Said, so that an edit is not lost unawares.
            log.warning("%s %s: %s is not the file its manifest entry describes (sha256 %s, the file's %s); it is "
                        "replaced by upstream's (to keep an edit, record its sha256 and size in the manifest first)",
                        obj.kind, obj.upstream_id, path, entry["sha256"][:12], now[:12])
        return False

    def add(self, obj: UpstreamObject, content: bytes) -> None:
        """Save one object's file and its manifest entry. The entry is made first (a large file's
        hash takes a while) and recorded with the file: a signal (KeyboardInterrupt, at any
        bytecode) before the file is renamed into place leaves the file and entry as they were,
        and one after it still records the entry, which the manifest written at the end names
        (a file saved and named by no entry was left out of the replay; a job saved again with
        its log was called changed since it was saved)."""
        path = sample_path(self.root, obj.kind, obj.upstream_id)
        entry = {
            "kind": obj.kind, "upstream_id": obj.upstream_id,
            "path": path.relative_to(self.root.resolve()).as_posix(), "url": obj.url,
            "sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
            "date": iso_timestamp(obj.created) if obj.created else None,
        }
        if "listing" in obj.facts:
            entry["listing"] = obj.facts["listing"]
        if obj.kind in WITH_LOGS_KINDS:
            entry["with_logs"] = self.with_logs
        key = (obj.kind, obj.upstream_id)
        recorded = False
        try:
            write_atomically(path, content)
            self.entries[key] = entry
            recorded = True
        finally:
            if not recorded and holds(path, content):  # read only when the save was interrupted
                self.entries[key] = entry

    def save_manifest(self) -> None:
        objects = sorted(self.entries.values(), key=_manifest_order)
        manifest = dict(self.kept, format=MANIFEST_FORMAT, source=self.source_name, objects=objects)
        write_atomically(self.root / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def _manifest_order(entry: dict) -> tuple:
    """Entries by date, then id. A date that is not text (a manifest edited by hand: a number, a
    list) sorts as no date: it is kept as it is, and a sort comparing it with text would fail."""
    date = entry.get("date")
    return (date if isinstance(date, str) else "", entry["upstream_id"])


def gen_samples(source, writer: SamplesWriter, threads: int = 4, progress: Optional[Progress] = None,
                stop: Optional[threading.Event] = None) -> SampleRun:
    """Download every listed object not yet saved. The manifest is rewritten at the end, and as
    often as progress is logged while files are saved: a run killed on the way (SIGKILL, a
    reboot) keeps what it saved until then, and the next run does not download it again.

    `stop`, the source's (its retry waits end and its downloads are cut once it is set), is set
    when the run is interrupted (SIGINT, SIGTERM): the downloads in flight end at once, those not
    begun never start, and the manifest is written with every file saved, in the time a signal
    leaves the process (kcing.shutdown.URGENT_EXIT_SECONDS)."""
    run = SampleRun()
    progress = progress or Progress("gen_samples", live=False)
    started, wanted = time.monotonic(), []
    manifest_saved_at, manifest_saved_with = started, 0  # when, and with how many files this run saved

    def text() -> str:
        done = run.saved + run.failed + run.refused
        elapsed = max(time.monotonic() - started, 1e-9)
        return ("listed %d, already present %d, saved %d, failed %d, refused %d (%.1f files/s)%s"
                % (len(wanted) + run.unchanged + run.refused, run.unchanged, run.saved, run.failed, run.refused,
                   run.saved / elapsed, eta_text(done, len(wanted) + run.refused, elapsed)))

    # A source that may find a file elsewhere than its listed URL (legacy storage's fallbacks) says
    # where: the manifest records the file's own URL.
    served = getattr(source, "fetch_served", None) or (lambda obj: (obj.url, source.fetch(obj)))

    def fetch(obj: UpstreamObject) -> Optional[Tuple[UpstreamObject, bytes]]:
        try:
            url, content = served(obj)
        except (UpstreamError, RejectedInput) as error:
            log.warning("could not save %s %s: %s", obj.kind, obj.upstream_id, error)
            return None
        try:
            # No JSON object: a web page in the file's place (a proxy's 502 or login page, sent
            # with 200; said as one by json_object), or a file cut short (one storage was still
            # writing, served whole as it was). Saved, it would be "already present" for every
            # later run, and its replay rejected: the next run asks for it again instead.
            json_object(content)
        except RejectedInput as error:
            log.warning("could not save %s %s: %s; the next run asks again", obj.kind, obj.upstream_id, error)
            return None
        return replace(obj, url=url), content

    # Kept up also while a listing page or every download in flight waits (KCI_DOWNLOAD_DEADLINE).
    with progress.kept_up(text), _stopped_when_interrupted(stop):
        try:
            for listed in source.list_objects():
                obj = completed(source, listed)
                if obj.problem:
                    run.refused += 1
                    log.warning("refused %s %s: %s", obj.kind, obj.upstream_id, obj.problem)
                elif writer.already_saved(obj):
                    run.unchanged += 1
                else:
                    wanted.append(obj)
                progress.update(text)
        except UpstreamError as error:
            # A page that failed after its retries costs not the objects listed before it (the
            # builds, when the boot listing fails), as in a feed.
            run.listing_failure = error
        try:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sample") as pool, \
                    _stopped_when_interrupted(stop, pool):
                for obj, fetched in zip(wanted, pool.map(fetch, wanted)):
                    _save(writer, obj, fetched, run)
                    progress.update(text)
                    now = time.monotonic()
                    if run.saved > manifest_saved_with and now - manifest_saved_at >= progress.every:
                        writer.save_manifest()
                        manifest_saved_at, manifest_saved_with = now, run.saved
        finally:
            progress.finish(text)
            writer.save_manifest()
    return run


@contextmanager
def _stopped_when_interrupted(stop: Optional[threading.Event], pool: Optional[ThreadPoolExecutor] = None):
    """Set `stop` and drop the downloads `pool` has not begun when the block is interrupted:
    leaving the pool would otherwise wait for every download, the queued ones included."""
    try:
        yield
    except BaseException:
        if stop is not None:
            stop.set()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise


def _save(writer: SamplesWriter, obj: UpstreamObject, fetched: Optional[Tuple[UpstreamObject, bytes]],
          run: SampleRun) -> None:
    if fetched is None:
        run.failed += 1
        return
    try:
        writer.add(*fetched)
    except ValueError as error:
        run.refused += 1
        log.warning("refused %s %s: %s", obj.kind, obj.upstream_id, error)
        return
    run.saved += 1
