"""The other nodes a node's documents need, fetched by id and cached for the run.

A test node holds only what the callback handler copied from its job (the kernel, the platform,
the runtime); the LAVA job id and the device are on the job node alone (upstream.md §2.9), so a
test's documents need the job at the root of its group. A regression node names its first
failing and last passing runs by id only; its document needs the failing run's lab and job, and
the passing run's kernel revision.

Jobs listed in the same run are remembered as they are listed (parents are listed before their
children), so a lookup usually costs no request; the others are asked for with
`GET <api>/node/<id>`, which answers `null` for an id it does not know. What is kept of each node
is `related_node`'s small extract, never the whole node.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Set, Tuple

from kcing.errors import UpstreamError
from kcing.objectid import is_object_id, node_id as _node_id
from kcing.records import JOB, NODE, REGRESSION, TEST

log = logging.getLogger(__name__)

# Listed jobs kept for lookups: a day of production has tens of thousands of jobs; each extract is a
# few hundred bytes. The oldest are forgotten first (children follow their parents closely).
CACHE_SIZE = 100_000
# Nodes asked for with `GET <api>/node/<id>` kept apart, the least recently used forgotten first:
# the children of one node come together. Kept with the listed jobs, each answer pushed out the
# oldest listed job, the very one the next tests needed: a run listing more jobs than CACHE_SIZE
# (a backfill of weeks lists all its jobs before its tests) asked the API once per test.
LOOKED_UP_SIZE = 10_000
# Steps up from a node to its job at least (job -> sub-group -> ... -> case); a longer `path`
# says how deep the node really is, and bounds the walk in its place.
MAX_DEPTH = 12
# The part of `data` a related node contributes to another node's documents.
RELATED_DATA = ("kernel_revision", "job_id", "device", "platform", "runtime", "error_code", "error_msg",
                "arch", "defconfig", "config_full", "compiler")
REVISION_FIELDS = ("tree", "url", "branch", "commit", "describe")
RELATED_FIELDS = ("id", "kind", "name", "path", "group", "parent", "created", "result", "state")

Fetch = Callable[[str], Optional[Mapping[str, Any]]]


def related_node(node: Mapping[str, Any]) -> dict:
    """What other nodes' documents use of `node`."""
    extract = {name: node.get(name) for name in RELATED_FIELDS}
    # The id as the documents read it (objectid.node_id): `id`, or `_id` as the API named it
    # before 2023, whose nodes the listing reads too.
    extract["id"] = _node_id(node)
    data = node.get("data") if isinstance(node.get("data"), dict) else {}
    extract["data"] = {name: data[name] for name in RELATED_DATA if data.get(name) is not None}
    revision = extract["data"].get("kernel_revision")
    if isinstance(revision, dict):  # without the commit message and tags, which can be long
        extract["data"]["kernel_revision"] = {name: revision[name] for name in REVISION_FIELDS if name in revision}
    return extract


def is_group_root(node: Mapping[str, Any]) -> bool:
    """A node is the root of its group (a job node) unless an ancestor carries the group's name."""
    group, path = node.get("group"), node.get("path")
    return not isinstance(group, str) or not isinstance(path, list) or group not in path[:-1]


class _Request:
    """A `GET <api>/node/<id>` one thread makes while others wait for its answer."""

    def __init__(self):
        self.done = threading.Event()
        self.failure: Optional[BaseException] = None  # what the request raised, if it failed


class RelatedNodes:
    """Finds a node's job and a regression's runs; `fetch_node(id)` asks the API for one node."""

    def __init__(self, fetch_node: Fetch, cache_size: int = CACHE_SIZE,
                 extract_of_head: Optional[Callable[[Any], dict]] = None, looked_up_size: int = LOOKED_UP_SIZE):
        self._fetch_node = fetch_node
        # listed node id -> its extract (a dict), or a head kept by `keep_heads`
        self._cache: "OrderedDict[str, Any]" = OrderedDict()
        self._cache_size = cache_size
        # node id asked for and not listed -> its extract, or None (unknown to the API)
        self._looked_up: "OrderedDict[str, Any]" = OrderedDict()
        self._looked_up_size = looked_up_size
        # What `related_node` makes of a whole node, from a head that `keep_heads` kept.
        self._extract_of_head = extract_of_head
        self._asked: Set[str] = set()  # the ids asked for with `fetch_node` in this run
        # node id -> the request for it being made: the tests of one job are fetched on several
        # threads at once, and each asked the API for the same parents.
        self._in_flight: Dict[str, _Request] = {}
        # node id -> (its extract, whether it is the root of its group), for the extracts kept
        # above: a walk up from a node asks it of each node on the way, and the answer scans the
        # node's whole `path`, which upstream may make as long as a page.
        self._roots: Dict[str, Tuple[dict, bool]] = {}
        self._lock = threading.Lock()

    def remember(self, node_id: str, node: Mapping[str, Any]) -> None:
        """Keep a listed job so that its children need no request."""
        self.keep_heads([(node_id, related_node(node))])

    def keep_heads(self, jobs: Iterable[Tuple[str, Any]]) -> None:
        """Keep listed jobs given as (node id, head), a head becoming its extract only when a
        lookup asks for it (`extract_of_head`): a routine run lists thousands of delivered jobs
        whose tests were delivered too, and none of those is ever looked up. An extract (a dict)
        is kept as it is."""
        jobs = list(jobs)
        with self._lock:
            cache = self._cache
            known_before = len(cache)
            cache.update(jobs)
            if len(cache) - known_before != len(jobs):  # some were kept before: they are the newest now
                for node_id, _ in jobs:
                    cache.move_to_end(node_id)
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Trim the cache to its size, oldest first (with the lock held)."""
        while len(self._cache) > self._cache_size:
            self._roots.pop(self._cache.popitem(last=False)[0], None)

    def node(self, node_id: Any) -> Optional[dict]:
        """The extract of node `node_id`, or None when the API does not know it.

        A node kept from the listing without a result was not finished when it was listed; a
        node below it that needs it now (a test its callback made meanwhile) gets it as the API
        has it now, asked for once: a job's device is only set when it finishes. A node another
        thread is asking for is waited for, not asked for again."""
        if not is_object_id(node_id):
            return None  # the API would answer 400 however often it is asked
        while True:
            with self._lock:
                known, extract = self._known(node_id)
                if known:
                    return extract
                asking = self._in_flight.get(node_id)
                if asking is None:
                    asking = self._in_flight[node_id] = _Request()
                    break
            asking.done.wait()
            if asking.failure is not None:
                # Its outcome is this node's too: the node needing it fails, for the next run,
                # as the one whose request it was. Asking again here would spend a failing
                # API's retries once more for each waiting thread, one after another.
                raise asking.failure
        try:
            found = self._fetch_node(node_id)
            extract = related_node(found) if isinstance(found, Mapping) else None
            with self._lock:
                self._asked.add(node_id)
                if node_id in self._cache:  # a listed job unfinished when listed: its answer now, in its place
                    self._cache[node_id] = extract
                else:
                    self._looked_up[node_id] = extract
                    while len(self._looked_up) > self._looked_up_size:
                        self._roots.pop(self._looked_up.popitem(last=False)[0], None)
        except BaseException as failure:
            asking.failure = failure
            raise
        finally:
            with self._lock:
                del self._in_flight[node_id]
            asking.done.set()
        return extract

    def _known(self, node_id: str) -> Tuple[bool, Optional[dict]]:
        """(True, the extract of node `node_id`) when no request is needed for it, else (False,
        None); with the lock held."""
        if node_id in self._cache:
            extract = self._cache[node_id]
            if extract is not None and type(extract) is not dict:  # a head from `keep_heads`
                extract = self._cache[node_id] = self._extract_of_head(extract)
            if extract is None or extract.get("result") is not None or node_id in self._asked:
                return True, extract
        elif node_id in self._looked_up:
            self._looked_up.move_to_end(node_id)
            return True, self._looked_up[node_id]
        return False, None

    def job_of(self, node: Mapping[str, Any]) -> Optional[dict]:
        """The job at the root of `node`'s group (its LAVA or Kubernetes job); None for a root."""
        if is_group_root(node):
            return None
        group, current, path = node.get("group"), node, node.get("path")
        for _ in range(max(MAX_DEPTH, len(path))):
            parent_id = current.get("parent")
            parent = self.node(parent_id)
            if parent is None:
                return None
            if parent.get("name") == group and self._is_group_root(parent_id, parent):
                return parent
            current = parent
        return None

    def _is_group_root(self, node_id: str, extract: dict) -> bool:
        """`is_group_root(extract)`, worked out once per extract kept: the walks of a page's
        nodes would otherwise scan the `path` of every node they pass, each time, in time that
        grows with the product of the paths' lengths."""
        with self._lock:
            known = self._roots.get(node_id)
        if known is not None and known[0] is extract:
            return known[1]
        root = is_group_root(extract)
        with self._lock:
            if node_id in self._cache or node_id in self._looked_up:  # held only while its extract is
                self._roots[node_id] = (extract, root)
        return root

    def for_envelope(self, kind: str, node: Mapping[str, Any]) -> Dict[str, Any]:
        """The related nodes the envelope of `node` carries (documents/nodes.py reads them)."""
        if kind in (JOB, TEST, NODE):
            job = self.job_of(node)
            unfinished = job is not None and job.get("result") is None and job.get("state") != "done"
            if unfinished and job.get("kind") == JOB:
                # Made now, the node's documents would lack the job's verdict and device for good:
                # the job's finished version is delivered again, but not this node, unchanged. A job
                # done without a result will not change: its nodes are made as one run over all does.
                raise UpstreamError("its job %s has not finished (no result yet): tried again by the next run"
                                    % job.get("id"))
            return {"job_node": job} if job is not None else {}
        if kind != REGRESSION:
            return {}
        data = node.get("data") if isinstance(node.get("data"), dict) else {}
        related: Dict[str, Any] = {}
        fail = self.node(data.get("fail_node"))
        if fail is not None:
            related["fail_node"] = fail
            job = self.job_of(fail)
            if job is not None:
                related["fail_job_node"] = job
        passed = self.node(data.get("pass_node"))
        if passed is not None:
            related["pass_node"] = passed
        return related


def node_from_answer(url: str, status: int, answer: Any) -> Optional[Mapping[str, Any]]:
    """Read `GET <api>/node/<id>`: the node, None for an id the API does not know."""
    if status == 404 or (status == 200 and answer is None):
        return None
    if status != 200:
        raise UpstreamError("GET %s answered %d" % (url, status))
    if not isinstance(answer, dict):
        raise UpstreamError("GET %s answered %s, not a node" % (url, type(answer).__name__))
    return answer
