"""Shared pytest fixtures."""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Local emulators (tests/fakes): legacy KernelCI replica and Logstash http inputs.
# Every server listens on 127.0.0.1 with an ephemeral port and is stopped at teardown.
# ---------------------------------------------------------------------------------------------
from datetime import date
from pathlib import Path

import pytest

from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.legacy_data import small_corpus
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica
from tests.fakes.logstash_emulator import LogstashCluster
from tests.fakes.serving import ManualClock

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
# The built-in corpus is dated around this day (the original kcing's era).
BUILTIN_CORPUS_TODAY = date(2019, 5, 31)


def replica_corpus() -> tuple:
    """(corpus, today): from samples/manifest.json when present, else the small built-in corpus."""
    if (SAMPLES_DIR / "manifest.json").is_file():
        corpus = LegacyCorpus.from_samples(SAMPLES_DIR)
        return corpus, corpus.latest_day() or date.today()
    return small_corpus(BUILTIN_CORPUS_TODAY), BUILTIN_CORPUS_TODAY


@pytest.fixture
def legacy_replica():
    """A started LegacyReplica; `.clock` is a ManualClock driving CSRF token expiry.

    `.frontend.today` is the newest sample's day (or 2019-05-31 for the built-in corpus), so
    `date_range=2` sees recent items.
    """
    corpus, today = replica_corpus()
    clock = ManualClock()
    replica = LegacyReplica(corpus, today=today, clock=clock)
    replica.start()
    yield replica
    replica.stop()


@pytest.fixture
def logstash():
    """Started Logstash emulators (`.build`, `.lava`, `.boot`, `.regression`, `.urls`) over one store."""
    cluster = LogstashCluster()
    cluster.start()
    yield cluster
    cluster.stop()



@pytest.fixture
def es():
    """A started Elasticsearch emulator (8.x); fails the test if the emulator itself broke.
    Modules that need other versions or templates installed define their own `es`."""
    with ElasticsearchEmulator() as emulator:
        yield emulator
    assert not emulator.errors

# --------------------------------- end of emulator fixtures ----------------------------------
