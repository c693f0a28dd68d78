"""Shared pytest fixtures."""
from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Local emulators (tests/fakes): legacy KernelCI replica and Logstash http inputs.
# Every server listens on 127.0.0.1 with an ephemeral port and is stopped at teardown.
# ---------------------------------------------------------------------------------------------
import compileall
import os
from datetime import date
from pathlib import Path

import pytest

from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.legacy_data import small_corpus
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica
from tests.fakes.logstash_emulator import LogstashCluster
from tests.fakes.serving import ManualClock
from tests import summary
from tests.faults.tls_front import NoCertificateTool, make_certificate

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"

# A machine that reaches package indexes through a proxy says so in these variables, and kcing,
# as requests does, sends every request through that proxy, 127.0.0.1 included unless NO_PROXY
# names it: the tests' loopback servers would be asked for through a host beyond loopback. Tests
# of kcing's proxy handling set the ones they need themselves.
for _proxy_variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
    os.environ.pop(_proxy_variable, None)
    os.environ.pop(_proxy_variable.lower(), None)
# The built-in corpus is dated around this day (the original kcing's era).
BUILTIN_CORPUS_TODAY = date(2019, 5, 31)


@pytest.fixture(scope="session", autouse=True)
def kcing_bytecode():
    """Compile kcing's modules once, as installing a package does. The tests start kcing and its
    workers hundreds of times, and where PYTHONDONTWRITEBYTECODE is set (some shells and CI
    images set it), each start would otherwise compile every module it imports."""
    compileall.compile_dir(str(SAMPLES_DIR.parent / "kcing"), quiet=1)


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

# ---------------------------------------------------------------------------------------------
# A real Elasticsearch node (tests/realnode.py), one per session, for tests marked `realengine`.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_node(tmp_path_factory):
    """The session's real Elasticsearch node; skipped without Java, a failure when CI=true."""
    from tests import realnode
    try:
        node = realnode.start_node(tmp_path_factory.mktemp("realengine"))
    except realnode.NodeUnavailable as reason:
        if realnode.in_ci():
            pytest.fail("CI needs the real Elasticsearch node: %s" % reason, pytrace=False)
        pytest.skip("real Elasticsearch node unavailable: %s" % reason)
    started = "started (cluster yellow) in %.1fs, RSS %d MB" % (node.start_seconds, node.rss_bytes() // 2**20)
    yield node
    summary.summary_line("real Elasticsearch node: %s; RSS %d MB after the tests" % (started, node.rss_bytes() // 2**20))
    node.stop()


@pytest.fixture
def real_es(real_node):
    """The session's real node, emptied of indices and index templates before and after the test."""
    real_node.wipe()
    yield real_node
    real_node.wipe()


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["kcing_summary_lines"] = list(summary.LINES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    summary.LINES.extend(getattr(node, "workeroutput", {}).get("kcing_summary_lines", []))


def pytest_terminal_summary(terminalreporter):
    for line in summary.LINES:
        terminalreporter.write_line(line)


# Tests that must share one process under pytest-xdist's `--dist loadgroup` (what `make test`
# runs): the fault scenarios of one module, whose last test checks the totals of them all (the
# legacy and the API soaks each in a process of their own), and the tests of the real node, so
# that a session starts one node. Marked before xdist reads the marks.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(pytest.mark.xdist_group("faults-" + item.path.stem))
        elif "real_node" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("realengine"))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(certificate, key) files of a self-signed certificate for 127.0.0.1."""
    try:
        return make_certificate(tmp_path_factory.mktemp("tls"))
    except NoCertificateTool as missing:
        pytest.skip("cannot make a self-signed certificate: %s" % missing)
