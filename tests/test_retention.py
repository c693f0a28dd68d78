"""drp: the pure selection, deletion by exact names only, ledger pruning, dry run."""
from __future__ import annotations

import json
import re
import logging
import sqlite3
import tracemalloc
from datetime import date, datetime, timedelta, timezone

import pytest
from elasticsearch import Elasticsearch

from kcing import settings as settings_module
from kcing.commands import drp
from kcing.admin.retention import (
    chunks, delete_indices, expired_indices, index_day, ledger_cutoff,
)
from kcing.errors import ElasticsearchError
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.runs import RUNS_SHOWN
from kcing.ledger.models import DELIVERED, FAILED
from kcing.records import UpstreamObject
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.feedrun import clean_environ, kcing

TODAY = date(2019, 6, 10)
NOW = datetime(2019, 6, 10, 15, 30, tzinfo=timezone.utc)
# Indices drp must never touch, whatever their dates: a date in other scripts' digits (which
# int() reads as 0-9) is none of kcing's either.
FOREIGN = [".kibana_1", "logs-foo-2019.01.01", "build-latest", "kcing-unrouted-2019.01.01",
           "build-2019.01.01-000001", "build-2019.01.01x", "boots-2019.01.01", "build-2019.13.40",
           "build-\uff12\uff10\uff11\uff19.\uff10\uff11.\uff10\uff11", "log-\u0662\u0660\u0661\u0669.\u0660\u0661.\u0660\u0661"]
DRP_ARGS = {"--dry-run": False, "--drp-days": None}


@pytest.fixture(params=["8.15.3", "9.1.2"])
def es(request):
    with ElasticsearchEmulator(version=request.param) as emulator:
        yield emulator
    assert not emulator.errors


def load_settings(tmp_path, es_url, **environ):
    values = {"ES_HOST": es_url, "KCING_DB": str(tmp_path / "kcing.db"), **environ}
    return settings_module.load(environ={k: str(v) for k, v in values.items()}, local_file=tmp_path / "none.py")


def seed(es, names):
    for name in names:
        es.seed_index(name, docs={"1": {"job": "mainline"}})


def day_names(kind, first: date, count: int):
    return ["%s-%s" % (kind, (first + timedelta(days=n)).strftime("%Y.%m.%d")) for n in range(count)]


# -- pure selection ------------------------------------------------------------------------------

def test_index_day_reads_only_kcing_names():
    assert index_day("boot-2019.05.31") == date(2019, 5, 31)
    assert [index_day(name) for name in FOREIGN] == [None] * len(FOREIGN)


def test_expired_indices_keeps_the_last_days():
    names = day_names("build", date(2019, 6, 1), 10) + day_names("log", date(2019, 6, 6), 2) + FOREIGN
    # days=3 from 2019-06-10: the first day kept is 2019-06-07.
    assert expired_indices(names, TODAY, 3) == (
        ["build-2019.06.0%d" % day for day in range(1, 7)] + ["log-2019.06.06"])
    assert expired_indices(names, TODAY, 30) == []
    assert expired_indices(["test-2019.06.07", "test-2019.06.07"], TODAY, 3) == []
    assert expired_indices(FOREIGN, date(2030, 1, 1), 1) == []


def test_ledger_cutoff_is_utc_midnight_of_the_first_day_kept():
    assert ledger_cutoff(TODAY, 3) == datetime(2019, 6, 7, tzinfo=timezone.utc)


def test_chunks():
    assert list(chunks(list("abcde"), 2)) == [["a", "b"], ["c", "d"], ["e"]]
    assert list(chunks([], 50)) == []


# -- against the emulator ------------------------------------------------------------------------

def test_drp_deletes_exactly_the_expired_kcing_indices(tmp_path, es, capsys):
    expired = day_names("build", date(2019, 5, 1), 3) + ["boot-2019.06.01", "test-2019.06.06", "log-2018.12.31"]
    kept = day_names("build", date(2019, 6, 7), 4) + ["log-2019.06.07"]
    seed(es, expired + kept + FOREIGN)
    es.requests.clear()
    assert drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2), now=NOW) == 0
    assert es.index_names() == sorted(kept + FOREIGN)
    deletes = [r for r in es.requests if r.method == "DELETE"]
    assert len(deletes) == 1
    assert sorted(deletes[0].route.strip("/").split(",")) == sorted(expired)
    out = capsys.readouterr().out
    assert "drp: deleted 6 indices" in out and "drp: deleted index log-2018.12.31" in out


def test_drp_deletes_an_expired_kcing_index_someone_hid_or_closed(tmp_path, es, capsys):
    seed(es, ["build-2019.06.09"])
    es.seed_index("boot-2019.05.01", docs={"1": {"job": "mainline"}}, hidden=True)
    es.seed_index("test-2019.05.02", docs={"1": {"job": "mainline"}})
    Elasticsearch(es.url).indices.close(index="test-2019.05.02")
    assert drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2), now=NOW) == 0
    assert es.index_names() == ["build-2019.06.09"]
    assert "drp: deleted 2 indices" in capsys.readouterr().out


def test_drp_covers_regression_indices(tmp_path, es, capsys):
    expired = ["regression-2019.05.01", "regression-2019.06.06"]
    kept = ["regression-2019.06.07", "regression-2019.06.10"]
    foreign = ["regressions-2019.05.01", "regression-latest", "regression-2019.05.01-000001"]
    seed(es, expired + kept + foreign)
    assert drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2), now=NOW) == 0
    assert es.index_names() == sorted(kept + foreign)
    assert "drp: deleted index regression-2019.05.01" in capsys.readouterr().out


def test_delete_is_by_name_in_chunks_of_at_most_fifty(tmp_path, es, capsys):
    expired = day_names("test", date(2019, 1, 1), 120)
    seed(es, expired)
    es.requests.clear()
    drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3), now=NOW)
    deletes = [r.route.strip("/").split(",") for r in es.requests if r.method == "DELETE"]
    assert [len(names) for names in deletes] == [50, 50, 20]
    assert not any("*" in name or name == "_all" for names in deletes for name in names)
    assert es.index_names() == []


def test_dry_run_deletes_nothing_and_creates_no_ledger(tmp_path, es, capsys):
    seed(es, ["build-2019.01.01", "boot-2019.06.09", *FOREIGN])
    before = es.index_names()
    es.requests.clear()
    args = {**DRP_ARGS, "--dry-run": True}
    assert drp.run(args, load_settings(tmp_path, es.url, DRP_DAYS=3), now=NOW) == 0
    assert es.index_names() == before
    assert {r.method for r in es.requests} == {"GET"}
    assert not (tmp_path / "kcing.db").exists()
    out = capsys.readouterr().out
    assert "drp: would delete index build-2019.01.01" in out
    assert "would delete 1 index, no ledger at" in out


def test_a_dry_run_names_an_expired_index_with_a_block_as_the_run_would_leave_it(tmp_path, es, capsys):
    """A run leaves an index Elasticsearch will not delete for its block: the dry run must not
    list it as one it would delete, but say which would be left, as the run then does."""
    expired = ["build-2019.05.01", "build-2019.05.02", "boot-2019.06.01", "test-2019.06.06", "log-2019.05.05"]
    seed(es, expired + ["log-2019.06.10"])
    client = Elasticsearch(es.url)
    client.indices.add_block(index="build-2019.05.02", block="read_only")
    client.indices.add_block(index="boot-2019.06.01", block="metadata")
    client.indices.add_block(index="test-2019.06.06", block="write")  # a write block does not stop a delete
    client.indices.put_settings(index="log-2019.05.05", settings={"index.blocks.read_only_allow_delete": True})
    settings = load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2)
    before = es.index_names()
    es.requests.clear()
    assert drp.run({**DRP_ARGS, "--dry-run": True}, settings, now=NOW) == 0
    assert es.index_names() == before and {r.method for r in es.requests} == {"GET"}
    planned = capsys.readouterr().out.splitlines()
    with pytest.raises(ElasticsearchError):
        drp.run(DRP_ARGS, settings, now=NOW)
    done = capsys.readouterr().out.splitlines()
    would = sorted(line.split()[-1] for line in planned if line.startswith("drp: would delete index "))
    deleted = sorted(line.split()[-1] for line in done if line.startswith("drp: deleted index "))
    assert would == deleted == ["build-2019.05.01", "log-2019.05.05", "test-2019.06.06"]
    left = [line.replace("drp: would not delete", "drp: not deleted") for line in planned
            if line.startswith("drp: would not delete index ")]
    assert left == [line for line in done if line.startswith("drp: not deleted index ")] == [
        "drp: not deleted index boot-2019.06.01: blocked by [FORBIDDEN/9/index metadata (api)]",
        "drp: not deleted index build-2019.05.02: blocked by [FORBIDDEN/5/index read-only (api)]"]
    assert planned[-1] == ("drp: dry run: would delete 3 indices, no ledger at %s; 2 expired indices would be left "
                           "because of a block (the run would exit 3)" % settings.KCING_DB)


def record_seen(ledger_path, ids_by_day):
    for seen, ids in ids_by_day.items():
        ledger = Ledger.open(str(ledger_path), clock=lambda seen=seen: seen)
        ledger.record([Outcome(UpstreamObject("legacy", "build", upstream_id, "http://x/%s" % upstream_id),
                               DELIVERED if n % 2 == 0 else FAILED) for n, upstream_id in enumerate(ids)])
        ledger.close()


def test_drp_forgets_old_ledger_rows_and_keeps_recent_ones(tmp_path, es, capsys):
    db = tmp_path / "kcing.db"
    record_seen(db, {datetime(2019, 6, 1, 12): ["old1", "old2", "old3"],
                     datetime(2019, 6, 6, 23, 59): ["edge"],
                     datetime(2019, 6, 7, 0, 0): ["kept1"],
                     datetime(2019, 6, 10, 9): ["kept2"]})
    settings = load_settings(tmp_path, es.url, DRP_DAYS=3)
    drp.run({**DRP_ARGS, "--dry-run": True}, settings, now=NOW)
    assert "would forget 4 ledger rows" in capsys.readouterr().out
    ledger = Ledger.open(str(db))
    ledger.advance_watermark("api", datetime(2019, 1, 1, tzinfo=timezone.utc))
    assert sum(ledger.counts().values()) == 6
    assert ledger.last_run("drp") is None  # a dry run records no run
    ledger.close()
    drp.run(DRP_ARGS, settings, now=NOW)
    assert "forgot 4 ledger rows" in capsys.readouterr().out
    ledger = Ledger.open(str(db))
    recorded = ledger.last_run("drp")
    assert recorded.outcome == "ok" and recorded.ended is not None
    assert json.loads(recorded.counts) == {"days": 3, "first_kept": "2019-06-07", "indices_deleted": 0,
                                          "forgotten": 4}
    assert ledger.row("legacy", "build", "kept1") is not None and ledger.row("legacy", "build", "kept2") is not None
    assert ledger.row("legacy", "build", "edge") is None
    assert sum(ledger.counts().values()) == 2
    assert ledger.watermark("api") is not None  # watermarks are not retention's business
    ledger.close()


def test_drp_forgets_the_old_rows_of_every_destination_and_says_how_many_of_each(tmp_path, es, capsys):
    """README: ledger rows go whatever their destination (Logstash or an NDJSON directory); drp
    says how many of each."""
    db = tmp_path / "kcing.db"
    destinations = {"logstash http://ls:8337": ["a1", "a2"], "ndjson /srv/out": ["b1"]}
    for seen, kept in ((datetime(2019, 6, 1), False), (datetime(2019, 6, 9), True)):
        ledger = Ledger.open(str(db), clock=lambda seen=seen: seen)
        for destination, ids in destinations.items():
            ledger.record([Outcome(UpstreamObject("legacy", "build", "%s-%s" % (upstream_id, kept), "http://x"),
                                   DELIVERED) for upstream_id in ids], destination=lambda kind, d=destination: d)
        ledger.close()
    settings = load_settings(tmp_path, es.url, DRP_DAYS=3)
    assert drp.run({**DRP_ARGS, "--dry-run": True}, settings, now=NOW) == 0
    planned = capsys.readouterr().out
    assert drp.run(DRP_ARGS, settings, now=NOW) == 0
    done = capsys.readouterr().out
    for verb, out in (("would forget", planned), ("forgot", done)):
        assert "drp: %s 2 ledger rows of objects sent to logstash http://ls:8337\n" % verb in out, out
        assert "drp: %s 1 ledger row of objects sent to ndjson /srv/out\n" % verb in out, out
    assert "forgot 3 ledger rows" in done
    with sqlite3.connect(str(db)) as conn:
        left = sorted(conn.execute("SELECT destination, upstream_id FROM upstream_file").fetchall())
    assert left == [("logstash http://ls:8337", "a1-True"), ("logstash http://ls:8337", "a2-True"),
                    ("ndjson /srv/out", "b1-True")]


def test_prune_older_than_takes_aware_and_naive_cutoffs(tmp_path):
    db = tmp_path / "kcing.db"
    record_seen(db, {datetime(2019, 6, 1): ["a"], datetime(2019, 6, 3): ["b"]})
    ledger = Ledger.open(str(db))
    assert ledger.seen_before(datetime(2019, 6, 2)) == 1
    assert ledger.prune_older_than(datetime(2019, 6, 2, 2, tzinfo=timezone(timedelta(hours=2)))) == 1
    assert ledger.prune_older_than(datetime(2019, 6, 2)) == 0
    ledger.close()


def test_drp_days_flag_overrides_the_setting(tmp_path, es, capsys):
    seed(es, ["build-2019.06.05", "build-2019.06.08"])
    drp.run({**DRP_ARGS, "--drp-days": "1"}, load_settings(tmp_path, es.url, DRP_DAYS=30, KCI_DAYS=1),
                 now=NOW)
    assert es.index_names() == []
    assert "drp: keeping 1 day: indices dated from" in capsys.readouterr().out


def test_retention_inside_the_crawl_window_warns(tmp_path, es, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="kcing.admin.retention"):
        drp.run({**DRP_ARGS, "--dry-run": True}, load_settings(tmp_path, es.url, DRP_DAYS=2, KCI_DAYS=2),
                     now=NOW)
    assert "DRP_DAYS=2 is not more than KCI_DAYS=2" in caplog.text
    assert "downloaded and sent again" in caplog.text


def test_an_index_gone_between_listing_and_delete_is_not_an_error(es):
    seed(es, ["build-2019.01.01"])
    client = Elasticsearch(es.url)
    assert delete_indices(client, es.url, ["build-2019.01.01", "build-2019.01.02"]) == (
        ["build-2019.01.01", "build-2019.01.02"], {})
    assert es.index_names() == []


def test_an_expired_index_with_a_block_is_left_and_named_and_the_rest_of_the_retention_is_done(tmp_path, es, capsys):
    """Elasticsearch refuses a whole DELETE when one index it names is read-only (or has a
    metadata block): that index alone is left, named, and drp exits 3; every other expired
    index is deleted and the old ledger rows forgotten."""
    expired = day_names("build", date(2019, 5, 1), 3) + ["boot-2019.06.01", "test-2019.06.06"]
    kept = ["build-2019.06.07", "log-2019.06.10"]
    seed(es, expired + kept)
    client = Elasticsearch(es.url)
    client.indices.add_block(index="build-2019.05.02", block="read_only")
    client.indices.add_block(index="boot-2019.06.01", block="metadata")
    db = tmp_path / "kcing.db"
    record_seen(db, {datetime(2019, 6, 1, 12): ["old"], datetime(2019, 6, 9): ["recent"]})
    with pytest.raises(ElasticsearchError) as caught:
        drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2), now=NOW)
    assert es.index_names() == sorted(kept + ["build-2019.05.02", "boot-2019.06.01"])
    message = str(caught.value)
    assert message.startswith("Elasticsearch at %s refused to delete 2 expired indices because of a block: "
                              "boot-2019.06.01 [FORBIDDEN/9/index metadata (api)], build-2019.05.02 "
                              "[FORBIDDEN/5/index read-only (api)]; remove the block" % es.url), message
    assert message.endswith("and run drp again; the 3 other expired indices were deleted"), message
    assert "\n" not in message and caught.value.exit_code == 3
    out = capsys.readouterr().out
    assert "drp: not deleted index build-2019.05.02: blocked by [FORBIDDEN/5/index read-only (api)]" in out
    assert "drp: deleted index build-2019.05.01" in out and "drp: deleted 3 indices, forgot 1 ledger row" in out
    assert "drp: forgot 1 ledger row of objects sent to (unnamed)" in out  # forgotten all the same
    ledger = Ledger.open(str(db))
    recorded = ledger.last_run("drp")
    assert recorded.outcome == "error 3"
    assert json.loads(recorded.counts) == {"days": 3, "first_kept": "2019-06-07", "indices_deleted": 3,
                                          "forgotten": 1, "indices_blocked": 2}
    assert ledger.row("legacy", "build", "old") is None and ledger.row("legacy", "build", "recent") is not None
    ledger.close()
    shown = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path)
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if "drp" in line and "error 3" in line]
    assert "indices deleted 3, indices not deleted (blocked) 2, ledger rows forgotten 1" in line, line


def test_an_index_with_a_metadata_block_does_not_stop_the_listing(tmp_path, es, capsys):
    """A node refuses `_cat/indices` when it would list an index with a metadata block: someone
    else's so blocked is not listed by kcing's patterns; one of kcing's is listed by
    `_resolve/index` instead, then named as not deleted."""
    seed(es, ["build-2019.05.01", "boot-2019.05.01", "archive-2019.05.01", "log-2019.06.09"])
    client = Elasticsearch(es.url)
    client.indices.add_block(index="archive-2019.05.01", block="metadata")
    assert drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2), now=NOW) == 0
    assert es.index_names() == ["archive-2019.05.01", "log-2019.06.09"]
    seed(es, ["build-2019.05.02", "test-2019.05.02"])
    client.indices.add_block(index="test-2019.05.02", block="metadata")
    with pytest.raises(ElasticsearchError) as caught:
        drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3, KCI_DAYS=2), now=NOW)
    assert "refused to delete 1 expired index because of a block: test-2019.05.02" in str(caught.value)
    assert es.index_names() == ["archive-2019.05.01", "log-2019.06.09", "test-2019.05.02"]
    assert any(r.route.startswith("/_resolve/index/") for r in es.requests)


def test_a_read_only_cluster_is_named_with_the_cluster_setting_to_remove():
    from kcing.admin.retention import blocked_message
    message = blocked_message("http://es:9200", {"build-2019.05.01": "FORBIDDEN/6/cluster read-only (api)"}, 0)
    assert "PUT /_cluster/settings" in message and "the 0 other expired indices were deleted" in message
    assert "PUT /<index>/_settings" in blocked_message(
        "http://es:9200", {"build-2019.05.01": "FORBIDDEN/5/index read-only (api)"}, 2)


def test_a_refusal_that_is_not_a_block_still_stops_drp_with_a_clear_error(tmp_path, es):
    seed(es, ["build-2019.05.01", "build-2019.05.02"])
    es.fail_next(503, route="/build-2019.05.01")
    with pytest.raises(ElasticsearchError) as caught:
        delete_indices(Elasticsearch(es.url, max_retries=0), es.url, ["build-2019.05.01", "build-2019.05.02"])
    assert "refused a request while deleting 2 indices (build-2019.05.01 ... ) (503" in str(caught.value)
    assert es.index_names() == ["build-2019.05.01", "build-2019.05.02"]


def test_a_refusal_after_some_indices_were_deleted_says_how_many_were(es):
    # `drp -q` from cron mails the error line alone: it must say that part of the work was done.
    seed(es, ["build-2019.05.01", "build-2019.05.02", "build-2019.05.03"])
    es.fail_next(503, route="/build-2019.05.02")
    with pytest.raises(ElasticsearchError) as caught:
        delete_indices(Elasticsearch(es.url, max_retries=0), es.url,
                       ["build-2019.05.01", "build-2019.05.02", "build-2019.05.03"], size=1)
    message = str(caught.value)
    assert "refused a request while deleting 1 index (build-2019.05.02 ... ) (503" in message, message
    assert message.endswith("(1 of the 3 expired indices was deleted before it; the next drp deletes the "
                            "others and forgets the ledger rows)"), message
    assert es.index_names() == ["build-2019.05.02", "build-2019.05.03"]



def test_a_run_elasticsearch_stops_does_not_say_it_forgets_rows_it_keeps(tmp_path, es, capsys):
    """`drp -q` from cron mailed "drp: forgetting 2 ledger rows of objects sent to ..." above the
    error of a DELETE refused, though the rows are forgotten only once the indices are deleted,
    and were all kept."""
    db = tmp_path / "kcing.db"
    record_seen(db, {datetime(2019, 6, 1, 12): ["old1", "old2"]})
    seed(es, ["build-2019.05.01"])
    es.fail_next(503, route="/build-2019.05.01", count=None)
    settings = load_settings(tmp_path, es.url, ES_RETRY_BACKOFF="0.01")
    with pytest.raises(ElasticsearchError):
        drp.run(DRP_ARGS, settings, now=NOW)
    assert "ledger rows of objects sent to" not in capsys.readouterr().out
    ledger = Ledger.open(str(db))
    assert sum(ledger.counts().values()) == 2
    ledger.close()
    es._faults.clear()
    drp.run(DRP_ARGS, settings, now=NOW)
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "drp: deleted index build-2019.05.01", "drp: forgot 2 ledger rows of objects sent to (unnamed)",
        "drp: deleted 1 index, forgot 2 ledger rows"]

def test_drp_writes_its_first_kept_day_into_its_own_run_row_alone(tmp_path, es):
    """The day kept is written into the run's row before the deletes; the rows of the runs before
    it (a feed's counts, its source: `kcing status` and the feed's last success read them) stay
    as they were."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    feed = ledger.start_run("feed_es", {"source": "legacy"})
    ledger.finish_run(feed, "ok", {"source": "legacy", "destination": "logstash http://ls:8337", "delivered": 2})
    ledger.close()
    before = run_rows(db)
    seed(es, ["build-2019.05.01"])
    drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3), now=NOW)
    after = run_rows(db)
    assert after[:len(before)] == before
    assert [(command, json.loads(counts)["first_kept"]) for command, counts in after[len(before):]] == [
        ("drp", "2019-06-07")]


def ledger_row_count(db) -> int:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM upstream_file").fetchone()[0]


def run_rows(db) -> list:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("SELECT command, counts FROM run ORDER BY id").fetchall()


def test_delete_indices_refuses_a_name_that_is_not_kcing(es):
    seed(es, ["build-latest"])
    with pytest.raises(ValueError):
        delete_indices(Elasticsearch(es.url), es.url, ["build-latest"])
    assert es.index_names() == ["build-latest"]


def test_unreachable_elasticsearch_is_a_clear_error(tmp_path, capsys):
    with ElasticsearchEmulator() as gone:
        url = gone.url
    with pytest.raises(ElasticsearchError) as caught:
        drp.run(DRP_ARGS, load_settings(tmp_path, url), now=NOW)
    assert "cannot reach Elasticsearch at %s" % url in str(caught.value)


def test_with_no_elasticsearch_answering_drp_exits_3_and_forgets_no_row_and_no_run(tmp_path):
    """README: drp asks Elasticsearch first, in every case: where none answers at ES_HOST (a
    ledger of --output runs alone) it stops there, exit 3, and forgets no row."""
    db = tmp_path / "kcing.db"
    long_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=400)
    old_runs(db, long_ago)
    record_seen(db, {long_ago: ["old1", "old2"]})
    before = (run_rows(db), ledger_row_count(db))
    with ElasticsearchEmulator() as gone:
        url = gone.url
    done = kcing(["drp"], clean_environ(KCING_DB=str(db), ES_HOST=url, DRP_DAYS="3", KCI_DAYS="2"), tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().endswith("cannot reach Elasticsearch at %s: connection refused" % url), done.stderr
    assert "forgot" not in done.stdout
    runs = run_rows(db)
    assert (runs[:-1], ledger_row_count(db)) == before
    assert runs[-1][0] == "drp"  # its own run, which failed, and nothing more


def old_runs(db, first: datetime) -> dict:
    """Runs a minute apart from `first`, each as the ledger records it; {name: row id}."""
    times = iter(first + timedelta(minutes=n) for n in range(1000))
    ledger = Ledger.open(str(db), clock=lambda: next(times))
    ids = {}

    def run(name, command, outcome, counts):
        ids[name] = ledger.start_run(command, counts)
        if outcome is not None:
            ledger.finish_run(ids[name], outcome, counts)

    api_to = {"a": {"source": "api", "destination": "logstash http://a:8337"},
              "b": {"source": "api", "destination": "ndjson /srv/b"}}
    run("success a, older", "feed_es", "ok", api_to["a"])
    run("success a", "feed_es", "ok", api_to["a"])
    run("success b", "feed_es", "ok", api_to["b"])
    run("old storage", "feed_es", "ok", {"source": "legacy", "storage": "http://old-storage"})
    run("new storage, older", "feed_es", "error 1", {"source": "legacy", "storage": "http://new-storage"})
    run("new storage", "feed_es", "error 1", {"source": "legacy", "storage": "http://new-storage"})
    run("drp kept latest", "drp", "ok", {"days": 30, "first_kept": "2019-04-10"})
    run("drp kept less", "drp", "ok", {"days": 60, "first_kept": "2019-03-11"})
    run("reconcile, older", "reconcile", "ok", {"checked": 1})
    run("reconcile", "reconcile", "missing", {"checked": 1})
    run("killed", "feed_es", None, {"source": "api", "pid": 1})
    run("edited", "feed_es", "ok", None)
    run("resent", "feed_es", "ok", dict(api_to["a"], resent_by="reconcile"))
    for n in range(8):
        run("failing %d" % n, "feed_es", "error 3", api_to["a"])
    ledger.close()
    return ids


def what_runs_say(db) -> dict:
    """Every answer kcing reads from the runs table."""
    from kcing.status import report

    ledger = Ledger.open(str(db))
    try:
        return {"last success": [ledger.last_success("feed_es", "api", destination) for destination in
                                 ("logstash http://a:8337", "ndjson /srv/b", None)],
                "storages": ledger.storages_recorded("legacy"), "deleted before": ledger.deleted_before(),
                "last runs": {command: ledger.last_run(command).id for command in ("feed_es", "reconcile", "drp")},
                "status": report(ledger)["runs"]}
    finally:
        ledger.close()


def test_the_runs_drp_forgets_are_none_that_anything_reads(tmp_path):
    """A feed from cron every 10 minutes made 52,000 rows a year that no one read: the runs
    started before the cutoff go, but for the newest of each command and the last runs status
    shows, each feed's last success (its alert on --metrics), the newest run that recorded each
    storage, and the drp run that kept from the latest day."""
    db = tmp_path / "kcing.db"
    ids = old_runs(db, datetime(2019, 5, 1))
    said = what_runs_say(db)
    ledger = Ledger.open(str(db))
    forgotten = ledger.runs_started_before(ledger_cutoff(TODAY, 3))
    assert sorted(forgotten) == sorted(ids[name] for name in (
        "success a, older", "new storage, older", "reconcile, older", "killed", "edited", "resent",
        "failing 0", "failing 1", "failing 2"))
    assert ledger.forget_runs(forgotten) == len(forgotten)
    ledger.close()
    assert what_runs_say(db) == said
    ledger = Ledger.open(str(db))
    assert ledger.runs_started_before(ledger_cutoff(TODAY, 3)) == []
    assert ledger.runs_started_before(ledger_cutoff(date(2019, 5, 1), 0)) == []  # only runs before the cutoff
    ledger.close()


def test_drp_forgets_the_runs_no_one_reads_and_says_so(tmp_path, es):
    db = tmp_path / "kcing.db"
    ids = old_runs(db, datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=400))
    env = clean_environ(KCING_DB=str(db), ES_HOST=es.url, DRP_DAYS="3", KCI_DAYS="2")
    planned = kcing(["drp", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert re.search(r"^drp: would forget 9 runs started before \S+ \S+ UTC from the runs table \(kept: those "
                     r"status, --metrics, reconcile and the feed still read\)$", planned.stdout, re.M), planned.stdout
    assert len(run_rows(db)) == len(ids)
    done = kcing(["drp"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^drp: forgot 9 runs started before ", done.stdout, re.M), done.stdout
    assert len(run_rows(db)) == len(ids) - 9 + 1  # and drp's own
    shown = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path)
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("  drp ") and " ok " in line
              and "runs forgotten" in line]
    assert line.endswith("indices deleted 0, ledger rows forgotten 0, runs forgotten 9"), line


def test_a_drp_stopped_while_it_forgets_runs_records_the_rows_it_forgot_already(tmp_path, es, monkeypatch, capsys):
    """The ledger rows go in one transaction, then the old runs in another: a signal during the
    second (seconds on a ledger of years of runs) closed the row `error 130` saying nothing of the
    rows the first forgot, and the next drp forgot none, so no run said they went."""
    db = tmp_path / "kcing.db"
    long_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=400)
    old_runs(db, long_ago)
    record_seen(db, {long_ago: ["old1", "old2", "old3"]})
    es.seed_index("build-2019.01.01", docs={"1": {"job": "mainline"}})

    def interrupted(self, run_ids):
        raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "forget_runs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        drp.run(DRP_ARGS, load_settings(tmp_path, es.url, DRP_DAYS=3))
    assert ledger_row_count(db) == 0
    ledger = Ledger.open(str(db))
    stopped = ledger.last_run("drp")
    ledger.close()
    assert stopped.outcome == "error 130"
    counts = json.loads(stopped.counts)
    assert (counts["forgotten"], counts["indices_deleted"]) == (3, 1) and "runs_forgotten" not in counts


def test_the_newest_run_of_a_storage_is_kept_when_a_later_success_recorded_another(tmp_path):
    """The legacy feed's rows built at an earlier storage are asked for there by a run given
    another: the newest run that recorded each storage stays, even when it succeeded no last,
    failed, or is older than the newest runs and the newest of its command."""
    db = tmp_path / "kcing.db"
    times = iter(datetime(2019, 5, 1) + timedelta(minutes=n) for n in range(100))
    ledger = Ledger.open(str(db), clock=lambda: next(times))
    old = ledger.start_run("feed_es", {"source": "legacy", "storage": "http://old-storage"})
    ledger.finish_run(old, "error 1", {"source": "legacy", "storage": "http://old-storage"})
    for _ in range(7):
        run = ledger.start_run("feed_es", {"source": "legacy", "storage": "http://new-storage"})
        ledger.finish_run(run, "ok", {"source": "legacy", "storage": "http://new-storage"})
    forgotten = ledger.runs_started_before(ledger_cutoff(TODAY, 3))
    assert old not in forgotten and len(forgotten) == 7 - RUNS_SHOWN
    ledger.forget_runs(forgotten)
    assert ledger.storages_recorded("legacy") == {"http://old-storage", "http://new-storage"}
    ledger.close()


def test_the_runs_drp_forgets_are_chosen_without_holding_the_runs_table(tmp_path):
    """A ledger from before drp forgot runs holds one per feed since it began (52,000 a year from
    cron every 10 minutes): choosing those to forget held every row with its counts at once
    (300,000 runs took drp to 300 MB); it keeps their ids alone."""
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    counts = json.dumps({"source": "legacy", "storage": "http://storage", "note": "x" * 10000})
    with sqlite3.connect(str(db)) as conn:
        conn.executemany("INSERT INTO run (command, started, ended, outcome, counts) VALUES (?, ?, ?, ?, ?)",
                         [("feed_es", "2019-05-01 00:00:%02d.%06d" % (n // 1000000, n % 1000000),
                           "2019-05-01 00:01:00.000000", "ok", counts) for n in range(4000)])
    ledger = Ledger.open(str(db))
    tracemalloc.start()
    try:
        forgotten = ledger.runs_started_before(ledger_cutoff(TODAY, 3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        ledger.close()
    assert len(forgotten) == 4000 - RUNS_SHOWN  # the newest of every kind is among the last shown
    assert peak < 10 * 1024 * 1024, peak  # the counts alone are 40 MB
