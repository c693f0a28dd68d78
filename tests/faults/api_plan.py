"""Seeded fault plans for the KernelCI API source: the settings, how the node history evolves
between and during runs, and which faults each run gets, at which count.

`make_plan(seed)` is a pure function of the seed, so a failing scenario is replayed by its seed
alone. Faults are armed at a count of what the servers see (the N-th listing page, artifact GET
or POST Logstash stored), as in tests/faults/plan.py, whose timeouts this plan shares.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from tests.fakes import rogue_http
from tests.faults.api_world import ApiWorld
from tests.faults.plan import CLEAN_TIMEOUT, FAULTY_DEADLINE, FAULTY_MAX_OBJECT_BYTES, FAULTY_TIMEOUT

ROUTES = ("lava", "lava", "lava", "build", "regression")  # weighted by how many POSTs each input gets
NODES = "/latest/nodes"
TRUNCATED_PAGES = (b'{"items":[{"id":"670f0c27493b6b8', b'{"items":[', b'{"items":[],"total":', b'{')
MALFORMED_PAGES = (b"[]", b'{"items":null,"total":3}', b"<html><body>Bad Gateway</body></html>", b"",
                   b'{"items":[],"total":"many"}', b"\xff\xfe\x00{")


@dataclass
class ApiFault:
    family: str
    run: int
    detail: str
    units: int = 1
    arm: Callable[[ApiWorld], None] = lambda world: None
    commit_kill: Optional[Tuple[int, float]] = None
    kill_after: Optional[float] = None
    at_once: bool = False  # armed whole before the run, not at a count

    def __str__(self) -> str:
        return "%s (run %d): %s" % (self.family, self.run, self.detail)


@dataclass
class ApiPlan:
    seed: int
    settings: Dict[str, str]
    with_logs: bool
    second_urls: Tuple[str, ...]
    first_trees: int
    faulty_runs: int
    between: Dict[int, int]  # run -> changes made before it
    during: Dict[int, List[Tuple[str, int, int]]]  # run -> (page event, its count, changes made before it)
    faults: List[ApiFault] = field(default_factory=list)

    def for_run(self, run: int) -> List[ApiFault]:
        return [fault for fault in self.faults if fault.run == run]

    def describe(self) -> str:
        lines = ["API fault scenario seed=%d (replay: KCING_API_FAULT_SEED=%d KCING_API_FAULT_SCENARIOS=1 "
                 "pytest tests/test_api_faults.py)" % (self.seed, self.seed),
                 "settings: %s%s%s" % (" ".join("%s=%s" % item for item in self.settings.items()),
                                       " --with-logs" if self.with_logs else "",
                                       " second inputs: %s" % ",".join(self.second_urls) if self.second_urls else ""),
                 "%d tree(s) first, %d faulty run(s); changes before runs %s, during runs %s"
                 % (self.first_trees, self.faulty_runs, self.between, self.during)]
        lines += ["  %s" % fault for fault in self.faults]
        return "\n".join(lines)


def _after(moment: int, what: str) -> str:
    return "from the start" if moment <= 0 else "after %s %d" % (what, moment)


# The API's listing -------------------------------------------------------------------------------

def _at_page(rng, family, run, units, describe, inject):
    page = rng.randint(0, 4)
    return ApiFault(family, run, "%s %s" % (describe, _after(page, "listing page")), units,
                    lambda w: w.hooks.at("page", page, lambda: inject(w)))


def listing_5xx(rng, run):
    status, count = rng.choice((500, 502, 503, 504)), rng.randint(1, 4)
    return _at_page(rng, "listing 5xx", run, count, "%d x HTTP %d" % (count, status),
                    lambda w: w.replica.fail_next(NODES, status, count=count))


def listing_429(rng, run):
    count, retry_after = rng.randint(1, 3), rng.choice((None, 0, 1))
    return _at_page(rng, "listing 429", run, count, "%d x HTTP 429 (Retry-After %s)" % (count, retry_after),
                    lambda w: w.replica.fail_next(NODES, 429, count=count, retry_after=retry_after))


def listing_timeout(rng, run):
    count = rng.randint(1, 3)
    return _at_page(rng, "listing timeout", run, count, "%d page(s) held past the timeout" % count,
                    lambda w: w.hold_pages(FAULTY_TIMEOUT * 2, count))


def listing_truncated(rng, run):
    body = rng.choice(TRUNCATED_PAGES)
    return _at_page(rng, "listing truncated JSON", run, 1, "a page answered %r" % body,
                    lambda w: w.replica.fail_next(NODES, 200, body=body))


def listing_malformed(rng, run):
    body = rng.choice(MALFORMED_PAGES)
    return _at_page(rng, "listing malformed page", run, 1, "a page answered %r" % body[:40],
                    lambda w: w.replica.fail_next(NODES, 200, body=body))


def listing_cut_short(rng, run):
    count = rng.randint(1, 2)
    return _at_page(rng, "listing connection cut", run, count, "%d page(s) cut after 10 of 4000 bytes" % count,
                    lambda w: w.front.on("GET", NODES, rogue_http.cut_short(4000, b'{"items":['), count=count))


def node_lookup_5xx(rng, run):
    status, count = rng.choice((500, 502, 503)), rng.randint(1, 4)
    return ApiFault("node lookup 5xx", run, "%d x HTTP %d on GET /node/<id>" % (count, status), count,
                    lambda w: w.replica.fail_next("/latest/node/", status, count=count), at_once=True)


# Artifacts ---------------------------------------------------------------------------------------

def _at_get(rng, family, run, units, describe, inject):
    get = rng.choice((0, 0, rng.randint(1, 6)))
    return ApiFault(family, run, "%s %s" % (describe, _after(get, "artifact GET")), units,
                    lambda w: w.hooks.at("get", get, lambda: inject(w)))


def artifact_5xx(rng, run):
    status, count = rng.choice((500, 502, 503, 504)), rng.randint(1, 4)
    return _at_get(rng, "artifact 5xx", run, count, "%d x HTTP %d on /files/" % (count, status),
                   lambda w: w.replica.fail_next("/files/", status, count=count))


def artifact_cut_short(rng, run):
    count = rng.randint(1, 2)
    return _at_get(rng, "artifact connection cut", run, count, "%d artifact(s) cut after 3 of 5000 bytes" % count,
                   lambda w: w.front.on("GET", "/files/", rogue_http.cut_short(5000, b"\x1f\x8b\x08"), count=count))


def _lost_for_good(how, family):
    def build(rng, run):
        return ApiFault(family, run, "the next log artifact made (before or during run %d) %s" % (
            run, "is never uploaded" if how == "404" else "is stored as a gzip cut short"), 1,
            lambda w: w.break_next_artifact(how))
    return build


artifact_404 = _lost_for_good("404", "artifact 404 for good")
artifact_truncated_gzip = _lost_for_good("truncated gzip", "artifact truncated gzip for good")


# Logstash ----------------------------------------------------------------------------------------

def _at_post(rng, family, run, units, describe, inject):
    post = rng.choice((0, rng.randint(1, 6), rng.randint(1, 20)))
    return ApiFault(family, run, "%s %s" % (describe, _after(post, "POST")), units,
                    lambda w: w.hooks.at("post", post, lambda: inject(w)))


def _emulator(w: ApiWorld, route: str):
    return w.logstash.emulators[route]


def logstash_status(status, family):
    def build(rng, run):
        route, count, retry_after = rng.choice(ROUTES), rng.randint(1, 4), rng.choice((None, "0", "1"))
        return _at_post(rng, family, run, count, "%s input answers %d x %d (Retry-After %s)"
                        % (route, count, status, retry_after),
                        lambda w: _emulator(w, route).fail_next(status, count=count, retry_after=retry_after))
    return build


logstash_429 = logstash_status(429, "Logstash 429")
logstash_503 = logstash_status(503, "Logstash 503")


def logstash_reset(rng, run):
    route, count = rng.choice(ROUTES), rng.randint(1, 3)
    return _at_post(rng, "Logstash connection reset", run, count, "%s input reads %d bodies and closes" % (route, count),
                    lambda w: _emulator(w, route).reset_next(count))


def logstash_answer_lost(rng, run):
    route, count = rng.choice(ROUTES), rng.randint(1, 2)
    if rng.random() < 0.5:
        return _at_post(rng, "Logstash stores, answer lost (500)", run, count,
                        "%s input stores %d bodies then answers 500" % (route, count),
                        lambda w: _emulator(w, route).accept_then_fail_next(count))
    return _at_post(rng, "Logstash stores, answer lost (timeout)", run, count,
                    "%s input answers %d POSTs after the client gave up" % (route, count),
                    lambda w: _emulator(w, route).slow_next(FAULTY_TIMEOUT * 2, count))


def two_versions_answer_lost(rng, run):
    """Tests changed before the run change again, moved to the end of the natural order, while it
    lists them: it lists two versions of each. The first POSTs to the lava input are stored only
    after the client gave up on them (an answer lost), then retried."""
    changed, count, page = rng.randint(2, 6), rng.randint(1, 2), rng.randint(1, 3)

    def arm(w):
        ids = w.change_tests(changed)
        w.hooks.at("page:test", page, lambda: w.emulators_by_route("lava")[0].slow_next(FAULTY_TIMEOUT * 2, count))
        w.hooks.at("page:test", page + 1, lambda: w.change_tests(changed, relocate=True, among=ids))
    return ApiFault("two versions in one run, the older's answer lost", run,
                    "%d tests changed before the run and again, moved, before test page %d; %d lava POST(s) "
                    "stored after the client gave up, from test page %d" % (changed, page + 1, count, page), count, arm)


# The process -------------------------------------------------------------------------------------

def kill_listing(rng, run):
    page = rng.randint(1, 8)
    return ApiFault("SIGKILL while listing", run, "at listing page %d" % page, 1,
                    lambda w: w.hooks.at("page", page, lambda: w.kill("while listing page %d" % page)))


def kill_download(rng, run):
    get = rng.randint(1, 8)
    return ApiFault("SIGKILL during an artifact GET", run, "while artifact GET %d is answered" % get, 1,
                    lambda w: w.hooks.at("get", get, lambda: w.kill("during artifact GET %d" % get)))


def kill_after_post(rng, run):
    post = rng.randint(1, 12)
    return ApiFault("SIGKILL between POST and ledger write", run, "after Logstash stored POST %d" % post, 1,
                    lambda w: w.hooks.at("post", post, lambda: w.kill("after Logstash stored POST %d" % post)))


def kill_in_commit(rng, run):
    commit, delay = rng.randint(2, 6), rng.choice((0.0, rng.uniform(0, 0.0005), rng.uniform(0, 0.002)))
    return ApiFault("SIGKILL during the ledger commit", run, "%.0f us into COMMIT %d" % (delay * 1e6, commit), 1,
                    commit_kill=(commit, delay))


def kill_any_time(rng, run):
    after = rng.uniform(0.1, 0.6)
    return ApiFault("SIGKILL at a random moment", run, "%.2fs after the start" % after, 1, kill_after=after)


def sigterm(rng, run):
    if rng.random() < 0.5:
        page = rng.randint(1, 6)
        return ApiFault("SIGTERM", run, "at listing page %d" % page, 1,
                        lambda w: w.hooks.at("page", page, lambda: w.terminate("at listing page %d" % page)))
    post = rng.randint(1, 8)
    return ApiFault("SIGTERM", run, "after Logstash stored POST %d" % post, 1,
                    lambda w: w.hooks.at("post", post, lambda: w.terminate("after Logstash stored POST %d" % post)))


FAMILIES = (
    listing_5xx, listing_429, listing_timeout, listing_truncated, listing_malformed, listing_cut_short,
    node_lookup_5xx, artifact_5xx, artifact_cut_short, artifact_404, artifact_truncated_gzip,
    logstash_429, logstash_503, logstash_reset, logstash_answer_lost, two_versions_answer_lost,
    kill_listing, kill_download, kill_after_post, kill_in_commit, kill_any_time, sigterm,
)
ARTIFACT_FAMILIES = (artifact_5xx, artifact_cut_short, artifact_404, artifact_truncated_gzip, kill_download)


def make_plan(seed: int) -> ApiPlan:
    """The plan of scenario `seed`: the family `seed` picks in turn leads, up to four more at random."""
    rng = random.Random(seed)
    lead = FAMILIES[seed % len(FAMILIES)]
    with_logs = lead in ARTIFACT_FAMILIES or rng.random() < 0.5
    settings = {"KCI_API_PAGE_SIZE": str(rng.choice((2, 3, 5, 8, 50))), "KCI_THREADS": str(rng.choice((1, 2, 4))),
                "LS_PIPELINE_BATCH_SIZE": str(rng.choice((1, 5, 25))),
                "ES_PARALLEL_POSTS": str(rng.choice((1, 2, 2, 3))),
                # Mostly none: every run then lists from the watermark alone, which must be right.
                "KCI_API_OVERLAP_MINUTES": rng.choice(("0", "0", "0", "10"))}
    second_urls = tuple(route for route in ("lava", "build") if rng.random() < 0.25)
    faulty_runs = rng.randint(2, 4)
    between = {run: rng.choice((0, 1, 2, 3)) for run in range(faulty_runs)}
    # While a run lists: any change before its N-th page, or tests changed (or moved to the end)
    # before its N-th page of tests, which that run may then list twice.
    during = {run: [(rng.choice(("page", "page", "page:test")), rng.randint(1, 6), rng.randint(1, 3))
                    for _ in range(rng.choice((0, 1, 1, 2)))] for run in range(faulty_runs)}
    plan = ApiPlan(seed, settings, with_logs, second_urls, rng.randint(1, 2), faulty_runs, between, during)
    builders = [lead] + [rng.choice(FAMILIES) for _ in range(rng.randint(0, 4))]
    for number, build in enumerate(builders):
        plan.faults.append(build(rng, 0 if number == 0 else rng.randrange(faulty_runs)))
    return plan


def run_settings(plan: ApiPlan, faults: List[ApiFault]) -> Dict[str, str]:
    timeout = FAULTY_TIMEOUT if faults else CLEAN_TIMEOUT
    settings = dict(plan.settings, KCI_TIMEOUT=str(timeout), ES_TIMEOUT=str(timeout))
    if faults:
        settings.update(KCI_DOWNLOAD_DEADLINE=str(FAULTY_DEADLINE), ES_POST_DEADLINE=str(FAULTY_DEADLINE),
                        KCI_MAX_OBJECT_BYTES=str(FAULTY_MAX_OBJECT_BYTES))
    return settings


def arm_all(world: ApiWorld, faults: List[ApiFault], changes: List[Tuple[str, int, int]]) -> Callable[[], None]:
    """Arm `faults` and the changes made while the run lists; each fault's hooks carry it as their label."""
    def arm() -> None:
        for fault in faults:
            world.hooks.label = fault
            fault.arm(world)
        world.hooks.label = None
        for event, page, count in changes:
            world.hooks.at(event, page, lambda count=count, event=event: world.mutate(count, event == "page:test"))
    return arm


def injected(world: ApiWorld, faults: List[ApiFault]) -> List[ApiFault]:
    """Those of `faults` that took effect: a hook fired, a kill landed, or it was armed whole."""
    fired = {id(label) for label in world.hooks.fired}
    kills = {run.number: run.killed_at or "" for run in world.runs}

    def took_effect(fault: ApiFault) -> bool:
        if id(fault) in fired:
            return True
        if fault.run not in kills:
            return False
        where = kills[fault.run]
        return fault.at_once or bool(fault.commit_kill and "COMMIT" in where) \
            or bool(fault.kill_after and "random moment" in where)
    return [fault for fault in faults if took_effect(fault)]
