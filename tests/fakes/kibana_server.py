"""A strict local Kibana 8 for the saved objects API (elk.md §5), on 127.0.0.1.

Routes: `GET /api/status`, `POST /api/saved_objects/_export`, `POST /api/saved_objects/_import`,
`GET /api/spaces/space/<id>`, each also under `/s/<space>`. Like Kibana it answers in the Boom envelope
`{"statusCode","error","message"}`, wants `kbn-xsrf` on every POST, validates the export body and
the import query as its route schemas do, and reports per-object import failures (`conflict`,
`missing_references`, `unsupported_type`) in a 200 body with `success: false`.

Objects are kept per (space, type, id). Like Kibana, an import stamps `created_at`, `updated_at`
and `version` on what it stores, so a client that keeps them in a backup sees a diff. Unlike
Kibana, stored objects are not migrated: an export returns the migration versions imported.

Like Kibana, an import checks only the references to data views (`index-pattern`) and saved
searches: one to a missing object of another type (a visualization a dashboard shows) is
imported all the same, its panel broken. An import in which one object has a conflict, an
ambiguous conflict or missing references writes none of the file's objects, while
`successCount` and `successResults` still count those that had no error; `successResults` and `errors` are left out when empty.

Like Kibana 8, an id of a type that can be shared between spaces (dashboard, data view,
visualization, search, lens, map, tag) is unique across spaces: importing an object that another
space holds writes it under a new id (`destinationId` in the result) with the file's id as its
`originId`, which the export then shows; importing it again into that space is a conflict with
that copy (`error.destinationId`), or overwrites it. (Kibana also resolves an "ambiguous source",
two objects of one file with the same origin, by new copies; not modelled.)

Like Kibana, it checks a dashboard's and a saved search's attributes against their type's schema
when it writes them: one with an attribute the schema lacks, or without a title, fails alone with
an `unknown` error (400) while the rest of the file is written.

Like Kibana, it refuses a `kbn-version` header other than its own version (400, on every route)
and an import naming one type and id twice (400 "Non-unique import objects detected").

Like Kibana 7.16 and later (elastic/kibana#113729), `GET /api/status` answers with the status of
Kibana's core services (Elasticsearch and saved objects): 503 while one of them is unavailable or
critical, else 200, whatever the plugins' status that the body's `overall` level adds in. Like
Kibana 8.9 and later (elastic/kibana#159768), without valid credentials it is no 401: its body is
then the redacted `{"status":{"overall":{"level"}}}` holding the core level.

Like Kibana 8, the saved objects API does not check that the space of a `/s/<space>` prefix
exists (elastic/kibana#67164, #148930): an export from an unknown space is empty, an import into
one writes objects nobody sees until a space of that id is created. `GET /api/spaces/space/<id>`
says whether a space exists (404 Boom "Not Found" when not).

Assumption, not verified against a running Kibana: an object whose migration version is newer
than `latest_versions` fails with an `unknown` error.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.serving import (
    BackgroundServer, BodyTooLarge, FaultQueue, LockedList, QuietHandler, ServedByBackgroundServer,
)

VERSION = "8.15.3"
EXPORTABLE_TYPES = ("config", "dashboard", "index-pattern", "lens", "links", "map", "query", "search",
                    "tag", "url", "visualization")
# What Kibana 8.15 has at least; an object claiming a newer version cannot be imported there.
LATEST_VERSIONS = {"index-pattern": "8.0.0", "visualization": "8.5.0", "dashboard": "10.2.0",
                   "search": "10.2.0", "lens": "8.9.0"}
CORE_MIGRATION_VERSION = "8.8.0"
ICONS = {"index-pattern": "indexPatternApp", "visualization": "visualizeApp", "dashboard": "dashboardApp",
         "search": "discoverApp", "lens": "lensApp", "config": "advancedSettingsApp", "tag": "tag"}
MAX_IMPORT_EXPORT_SIZE = 10000
# SavedObjectsExportError.exportSizeExceeded, for an export by type that finds more objects.
EXPORT_SIZE_EXCEEDED = ("Can't export more than %d objects. If your server has enough memory, this limit can be "
                        "increased by adjusting the \"savedObjects.maxImportExportSize\" setting.")
# Types whose objects can be shared between spaces (namespaceType "multiple" or
# "multiple-isolated" since 8.0): an id is unique across all spaces.
MULTI_NAMESPACE_TYPES = ("dashboard", "index-pattern", "lens", "map", "query", "search", "tag", "visualization")
# Import errors that make Kibana write none of the file's objects (createSavedObjects skips its
# bulkCreate when one is present): the UI resolves them with `_resolve_import_errors` first.
RESOLVABLE_ERRORS = ("conflict", "ambiguous_conflict", "missing_references")
MAX_IMPORT_PAYLOAD_BYTES = 26214400
# The only reference types an import checks (validate_references.ts, REF_TYPES_TO_VALIDATE): a
# reference to a missing object of another type (a dashboard's visualization) is no error.
VALIDATED_REFERENCE_TYPES = ("index-pattern", "search")
# The attributes the `create` schemas of Kibana 8.15 allow (unknown keys are refused): dashboard
# model version 2 (src/plugins/dashboard/server/dashboard_saved_object/schema/v2) and saved search
# model version 3 (src/plugins/saved_search/server/saved_objects/schema.ts). Both want a title.
SCHEMA_ATTRIBUTES = {
    "dashboard": frozenset(("title", "description", "kibanaSavedObjectMeta", "timeRestore", "timeFrom", "timeTo",
                            "refreshInterval", "controlGroupInput", "panelsJSON", "optionsJSON", "hits", "version")),
    "search": frozenset(("title", "description", "columns", "sort", "grid", "rowHeight", "rowsPerPage", "hideChart",
                         "breakdownField", "kibanaSavedObjectMeta", "isTextBasedQuery", "usesAdHocDataView",
                         "timeRestore", "timeRange", "refreshInterval", "viewMode", "hideAggregatedPreview", "hits",
                         "version", "sampleSize", "headerRowHeight", "visContext")),
}
EXPORT_KEYS = ("type", "hasReference", "objects", "search", "includeReferencesDeep", "excludeExportDetails")
IMPORT_FLAGS = ("overwrite", "createNewCopies", "compatibilityMode")
SPACE_PREFIX = re.compile(r"^/s/([^/]+)(/.*)?$")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SPACE_ROUTE = re.compile(r"^/api/spaces/space/([^/]+)$")
READY_LEVELS = ("available", "degraded")
LEVEL_ORDER = ("available", "degraded", "unavailable", "critical")
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           413: "Request Entity Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error",
           503: "Service Unavailable"}
XSRF_MESSAGE = "Request must contain a kbn-xsrf header."
NOT_READY_TEXT = b"Kibana server is not ready yet"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it (headers lower-cased)."""

    method: str
    path: str  # as sent, with the query string
    space: str
    route: str  # the path without the space prefix and query
    query: Dict[str, str]
    headers: Dict[str, str]
    body: bytes
    status: Optional[int]


@dataclass(frozen=True)
class _Fail:
    status: int
    body: bytes
    headers: Tuple[Tuple[str, str], ...]


@dataclass(frozen=True)
class _Reset:
    pass


class _Answer(Exception):
    def __init__(self, status: int, body: bytes = b"", headers: Sequence[Tuple[str, str]] = ()):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, tuple(headers)


def boom(status: int, message: str, headers: Sequence[Tuple[str, str]] = (), **extra) -> _Answer:
    """An error answer in Kibana's Boom envelope."""
    body = {"statusCode": status, "error": REASONS.get(status, "Error"), "message": message, **extra}
    return _Answer(status, json.dumps(body).encode(), (("Content-Type", "application/json; charset=utf-8"),) + tuple(headers))


def _json_answer(body, status: int = 200) -> _Answer:
    return _Answer(status, json.dumps(body).encode(), (("Content-Type", "application/json; charset=utf-8"),))


def _version_key(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text or "0"))


def _title(obj: dict) -> str:
    return str((obj.get("attributes") or {}).get("title", ""))


def _meta(obj: dict) -> dict:
    return {"title": _title(obj), "icon": ICONS.get(obj["type"], "questionInCircle")}


class KibanaEmulator(ServedByBackgroundServer):
    """Kibana's saved objects API with an in-memory store; `requests` records every call.

    `user`/`password` turn security on, and `api_key` too: an Elasticsearch API key, taken as
    `Authorization: ApiKey <api_key>` (Kibana's http authentication, on by default, for the
    schemes apikey and bearer), beside that user's basic auth. `spaces` are the space ids that exist. `types` are the
    importable and exportable types (leave out "lens" to model a Kibana without it).
    """

    def __init__(self, port: int = 0, user: Optional[str] = None, password: Optional[str] = None,
                 spaces: Iterable[str] = ("default",), types: Iterable[str] = EXPORTABLE_TYPES,
                 version: str = VERSION, latest_versions: Optional[Dict[str, str]] = None,
                 max_objects: int = MAX_IMPORT_EXPORT_SIZE, clock=time.time, api_key: Optional[str] = None):
        self.user, self.password, self.api_key = user, password, api_key
        self.spaces = set(spaces) | {"default"}
        self.types = tuple(types)
        self.version = version
        self.latest_versions = dict(LATEST_VERSIONS if latest_versions is None else latest_versions)
        self.max_objects = max_objects
        self.clock = clock
        self.level = "available"  # overall: the core services and every plugin
        self.core_level = "available"  # Elasticsearch and saved objects, which the status code follows
        self.starting = False
        self.requests: LockedList = LockedList()
        self.store: Dict[Tuple[str, str, str], dict] = {}
        self._lock = threading.Lock()
        self._sequence = 0
        self._faults = FaultQueue()
        self._idle_closes = FaultQueue()
        self._server = BackgroundServer(_KibanaHandler, self, port)

    # -- state and faults --------------------------------------------------------------------

    def set_level(self, level: str, core: Optional[str] = None) -> None:
        """Overall status (available, degraded, unavailable, critical) and that of the core
        services, the same unless `core` is given: a plugin alone may be unavailable. The status
        code and the saved objects routes follow the core level: 200 when available or degraded,
        else 503."""
        self.level = level
        self.core_level = level if core is None else core

    def set_starting(self, starting: bool = True) -> None:
        """While starting, every request gets 503 "Kibana server is not ready yet" (plain text)."""
        self.starting = starting

    def fail_next(self, status: int, route: str = "", count: Optional[int] = 1, body=None,
                  headers: Sequence[Tuple[str, str]] = ()) -> None:
        """Answer the next `count` requests whose route starts with `route` with `status`."""
        if body is None:
            body = {"statusCode": status, "error": REASONS.get(status, "Error"), "message": "injected fault"}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._faults.add(route, _Fail(status, raw, tuple(headers) or (("Content-Type", "application/json"),)), count)

    def reset_next(self, route: str = "", count: Optional[int] = 1) -> None:
        """Close the connection without answering."""
        self._faults.add(route, _Reset(), count)

    def close_kept_alive(self, route: str = "", count: Optional[int] = 1) -> None:
        """Close, without an answer, the connection the next `count` requests whose route starts
        with `route` arrive on when it carried an answer before: Kibana's (or a proxy's) idle
        timeout meeting the next request. A request on a new connection is answered as ever."""
        self._idle_closes.add(route, True, count)

    # -- the store ---------------------------------------------------------------------------

    def put(self, obj: dict, space: str = "default") -> dict:
        """Store `obj` as an import would (stamped with times and a version); return the copy."""
        with self._lock:
            return self._put(space, obj, self.store.get((space, obj["type"], obj["id"])))

    def _put(self, space: str, obj: dict, previous: Optional[dict]) -> dict:
        self._sequence += 1
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.clock()))
        stored = {key: value for key, value in obj.items() if key != "namespaces"}
        stored.setdefault("references", [])
        stored.setdefault("managed", False)
        stored.setdefault("coreMigrationVersion", CORE_MIGRATION_VERSION)
        if "typeMigrationVersion" not in stored and "migrationVersion" not in stored:
            stored["typeMigrationVersion"] = self.latest_versions.get(obj["type"], "8.0.0")
        stored["created_at"] = (previous or {}).get("created_at", now)
        stored["updated_at"] = now
        stored["version"] = base64.b64encode(json.dumps([self._sequence, 1]).encode()).decode()
        self.store[(space, obj["type"], obj["id"])] = stored
        return stored

    def objects(self, space: str = "default") -> List[dict]:
        with self._lock:
            return [obj for (where, _, _), obj in sorted(self.store.items()) if where == space]

    def get(self, type_: str, id_: str, space: str = "default") -> Optional[dict]:
        with self._lock:
            return self.store.get((space, type_, id_))

    def load_ndjson(self, text: str, space: str = "default") -> int:
        count = 0
        for line in text.splitlines():
            if line.strip():
                obj = json.loads(line)
                if "exportedCount" not in obj:
                    self.put(obj, space)
                    count += 1
        return count

    # -- routes ------------------------------------------------------------------------------

    def status(self, space: str, query: dict, body: bytes, authenticated: bool = True) -> _Answer:
        core = self.core_level
        # The overall level is the worst of the core services' and the plugins'.
        level = max(self.level, core, key=lambda name: LEVEL_ORDER.index(name) if name in LEVEL_ORDER else 0)
        code = 200 if core in READY_LEVELS else 503
        if not authenticated:
            return _json_answer({"status": {"overall": {"level": core}}}, code)
        body = {
            "name": "kibana-emulator", "uuid": "5b2de169-2785-441b-ae8c-186a1936b17d",
            "version": {"number": self.version, "build_hash": "0" * 40, "build_number": 1,
                        "build_snapshot": False, "build_flavor": "traditional"},
            "status": {"overall": {"level": level, "summary": "emulated status %s" % level},
                       "core": {"elasticsearch": {"level": core, "summary": core},
                                "savedObjects": {"level": core, "summary": core}},
                       "plugins": {"emulatedPlugin": {"level": self.level, "summary": self.level}}},
            "metrics": {"collection_interval_in_millis": 5000},
        }
        return _json_answer(body, code)

    def export(self, space: str, query: dict, body: bytes) -> _Answer:
        self._require_saved_objects(space)
        options = _export_options(body)
        invalid = [name for name in options["types"] if name != "*" and name not in self.types]
        if invalid:
            raise boom(400, "Trying to export non-exportable type(s): %s" % ", ".join(invalid))
        invalid = ["%s:%s" % (ref["type"], ref["id"]) for ref in options["objects"] if ref["type"] not in self.types]
        if invalid:
            raise boom(400, "Trying to export object(s) with non-exportable types: %s" % ", ".join(invalid))
        with self._lock:
            return self._export(space, options)

    def _export(self, space: str, options: dict) -> _Answer:
        types, objects = options["types"], options["objects"]
        if types:
            wanted = set(self.types) if "*" in types else set(types)
            roots = sorted((obj for (where, kind, _), obj in self.store.items() if where == space and kind in wanted),
                           key=lambda obj: obj["id"])
            # Kibana counts the objects its search finds, not those their references add.
            if len(roots) > self.max_objects:
                raise boom(400, EXPORT_SIZE_EXCEEDED % self.max_objects)
        else:
            if len(objects) > self.max_objects:  # the body schema's maxSize, before anything is read
                raise boom(400, "[request body.objects]: array size is [%d], but cannot be greater than [%d]"
                           % (len(objects), self.max_objects))
            missing = [ref for ref in objects if (space, ref["type"], ref["id"]) not in self.store]
            if missing:
                raise boom(400, "Error fetching objects to export", attributes={"objects": [
                    {"id": ref["id"], "type": ref["type"], "error": {
                        "statusCode": 404, "error": "Not Found",
                        "message": "Saved object [%s/%s] not found" % (ref["type"], ref["id"])}}
                    for ref in missing]})
            roots = [self.store[(space, ref["type"], ref["id"])] for ref in objects]
        ordered, missing_refs = _references_first(roots, space, self.store, options["includeReferencesDeep"])
        lines = [_export_line(obj) for obj in ordered]
        if not options["excludeExportDetails"]:
            lines.append(json.dumps({"exportedCount": len(ordered), "missingRefCount": len(missing_refs),
                                     "missingReferences": missing_refs, "excludedObjectsCount": 0,
                                     "excludedObjects": []}, sort_keys=True, separators=(",", ":")))
        return _Answer(200, "\n".join(lines).encode(), (("Content-Type", "application/ndjson"),
                                                      ("Content-Disposition", 'attachment; filename="export.ndjson"')))

    def import_(self, space: str, query: dict, body: bytes, content_type: str = "") -> _Answer:
        flags = _import_flags(query)
        self._require_saved_objects(space)
        if len(body) > MAX_IMPORT_PAYLOAD_BYTES:
            raise boom(413, "Payload content length greater than maximum allowed: %d" % MAX_IMPORT_PAYLOAD_BYTES)
        filename, data = _multipart_file(body, content_type)
        extension = _extension(filename).lower()
        if extension != ".ndjson":
            raise boom(400, "Invalid file extension %s" % extension)
        objects = _read_import_lines(data)
        if len(objects) > self.max_objects:
            raise boom(400, "Can't import more than %d objects" % self.max_objects)
        # Kibana refuses the whole import when a type and id come twice, identical copies included.
        counts: Dict[str, int] = {}
        for obj in objects:
            key = "%s:%s" % (obj["type"], obj["id"])
            counts[key] = counts.get(key, 0) + 1
        repeated = [key for key, count in counts.items() if count > 1]
        if repeated:
            raise boom(400, "Non-unique import objects detected: [%s]" % ",".join(repeated))
        with self._lock:
            return _json_answer(self._import(space, objects, flags))

    def _import(self, space: str, objects: List[dict], flags: dict) -> dict:
        errors: Dict[Tuple[str, str], dict] = {}
        # What references may find in the file: an object of a type this Kibana does not know is
        # left out of the import before they are checked (collectSavedObjects).
        in_file = {(obj["type"], obj["id"]) for obj in objects if obj["type"] in self.types}
        unknown = sorted({(ref["type"], ref["id"]) for obj in objects if obj["type"] in self.types
                          for ref in obj.get("references") or ()
                          if ref["type"] in VALIDATED_REFERENCE_TYPES and ref["type"] not in self.types})
        if unknown:
            # Looked up in the store, a type it does not know fails with a 400, not a 404: the
            # whole import is refused (validateReferences' referencesFetchError).
            raise boom(400, "Error fetching references for imported objects", attributes={"objects": [
                {"id": id_, "type": type_, "error": {"statusCode": 400, "error": "Bad Request",
                                                     "message": "Unsupported saved object type: '%s': Bad Request" % type_}}
                for type_, id_ in unknown]})
        referred: Dict[Tuple[str, str], str] = {}  # a reference outside the file -> the id it resolves to
        for obj in objects:
            key = (obj["type"], obj["id"])
            if obj["type"] not in self.types:
                errors[key] = {"type": "unsupported_type"}
                continue
            missing = []
            for ref in obj.get("references") or ():
                if ref["type"] not in VALIDATED_REFERENCE_TYPES:
                    continue  # imported all the same: the panel that uses it shows an error
                target = (ref["type"], ref["id"])
                if target in in_file or (space, *target) in self.store:
                    continue
                # Kibana's checkReferenceOrigins: an object of this space whose origin is the id.
                found = [id_ for (where, kind, id_), held in self.store.items()
                         if where == space and kind == ref["type"] and held.get("originId") == ref["id"]]
                if len(found) == 1:
                    referred[target] = found[0]
                else:
                    missing.append({"type": ref["type"], "id": ref["id"]})
            if missing:
                errors[key] = {"type": "missing_references", "references": missing}
                continue
            too_new = self._too_new(obj)
            if too_new:
                errors[key] = {"type": "unknown", "message": too_new, "statusCode": 400}
                continue
        if flags["createNewCopies"]:
            new_ids = {(obj["type"], obj["id"]): str(uuid.uuid4()) for obj in objects}
            overwriting: set = set()
        else:
            new_ids, overwriting = self._check_conflicts(space, objects, flags["overwrite"], errors)
        # Kibana writes nothing while an object of the file has an error the UI offers to resolve
        # (`_resolve_import_errors`), yet counts the others in successCount/successResults.
        write = not any(error["type"] in RESOLVABLE_ERRORS for error in errors.values())
        if write:  # bulkCreate validates what it writes: the others are written all the same
            for obj in objects:
                key = (obj["type"], obj["id"])
                invalid = _schema_problem(obj) if key not in errors else ""
                if invalid:
                    errors[key] = {"type": "unknown", "message": invalid + ": Bad Request", "statusCode": 400}
        results = []
        for obj in objects:
            key = (obj["type"], obj["id"])
            if key in errors:
                continue
            result = {"type": obj["type"], "id": obj["id"], "meta": _meta(obj), "managed": bool(obj.get("managed", False))}
            if key in overwriting:
                result["overwrite"] = True
            if key in new_ids:
                result["destinationId"] = new_ids[key]
            if new_ids or referred:
                obj = _with_new_ids(obj, new_ids, referred, keep_origin=not flags["createNewCopies"])
            if write:
                self._put(space, obj, self.store.get((space, obj["type"], obj["id"])))
            results.append(result)
        error_list = [{"id": obj["id"], "type": obj["type"], "title": _title(obj), "meta": _meta(obj),
                       "error": errors[(obj["type"], obj["id"])]}
                      for obj in objects if (obj["type"], obj["id"]) in errors]
        answer = {"success": not error_list, "successCount": len(results), "warnings": []}
        # Kibana leaves both lists out when they are empty.
        if results:
            answer["successResults"] = results
        if error_list:
            answer["errors"] = error_list
        return answer

    def _check_conflicts(self, space: str, objects: List[dict], overwrite: bool,
                         errors: Dict[Tuple[str, str], dict]) -> Tuple[Dict[Tuple[str, str], str], set]:
        """Kibana's checkConflicts and checkOriginConflicts: ({(type, id): the id it is written
        under when not its own}, {(type, id) that overwrite an object}); errors are added to `errors`.

        The id of an object of a multi-namespace type is unique across spaces: one that another
        space holds is written under a new id, with the file's id as its `originId`. An object
        whose origin (its `originId`, else its id) is the id or the origin of one object of this
        space is a conflict with that object (`destinationId`), or overwrites it."""
        new_ids: Dict[Tuple[str, str], str] = {}
        overwriting = set()
        in_file = {(obj["type"], obj["id"]) for obj in objects}
        for obj in objects:
            key = (obj["type"], obj["id"])
            if key in errors:
                continue
            if (space, *key) in self.store:
                if overwrite:
                    overwriting.add(key)
                else:
                    errors[key] = {"type": "conflict"}
                continue
            if obj["type"] not in MULTI_NAMESPACE_TYPES:
                continue
            if any(where != space for where, kind, id_ in self.store if (kind, id_) == key):
                new_ids[key] = str(uuid.uuid4())
            origin = obj.get("originId") or obj["id"]
            matches = sorted(id_ for (where, kind, id_), held in self.store.items()
                             if where == space and kind == obj["type"] and (kind, id_) not in in_file
                             and origin in (id_, held.get("originId")))
            if len(matches) == 1 and overwrite:
                new_ids[key] = matches[0]
                overwriting.add(key)
            elif len(matches) == 1:
                errors[key] = {"type": "conflict", "destinationId": matches[0]}
            elif matches:
                errors[key] = {"type": "ambiguous_conflict", "destinations": [{"id": id_} for id_ in matches]}
        return new_ids, overwriting

    def _too_new(self, obj: dict) -> str:
        core = obj.get("coreMigrationVersion")
        if core and _version_key(core) > _version_key(CORE_MIGRATION_VERSION):
            return "Document \"%s\" has a coreMigrationVersion [%s] newer than this Kibana's" % (obj["id"], core)
        version = obj.get("typeMigrationVersion") or (obj.get("migrationVersion") or {}).get(obj["type"])
        latest = self.latest_versions.get(obj["type"])
        if version and latest and _version_key(version) > _version_key(latest):
            return ("Document \"%s\" belongs to a more recent version of Kibana [%s] when the last known version is [%s]."
                    % (obj["id"], version, latest))
        return ""

    def space(self, space_id: str) -> _Answer:
        """`GET /api/spaces/space/<id>`: the space, or 404 when no space has that id."""
        if space_id not in self.spaces:
            raise boom(404, "Not Found")
        name = "Default" if space_id == "default" else space_id
        body = {"id": space_id, "name": name, "description": "", "color": "#00bfb3", "initials": name[:2].upper(),
                "disabledFeatures": [], "imageUrl": ""}
        if space_id == "default":
            body["_reserved"] = True
        return _json_answer(body)

    def _require_saved_objects(self, space: str) -> None:
        # No check that `space` exists: Kibana's saved objects API does not make one.
        if self.core_level not in READY_LEVELS:
            raise boom(503, "Saved objects service is %s" % self.core_level)

    @property
    def secured(self) -> bool:
        return self.user is not None or self.api_key is not None

    def authenticated(self, authorization: Optional[str]) -> bool:
        """Whether the request has valid credentials (always, with security off)."""
        if not self.secured:
            return True
        accepted = []
        if self.user is not None:
            accepted.append("Basic " + base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode())
        if self.api_key is not None:
            accepted.append("ApiKey " + self.api_key)
        return authorization in accepted

    def check_auth(self, authorization: Optional[str]) -> None:
        if not self.secured:
            return
        if not authorization:
            raise boom(401, "Unauthorized", headers=(("WWW-Authenticate", 'Basic realm="kibana"'),))
        if not self.authenticated(authorization):
            # Kibana passes Elasticsearch's multi-line security message through.
            raise boom(401, "[security_exception\n\tRoot causes:\n\t\tsecurity_exception: unable to authenticate "
                            "user for REST request [/_security/_authenticate]]: unable to authenticate user for "
                            "REST request [/_security/_authenticate]")


ROUTES = {("GET", "/api/status"): "status", ("POST", "/api/saved_objects/_export"): "export",
          ("POST", "/api/saved_objects/_import"): "import_"}


def _check_json_payload(content_type: Optional[str]) -> None:
    """Refuse a body hapi would not hand to the export route as JSON. hapi parses a payload by its
    Content-Type (JSON when there is none), after authentication and before the xsrf check: text
    becomes a string, which the route's body schema refuses; a type it has no parser for is 415.
    (A form body, which hapi would parse into fields, is refused here too: not emulated.)"""
    mime = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return
    if mime.startswith("text/"):
        raise boom(400, "[request body]: expected a plain object value, but found [string] instead.")
    raise boom(415, "Unsupported Media Type")


def _schema_problem(obj: dict) -> str:
    """What the `create` schema of the object's type (Kibana 8.15) refuses in its attributes, as
    @kbn/config-schema words it; "" when nothing, or for a type without such a schema here."""
    allowed = SCHEMA_ATTRIBUTES.get(obj["type"])
    if allowed is None:
        return ""
    attributes = obj.get("attributes") if isinstance(obj.get("attributes"), dict) else {}
    if not isinstance(attributes.get("title"), str):
        return "[attributes.title]: expected value of type [string] but got [%s]" % (
            "undefined" if "title" not in attributes else type(attributes["title"]).__name__)
    unknown = sorted(set(attributes) - allowed)
    return "[attributes.%s]: definition for this key is missing" % unknown[0] if unknown else ""


def _export_options(body: bytes) -> dict:
    try:
        options = json.loads(body or b"{}")
    except ValueError:
        raise boom(400, "Invalid request payload JSON format") from None
    if not isinstance(options, dict):
        raise boom(400, "[request body]: expected a plain object value, but found [%s] instead." % type(options).__name__)
    for key in options:
        if key not in EXPORT_KEYS:
            raise boom(400, "[request body.%s]: definition for this key is missing" % key)
    types = options.get("type")
    types = [types] if isinstance(types, str) else types
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise boom(400, "[request body.type]: expected a string or an array of strings")
    objects = options.get("objects")
    if objects is not None and not (isinstance(objects, list) and all(
            isinstance(o, dict) and isinstance(o.get("type"), str) and isinstance(o.get("id"), str) for o in objects)):
        raise boom(400, "[request body.objects]: expected an array of {type, id} objects")
    for flag in ("includeReferencesDeep", "excludeExportDetails"):
        if not isinstance(options.get(flag, False), bool):
            raise boom(400, "[request body.%s]: expected value of type [boolean] but got [%s]"
                       % (flag, type(options[flag]).__name__))
    if not types and not objects:
        raise boom(400, "Either `type` or `objects` are required.")
    if types and objects:
        raise boom(400, "Can't specify both \"types\" and \"objects\" properties when exporting")
    return {"types": types or [], "objects": objects or [], "excludeExportDetails": options.get("excludeExportDetails", False),
            "includeReferencesDeep": options.get("includeReferencesDeep", False)}


def _references_first(roots: List[dict], space: str, store: dict, deep: bool) -> Tuple[List[dict], List[dict]]:
    """Objects with what they reference first (depth first), and references not found."""
    ordered: List[dict] = []
    seen: set = set()
    missing: List[dict] = []

    def visit(obj: dict) -> None:
        key = (obj["type"], obj["id"])
        if key in seen:
            return
        seen.add(key)
        if deep:
            for ref in obj.get("references") or ():
                target = store.get((space, ref["type"], ref["id"]))
                if target is None:
                    if {"id": ref["id"], "type": ref["type"]} not in missing:
                        missing.append({"id": ref["id"], "type": ref["type"]})
                else:
                    visit(target)
        ordered.append(obj)

    for root in roots:
        visit(root)
    return ordered, missing


def _export_line(obj: dict) -> str:
    # JSON.stringify writes a lone surrogate (half of a character, which a JavaScript string may
    # hold) as its escape, and every other character as itself.
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return LONE_SURROGATE.sub(lambda found: "\\u%04x" % ord(found.group()), text)


def _import_flags(query: dict) -> dict:
    flags = {}
    for key in query:
        if key not in IMPORT_FLAGS:
            raise boom(400, "[request query.%s]: definition for this key is missing" % key)
    for name in IMPORT_FLAGS:
        value = query.get(name, "false")
        if value not in ("true", "false"):
            raise boom(400, "[request query.%s]: expected value of type [boolean] but got [string]" % name)
        flags[name] = value == "true"
    if flags["overwrite"] and flags["createNewCopies"]:
        raise boom(400, "[request query]: cannot use [overwrite] with [createNewCopies]")
    if flags["createNewCopies"] and flags["compatibilityMode"]:
        raise boom(400, "[request query]: cannot use [createNewCopies] with [compatibilityMode]")
    return flags


def _check_multipart(content_type: str) -> None:
    """The import route accepts multipart/form-data only (415 otherwise)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise boom(415, "Unsupported Media Type")


def _multipart_file(body: bytes, content_type: str) -> Tuple[str, bytes]:
    """(filename, content) of the form field `file`."""
    _check_multipart(content_type)
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise boom(400, "Invalid multipart payload format")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename() or "", part.get_payload(decode=True) or b""
    raise boom(400, "[request body.file]: expected value of type [Stream] but got [undefined]")


def _extension(filename: str) -> str:
    """The extension as Node's path.extname reads it, which Kibana checks: from the last dot of the
    last name of the path on, and none when that dot begins the name (".ndjson" is a hidden file
    without one) or the name is ".."."""
    name = filename.rstrip("/").rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return "" if dot <= 0 or name == ".." else name[dot:]


def _not_json(constant: str):
    """Refuse what Python's json reads beyond JSON (NaN, Infinity, -Infinity), as JSON.parse does."""
    raise ValueError("%s is not JSON" % constant)


def _read_import_lines(data: bytes) -> List[dict]:
    objects = []
    for number, line in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line, parse_constant=_not_json)
        except ValueError as error:
            raise boom(400, "Unexpected token in JSON at line %d: %s" % (number, error)) from None
        if isinstance(item, dict) and "exportedCount" in item:
            continue
        if not (isinstance(item, dict) and isinstance(item.get("type"), str) and isinstance(item.get("id"), str)):
            raise boom(400, "line %d is not a saved object" % number)
        objects.append(item)
    return objects


def _with_new_ids(obj: dict, new_ids: dict, referred: dict, keep_origin: bool) -> dict:
    """`obj` as Kibana writes it: under its new id, if it has one (with its origin kept, or reset
    for a new copy), its references following the objects of the file that got new ids and
    resolved to the objects of the space whose origin they name."""
    targets = dict(referred)
    targets.update(new_ids)
    references = [dict(ref, id=targets.get((ref["type"], ref["id"]), ref["id"])) for ref in obj.get("references") or ()]
    key = (obj["type"], obj["id"])
    if key not in new_ids:
        return dict(obj, references=references)
    written = {name: value for name, value in obj.items() if name != "originId"}
    if keep_origin:
        written["originId"] = obj.get("originId") or obj["id"]
    return dict(written, id=new_ids[key], references=references)


class _KibanaHandler(QuietHandler):
    def handle_request(self) -> None:
        emulator: KibanaEmulator = self.app
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        space, route = "default", parts.path
        body = b""
        try:
            try:
                body = self.read_body(MAX_IMPORT_PAYLOAD_BYTES + (1 << 20))
            except BodyTooLarge:
                raise boom(413, "Payload content length greater than maximum allowed: %d"
                           % MAX_IMPORT_PAYLOAD_BYTES) from None
            matched = SPACE_PREFIX.match(parts.path)
            if matched:
                space, route = matched.group(1), matched.group(2) or "/"
            if getattr(self, "answers_sent", 0) and emulator._idle_closes.take(route):
                self.drop_connection()  # unrecorded: Kibana never saw the request
                return
            fault = emulator._faults.take(route)
            if isinstance(fault, _Reset):
                self._record(emulator, space, route, query, body, None)
                self.drop_connection()
                return
            if isinstance(fault, _Fail):
                raise _Answer(fault.status, fault.body, fault.headers)
            answer = self._route(emulator, space, route, query, body)
        except _Answer as refusal:
            answer = refusal
        self._record(emulator, space, route, query, body, answer.status)
        self.answers_sent = getattr(self, "answers_sent", 0) + 1  # on this connection (one handler each)
        # A body too large was not read to the end: the connection cannot be reused.
        self.send_whole(answer.status, answer.headers, answer.body, close=answer.status == 413)

    def _route(self, emulator: KibanaEmulator, space: str, route: str, query: dict, body: bytes) -> _Answer:
        if emulator.starting:
            raise _Answer(503, NOT_READY_TEXT, (("Content-Type", "text/plain; charset=utf-8"),))
        if not re.match(r"^[a-z0-9_-]+$", space):
            raise boom(404, "Not Found")
        handler = ROUTES.get((self.command, route))
        space_route = SPACE_ROUTE.match(route)
        if space_route and self.command == "GET":
            emulator.check_auth(self.headers.get("Authorization"))
            return emulator.space(space_route.group(1))
        if handler is None:
            raise boom(404, "Not Found")
        if handler != "status":
            # Authentication is optional on the status route ("try" mode): bad or no credentials
            # get the redacted status there, not a 401.
            emulator.check_auth(self.headers.get("Authorization"))
        # hapi parses the payload (the route's `accepts` included) before Kibana's xsrf check.
        if handler == "export":
            _check_json_payload(self.headers.get("Content-Type"))
        if handler == "import_":
            _check_multipart(self.headers.get("Content-Type", ""))
        # Kibana's xsrf check asks only whether either header is there, whatever its value.
        if self.command != "GET" and "kbn-xsrf" not in self.headers and "kbn-version" not in self.headers:
            raise boom(400, XSRF_MESSAGE)
        requested = self.headers.get("kbn-version")
        if requested and requested != emulator.version:
            # Kibana's version check after authentication, on every route (its UI sends the header).
            raise boom(400, 'Browser client is out of date, please refresh the page ("kbn-version" header was "%s" '
                            'but should be "%s")' % (requested, emulator.version),
                       attributes={"expected": emulator.version, "got": requested})
        if handler == "import_":
            return emulator.import_(space, query, body, self.headers.get("Content-Type", ""))
        if handler == "status":
            return emulator.status(space, query, body, emulator.authenticated(self.headers.get("Authorization")))
        return getattr(emulator, handler)(space, query, body)

    def _record(self, emulator, space, route, query, body, status) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        emulator.requests.append(RequestRecord(self.command, self.path, space, route, query, headers, body, status))


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"):
    setattr(_KibanaHandler, "do_" + _method, _KibanaHandler.handle_request)
