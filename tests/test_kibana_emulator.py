"""Pin the strictness of the Kibana emulator (elk.md §5.7) with plain `requests` calls."""
from __future__ import annotations

import json

import pytest
import requests

from tests.fakes.kibana_server import XSRF_MESSAGE, KibanaEmulator

TIMEOUT = (2, 5)
XSRF = {"kbn-xsrf": "true"}
EXPORT = "/api/saved_objects/_export"
IMPORT = "/api/saved_objects/_import"


def data_view(id_="dv", title="boot-*"):
    return {"type": "index-pattern", "id": id_, "attributes": {"title": title, "timeFieldName": "@timestamp"},
            "references": [], "coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.0.0"}


def visualization(id_="vis", index="dv", title="A chart"):
    return {"type": "visualization", "id": id_, "attributes": {"title": title, "visState": "{}"},
            "references": [{"id": index, "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                            "type": "index-pattern"}],
            "coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.5.0"}


def ndjson(*objects) -> bytes:
    return "\n".join(json.dumps(obj) for obj in objects).encode()


@pytest.fixture
def kibana():
    with KibanaEmulator(spaces=("ci",)) as running:
        yield running
    assert running.errors == []


def post_export(kibana, body, path=EXPORT, headers=XSRF, **kwargs):
    return requests.post(kibana.url + path, json=body, headers=headers, timeout=TIMEOUT, **kwargs)


def post_import(kibana, data: bytes, filename="export.ndjson", path=IMPORT, params=None, headers=XSRF, **kwargs):
    files = {"file": (filename, data, "application/ndjson")}
    return requests.post(kibana.url + path, files=files, params=params or {}, headers=headers, timeout=TIMEOUT,
                         **kwargs)


def boom_body(response):
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


# -- status ------------------------------------------------------------------------------------

def test_status_answers_200_when_available_or_degraded_and_503_otherwise(kibana):
    response = requests.get(kibana.url + "/api/status", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["status"]["overall"]["level"] == "available"
    assert response.json()["version"]["number"] == "8.15.3"
    kibana.set_level("degraded")
    assert requests.get(kibana.url + "/api/status", timeout=TIMEOUT).status_code == 200
    kibana.set_level("unavailable")
    response = requests.get(kibana.url + "/api/status", timeout=TIMEOUT)
    assert response.status_code == 503 and response.json()["status"]["overall"]["level"] == "unavailable"


def test_the_status_code_follows_the_core_services_not_the_plugins(kibana):
    """A plugin unavailable makes the overall level unavailable, yet Kibana answers 200 while
    Elasticsearch and saved objects are available (elastic/kibana#159768), and the saved objects
    API works."""
    kibana.set_level("unavailable", core="available")
    response = requests.get(kibana.url + "/api/status", timeout=TIMEOUT)
    assert response.status_code == 200
    status = response.json()["status"]
    assert status["overall"]["level"] == "unavailable" and status["core"]["savedObjects"]["level"] == "available"
    assert post_export(kibana, {"type": ["dashboard"]}).status_code == 200
    kibana.set_level("unavailable", core="degraded")
    assert requests.get(kibana.url + "/api/status", timeout=TIMEOUT).status_code == 200
    kibana.set_level("critical", core="critical")
    assert requests.get(kibana.url + "/api/status", timeout=TIMEOUT).status_code == 503
    kibana.set_level("available", core="degraded")  # the overall level is the worst of all
    assert requests.get(kibana.url + "/api/status", timeout=TIMEOUT).json()["status"]["overall"]["level"] == "degraded"


def test_saved_objects_routes_answer_503_while_unavailable(kibana):
    kibana.set_level("critical")
    response = post_export(kibana, {"type": ["dashboard"]})
    assert response.status_code == 503 and boom_body(response)["error"] == "Service Unavailable"


def test_a_starting_kibana_answers_every_route_with_plain_text_503(kibana):
    kibana.set_starting()
    for response in (requests.get(kibana.url + "/api/status", timeout=TIMEOUT), post_export(kibana, {"type": "x"})):
        assert response.status_code == 503
        assert response.text == "Kibana server is not ready yet"
    kibana.set_starting(False)
    assert requests.get(kibana.url + "/api/status", timeout=TIMEOUT).status_code == 200


# -- routing, spaces, xsrf, auth ---------------------------------------------------------------

def test_unknown_routes_and_methods_get_a_boom_404(kibana):
    for response in (requests.get(kibana.url + "/api/nothing", timeout=TIMEOUT),
                     requests.get(kibana.url + EXPORT, timeout=TIMEOUT)):
        assert response.status_code == 404
        assert boom_body(response) == {"statusCode": 404, "error": "Not Found", "message": "Not Found"}


def test_post_without_kbn_xsrf_gets_the_exact_400(kibana):
    response = post_export(kibana, {"type": ["dashboard"]}, headers={})
    assert response.status_code == 400
    assert boom_body(response) == {"statusCode": 400, "error": "Bad Request", "message": XSRF_MESSAGE}
    assert post_import(kibana, ndjson(data_view()), headers={}).status_code == 400
    # kbn-version is the other header Kibana accepts (its own UI sends it).
    assert post_export(kibana, {"type": ["dashboard"]}, headers={"kbn-version": "8.15.3"}).status_code == 200
    # Kibana asks only that the header be there (`XSRF_HEADER in request.headers`): empty is enough.
    assert post_export(kibana, {"type": ["dashboard"]}, headers={"kbn-xsrf": ""}).status_code == 200


def test_an_export_body_is_read_by_its_content_type(kibana):
    body = json.dumps({"type": ["dashboard"]})
    # hapi takes a body without a Content-Type for JSON; text is a string the body schema refuses.
    assert requests.post(kibana.url + EXPORT, data=body, headers=dict(XSRF), timeout=TIMEOUT).status_code == 200
    as_text = requests.post(kibana.url + EXPORT, data=body, timeout=TIMEOUT,
                            headers=dict(XSRF, **{"Content-Type": "text/plain"}))
    assert as_text.status_code == 400 and "found [string]" in boom_body(as_text)["message"]
    as_xml = requests.post(kibana.url + EXPORT, data=body, timeout=TIMEOUT,
                           headers=dict(XSRF, **{"Content-Type": "application/xml"}))
    assert boom_body(as_xml) == {"statusCode": 415, "error": "Unsupported Media Type", "message": "Unsupported Media Type"}


def test_space_prefix_routes_to_that_space_and_only_the_spaces_api_knows_unknown_spaces(kibana):
    assert post_import(kibana, ndjson(data_view()), path="/s/ci" + IMPORT).json()["success"] is True
    assert kibana.get("index-pattern", "dv", space="ci") is not None
    assert kibana.get("index-pattern", "dv") is None
    assert post_export(kibana, {"type": "index-pattern"}, path="/s/ci" + EXPORT).text.count('"id":"dv"') == 1
    # Kibana 8's saved objects API takes any space id (elastic/kibana#67164): an unknown space
    # exports nothing and takes an import, which only that space id would show.
    missing = post_export(kibana, {"type": "index-pattern"}, path="/s/nope" + EXPORT)
    assert missing.status_code == 200 and json.loads(missing.text)["exportedCount"] == 0
    assert post_import(kibana, ndjson(data_view()), path="/s/nope" + IMPORT).json()["success"] is True
    assert [obj["originId"] for obj in kibana.objects(space="nope")] == ["dv"]  # under a new id: "ci" has dv
    # The spaces API says which exist.
    assert requests.get(kibana.url + "/api/spaces/space/ci", timeout=TIMEOUT).json()["id"] == "ci"
    assert requests.get(kibana.url + "/api/spaces/space/default", timeout=TIMEOUT).json()["_reserved"] is True
    unknown = requests.get(kibana.url + "/api/spaces/space/nope", timeout=TIMEOUT)
    assert unknown.status_code == 404 and boom_body(unknown) == {"statusCode": 404, "error": "Not Found",
                                                                  "message": "Not Found"}
    assert requests.get(kibana.url + "/s/Bad!/api/status", timeout=TIMEOUT).status_code == 404
    assert requests.get(kibana.url + "/s/ci/api/status", timeout=TIMEOUT).status_code == 200
    record = kibana.requests[-1]
    assert (record.space, record.route) == ("ci", "/api/status")


def test_basic_auth_comes_before_the_xsrf_check():
    with KibanaEmulator(user="elastic", password="s3cret") as kibana:
        anonymous = post_export(kibana, {"type": "dashboard"}, headers={})
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == 'Basic realm="kibana"'
        wrong = post_export(kibana, {"type": "dashboard"}, auth=("elastic", "nope"))
        assert wrong.status_code == 401 and "\n" in boom_body(wrong)["message"]
        # Since 8.9 the status route takes bad or no credentials: it answers the redacted status.
        for auth in (None, ("elastic", "nope")):
            anonymous = requests.get(kibana.url + "/api/status", auth=auth, timeout=TIMEOUT)
            assert (anonymous.status_code, anonymous.json()) == (200, {"status": {"overall": {"level": "available"}}})
        kibana.set_level("critical", core="unavailable")
        anonymous = requests.get(kibana.url + "/api/status", timeout=TIMEOUT)
        assert (anonymous.status_code, anonymous.json()) == (503, {"status": {"overall": {"level": "unavailable"}}})
        kibana.set_level("available")
        full = requests.get(kibana.url + "/api/status", auth=("elastic", "s3cret"), timeout=TIMEOUT).json()
        assert full["version"]["number"] == "8.15.3"
        assert post_export(kibana, {"type": "dashboard"}, auth=("elastic", "s3cret")).status_code == 200
        assert post_export(kibana, {"type": "dashboard"}, headers={}, auth=("elastic", "s3cret")).status_code == 400
        assert kibana.errors == []


# -- export ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ({}, "Either `type` or `objects` are required."),
    ({"type": []}, "Either `type` or `objects` are required."),
    ({"type": "dashboard", "objects": [{"type": "dashboard", "id": "d"}]},
     "Can't specify both \"types\" and \"objects\" properties when exporting"),
    ({"type": ["dashboard", "nope", "canvas"]}, "Trying to export non-exportable type(s): nope, canvas"),
    ({"objects": [{"type": "nope", "id": "x"}]}, "Trying to export object(s) with non-exportable types: nope:x"),
    ({"type": "dashboard", "colour": 1}, "[request body.colour]: definition for this key is missing"),
    ({"type": "dashboard", "excludeExportDetails": "yes"},
     "[request body.excludeExportDetails]: expected value of type [boolean] but got [str]"),
], ids=["empty", "no-types", "both", "unknown-type", "unknown-object-type", "unknown-key", "not-boolean"])
def test_export_body_is_validated(kibana, body, message):
    response = post_export(kibana, body)
    assert response.status_code == 400
    assert boom_body(response) == {"statusCode": 400, "error": "Bad Request", "message": message}


def test_export_writes_sorted_key_ndjson_with_a_details_line_unless_excluded(kibana):
    kibana.put(data_view())
    kibana.put(visualization())
    response = post_export(kibana, {"type": ["visualization", "index-pattern"]})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/ndjson"
    assert response.headers["Content-Disposition"] == 'attachment; filename="export.ndjson"'
    lines = response.text.split("\n")
    assert not response.text.endswith("\n") and len(lines) == 3
    for line in lines:
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
    assert json.loads(lines[-1]) == {"exportedCount": 2, "missingRefCount": 0, "missingReferences": [],
                                     "excludedObjectsCount": 0, "excludedObjects": []}
    first = json.loads(lines[0])
    assert {"created_at", "updated_at", "version", "managed"} <= set(first) and "namespaces" not in first
    excluded = post_export(kibana, {"type": "index-pattern", "excludeExportDetails": True}).text
    assert [json.loads(line)["id"] for line in excluded.split("\n")] == ["dv"]


def test_export_writes_half_a_character_as_its_escape_as_json_stringify_does(kibana):
    """A JavaScript string may hold a lone surrogate (a title cut inside an emoji); Kibana's export
    writes it as `\\ud83d`, and the characters UTF-8 can carry as they are."""
    kibana.put(data_view(title="boot-\u00e9\ud83d"))
    response = post_export(kibana, {"type": "index-pattern"})
    assert response.status_code == 200
    line = response.content.decode("utf-8").split("\n")[0]
    assert '"title":"boot-\u00e9\\ud83d"' in line
    assert json.loads(line)["attributes"]["title"] == "boot-\u00e9\ud83d"


def test_include_references_deep_puts_references_first_and_counts_missing_ones(kibana):
    kibana.put(data_view())
    kibana.put(visualization())
    kibana.put(visualization("orphan", index="gone"))
    shallow = post_export(kibana, {"type": "visualization", "excludeExportDetails": True}).text.split("\n")
    assert [json.loads(line)["id"] for line in shallow] == ["orphan", "vis"]
    deep = post_export(kibana, {"objects": [{"type": "visualization", "id": "vis"}, {"type": "visualization", "id": "orphan"}],
                                "includeReferencesDeep": True}).text.split("\n")
    assert [json.loads(line)["id"] for line in deep[:-1]] == ["dv", "vis", "orphan"]
    details = json.loads(deep[-1])
    assert details["missingRefCount"] == 1 and details["missingReferences"] == [{"id": "gone", "type": "index-pattern"}]


def test_export_of_a_missing_object_is_a_fetch_error(kibana):
    response = post_export(kibana, {"objects": [{"type": "dashboard", "id": "nope"}]})
    assert response.status_code == 400
    body = boom_body(response)
    assert body["message"] == "Error fetching objects to export"
    assert body["attributes"]["objects"][0]["error"]["statusCode"] == 404


def test_the_export_size_limit_counts_the_objects_found_not_their_references():
    """savedObjects.maxImportExportSize bounds what the search by type finds (its exporter's
    fetchByTypes); the objects they refer to come on top."""
    with KibanaEmulator(max_objects=2) as kibana:
        kibana.put(data_view("dv1"))
        kibana.put(data_view("dv2"))
        kibana.put(visualization("v1", index="dv1"))
        kibana.put(visualization("v2", index="dv2"))
        deep = post_export(kibana, {"type": "visualization", "includeReferencesDeep": True, "excludeExportDetails": True})
        assert deep.status_code == 200 and len(deep.text.split("\n")) == 4
        kibana.put(visualization("v3", index="dv1"))
        too_many = post_export(kibana, {"type": "visualization"})
        assert too_many.status_code == 400
        assert boom_body(too_many) == {"statusCode": 400, "error": "Bad Request", "message": (
            "Can't export more than 2 objects. If your server has enough memory, this limit can be increased by "
            "adjusting the \"savedObjects.maxImportExportSize\" setting.")}
        by_id = post_export(kibana, {"objects": [{"type": "visualization", "id": name} for name in ("v1", "v2", "v3")]})
        assert by_id.status_code == 400
        assert boom_body(by_id)["message"] == "[request body.objects]: array size is [3], but cannot be greater than [2]"
        assert kibana.errors == []


def test_type_star_exports_every_type(kibana):
    kibana.put(data_view())
    kibana.put(visualization())
    text = post_export(kibana, {"type": "*", "excludeExportDetails": True}).text
    assert sorted(json.loads(line)["type"] for line in text.split("\n")) == ["index-pattern", "visualization"]


# -- import ------------------------------------------------------------------------------------

def test_import_creates_objects_and_skips_blank_and_details_lines(kibana):
    data = ndjson(data_view(), visualization()) + b"\n\n" + b'{"exportedCount":2,"missingRefCount":0}\n'
    response = post_import(kibana, data)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["successCount"] == 2 and "errors" not in body
    assert body["successResults"][0] == {"type": "index-pattern", "id": "dv", "managed": False,
                                         "meta": {"title": "boot-*", "icon": "indexPatternApp"}}
    stored = kibana.get("visualization", "vis")
    assert stored["attributes"]["title"] == "A chart" and stored["updated_at"] and stored["version"]


def test_import_reports_conflicts_with_http_200_and_success_false(kibana):
    kibana.put(data_view())
    response = post_import(kibana, ndjson(data_view(title="changed-*"), visualization()))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False and body["successCount"] == 1
    assert body["errors"] == [{"id": "dv", "type": "index-pattern", "title": "changed-*",
                               "meta": {"title": "changed-*", "icon": "indexPatternApp"},
                               "error": {"type": "conflict"}}]
    assert kibana.get("index-pattern", "dv")["attributes"]["title"] == "boot-*"
    # Counted as a success, yet not written: Kibana writes nothing while a conflict is unresolved.
    assert body["successResults"][0]["id"] == "vis" and kibana.get("visualization", "vis") is None


def test_missing_references_keep_the_other_objects_out_too(kibana):
    body = post_import(kibana, ndjson(data_view(), visualization(index="absent"))).json()
    assert body["success"] is False and body["successCount"] == 1 and "successResults" in body
    assert kibana.objects() == []


def test_an_object_of_an_unknown_type_is_no_reference_target():
    """An object of a type Kibana does not know is left out before references are checked: a
    panel referring to it is broken, and a reference to a data view or search of that type is looked
    up in the store, whose 400 for the type refuses the whole import."""
    with KibanaEmulator(types=("index-pattern", "visualization", "dashboard", "search")) as kibana:
        lens = {"type": "lens", "id": "l", "attributes": {"title": "L"}, "references": []}
        board = {"type": "dashboard", "id": "d", "attributes": {"title": "D"},
                 "references": [{"type": "lens", "id": "l", "name": "1:panel_1"}]}
        body = post_import(kibana, ndjson(lens, board)).json()
        assert body["successCount"] == 1 and [error["error"] for error in body["errors"]] == [{"type": "unsupported_type"}]
        assert kibana.get("dashboard", "d") is not None
    with KibanaEmulator(types=("index-pattern", "visualization", "dashboard")) as kibana:
        search = {"type": "search", "id": "s", "attributes": {"title": "S"}, "references": []}
        board = {"type": "dashboard", "id": "d2", "attributes": {"title": "D"},
                 "references": [{"type": "search", "id": "s", "name": "1:panel_1"}]}
        response = post_import(kibana, ndjson(search, board))
        assert response.status_code == 400
        assert boom_body(response)["message"] == "Error fetching references for imported objects"
        assert kibana.objects() == []


def test_only_references_to_data_views_and_searches_must_be_found(kibana):
    """Kibana's validateReferences checks references to `index-pattern` and `search` objects only
    (REF_TYPES_TO_VALIDATE): a dashboard whose panel is gone is imported, its panel broken."""
    dashboard = {"type": "dashboard", "id": "d", "attributes": {"title": "Boots", "panelsJSON": "[]"},
                 "references": [{"type": "visualization", "id": "gone", "name": "1:panel_1"},
                                {"type": "lens", "id": "gone-too", "name": "2:panel_2"}]}
    body = post_import(kibana, ndjson(dashboard)).json()
    assert body["success"] is True and body["successCount"] == 1 and "errors" not in body
    assert kibana.get("dashboard", "d") is not None


def test_overwrite_replaces_and_says_so(kibana):
    kibana.put(data_view())
    body = post_import(kibana, ndjson(data_view(title="changed-*")), params={"overwrite": "true"}).json()
    assert body["success"] is True and body["successResults"][0]["overwrite"] is True
    assert kibana.get("index-pattern", "dv")["attributes"]["title"] == "changed-*"


def test_missing_references_and_unsupported_types_are_per_object_errors(kibana):
    body = post_import(kibana, ndjson(visualization(index="absent"), {"type": "canvas-workpad", "id": "w",
                                                                       "attributes": {}, "references": []})).json()
    assert body["success"] is False and body["successCount"] == 0
    errors = {entry["id"]: entry["error"] for entry in body["errors"]}
    assert errors["vis"] == {"type": "missing_references", "references": [{"type": "index-pattern", "id": "absent"}]}
    assert errors["w"] == {"type": "unsupported_type"}
    kibana.put(data_view("absent"))
    assert post_import(kibana, ndjson(visualization(index="absent"))).json()["success"] is True


def test_create_new_copies_regenerates_ids_and_their_references(kibana):
    kibana.put(data_view())
    body = post_import(kibana, ndjson(data_view(), visualization()), params={"createNewCopies": "true"}).json()
    assert body["success"] is True
    ids = {result["id"]: result["destinationId"] for result in body["successResults"]}
    copy = kibana.get("visualization", ids["vis"])
    assert copy["references"][0]["id"] == ids["dv"] != "dv"


def test_an_id_another_space_holds_gets_a_new_one_and_the_old_as_its_origin(kibana):
    kibana.put(data_view())
    kibana.put(visualization())
    body = post_import(kibana, ndjson(data_view(), visualization()), path="/s/ci" + IMPORT).json()
    assert body["success"] is True and "errors" not in body
    moved = {result["id"]: result["destinationId"] for result in body["successResults"]}
    assert set(moved) == {"dv", "vis"} and "dv" not in moved.values()
    copy = kibana.get("visualization", moved["vis"], space="ci")
    assert copy["originId"] == "vis" and copy["references"][0]["id"] == moved["dv"]
    assert kibana.get("visualization", "vis", space="ci") is None
    exported = [json.loads(line) for line in post_export(kibana, {"type": "visualization"}, path="/s/ci" + EXPORT).text.split("\n")
                if '"exportedCount"' not in line]
    assert [(obj["id"], obj["originId"]) for obj in exported] == [(moved["vis"], "vis")]
    # Imported again into that space: a conflict with the copy, held back whole; or an overwrite of it.
    again = post_import(kibana, ndjson(data_view(), visualization(title="changed")), path="/s/ci" + IMPORT).json()
    assert again["success"] is False and "successResults" not in again
    assert {entry["id"]: entry["error"] for entry in again["errors"]} == {
        "dv": {"type": "conflict", "destinationId": moved["dv"]},
        "vis": {"type": "conflict", "destinationId": moved["vis"]}}
    replaced = post_import(kibana, ndjson(visualization(title="changed")), path="/s/ci" + IMPORT,
                           params={"overwrite": "true"}).json()
    assert replaced["successResults"][0]["destinationId"] == moved["vis"] and replaced["successResults"][0]["overwrite"]
    assert kibana.get("visualization", moved["vis"], space="ci")["attributes"]["title"] == "changed"
    assert len(kibana.objects("ci")) == 2


@pytest.mark.parametrize("params, message", [
    ({"overwrite": "true", "createNewCopies": "true"}, "[request query]: cannot use [overwrite] with [createNewCopies]"),
    ({"createNewCopies": "true", "compatibilityMode": "true"},
     "[request query]: cannot use [createNewCopies] with [compatibilityMode]"),
    ({"overwrite": "yes"}, "[request query.overwrite]: expected value of type [boolean] but got [string]"),
    ({"replace": "true"}, "[request query.replace]: definition for this key is missing"),
])
def test_import_query_is_validated(kibana, params, message):
    response = post_import(kibana, ndjson(data_view()), params=params)
    assert response.status_code == 400 and boom_body(response)["message"] == message


def test_an_import_that_is_not_multipart_is_415_before_the_xsrf_check(kibana):
    """hapi reads the payload, refusing a type the route does not accept, before Kibana's
    onPostAuth xsrf check runs."""
    response = requests.post(kibana.url + IMPORT, data=b"{}", headers={"Content-Type": "application/json"},
                             timeout=TIMEOUT)
    assert response.status_code == 415 and boom_body(response)["message"] == "Unsupported Media Type"


def test_import_needs_a_multipart_ndjson_file(kibana):
    wrong_extension = post_import(kibana, ndjson(data_view()), filename="export.json")
    assert wrong_extension.status_code == 400
    assert boom_body(wrong_extension)["message"] == "Invalid file extension .json"
    # Node's path.extname, which Kibana reads the name with, sees no extension in a hidden file's.
    for name, extension in ((".ndjson", ""), ("saved.ndjson.", "."), ("..", "")):
        hidden = post_import(kibana, ndjson(data_view()), filename=name)
        assert hidden.status_code == 400 and boom_body(hidden)["message"] == "Invalid file extension %s" % extension
    not_multipart = requests.post(kibana.url + IMPORT, data=ndjson(data_view()), headers=dict(XSRF, **{
        "Content-Type": "application/ndjson"}), timeout=TIMEOUT)
    assert not_multipart.status_code == 415
    no_file = requests.post(kibana.url + IMPORT, files={"other": ("a.ndjson", b"{}")}, headers=XSRF, timeout=TIMEOUT)
    assert no_file.status_code == 400 and "request body.file" in boom_body(no_file)["message"]
    not_json = post_import(kibana, b'{"type":"index-pattern","id":"dv"}\nnot json\n')
    assert not_json.status_code == 400 and "line 2" in boom_body(not_json)["message"]
    # JSON.parse, which Kibana reads each line with, knows no NaN nor Infinity, which Python's json reads.
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        beyond_json = post_import(kibana, b'{"type":"index-pattern","id":"dv","attributes":{"title":%s}}\n' % constant)
        assert beyond_json.status_code == 400 and "line 1" in boom_body(beyond_json)["message"]
    assert kibana.objects() == []
    assert post_import(kibana, ndjson(data_view()), filename="Saved.NDJSON").status_code == 200


def test_objects_from_a_newer_kibana_fail_with_an_unknown_error(kibana):
    newer = dict(visualization(), typeMigrationVersion="10.9.0")
    body = post_import(kibana, ndjson(data_view(), newer)).json()
    assert body["successCount"] == 1
    assert body["errors"][0]["error"]["type"] == "unknown"
    assert "more recent version" in body["errors"][0]["error"]["message"]


def test_a_dashboard_or_search_with_an_attribute_its_schema_lacks_fails_alone(kibana):
    """Kibana validates dashboards and saved searches against their type's schema when it writes
    them (unknown keys forbidden, a title required): such an object fails with an `unknown` error,
    400, while the rest of the file is written."""
    dashboard = {"type": "dashboard", "id": "d", "attributes": {"title": "Boots", "panelsJSON": "[]", "colour": "red"},
                 "references": []}
    search = {"type": "search", "id": "s", "attributes": {"columns": [], "kibanaSavedObjectMeta": {
        "searchSourceJSON": "{}"}}, "references": []}
    body = post_import(kibana, ndjson(data_view(), dashboard, search)).json()
    assert body["success"] is False and body["successCount"] == 1
    assert [(error["id"], error["error"]) for error in body["errors"]] == [
        ("d", {"type": "unknown", "statusCode": 400,
               "message": "[attributes.colour]: definition for this key is missing: Bad Request"}),
        ("s", {"type": "unknown", "statusCode": 400,
               "message": "[attributes.title]: expected value of type [string] but got [undefined]: Bad Request"})]
    assert kibana.get("index-pattern", "dv") is not None
    assert kibana.get("dashboard", "d") is None and kibana.get("search", "s") is None


# -- faults and the request log ----------------------------------------------------------------

def test_faults_are_consumed_in_order_and_requests_are_recorded(kibana):
    kibana.fail_next(403, route=EXPORT, body={"statusCode": 403, "error": "Forbidden", "message": "no"})
    kibana.fail_next(500, route=EXPORT)
    assert requests.get(kibana.url + "/api/status", timeout=TIMEOUT).status_code == 200
    assert post_export(kibana, {"type": "dashboard"}).status_code == 403
    assert post_export(kibana, {"type": "dashboard"}).status_code == 500
    assert post_export(kibana, {"type": "dashboard"}).status_code == 200
    kibana.reset_next(route="/api/status")
    with pytest.raises(requests.ConnectionError):
        requests.get(kibana.url + "/api/status", timeout=TIMEOUT)
    trace = [(record.method, record.route, record.status) for record in kibana.requests]
    assert trace == [("GET", "/api/status", 200), ("POST", EXPORT, 403), ("POST", EXPORT, 500),
                     ("POST", EXPORT, 200), ("GET", "/api/status", None)]
    assert json.loads(kibana.requests[1].body) == {"type": "dashboard"}
    assert kibana.requests[1].headers["kbn-xsrf"] == "true"


def test_a_kbn_version_other_than_kibanas_own_gets_400_on_every_route(kibana):
    # Kibana checks the header after authentication, on every route, GET included.
    for response in (post_export(kibana, {"type": ["dashboard"]}, headers={"kbn-version": "8.14.0"}),
                     requests.get(kibana.url + "/api/status", headers={"kbn-version": "8.14.0"}, timeout=TIMEOUT)):
        assert response.status_code == 400
        assert boom_body(response)["message"] == ('Browser client is out of date, please refresh the page '
                                                  '("kbn-version" header was "8.14.0" but should be "8.15.3")')
    assert requests.get(kibana.url + "/api/status", headers={"kbn-version": "8.15.3"}, timeout=TIMEOUT).ok


def test_an_import_naming_one_object_twice_is_refused_whole(kibana):
    response = post_import(kibana, ndjson(data_view(), visualization(), data_view(title="other-*")))
    assert response.status_code == 400
    assert boom_body(response)["message"] == "Non-unique import objects detected: [index-pattern:dv]"
    assert kibana.objects() == []
