"""--metrics: Prometheus text a node exporter's textfile collector accepts."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from prometheus_client.parser import text_string_to_metric_families

from kcing import metrics
from kcing.errors import ConfigError
from kcing.files import write_atomically
from kcing.pipeline import RunSummary


def parsed(text: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# The text exposition format, as Prometheus and the node exporter's textfile collector read it.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?\Z")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|[Ii]nf|NaN)\Z")


def strictly_parsed(text: str) -> dict:
    """{(name, labels): value}, refusing what the lenient prometheus_client parser lets through:
    a bad metric or label name, a label value with a raw newline or an unknown escape, a HELP or
    TYPE given twice or after its samples, a family's samples apart, a series given twice, a
    value that is no float, a missing last newline."""
    assert text.endswith("\n") and not text.endswith("\n\n"), repr(text[-20:])
    series: dict = {}
    described, typed, finished = set(), set(), set()
    family = None
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name, _, rest = line[7:].partition(" ")
            assert _METRIC_NAME.match(name), line
            seen = described if line.startswith("# HELP ") else typed
            assert name not in seen and name not in finished and name != family, line
            if line.startswith("# TYPE "):
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
            else:
                assert rest.strip() and "\\" not in rest.replace("\\\\", "").replace("\\n", ""), line
            seen.add(name)
            continue
        assert not line.startswith("#") and line.strip(), repr(line)
        match = _SAMPLE.match(line)
        assert match, repr(line)
        name, labels_text, value = match.group(1), match.group(2) or "", match.group(3)
        if name != family:
            assert name not in finished, "samples of %s apart: %r" % (name, line)
            if family is not None:
                finished.add(family)
            family = name
        assert name in typed and name in described, "%s has no HELP or TYPE" % name
        labels = []
        rest = labels_text
        while rest:
            label = _LABEL.match(rest)
            assert label and not label.group(1).startswith("__"), repr(line)
            labels.append((label.group(1), label.group(2)))
            rest = rest[label.end():]
            if rest:
                assert rest.startswith(","), repr(line)
                rest = rest[1:]
        assert len({name for name, _ in labels}) == len(labels), line
        key = (name, tuple(sorted(labels)))
        assert key not in series, "series twice: %r" % line
        assert _FLOAT.match(value), line
        series[key] = float(value)
    return series


def test_render_is_strictly_valid_whatever_the_label_holds():
    summary = RunSummary(listed=3, delivered=2, failed=1, elapsed=0.0004)
    hostile = 'a\\b"c\nd'
    text = metrics.render(summary, hostile, 1, 1700000000.123456, 1690000000.0)
    values = strictly_parsed(text)
    escaped = 'a\\\\b\\"c\\nd'
    assert values[("kcing_feed_exit_code", (("source", escaped),))] == 1
    assert parsed(text)[("kcing_feed_exit_code", (("source", hostile),))] == 1
    assert len([key for key in values if key[0] == "kcing_feed_objects"]) == len(metrics.OUTCOMES)


def test_render_is_valid_exposition_text_with_every_outcome():
    summary = RunSummary(listed=11, skipped=2, downloaded=9, delivered=8, rejected=1, documents=2462,
                         batches=7, bytes_sent=2120774, elapsed=1.25)
    values = parsed(metrics.render(summary, 'le"gacy', 1, 1700000000.5, 1690000000.0))
    assert values[("kcing_feed_objects", (("outcome", "delivered"), ("source", 'le"gacy')))] == 8
    assert values[("kcing_feed_objects", (("outcome", "rejected"), ("source", 'le"gacy')))] == 1
    assert values[("kcing_feed_documents", (("source", 'le"gacy'),))] == 2462
    assert values[("kcing_feed_exit_code", (("source", 'le"gacy'),))] == 1
    assert values[("kcing_feed_last_success_timestamp_seconds", (("source", 'le"gacy'),))] == 1690000000.0


def test_no_success_yet_means_no_success_metric():
    text = metrics.render(RunSummary(), "api", 3, 1700000000.0, None)
    assert "kcing_feed_last_success_timestamp_seconds" not in text
    assert parsed(text)[("kcing_feed_exit_code", (("source", "api"),))] == 3


def test_the_file_is_replaced_whole_and_readable_by_the_exporter(tmp_path):
    path = tmp_path / "textfile" / "kcing.prom"
    metrics.write(str(path), "old 1\n")
    metrics.write(str(path), metrics.render(RunSummary(), "legacy", 0, 1.0, 1.0))
    assert "kcing_feed_objects" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["kcing.prom"]


def test_a_metrics_file_that_is_a_device_or_fifo_is_refused_before_the_run_not_replaced(tmp_path):
    """`--metrics /dev/null` (to keep a cron line's metrics nowhere) renamed the new file over the
    device: run as root, every program's /dev/null was a file from then on. A FIFO stands for the
    device here, which a test must never risk replacing."""
    from tests.feedrun import SAMPLES, clean_environ, kcing

    fifo = tmp_path / "kcing.prom"
    os.mkfifo(str(fifo))
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(SAMPLES))
    refused = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out"), "--metrics", str(fifo)],
                    env, tmp_path, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines() == [
        "kcing feed_es: --metrics %s: it is a FIFO, which kcing would replace with a file (it writes a new file and "
        "renames it): name a regular file" % fifo]
    assert stat.S_ISFIFO(os.lstat(str(fifo)).st_mode)
    assert not (tmp_path / "out").exists() and not (tmp_path / "kcing.db").exists()


def test_a_file_kcing_replaces_whole_is_never_a_device_or_fifo(tmp_path):
    """What write_atomically replaces (metrics, pipelines.yml, a Kibana export, a sample) is a
    regular file or a link, never the device or FIFO found at its name."""
    fifo = tmp_path / "pipelines.yml"
    os.mkfifo(str(fifo))
    with pytest.raises(ConfigError, match="it is a FIFO, which kcing would replace with a file"):
        write_atomically(fifo, b"x\n")
    assert stat.S_ISFIFO(os.lstat(str(fifo)).st_mode) and os.listdir(str(tmp_path)) == ["pipelines.yml"]
    (tmp_path / "target").write_text("old\n")
    (tmp_path / "link").symlink_to("target")
    write_atomically(tmp_path / "link", b"new\n")  # a link is replaced, its target left as it was
    assert (tmp_path / "link").read_text() == "new\n" and (tmp_path / "target").read_text() == "old\n"


def test_what_is_never_replaced_is_named_by_its_kind_and_a_directory_is_left_to_the_rename(tmp_path):
    from kcing.files import not_replaceable

    assert not_replaceable(Path("/dev/null")).startswith("it is a character device, which kcing would replace ")
    (tmp_path / "file").write_text("")
    # A directory is refused by the rename itself (EISDIR), not taken for a file kcing would replace.
    assert [not_replaceable(path) for path in (tmp_path / "file", tmp_path, tmp_path / "none")] == [None] * 3


def test_feed_es_writes_the_metrics_of_each_run(legacy_replica, logstash, tmp_path):
    from tests.feedrun import feed_environ, kcing

    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_MAX_RETRIES="1")
    prom = tmp_path / "textfile" / "kcing.prom"
    prom.parent.mkdir()  # the node exporter's directory: kcing does not create it (see test_cli)
    logstash.lava.fail_next(500, count=None)  # Logstash's LAVA input is down
    failed = kcing(["feed_es", "--metrics", str(prom)], env, tmp_path)
    assert failed.returncode == 3, failed.stderr
    values = parsed(prom.read_text())
    strictly_parsed(prom.read_text())
    assert values[("kcing_feed_exit_code", (("source", "legacy"),))] == 3
    assert "kcing_feed_last_success_timestamp_seconds" not in prom.read_text()

    logstash.lava.clear_faults()
    logstash.clear()
    ok = kcing(["feed_es", "--metrics", str(prom)], env, tmp_path)
    assert ok.returncode == 0, ok.stderr
    values = parsed(prom.read_text())
    assert strictly_parsed(prom.read_text()) == values
    assert values[("kcing_feed_exit_code", (("source", "legacy"),))] == 0
    assert values[("kcing_feed_objects", (("outcome", "delivered"), ("source", "legacy")))] > 0
    assert values[("kcing_feed_documents", (("source", "legacy"),))] == len(logstash.store)
    assert ("kcing_feed_last_success_timestamp_seconds", (("source", "legacy"),)) in values


def test_the_bytes_of_a_run_into_output_files_are_those_the_files_took(tmp_path):
    """Counted as a Logstash body, a JSON array, they held a comma per document and two brackets
    per batch that no file holds."""
    from tests.feedrun import SAMPLES, clean_environ, kcing

    out, prom = tmp_path / "out", tmp_path / "kcing.prom"
    written = kcing(["feed_es", "--source", "samples", "--output", str(out), "--metrics", str(prom)],
                    clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(SAMPLES)), tmp_path)
    assert written.returncode == 0, written.stderr
    size = sum(path.stat().st_size for path in out.glob("*.ndjson"))
    assert parsed(prom.read_text())[("kcing_feed_bytes", (("source", "samples"),))] == size
    assert "bytes_sent %d," % size in written.stderr


@pytest.mark.parametrize("buffering", ["unbuffered", "buffered"])
def test_a_run_whose_stdout_fails_still_writes_its_metrics(legacy_replica, logstash, tmp_path, buffering):
    # `kcing feed_es --metrics F >> kcing.log` on a full disk: the summary that could not be
    # printed took the metrics file with it, and the exporter went on showing the run before.
    import subprocess
    import sys

    from tests.feedrun import REPO, feed_environ
    from tests.test_operations_cron import buffered_as

    env = buffered_as(feed_environ(legacy_replica, logstash, tmp_path / "kcing.db"), buffering)
    prom = tmp_path / "kcing.prom"
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es", "--metrics", str(prom)], env=env,
                              cwd=str(tmp_path), stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    values = parsed(prom.read_text())
    # The exit code the run ends with where stdout fails at once; held to the end, the run's own.
    assert values[("kcing_feed_exit_code", (("source", "legacy"),))] == (5 if buffering == "unbuffered" else 0)
    assert values[("kcing_feed_objects", (("outcome", "delivered"), ("source", "legacy")))] > 0
    assert values[("kcing_feed_documents", (("source", "legacy"),))] == len(logstash.store)


@pytest.mark.parametrize("buffering", ["unbuffered", "buffered"])
def test_a_run_whose_stdout_reader_is_gone_writes_the_status_it_ends_with(tmp_path, buffering):
    # `kcing feed_es --metrics F | head -0`: the run ends quietly with 141, as SIGPIPE ends other
    # tools, but where the summary failed at once its metrics said 70, an internal error.
    import subprocess
    import sys

    from tests.feedrun import REPO, SAMPLES, clean_environ
    from tests.test_operations_cron import buffered_as

    env = buffered_as(clean_environ(KCING_DB=str(tmp_path / "kcing.db")), buffering)
    prom = tmp_path / "kcing.prom"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before kcing writes
    done = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es", "--source", "samples",
                           "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out"), "--metrics", str(prom)],
                          env=env, cwd=str(tmp_path), stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 141, done.stderr
    assert "internal error" not in done.stderr
    values = parsed(prom.read_text())
    # The exit code the run ends with where stdout fails at once; held to the end, the run's own.
    assert values[("kcing_feed_exit_code", (("source", "samples"),))] == (141 if buffering == "unbuffered" else 0)
    assert values[("kcing_feed_objects", (("outcome", "delivered"), ("source", "samples")))] > 0


def test_the_last_success_is_that_of_a_run_to_the_same_destination(legacy_replica, logstash, tmp_path):
    """A run into --output files that went well says nothing of the feed to Logstash: the
    metrics of a Logstash run that fails must not show that run's time as its last success
    (an alert on its age would stay quiet while Logstash gets nothing)."""
    from tests.feedrun import feed_environ, kcing

    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_MAX_RETRIES="1")
    prom = tmp_path / "kcing.prom"
    written = kcing(["feed_es", "--output", str(tmp_path / "out"), "--metrics", str(prom)], env, tmp_path)
    assert written.returncode == 0, written.stderr
    assert ("kcing_feed_last_success_timestamp_seconds", (("source", "legacy"),)) in parsed(prom.read_text())
    logstash.lava.fail_next(500, count=None)
    failed = kcing(["feed_es", "--metrics", str(prom)], env, tmp_path)
    assert failed.returncode == 3, failed.stderr
    assert "kcing_feed_last_success_timestamp_seconds" not in prom.read_text(), prom.read_text()
    logstash.lava.clear_faults()
    ok = kcing(["feed_es", "--metrics", str(prom)], env, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ("kcing_feed_last_success_timestamp_seconds", (("source", "legacy"),)) in parsed(prom.read_text())


def test_the_exit_code_of_a_verify_run_is_the_one_the_run_ends_with(legacy_replica, logstash, es, tmp_path):
    """feed_es --verify exits 1 when Elasticsearch lacks what Logstash acknowledged: its metrics
    say so too, not the 0 of the delivery alone (an alert on the exit code would miss it)."""
    from elasticsearch import Elasticsearch
    from kcing.admin.templates import install, templates_for
    from tests.feedrun import feed_environ, kcing

    install(Elasticsearch(es.url), es.url, templates_for(None), None)  # an Elasticsearch that gets nothing
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_HOST=es.url, DRP_DAYS="36500")
    prom = tmp_path / "kcing.prom"
    verified = kcing(["feed_es", "--verify", "--verify-delay", "0", "--metrics", str(prom)], env, tmp_path)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    values = parsed(prom.read_text())
    assert values[("kcing_feed_exit_code", (("source", "legacy"),))] == 1
    assert values[("kcing_feed_objects", (("outcome", "delivered"), ("source", "legacy")))] > 0


def test_a_verify_run_that_found_documents_missing_is_no_success(legacy_replica, logstash, es, tmp_path):
    """Logstash acknowledged everything and Elasticsearch got none of it (its output broken): the
    run exits 1, and neither its metrics nor `kcing status` may call it a success. Counted as
    one, the README's hourly `feed_es --verify` would refresh the last-success metric every hour
    (each run re-sending what the previous found missing), and the alert on its age would never
    fire for the very fault --verify is there to catch."""
    import json

    from elasticsearch import Elasticsearch
    from kcing.admin.templates import install, templates_for
    from tests.feedrun import feed_environ, kcing

    install(Elasticsearch(es.url), es.url, templates_for(None), None)  # an Elasticsearch that gets nothing
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_HOST=es.url, DRP_DAYS="36500")
    prom = tmp_path / "kcing.prom"
    for _ in range(2):  # the second re-sends what the first found missing, and finds it missing again
        verified = kcing(["feed_es", "--verify", "--verify-delay", "0", "--metrics", str(prom)], env, tmp_path)
        assert verified.returncode == 1, verified.stdout + verified.stderr
        assert "kcing_feed_last_success_timestamp_seconds" not in prom.read_text(), prom.read_text()
    shown = kcing(["status", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    feeds = [run for run in json.loads(shown.stdout)["runs"] if run["command"] == "feed_es"]
    assert [run["outcome"] for run in feeds] == ["missing", "missing"], feeds
    assert feeds[0]["counts"]["delivered"] > 0, feeds


def test_a_verify_run_that_could_not_ask_elasticsearch_is_no_success(legacy_replica, logstash, tmp_path):
    """Logstash acknowledged everything, and Elasticsearch could not be asked (down, or ES_HOST
    naming something else): the run exits 3, yet its row said `ok` and its metrics a fresh last
    success, so that an Elasticsearch down for good kept the README's alert on that age quiet,
    and `kcing status` contradicted the exit status. The row says `error 3`, as the run ended."""
    import json

    from tests.fakes.serving import refusing_port
    from tests.feedrun import feed_environ, kcing

    with refusing_port() as port:
        nowhere = "http://127.0.0.1:%d" % port
        env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_HOST=nowhere, DRP_DAYS="36500")
        prom = tmp_path / "kcing.prom"
        verified = kcing(["feed_es", "--verify", "--verify-delay", "0", "--metrics", str(prom)], env, tmp_path)
    assert verified.returncode == 3, verified.stdout + verified.stderr
    values = parsed(prom.read_text())
    assert values[("kcing_feed_exit_code", (("source", "legacy"),))] == 3
    assert "kcing_feed_last_success_timestamp_seconds" not in prom.read_text(), prom.read_text()
    shown = kcing(["status", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    feeds = [run for run in json.loads(shown.stdout)["runs"] if run["command"] == "feed_es"]
    assert [run["outcome"] for run in feeds] == ["error 3"], feeds
    assert feeds[0]["counts"]["delivered"] > 0, feeds


def test_the_last_success_is_found_however_many_runs_of_other_feeds_came_since(tmp_path):
    """Only the newest 500 successful runs were read: once the other feeds sharing the ledger
    (another source, an --output directory) had succeeded 500 times since, a feed failing all
    that while lost its last-success metric, and the alert on its age, which the README
    recommends, went quiet for good in the middle of the outage."""
    from kcing.ledger.ledger import Ledger

    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    try:
        failing = {"source": "api", "destination": "logstash http://ls:8338"}
        first = ledger.start_run("feed_es", failing)
        ledger.finish_run(first, "ok", dict(failing, delivered=3))
        succeeded_at = ledger.last_success("feed_es", "api", failing["destination"])
        assert succeeded_at is not None
        other = {"source": "legacy", "destination": "logstash http://ls:8338"}
        with ledger.db.atomic():
            for _ in range(600):  # some 25 days of an hourly feed beside it
                ledger.finish_run(ledger.start_run("feed_es", other), "ok", other)
            for _ in range(600):
                ledger.finish_run(ledger.start_run("feed_es", failing), "error 3", failing)
        assert ledger.last_success("feed_es", "api", failing["destination"]) == succeeded_at
        assert ledger.last_success("feed_es", "legacy", other["destination"]) is not None
    finally:
        ledger.close()
