"""Nothing lost, nothing duplicated: the real `kcing feed_es --source api` against a KernelCI API
whose nodes keep changing, and failing services, run after run.

Each scenario is a seeded plan (tests/faults/api_plan.py): checkout trees appear, jobs finish,
tests change, regressions pass again, between runs and while a run pages through the listing;
the API's pages fail (5xx, 429, timeouts, truncated or malformed bodies, connections cut), as do
node lookups and artifacts (5xx, cut short, never uploaded, stored as a gzip cut short, with
`--with-logs`); Logstash answers 429/503, resets, or loses its answer after storing the batch;
the feed is killed (SIGKILL while listing, during an artifact GET, after a POST, inside a ledger
COMMIT, at a random moment) or stopped (SIGTERM). Then every running job finishes and one clean
run must leave the store holding exactly the documents the newest version of every node makes
(computed with `documents_for` over an envelope built by tests/faults/api_world.py), the ledger
holding each newest version as delivered.

A stored document equal to an OLDER version's of the same node ("older version won": two
versions stored out of order, as when Logstash stores a batch whose answer kcing gave up on,
after kcing, retrying it, sent the newer) is counted apart, and fails the scenario: documents
carry their node's version, which the pipeline writes them with, so the older is refused.

    KCING_API_FAULT_SCENARIOS=200 KCING_API_FAULT_SEED=random pytest -n 0 tests/test_api_faults.py
    KCING_API_FAULT_SEED=1234 KCING_API_FAULT_SCENARIOS=1 pytest tests/test_api_faults.py    # replay one

The seed of each scenario is in its test id; a failure prints the plan and every run's outcome.
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from tests.faults.api_plan import FAMILIES, arm_all, injected, make_plan, run_settings
from tests.faults.api_world import ApiWorld, DocKey
from tests.faults.world import SoakTotals, first_seed
from tests.summary import summary_line

pytestmark = [pytest.mark.faults]

# The default scenarios are led by the families of the process kills and the lost answers.
DEFAULT_SEED = 89_994


SCENARIOS = int(os.environ.get("KCING_API_FAULT_SCENARIOS", "8"))
FIRST_SEED = first_seed("KCING_API_FAULT_SEED", DEFAULT_SEED)
SEEDS = list(range(FIRST_SEED, FIRST_SEED + SCENARIOS))


class Totals(SoakTotals):
    title = "API fault suite"

    def __init__(self):
        super().__init__()
        self.exits: Counter = Counter()
        self.older_won: List[str] = []

    def add(self, world: ApiWorld, faults, expected: int, outcome: "Outcome") -> None:
        self.count_scenario(world, faults)
        self.counts["node versions"] += sum(map(len, world.versions.values()))
        self.count_documents(world, expected, len(outcome.lost), len(outcome.extra))
        self.counts["changed"] += len(outcome.changed)
        self.counts["older version won"] += len(outcome.older_won)
        self.older_won += ["seed=%d %s/%s" % (outcome.seed, *key) for key in outcome.older_won]
        self.exits.update(run.returncode for run in world.runs)
        self.count_kills(world)


TOTALS = Totals()


class Outcome:
    """How the store compares with the newest versions' documents."""

    def __init__(self, seed: int, world: ApiWorld):
        self.seed = seed
        expected, owner = world.expected()
        stored = world.stored()
        self.expected = expected
        self.lost = sorted(set(expected) - set(stored))
        self.extra = sorted(set(stored) - set(expected))
        self.older_won: List[DocKey] = []
        self.changed: List[DocKey] = []
        for key in sorted(key for key in expected if key in stored and stored[key] != expected[key]):
            older = [documents.get(key) for documents in world.older_documents(owner[key])]
            (self.older_won if stored[key] in older else self.changed).append(key)

    def describe(self, world: ApiWorld) -> str:
        stored = world.stored()
        lines = []
        for name in ("lost", "extra", "changed", "older_won"):
            keys = getattr(self, name)
            if keys:
                lines.append("%d %s, e.g. %s" % (len(keys), name, keys[:5]))
        for key in self.changed[:2]:
            want, have = json.loads(self.expected[key]), json.loads(stored[key])
            lines.append("  %s: %s" % (key, {field: (want.get(field), have.get(field))
                                              for field in set(want) | set(have) if want.get(field) != have.get(field)}))
        return "\n".join(lines)


def all_versions_documents(world: ApiWorld) -> Dict[DocKey, Set[str]]:
    """Every document any version of any node makes, by key."""
    found: Dict[DocKey, Set[str]] = {}
    for versions in world.versions.values():
        for version in versions:
            for key, document in world.documents_of(version).items():
                found.setdefault(key, set()).add(document)
    return found


def plausible_exit(run, faults) -> Tuple[bool, str]:
    """Whether the run's exit code is one its faults can explain."""
    if "Traceback" in run.stderr:
        return False, "a traceback"
    if run.killed_at and not run.killed_at.startswith("SIGTERM"):
        return run.returncode == -9, "killed"
    if run.killed_at:
        # Sent at a listing page or before a POST was answered: the run has not ended by then, so
        # it stops, even when the batch in flight was its last (README: Signals).
        return run.returncode == 130 and "stopped by a signal" in run.stderr, "stopped by SIGTERM"
    waiting = all("has not finished" in reason for reason in run.problems.values())
    if not faults:
        return run.returncode == 0 or (run.returncode == 1 and waiting and run.error_line is None), "no fault"
    return run.returncode in (0, 1, 3), "faults"


def check_between_runs(world: ApiWorld, run, faults, versions_documents) -> None:
    """What must hold after any run: a sound ledger, an exit code the faults explain, and a store
    holding only documents some version of some node makes."""
    assert world.integrity() == "ok", "ledger damaged after %s" % run.describe()
    fine, why = plausible_exit(run, faults)
    assert fine, "implausible exit (%s) after %s\n%s" % (why, run.describe(), run.stdout[-2000:])
    unknown = sorted(key for key, document in world.stored().items()
                     if document not in versions_documents.get(key, ()))
    assert not unknown, "documents no version of any node makes, after %s: %s" % (run.describe(), unknown[:5])


@pytest.mark.parametrize("seed", SEEDS, ids="seed={}".format)
def test_changing_nodes_and_failing_services_end_with_each_nodes_newest_documents(seed, tmp_path):
    plan = make_plan(seed)
    print(plan.describe())
    with ApiWorld(tmp_path, random.Random(seed), plan.with_logs, plan.second_urls) as world:
        for _ in range(plan.first_trees):
            world.new_tree()
        for number in range(plan.faulty_runs):
            world.mutate(plan.between[number])
            faults = plan.for_run(number)
            commit_kill = next((fault.commit_kill for fault in faults if fault.commit_kill), None)
            kill_after = next((fault.kill_after for fault in faults if fault.kill_after), None)
            run = world.run(world.environ(**run_settings(plan, faults)),
                            arm=arm_all(world, faults, plan.during[number]), commit_kill=commit_kill,
                            kill_after=kill_after)
            print(run.describe())
            check_between_runs(world, run, faults, all_versions_documents(world))

        world.settle()  # every job and kbuild ends: no node waits for its job any more
        final = world.run(world.environ(**run_settings(plan, [])))
        print(final.describe())
        world.quiet_down()  # a slow answer may still be storing its batch
        assert (final.returncode, final.error_line, final.problems) == (0, None, {}), \
            "the clean run after the faults did not succeed:\n%s\n%s" % (final.stdout, final.stderr[-3000:])

        outcome = Outcome(seed, world)
        TOTALS.add(world, injected(world, plan.faults), len(outcome.expected), outcome)
        print(outcome.describe(world))
        assert not outcome.lost, outcome.describe(world)
        assert not outcome.extra, outcome.describe(world)
        assert not outcome.changed, outcome.describe(world)
        assert not outcome.older_won, outcome.describe(world)

        states = world.ledger_states()
        undelivered = {key: states.get(key) for key in world.newest_versions() if states.get(key) != "delivered"}
        assert not undelivered, "newest versions not delivered by the ledger: %s" % undelivered
        assert world.integrity() == "ok"
        assert not any(emulator.unrouted for emulator in world.emulators)
        assert not (world.replica.errors or any(emulator.errors for emulator in world.emulators))


def test_every_api_fault_family_was_injected_and_the_totals_add_up(request):
    """Runs last: the totals of the scenarios above, and every family injected when enough ran."""
    collected = sum(1 for item in request.session.items if getattr(item, "originalname", None)
                    == test_changing_nodes_and_failing_services_end_with_each_nodes_newest_documents.__name__)
    assert TOTALS.counts["scenarios"] == collected, (
        "%d of the %d scenarios collected were counted in this process" % (TOTALS.counts["scenarios"], collected))
    if not collected:
        pytest.skip("no scenario ran")
    summary_line(TOTALS.line())
    if TOTALS.older_won:
        summary_line("API fault suite: older version won in %s" % ", ".join(TOTALS.older_won[:20]))
    report = os.environ.get("KCING_API_FAULT_REPORT")
    if report:
        Path(report).write_text(json.dumps({"totals": TOTALS.counts, "families": TOTALS.families,
                                            "kills": TOTALS.kills, "exits": {str(k): v for k, v in TOTALS.exits.items()},
                                            "older_won": TOTALS.older_won, "seeds": [SEEDS[0], SEEDS[-1]]}, indent=2))
    assert (TOTALS.counts["losses"], TOTALS.counts["duplicates"], TOTALS.counts["changed"]) == (0, 0, 0)
    if collected >= 3 * len(FAMILIES):
        names = {build(random.Random(0), 0).family for build in FAMILIES}
        names = {name for name in names if not name.startswith("Logstash stores")} | {"Logstash stores, answer lost (500)"}
        assert names <= set(TOTALS.families), "never injected: %s" % sorted(names - set(TOTALS.families))
