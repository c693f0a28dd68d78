"""Local sources: a saved samples directory (with its manifest), or files named on the command line."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from kcing.documents.coerce import iso_time
from kcing.files import NotRegularFile, as_text, opened_regular
from kcing.errors import ConfigError, LockHeld, ObjectTooLarge, RejectedInput, UpstreamError, reading_failure, shown
from kcing.records import NODE_KINDS, OBJECT_KINDS, UpstreamObject
from kcing.runlock import lock_holder
from kcing.sources.gzipped import GZIP_MAGIC, MAX_ARTIFACT_BYTES, gunzip, gzip_problem

log = logging.getLogger(__name__)

# What `manifest.json` says in "format" (gen_samples writes it; a hand-made one may leave it out).
MANIFEST_FORMAT = 1
# A manifest entry takes about 200 bytes: room for millions of them, and no more.
MANIFEST_MAX_BYTES = 1 << 30
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
MANIFEST = "manifest.json"
# The largest file a manifest entry's `size` may vouch for (see sample_read_limit): a KernelCI API
# node's log, saved in its envelope, is at most MAX_ARTIFACT_BYTES decoded, and its JSON
# escapes take a few bytes for some of its characters.
SAMPLE_MAX_BYTES = 8 * MAX_ARTIFACT_BYTES


# The sources whose files are copies kept here (SamplesDir, LocalFiles): a user gives their
# objects' dates (`--date`, a manifest's `date`), and a re-send must find them as they were
# delivered.
LOCAL_SOURCES = ("samples", "files")
# Characters of its name the ledger id of a local file that could not be read keeps.
UNREAD_NAME_CHARACTERS = 100


# The samples a clone of kcing holds (`make demo` replays them); an installed package has none.
BUNDLED_SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def no_samples_problem(directory: str, manifest: Path) -> str:
    """Why there is nothing to replay at `directory`. One that does not exist is most often the
    default `samples`, looked for in a working directory other than the clone (a cron line
    without its `cd`, the help's example tried elsewhere): say where the bundled ones are."""
    if os.path.isdir(directory):
        return "%s not found: is %s a samples directory?" % (manifest, directory)
    where = "" if os.path.isabs(directory) else " in the working directory %s" % os.path.abspath(".")
    bundled = (BUNDLED_SAMPLES / MANIFEST).is_file() and Path(os.path.abspath(directory)) != BUNDLED_SAMPLES
    return "samples directory %s does not exist%s: name one with --samples-dir or KCI_SAMPLES_DIR%s" % (
        directory, where, " (kcing's bundled samples are %s)" % BUNDLED_SAMPLES if bundled else "")


class SamplesDir:
    """Replays `samples/`: `manifest.json` lists each saved file with its kind, id and date."""

    name = "samples"

    def __init__(self, directory: str, max_bytes: int):
        self.root = Path(directory)
        self.max_bytes = max_bytes
        manifest = self.root / MANIFEST
        self.manifest = read_manifest(manifest)
        if self.manifest is None:
            writing = lock_holder(str(manifest))
            if writing:
                # Not a wrong directory: a gen_samples is filling it, and writes the manifest as it
                # logs its progress and as it ends.
                raise LockHeld("%s has no manifest.json yet: a gen_samples (pid %s) is saving samples into it; try "
                               "again when it ends" % (directory, writing[0]))
            raise ConfigError(no_samples_problem(directory, manifest))
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("objects"), list):
            raise ConfigError("%s has no \"objects\" list" % manifest)
        # The manifest as it is on disk now, read again when a file is not the one this run read
        # it to describe: (the manifest file's identity, {(kind, id): (sha256, path)}).
        self._now_on_disk: Tuple[tuple, Dict[tuple, tuple]] = ((), {})
        self._rereading = threading.Lock()

    def list_objects(self) -> Iterator[UpstreamObject]:
        objects = [self._object_from(number, entry) for number, entry in enumerate(self.manifest["objects"], 1)]
        return listed_once(iter(oldest_versions_first(without_refused_copies(objects, MANIFEST))), MANIFEST)

    def fetch(self, obj: UpstreamObject) -> bytes:
        content = read_bounded(Path(obj.url), sample_read_limit(self.max_bytes, obj.facts))
        problem = sample_mismatch(obj.url, content, obj.facts.get("content_sha256"))
        if problem and not self._saved_again(obj, content):
            # Failed, not rejected: the next run tries it again, once the saved file is back.
            raise UpstreamError(problem)
        return content

    def _saved_again(self, obj: UpstreamObject, content: bytes) -> bool:
        """Whether the manifest now on disk records `content` as `obj`'s file: a gen_samples
        beside this run saved the file again (`--with-logs` adds a node's log to it) and recorded
        its new sha256 after this run read the manifest. The file is then the sample, not one
        changed since it was saved, and the ledger records the sha256 it is delivered with."""
        recorded = self._entries_on_disk().get((obj.kind, obj.upstream_id))
        return (recorded is not None and recorded[0] == hashlib.sha256(content).hexdigest()
                and recorded[1] == Path(obj.url))

    def _entries_on_disk(self) -> Dict[tuple, tuple]:
        """{(kind, upstream id): (sha256, file)} of the manifest as it is on disk, read again only
        when the file has changed since it was last read (a new one renamed over it)."""
        path = self.root / MANIFEST
        with self._rereading:
            try:
                found = os.stat(path)
                identity = (found.st_ino, found.st_size, found.st_mtime_ns)
            except OSError:
                return {}
            if identity != self._now_on_disk[0]:
                try:
                    manifest = read_manifest(path)
                except ConfigError:
                    manifest = None
                entries = manifest.get("objects") if isinstance(manifest, dict) else None
                self._now_on_disk = (identity, {
                    (entry.get("kind"), entry.get("upstream_id")): (entry["sha256"].lower(),
                                                                    file_inside(self.root, entry.get("path")))
                    for entry in (entries if isinstance(entries, list) else [])
                    if isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("kind"), str) and isinstance(entry.get("upstream_id"), str)})
            return self._now_on_disk[1]

    def _object_from(self, number: int, entry) -> UpstreamObject:
        if not isinstance(entry, dict):
            return UpstreamObject(self.name, "unknown", "entry-%d" % number, "", problem="manifest entry is not an object")
        kind, upstream_id = entry.get("kind"), entry.get("upstream_id")
        created = _parse_date(entry.get("date"))
        if created is None and entry.get("date") is not None:
            # The file may carry dates of its own (a LAVA callback); a file without is rejected then.
            log.warning("%s, entry %d: date %s is not a date; the file's own dates are used, if it has any",
                        MANIFEST, number, json.dumps(entry.get("date"))[:80])
        problem = None
        if kind not in OBJECT_KINDS:
            problem, kind = "unknown kind %s" % shown(kind), "unknown"
        if not isinstance(upstream_id, str) or not SAFE_ID.match(upstream_id):
            problem, upstream_id = problem or "invalid upstream_id %s" % shown(upstream_id), "entry-%d" % number
        path = file_inside(self.root, entry.get("path"))
        if path is None:
            problem = problem or "path %s is not a file inside %s%s" % (shown(entry.get("path")), self.root,
                                                                          _why_outside(entry.get("path")))
        sha256 = entry.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and SHA256_HEX.match(sha256)):
            problem = problem or "sha256 %s is not 64 hex digits" % json.dumps(sha256)[:80]
        facts = {"url": entry.get("url")}
        if sha256 is not None and not problem:
            # What the file held when it was saved: the content is known before it is read, and
            # the listing delivers again a sample whose delivered content was another.
            facts["content_sha256"] = sha256.lower()
            facts["content_size"] = entry.get("size")
        if isinstance(entry.get("listing"), dict):
            facts["listing"] = entry["listing"]  # names the lab of a file that does not
        if kind in NODE_KINDS and not problem:
            # A KernelCI API node version is `<node id>.<updated>`: two versions of one node make
            # documents with the same ids, and the newer must reach Logstash after the older.
            facts["node_id"] = upstream_id.split(".", 1)[0]
        return UpstreamObject(self.name, kind, upstream_id, str(path or ""), created, facts, problem=problem)


class SavedSamples:
    """The sample files the ledger names, for `reconcile --resend`.

    The ledger keeps a sample's path, not its manifest entry: `restore` takes back from the
    manifest beside it what the samples feed listed with the file (the listing item and the
    storage URL, which name the lab of a LAVA file that does not name its own).
    """

    name = "samples"

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.listed = {}  # samples directory -> {(kind, upstream id): object as the samples feed lists it}

    def restore(self, obj: UpstreamObject) -> UpstreamObject:
        root = Path(obj.url).parent.parent  # a sample is <root>/<kind>/<upstream id>.json
        if root not in self.listed:
            try:
                self.listed[root] = {(listed.kind, listed.upstream_id): listed
                                     for listed in SamplesDir(str(root), self.max_bytes).list_objects()
                                     if not listed.problem}
            except ConfigError as error:  # moved or unreadable: the file's own reading says more
                log.debug("%s: %s", root, error)
                self.listed[root] = {}
        listed = self.listed[root].get((obj.kind, obj.upstream_id))
        if listed is None or listed.url != obj.url:
            return obj
        return replace(obj, facts=dict(listed.facts, **obj.facts))

    def fetch(self, obj: UpstreamObject) -> bytes:
        return read_bounded(Path(obj.url), sample_read_limit(self.max_bytes, obj.facts))


class LocalFiles:
    """Files given on the command line (`--builds`, `--lavas`, `--boots`), identified by content hash.

    They are dated by their content, as crawled files are, never by their modification time
    (which says when a copy was made, and would put the same build in another index than the
    crawl did, under the same id). `date` (`--date`) stands in for the listing date of files
    that carry none; without it such files are refused with a reason that says so.
    """

    name = "files"

    def __init__(self, files: Sequence[Tuple[str, str]], max_bytes: int, date: Optional[datetime] = None):
        self.files = list(files)  # (kind, path)
        self.kinds = tuple(dict.fromkeys(kind for kind, _ in self.files))
        self.date = date
        self.max_bytes = max_bytes

    def list_objects(self) -> Iterator[UpstreamObject]:
        return listed_once(self._listed(), "the files given")

    def _listed(self) -> Iterator[UpstreamObject]:
        for kind, path in self.files:
            try:
                content = read_bounded(Path(path), self.max_bytes)
            except UpstreamError as error:
                # Its name is its id: as the ledger can store it, a name that is not UTF-8 included.
                # Messages name it as given: the id would call a file too large or unreadable missing.
                yield UpstreamObject(self.name, kind, _unread_id(as_text(path)), path,
                                     facts={"file": as_text(path), "unread": True}, problem=str(error))
                continue
            try:
                # Known by what it holds: a gzip-compressed copy (an archive's `.json.gz`, compressed
                # at any time, which gzip writes into the file) is the file itself, not another one.
                content = gunzipped(path, content, self.max_bytes)
            except RejectedInput:
                pass  # known by its bytes; fetching it rejects it, saying why
            yield UpstreamObject(self.name, kind, hashlib.sha256(content).hexdigest(),
                                 str(Path(path).resolve()), self.date, {"file": as_text(path)})

    def fetch(self, obj: UpstreamObject) -> bytes:
        return gunzipped(obj.url, read_bounded(Path(obj.url), self.max_bytes), self.max_bytes)


def _unread_id(name: str) -> str:
    """The ledger id of a file that could not be read: `missing:` and its name, of which a long
    one keeps its end, after a hash of the whole: two long paths that end alike (the same file
    name in two deep directories) are two objects, not one listed twice."""
    if len(name) <= UNREAD_NAME_CHARACTERS:
        return "missing:" + name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return "missing:%s~%s" % (digest, name[-(UNREAD_NAME_CHARACTERS - len(digest) - 1):])


def gunzipped(path: str, content: bytes, max_bytes: int) -> bytes:
    """The content of a file given gzip-compressed (`lava-json-<board>.json.gz` from an archive, an
    API job's `lava_callback.json.gz` artifact: upstream.md §2.7), held to `max_bytes` once
    decompressed; any other file as it is. A broken or too large one is rejected, saying so."""
    if content[:2] != GZIP_MAGIC:
        return content
    try:
        return gunzip(content, max_bytes)
    except ValueError as error:
        raise RejectedInput(gzip_problem(path, error)) from None


def file_inside(root: Path, relative) -> Optional[Path]:
    """The file the manifest path `relative` names, with every symbolic link on the way
    followed, when it stays inside the samples directory `root`; None when it leaves it (`..`,
    an absolute path, or a link leading outside) or names nothing a path can."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    try:
        resolved_root = root.resolve()
        candidate = (resolved_root / relative).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return None
    if resolved_root not in candidate.parents:
        return None
    try:
        looped = candidate.is_symlink()
    except OSError:  # a name too long for the system: reading the file says so, for that entry alone
        return candidate
    if looped:
        # A symlink loop: from Python 3.13 resolve() stops at it without an error, and a
        # resolved path is otherwise never a link.
        return None
    return candidate


def _why_outside(relative) -> str:
    """What to add to "path X is not a file inside DIR" for a manifest path that names a place
    inside the directory (`build/<id>.json`, which a user sees there): a symbolic link on the way
    leads out, or round in a loop."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or os.path.isabs(relative):
        return ""
    lexical = os.path.normpath(relative)
    if lexical == os.curdir or lexical == os.pardir or lexical.startswith(os.pardir + os.sep):
        return ""
    return (": a symbolic link on the way leads out of it, or round in a loop, and a replay follows neither "
            "(gen_samples saves a sample's file in its place)")


def sample_read_limit(max_bytes: int, facts: dict) -> int:
    """The most bytes the sample `facts` describe may hold when read back: KCI_MAX_OBJECT_BYTES,
    or the `size` its manifest entry records, when larger, for an entry recording a sha256 too.

    gen_samples saves a KernelCI API node with the log `--with-logs` adds as one file, larger
    than any download was when the log is large (a log up to MAX_ARTIFACT_BYTES once decompressed,
    its text escaped in JSON): the feed of the node built its documents from it, and the replay
    must take the file it saved, under the same settings. The sha256 check after reading makes
    sure the file is that one, and only a size up to SAMPLE_MAX_BYTES is taken at its word."""
    recorded = facts.get("content_size") if facts.get("content_sha256") else None
    if type(recorded) is int and max_bytes < recorded <= SAMPLE_MAX_BYTES:
        return recorded
    return max_bytes


def sample_mismatch(path: str, content: bytes, saved_sha256: Optional[str]) -> Optional[str]:
    """Why `content`, read from the sample at `path`, is not the file its manifest entry
    describes (another SHA-256: edited, corrupted, or written over since it was saved); None when
    it is, or when the entry records no hash (a hand-made manifest)."""
    if saved_sha256 is None:
        return None
    now = hashlib.sha256(content).hexdigest()
    if now == saved_sha256:
        return None
    return ("%s is not the file its manifest entry describes (sha256 %s, the file's %s): it changed since it "
            "was saved; put the saved file back (gen_samples saves it again) or, for an edit on purpose, record "
            "its new sha256 and size in the manifest" % (path, saved_sha256[:12], now[:12]))


def oldest_versions_first(objects: List[UpstreamObject]) -> List[UpstreamObject]:
    """`objects` in their order, but for the versions of one KernelCI API node, which take the
    places the node's versions hold in it oldest first (`<node id>.<updated>`: the ids sort as
    the times do). Their documents have the same ids: the one delivered last is the one
    Elasticsearch keeps, and a manifest edited or merged by hand may list a newer version first."""
    places: Dict[tuple, List[int]] = {}
    for place, obj in enumerate(objects):
        if not obj.problem and obj.kind in NODE_KINDS:
            places.setdefault(obj.lineage, []).append(place)
    ordered = list(objects)
    for held in places.values():
        if len(held) > 1:
            for place, obj in zip(held, sorted((objects[place] for place in held), key=lambda obj: obj.upstream_id)):
                ordered[place] = obj
    return ordered


def without_refused_copies(objects: List[UpstreamObject], where: str) -> List[UpstreamObject]:
    """`objects` less the refused ones (a `path` leaving the directory, a malformed `sha256`) of
    the kind and id of one accepted: a manifest entry copied by hand and spoilt. Refused, the copy
    took the object's ledger row, which said it delivered, to `rejected`, and once the copy was
    removed the next replay delivered the object again."""
    accepted = {(obj.kind, obj.upstream_id) for obj in objects if not obj.problem}
    kept = []
    for obj in objects:
        if obj.problem and (obj.kind, obj.upstream_id) in accepted:
            log.warning("%s is listed again in %s, refused (%s); the entry accepted for it is delivered once",
                        obj.label, where, obj.problem)
            continue
        kept.append(obj)
    return kept


def listed_once(objects: Iterator[UpstreamObject], where: str) -> Iterator[UpstreamObject]:
    """`objects` without the repeats of one already listed (a manifest entry given twice, the
    same content in two files, a missing file named twice): the feed delivers, or refuses, and
    records each object once per run."""
    first_listed = {}  # (kind, upstream id) -> the object listed first
    refused = set()  # (kind, upstream id, problem) of the objects refused so far
    for obj in objects:
        key = (obj.kind, obj.upstream_id)
        if obj.problem:
            # The same refusal again (a bad entry copied, a missing file named twice) is the same
            # ledger row: reported and counted once, as a repeat listed whole is delivered once.
            if key + (obj.problem,) in refused:
                log.warning("%s is listed again in %s, refused for the same reason; it is reported once",
                            obj.label, where)
                continue
            refused.add(key + (obj.problem,))
            yield obj
            continue
        if key in first_listed:
            # Named with the one listed first: "copy.json is listed again" said nothing of which
            # other file, of the ten given, it repeats.
            log.warning("%s is listed again in %s (%s, the same as %s); it is delivered once",
                        obj.label, where, _one_line(obj.url), _one_line(first_listed[key].url))
            continue
        first_listed[key] = obj
        yield obj


def _one_line(name: str) -> str:
    return name if name.isprintable() else repr(name)


def read_manifest(path: Path):
    """The decoded JSON of the samples manifest at `path` (its shape is the caller's to check),
    None when there is none; ConfigError for a file that cannot be read as one, or that names a
    format this kcing does not know (a manifest written by a newer kcing: entries read by these
    rules could be wrong)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        pass  # said in the system's words by the reading below ("Not a directory")
    try:
        # As a sample file is read: a FIFO or a device in its place would block or never end.
        # A leading byte order mark allowed, as in any JSON file kcing reads: an editor may put
        # one in front of a manifest edited by hand (Windows' Notepad did by default).
        text = read_bounded(path, MANIFEST_MAX_BYTES).decode("utf-8-sig")
        if not text.strip():
            # Said so, not as JSON's "Expecting value: line 1 column 1 (char 0)".
            raise ConfigError("cannot read %s: an empty file, not a samples manifest" % path)
        manifest = json.loads(text)
    except UpstreamError as error:
        raise ConfigError(str(error)) from None
    except UnicodeDecodeError as error:
        raise ConfigError("cannot read %s: %s" % (path, reading_failure(error))) from None
    except ValueError as error:  # a manifest cut short, or edited into one that is not JSON
        raise ConfigError("cannot read %s: not valid JSON: %s" % (path, reading_failure(error))) from None
    except RecursionError:  # the standard library's decoder recurses once per level
        raise ConfigError("cannot read %s: not valid JSON: nested too deeply" % path) from None
    if isinstance(manifest, dict) and "format" in manifest:
        written = manifest["format"]
        if type(written) is not int or written != MANIFEST_FORMAT:
            raise ConfigError("%s is a samples manifest of format %s; this kcing reads format %d"
                              % (path, json.dumps(written)[:40], MANIFEST_FORMAT))
    return manifest


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path`, held to `max_bytes` (KCI_MAX_OBJECT_BYTES) as a
    download is: a larger file is refused (ObjectTooLarge) before it is read. So is anything but
    a regular file (opened_regular: a device such as /dev/zero never ends, and a FIFO blocks
    until a writer comes)."""
    try:
        with opened_regular(path) as file:
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                raise ObjectTooLarge("%s: %d bytes, more than the limit of %d: raise KCI_MAX_OBJECT_BYTES to take it"
                                     % (path, size, max_bytes))
            content = file.read(max_bytes + 1)
    except NotRegularFile:
        raise UpstreamError("cannot read %s: not a regular file" % path) from None
    except OSError as error:
        raise UpstreamError("cannot read %s: %s" % (path, error.strerror or error)) from None
    if len(content) > max_bytes:  # it grew while being read
        raise ObjectTooLarge("%s: more than the limit of %d bytes: raise KCI_MAX_OBJECT_BYTES to take it"
                             % (path, max_bytes))
    return content


def _parse_date(value):
    """A manifest's `date`, which stands for the listing's, read as upstream times are
    (`iso_time`): in UTC, as the ledger and the index names take it."""
    return iso_time(value) if isinstance(value, str) else None
