"""kcing against an Elasticsearch that serves only the requests elk.md's emulator checklist names
(§3.8: `/`, `_cluster/health`, index and component templates, ILM policies, `_cat/indices`,
deleting indices, `_bulk`, `_count`, `_mget`, `_search`): a proxy exposing part of the API, or a
test double made to that list. Every other request is answered as a server without it answers:
404, or a node's own 400 "no handler found for uri".

`_resolve/index` and an index's `_settings`, which kcing asks only to say more (which indices are
data streams or refuse writes, which expired index a block would keep), ended `reconcile` and
`drp --dry-run` with exit 3 there, while the same checks and the deletion need nothing more."""
from __future__ import annotations

import re

import pytest

from tests.fakes import elastic_server
from tests.feedrun import SAMPLES, kcing, kept_ids, ledger_rows
from tests.test_reconcile import delete_documents, env, es, es_keys, forwarding  # noqa: F401 (fixtures)

# The requests of elk.md §3.8, as paths (DELETE /<names> aside).
CHECKLIST = re.compile(r"/(?:_cluster/health|(?:_index_template|_component_template|_ilm/policy|_cat/indices)(?:/.*)?"
                       r"|(?:[^_/][^/]*/)?(?:_bulk|_count|_mget|_search))?")

needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


@pytest.fixture(params=[404, 400], ids=["no-route", "no-handler"])
def checklist_only(request, es, monkeypatch):
    """`es` answering only the checklist's requests; the refused ones are listed in `.refused`."""
    status, served, refused = request.param, es._match, []

    def match(method, target, route, segments):
        path = "/" + "/".join(segments)
        if not CHECKLIST.fullmatch(path) and not (method == "DELETE" and len(segments) == 1):
            refused.append((method, path))
            raise elastic_server._Answer(status, {"error": "no handler found for uri [%s] and method [%s]"
                                                           % (target, method), "status": status})
        return served(method, target, route, segments)

    monkeypatch.setattr(es, "_match", match)
    es.refused, es.unserved_status = refused, status
    return es


@needs_samples
def test_reconcile_finds_and_marks_missing_documents_where_index_metadata_is_not_served(env, tmp_path, checklist_only):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    build = next(key for key in sorted(kept) if key[0] == "build")
    delete_documents(checklist_only, kept[build])

    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 1, checked.stderr
    assert "missing build %s: 1 of 1 document" % build[1] in checked.stdout
    assert ("does not answer the requests that say which indices are data streams or refuse writes (GET "
            "/_resolve/index/..., GET /.../_settings: %d, no handler found for uri [/_resolve/index/%s"
            % (checklist_only.unserved_status, build_index(checked.stdout, build[1]))) in checked.stderr
    assert [row["state"] for row in ledger_rows(db) if row["upstream_id"] == build[1]] == ["failed"]
    assert any(path.startswith("/_resolve/index/") for _, path in checklist_only.refused)

    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stderr
    assert kept[build] <= es_keys(checklist_only)


@needs_samples
def test_a_dry_run_of_drp_lists_what_drp_deletes_where_index_settings_are_not_served(env, tmp_path, checklist_only):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    expired = sorted(index for index in checklist_only.index_names() if index[-10:-6] in ("2019", "2020"))
    assert expired

    dry = kcing(["drp", "--dry-run", "--drp-days", "40"], env, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert ["drp: would delete index %s" % name for name in expired] == [
        line for line in dry.stdout.splitlines() if line.startswith("drp: would delete index ")]
    assert "does not answer GET /.../_settings" in dry.stderr
    assert set(expired) <= set(checklist_only.index_names())  # a dry run

    done = kcing(["drp", "--drp-days", "40"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert ["drp: deleted index %s" % name for name in expired] == [
        line for line in done.stdout.splitlines() if line.startswith("drp: deleted index ")]
    assert not set(expired) & set(checklist_only.index_names())


def build_index(stdout: str, build_id: str) -> str:
    """The index reconcile names for the missing document of build `build_id`."""
    return re.search(r"missing build %s: .*, e\.g\. ([^/]+)/" % build_id, stdout).group(1)


def test_setup_es_needs_nothing_beyond_the_checklist(env, tmp_path, checklist_only):
    for args in (["setup_es"], ["setup_es", "--ilm"]):
        done = kcing(args, env, tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
