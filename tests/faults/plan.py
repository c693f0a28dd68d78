"""Seeded fault plans: which faults a scenario injects, in which run, and at which moment.

`make_plan(seed, world)` is a pure function of the seed (and of the world's corpus, which is
always the bundled samples), so a failing scenario is replayed by its seed alone. Faults are
armed at a count of what the servers see (the N-th listing page, file GET or accepted POST),
so they land at different points of a run, not always on the first request.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import quote, urlsplit

from tests.fakes import rogue_http
from tests.fakes.legacy_data import boot_item, boot_path, build_item, build_json, lava_json
from tests.faults.world import CatalogObject, ObjectKey, World, listing_date, rejection_reason

# Timeouts while faults are armed (slow answers and held requests are twice as long); a run
# without faults uses generous ones so a loaded CI machine cannot fail it.
FAULTY_TIMEOUT = 0.5
CLEAN_TIMEOUT = 20
# Overall deadlines of a body (download, Logstash answer) and the object size limit while faults
# are armed: a trickle or an endless body ends in a second, not minutes.
FAULTY_DEADLINE = 1.0
FAULTY_MAX_OBJECT_BYTES = 4_000_000
ROUTES = ("lava", "lava", "lava", "build", "boot")  # weighted by how many POSTs each input gets
COLLECTIONS = ("build", "boot")
PAST_HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"


@dataclass
class Fault:
    """One fault: its family (for coverage counts), the run it belongs to, and how to arm it."""

    family: str
    run: int
    detail: str
    units: int = 1  # how many failing answers (or events) it can cause
    arm: Callable[[World], None] = lambda world: None
    commit_kill: Optional[Tuple[int, float]] = None
    kill_after: Optional[float] = None
    # Objects broken for good -> (the ledger state they must end in, words their reason must hold).
    broken: Dict[ObjectKey, Tuple[str, str]] = field(default_factory=dict)
    at_once: bool = False  # armed whole before the run, not at a count of what the servers see
    fronted: bool = False  # needs the run's requests to go through the world's fronts

    @property
    def permanent(self) -> bool:
        return bool(self.broken)

    def __str__(self) -> str:
        when = "before the first run" if self.permanent else "run %d" % self.run
        return "%s (%s): %s" % (self.family, when, self.detail)


@dataclass
class Plan:
    seed: int
    settings: Dict[str, str]
    faults: List[Fault]

    def for_run(self, run: int) -> List[Fault]:
        return [fault for fault in self.faults if fault.run == run and not fault.permanent]

    @property
    def broken(self) -> Dict[ObjectKey, Tuple[str, str]]:
        found: Dict[ObjectKey, Tuple[str, str]] = {}
        for fault in self.faults:
            found.update(fault.broken)
        return found

    def apply_permanent(self, world: World) -> None:
        for fault in self.faults:
            if fault.permanent:
                fault.arm(world)

    def describe(self) -> str:
        lines = ["fault scenario seed=%d (replay: KCING_FAULT_SEED=%d KCING_FAULT_SCENARIOS=1 "
                 "pytest tests/test_faults.py -k converge)" % (self.seed, self.seed),
                 "settings: %s" % " ".join("%s=%s" % item for item in self.settings.items())]
        lines += ["  %s" % fault for fault in self.faults]
        return "\n".join(lines)


def _after(moment: int, what: str) -> str:
    return "from the start" if moment <= 0 else "after %s %d" % (what, moment)


# Upstream: listings ------------------------------------------------------------------------

TRUNCATED_LISTINGS = (b'{"code":200,"count":11,"limit":3,"result":[{"_id":{"$oid":"5fa2',
                      b'{"code":200,"count":11,"result":[', b'{"code":200,')
MALFORMED_LISTINGS = (b'{"code":200,"count":1,"result":{"_id":"x"}}', b"[]", b'{"result":null}',
                      b"<html><body>Bad Gateway</body></html>", b"\xff\xfe\x00{", b"")


def _listing_fault(rng, run, family, units, describe, inject):
    """A fault on one collection's listing, armed after a random number of its pages."""
    collection, page = rng.choice(COLLECTIONS), rng.randint(0, 2)
    path = "/_ajax/" + collection

    def arm(w):
        w.hooks.at("page:" + collection, page, lambda: inject(w, path))
    return Fault(family, run, "%s: %s %s" % (path, describe, _after(page, "listing page")), units, arm)


def listing_5xx(rng, world, run):
    status, count = rng.choice((500, 502, 503, 504)), rng.randint(1, 4)
    return _listing_fault(rng, run, "listing 5xx", count, "%d x HTTP %d" % (count, status),
                          lambda w, path: w.replica.frontend.fail_next(path, status, count=count))


def listing_timeout(rng, world, run):
    count = rng.randint(1, 3)
    return _listing_fault(rng, run, "listing timeout", count, "%d x held past the timeout" % count,
                          lambda w, path: w.delay_upstream(w.replica.frontend, path, FAULTY_TIMEOUT * 2, count))


def listing_truncated(rng, world, run):
    body = rng.choice(TRUNCATED_LISTINGS)
    return _listing_fault(rng, run, "listing truncated JSON", 1, "cut at %d bytes" % len(body),
                          lambda w, path: w.replica.frontend.fail_next(path, 200, body=body))


def listing_malformed(rng, world, run):
    body = rng.choice(MALFORMED_LISTINGS)
    return _listing_fault(rng, run, "listing malformed JSON", 1, "answers %r" % body[:40],
                          lambda w, path: w.replica.frontend.fail_next(path, 200, body=body))


def csrf_expiry(rng, world, run):
    page, rotate = rng.randint(1, 4), rng.random() < 0.5

    def arm(w):
        if rotate:
            w.hooks.at("page", page, w.replica.frontend.expire_all_tokens)
        else:
            w.hooks.at("page", page, lambda: w.clock.advance(1300))  # past any token's lifetime
    how = "the secret key rotates" if rotate else "the token outlives its 10-20 minutes"
    return Fault("CSRF token expires", run, "after listing page %d %s" % (page, how), 1, arm)


def _new_objects(rng, collection: str, when, count: int) -> List[Tuple[CatalogObject, bytes]]:
    """`count` objects that were not listed before, created at `when`."""
    made = []
    for number in range(count):
        build = build_item("faults", "v6.%d-g%08x" % (number, rng.getrandbits(32)), "arm64", "defconfig", when)
        if collection == "build":
            made.append((CatalogObject("build", build["_id"]["$oid"], build["file_server_resource"] + "/build.json",
                                       listing_date(build), build), build_json(build)))
            continue
        item = boot_item(build, "lab-faults", "board-%d" % number, when + timedelta(seconds=number))
        job_id = 900000 + int(item["_id"]["$oid"][:6], 16)  # LAVA document ids come from lab and job id
        made.append((CatalogObject("lava", item["_id"]["$oid"], boot_path(item), listing_date(item), item),
                     lava_json(item, job_id, log_lines=rng.randint(3, 80))))
    return made


def _shift(rng, world, run, family, older):
    # The callback runs before a page is computed: items added before the second page of a
    # collection (always asked for, if only to find it empty) shift what that page holds.
    collection, page = rng.choice(COLLECTIONS), 2 if older else rng.randint(1, 2)
    dates = [obj.created for obj in world.catalog.values() if obj.collection == collection]
    when = (min(dates) - timedelta(hours=6)) if older else (max(dates) + timedelta(minutes=1))
    objects = _new_objects(rng, collection, when, rng.randint(1, 2))

    def arm(w):
        w.hooks.at("page:" + collection, page, lambda: [w.add_object(obj, content) for obj, content in objects])
    where = "before every listed item (the next pages repeat one)" if older else "after the last one"
    return Fault(family, run, "%d %s item(s) added while listing page %d, %s" % (len(objects), collection, page, where),
                 len(objects), arm)


def pages_repeat(rng, world, run):
    return _shift(rng, world, run, "pages repeat", older=True)


def new_items_arrive(rng, world, run):
    return _shift(rng, world, run, "pages shift", older=False)


# Upstream: files ---------------------------------------------------------------------------

def _target(rng, world: World) -> CatalogObject:
    return rng.choice(list(world.catalog.values()))


def _at_get(rng, world, arm_fault):
    moment = rng.choice((0, 0, rng.randint(1, 8)))
    return lambda w: w.hooks.at("get", moment, lambda: arm_fault(w))


def file_5xx(rng, world, run):
    obj, status, count = _target(rng, world), rng.choice((500, 502, 503, 504)), rng.randint(1, 4)
    arm = _at_get(rng, world, lambda w: w.replica.storage.fail_next(obj.path, status, count=count))
    return Fault("file 5xx", run, "%d x HTTP %d on %s %s" % (count, status, obj.kind, obj.upstream_id), count, arm)


def file_timeout(rng, world, run):
    obj, count = _target(rng, world), rng.randint(1, 3)
    arm = _at_get(rng, world, lambda w: w.delay_upstream(w.replica.storage, obj.path, FAULTY_TIMEOUT * 2, count))
    return Fault("file timeout", run, "%d x %s %s held past the timeout" % (count, obj.kind, obj.upstream_id),
                 count, arm)


def file_truncated(rng, world, run):
    obj = _target(rng, world)
    size = rng.randint(1, len(world.content(obj).rstrip()) - 1)
    arm = _at_get(rng, world, lambda w: w.replica.storage.truncate(obj.path, size))
    return Fault("file truncated", run, "%s %s served as its first %d bytes" % (obj.kind, obj.upstream_id, size),
                 1, arm)


def file_reset(rng, world, run):
    obj, count = _target(rng, world), rng.randint(1, 3)
    after = rng.randint(0, len(world.content(obj)) - 1)
    arm = _at_get(rng, world, lambda w: w.replica.storage.reset(obj.path, count=count, after_bytes=after))
    return Fault("file connection reset", run,
                 "%d x %s %s cut after %d bytes" % (count, obj.kind, obj.upstream_id, after), count, arm)


def file_404_once(rng, world, run):
    obj = _target(rng, world)
    arm = _at_get(rng, world, lambda w: w.replica.storage.fail_next(obj.path, 404))
    return Fault("file 404 once", run, "%s %s answers 404 once" % (obj.kind, obj.upstream_id), 1, arm)


def file_html_once(rng, world, run):
    obj = _target(rng, world)
    page = b"<html><body><h1>Storage is being maintained</h1></body></html>"
    arm = _at_get(rng, world, lambda w: w.replica.storage.fail_next(obj.path, 200, body=page))
    return Fault("file malformed once", run, "%s %s served as an HTML page once" % (obj.kind, obj.upstream_id), 1, arm)


def _fronted_get(rng, world, obj, behaviour):
    path = quote(obj.path)
    return _at_get(rng, world, lambda w: w.faulty_fronts["storage"].on("GET", path, behaviour, count=1))


def file_trickles(rng, world, run):
    obj = _target(rng, world)
    arm = _fronted_get(rng, world, obj, rogue_http.trickle(length=len(world.content(obj)), every=0.2))
    return Fault("file trickles past the download deadline", run, "%s %s sent a byte every 0.2s once"
                 % (obj.kind, obj.upstream_id), 1, arm, fronted=True)


def file_endless(rng, world, run):
    obj, announced = _target(rng, world), rng.choice((None, FAULTY_MAX_OBJECT_BYTES * 4))
    arm = _fronted_get(rng, world, obj, rogue_http.endless(declared=announced))
    how = "announcing %d bytes" % announced if announced else "until the connection closes"
    return Fault("file endless (past the size limit)", run, "%s %s streams without end once, %s"
                 % (obj.kind, obj.upstream_id, how), 1, arm, fronted=True)


def file_404_for_good(rng, world, run):
    obj = _target(rng, world)
    return Fault("file 404 for good", run, "%s %s removed from storage" % (obj.kind, obj.upstream_id), 1,
                 lambda w: w.set_file(obj.path, None), broken={obj.key: ("failed", "answered 404")})


def _garbage(rng, content: bytes) -> bytes:
    choices = [content[:rng.randint(1, len(content.rstrip()) - 1)], b"\x89PNG\r\n\x1a\n" + content[:40], b"[]",
               b"{}", b"", b"null", content.replace(b"{", b"(", 1), b'{"a": NaN' + b"}" * 3]
    return rng.choice(choices)


def file_malformed_for_good(rng, world, run):
    obj = _target(rng, world)
    garbage = _garbage(rng, world.content(obj))
    reason = rejection_reason(obj.kind, garbage, obj.created, obj.lab)
    if reason is None:  # the cut kept a valid file; a non-object is refused whatever the kind
        garbage, reason = b"[]", rejection_reason(obj.kind, b"[]", obj.created, obj.lab)
    return Fault("file malformed for good", run, "%s %s replaced by %d bytes of %r..." % (
        obj.kind, obj.upstream_id, len(garbage), garbage[:24]), 1,
        lambda w: w.set_file(obj.path, garbage), broken={obj.key: ("rejected", reason)})


def file_redirected_off_origin(rng, world, run):
    """A storage file answered with a redirect to a place kcing must never fetch from."""
    obj = _target(rng, world)
    port = urlsplit(world.replica.storage_url).port
    location = rng.choice(("http://localhost:%d/%s" % (port, obj.path), "http://127.0.0.2:%d/%s" % (port, obj.path),
                           "file:///etc/passwd", "https://127.0.0.1:%d/%s" % (port, obj.path)))
    return Fault("file redirected off the upstream origins", run, "%s %s redirects to %s" % (
        obj.kind, obj.upstream_id, location), 1, lambda w: w.redirect_for_good(obj.path, location),
        broken={obj.key: ("rejected", "not an upstream origin")})


# Logstash ----------------------------------------------------------------------------------

def _at_post(rng, arm_fault):
    moment = rng.choice((0, rng.randint(1, 20), rng.randint(1, 60)))
    return moment, (lambda w: w.hooks.at("post", moment, lambda: arm_fault(w)))


def _logstash_status(family, status, retry_afters):
    def build(rng, world, run):
        route, count, retry_after = rng.choice(ROUTES), rng.randint(1, 4), rng.choice(retry_afters)
        moment, arm = _at_post(rng, lambda w: w.emulators[route].fail_next(status, count=count,
                                                                            retry_after=retry_after))
        header = "" if retry_after is None else " with Retry-After: %s" % retry_after
        return Fault(family, run, "%s input answers %d x %d%s %s"
                     % (route, count, status, header, _after(moment, "POST")), count, arm)
    return build


logstash_429_retry_after = _logstash_status("Logstash 429 with Retry-After", 429, ("0", "1", PAST_HTTP_DATE))
logstash_429 = _logstash_status("Logstash 429 without Retry-After", 429, (None,))
logstash_500 = _logstash_status("Logstash 500", 500, (None,))
logstash_503 = _logstash_status("Logstash 503", 503, (None, None, "0"))


def logstash_reset(rng, world, run):
    route, count = rng.choice(ROUTES), rng.randint(1, 3)
    moment, arm = _at_post(rng, lambda w: w.emulators[route].reset_next(count))
    return Fault("Logstash connection reset", run, "%s input reads %d bodies then closes without an answer, %s"
                 % (route, count, _after(moment, "POST")), count, arm)


def logstash_slow(rng, world, run):
    route, count = rng.choice(ROUTES), rng.randint(1, 2)
    moment, arm = _at_post(rng, lambda w: w.emulators[route].slow_next(FAULTY_TIMEOUT * 2, count))
    return Fault("Logstash slow past the timeout", run, "%s input answers %d POSTs after the client gave up "
                 "(and stores them), %s" % (route, count, _after(moment, "POST")), count, arm)


def logstash_accept_then_fail(rng, world, run):
    route, count = rng.choice(ROUTES), rng.randint(1, 2)
    moment, arm = _at_post(rng, lambda w: w.emulators[route].accept_then_fail_next(count))
    return Fault("Logstash accepts then fails", run, "%s input stores %d bodies then answers 500, %s"
                 % (route, count, _after(moment, "POST")), count, arm)


def _fronted_post(rng, behaviour, count):
    """A behaviour of one route's front for `count` POSTs, armed after a random number of POSTs."""
    route = rng.choice(ROUTES)
    moment, arm = _at_post(rng, lambda w: w.faulty_fronts[route].on("POST", "/", behaviour, count=count))
    return route, moment, arm


def logstash_redirect(rng, world, run):
    status = rng.choice((301, 302, 303, 307, 308))
    # A GET to the same place answers 200: following the redirect would look like an acknowledgement.
    behaviour = rogue_http.redirect(status, "https://logstash.invalid:8443/")
    route, moment, arm = _fronted_post(rng, behaviour, 1)

    def arm_both(w):
        arm(w)
        w.faulty_fronts[route].on("GET", "/", rogue_http.answer(200, body=b"ok"))
    return Fault("Logstash redirects (3xx)", run, "%s input answers %d to a POST, %s"
                 % (route, status, _after(moment, "POST")), 1, arm_both, fronted=True)


def logstash_413(rng, world, run):
    route, count = rng.choice(ROUTES), rng.randint(1, 6)
    moment, arm = _at_post(rng, lambda w: w.emulators[route].fail_next(413, count=count))
    return Fault("Logstash 413", run, "%s input answers %d x 413 (body too large), %s"
                 % (route, count, _after(moment, "POST")), count, arm)


def logstash_trickles(rng, world, run):
    count = rng.randint(1, 2)
    route, moment, arm = _fronted_post(rng, rogue_http.trickle(length=500, every=0.2), count)
    return Fault("Logstash answer trickles", run, "%s input trickles %d answers a byte every 0.2s, %s"
                 % (route, count, _after(moment, "POST")), count, arm, fronted=True)


def logstash_cut_short(rng, world, run):
    count = rng.randint(1, 3)
    route, moment, arm = _fronted_post(rng, rogue_http.cut_short(declared=100, sent=b"ok"), count)
    return Fault("Logstash answer cut short", run, "%s input sends 2 of 100 announced bytes %d times, %s"
                 % (route, count, _after(moment, "POST")), count, arm, fronted=True)


def logstash_down(rng, world, run):
    route = rng.choice(ROUTES)
    return Fault("Logstash down", run, "%s input refuses connections for the whole run" % route, 1,
                 lambda w: w.emulators[route].down(), at_once=True)


# The process -------------------------------------------------------------------------------

def kill_listing(rng, world, run):
    page = rng.randint(1, 4)
    return Fault("SIGKILL while listing", run, "at listing page %d" % page, 1,
                 lambda w: w.hooks.at("page", page, lambda: w.kill("while listing page %d" % page)))


def kill_download(rng, world, run):
    get = rng.randint(1, len(world.catalog))
    return Fault("SIGKILL during a download", run, "while file GET %d is being answered" % get, 1,
                 lambda w: w.hooks.at("get", get, lambda: w.kill("during file GET %d" % get)))


def kill_after_post(rng, world, run):
    post = rng.randint(1, 40)
    return Fault("SIGKILL between POST and ledger write", run,
                 "after Logstash stored POST %d, before it answered" % post, 1,
                 lambda w: w.hooks.at("post", post, lambda: w.kill("after Logstash stored POST %d" % post)))


def kill_in_commit(rng, world, run):
    commit, delay = rng.randint(2, 6), rng.choice((0.0, rng.uniform(0, 0.0005), rng.uniform(0, 0.002)))
    return Fault("SIGKILL during the ledger commit", run, "%.0f us into COMMIT %d" % (delay * 1e6, commit), 1,
                 commit_kill=(commit, delay))


def kill_any_time(rng, world, run):
    after = rng.uniform(0.05, 0.45)  # a first run takes longer than that
    return Fault("SIGKILL at a random moment", run, "%.2fs after the start" % after, 1, kill_after=after)


FAMILIES = (
    listing_5xx, listing_timeout, listing_truncated, listing_malformed, csrf_expiry, pages_repeat,
    new_items_arrive, file_5xx, file_timeout, file_truncated, file_reset, file_404_once, file_html_once,
    file_404_for_good, file_malformed_for_good, file_redirected_off_origin, logstash_429_retry_after, logstash_429,
    logstash_500,
    logstash_503, logstash_reset, logstash_slow, logstash_accept_then_fail, logstash_down, kill_listing,
    kill_download, kill_after_post, kill_in_commit, kill_any_time,
    file_trickles, file_endless, logstash_redirect, logstash_413, logstash_trickles, logstash_cut_short,
)


def family_names(world: World) -> List[str]:
    rng = random.Random(0)
    return [build(rng, world, 0).family for build in FAMILIES]


def make_plan(seed: int, world: World) -> Plan:
    """The faults of scenario `seed`: the family `seed` picks in turn, plus up to four at random."""
    rng = random.Random(seed)
    settings = {"KCI_PAGE_SIZE": str(rng.choice((2, 3, 4, 6))), "KCI_THREADS": str(rng.choice((1, 2, 4))),
                "LS_PIPELINE_BATCH_SIZE": str(rng.choice((10, 25, 25, 50)))}
    builders = [FAMILIES[seed % len(FAMILIES)]] + [rng.choice(FAMILIES) for _ in range(rng.randint(0, 4))]
    faults: List[Fault] = []
    for number, build in enumerate(builders):
        fault = build(rng, world, 0 if number == 0 else rng.choice((0, 0, 0, 1, 1, 2)))  # runs 0-2 only
        already = {key for earlier in faults for key in earlier.broken}
        if fault.permanent and (set(fault.broken) & already or len(already) >= 2):
            continue  # at most two objects broken for good, each in one way
        faults.append(fault)
    return Plan(seed, settings, faults)


def run_settings(plan: Plan, faults: List[Fault], world: Optional[World] = None) -> Dict[str, str]:
    timeout = FAULTY_TIMEOUT if faults else CLEAN_TIMEOUT
    settings = dict(plan.settings, KCI_TIMEOUT=str(timeout), ES_TIMEOUT=str(timeout))
    if faults:
        settings.update(KCI_DOWNLOAD_DEADLINE=str(FAULTY_DEADLINE), ES_POST_DEADLINE=str(FAULTY_DEADLINE),
                        KCI_MAX_OBJECT_BYTES=str(FAULTY_MAX_OBJECT_BYTES))
    if world is not None and any(fault.fronted for fault in faults):
        settings.update(world.front_settings())
    return settings


def arm_all(world: World, faults: List[Fault]) -> Callable[[], None]:
    """Arm `faults` for the next run; each one's hooks carry it as their label."""
    def arm() -> None:
        for fault in faults:
            world.hooks.label = fault
            fault.arm(world)
        world.hooks.label = None
    return arm


def injected(world: World, faults: List[Fault]) -> List[Fault]:
    """Those of `faults` that took effect: a hook fired, a kill landed, or it was armed whole."""
    fired = {id(label) for label in world.hooks.fired}
    kills = {run.number: run.killed_at or "" for run in world.runs}

    def took_effect(fault: Fault) -> bool:
        if fault.permanent or id(fault) in fired:
            return True
        if fault.run not in kills:
            return False  # the scenario ended before this fault's run
        where = kills[fault.run]
        return fault.at_once or bool(fault.commit_kill and "COMMIT" in where) \
            or bool(fault.kill_after and "random moment" in where)
    return [fault for fault in faults if took_effect(fault)]
