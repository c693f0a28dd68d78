"""`kcing status` tells a cron user the truth about every state the ledger holds, and the last
runs as they ended: each ledger built through the real program, read back through it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from kcing.admin.templates import install, templates_for
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import DELIVERED
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.feedrun import SAMPLES, clean_environ, feed_environ, kcing
from tests.test_reconcile import day_index, es_client, obj, packed, seed, to_logstash


@pytest.fixture
def es():
    with ElasticsearchEmulator() as emulator:
        install(Elasticsearch(emulator.url), emulator.url, templates_for(None), None)
        yield emulator
    assert not emulator.errors


def status_json(env: dict, cwd: Path) -> dict:
    shown = kcing(["status", "--json"], env, cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def status_text(env: dict, cwd: Path) -> str:
    shown = kcing(["status"], env, cwd)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n\n", 1)[0]


def closed_and_missing_ledger(tmp_path: Path, es) -> Path:
    """Four objects delivered to Logstash: one whole in an open index, one in a closed index, one
    split over both, one whose only document Elasticsearch lacks."""
    db = tmp_path / "kcing.db"
    today, closed = day_index("build", 0), day_index("build", 1)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("open"), DELIVERED, documents=packed(1, 2, index=today)),
                   Outcome(obj("shut"), DELIVERED, documents=packed(3, 4, index=closed)),
                   Outcome(obj("gone"), DELIVERED, documents=packed(7, index=today)),
                   Outcome(obj("both"), DELIVERED, documents={**packed(5, index=today), **packed(6, index=closed)})],
                  to_logstash)
    ledger.close()
    seed(es, [(today, "%040x" % n) for n in (1, 2, 5)] + [(closed, "%040x" % n) for n in (3, 4, 6)])
    es_client(es).indices.close(index=closed)
    return db


def test_the_last_reconcile_shows_what_it_could_not_check_and_what_it_marked(tmp_path, es):
    """The objects in a closed index were not checked: a status reading `ok, checked 2, present 2`
    alone would claim Elasticsearch holds them."""
    db = closed_and_missing_ledger(tmp_path, es)
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    first = kcing(["reconcile"], env, tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    text = status_text(env, tmp_path)
    last = section(text, "last reconcile")
    assert "missing 1" in last and "not checked (index closed or unreadable) 1" in last, text
    assert "marked undelivered 1" in last, text


def test_a_reconcile_that_exits_1_for_objects_held_missing_is_not_recorded_ok(tmp_path, es):
    """A second reconcile finds nothing new missing but exits 1: an object found missing earlier
    was not sent again. The runs table must not say `ok` for that run."""
    db = closed_and_missing_ledger(tmp_path, es)
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    again = kcing(["reconcile"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 objects are held as missing" in again.stdout
    data = status_json(env, tmp_path)
    assert data["last_reconcile"]["outcome"] == "missing", data["last_reconcile"]
    assert data["last_reconcile"]["counts"]["held_missing"] == 1
    last = section(status_text(env, tmp_path), "last reconcile")
    assert " missing " in last and "held missing 1" in last, last
