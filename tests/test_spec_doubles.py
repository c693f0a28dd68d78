"""kcing against doubles written from the specs alone (upstream.md §1.3, §1.6, §1.10, §1.11;
elk.md §1 and §5), not from kcing's own fakes: what a spec-faithful legacy frontend and storage,
Logstash http input and Kibana answer, and nothing more."""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import zlib
from datetime import date, datetime, timedelta, timezone
from email import message_from_bytes
from email.policy import HTTP as HTTP_POLICY
from email.utils import format_datetime
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from tests.fakes.serving import BackgroundServer, QuietHandler
from tests.feedrun import REPO, clean_environ, kcing

# The real payloads beside the checkout (../shared/data/upstream), when it has them.
LEGACY_DATA = REPO.parent / "shared" / "data" / "upstream" / "legacy"
SAMPLES = REPO / "samples"
NON_LAVA_LAB = "lab-baylibre-seattle"


# ------------------------------------------------------------------------------------------
# Legacy KernelCI: frontend (CSRF + _ajax) and storage
# ------------------------------------------------------------------------------------------

class LegacySpecReplica:
    def __init__(self, today: date, lifetime=(600, 1200)):
        self.today = today
        self.lifetime = lifetime
        self.secret = secrets.token_bytes(16)
        self.sessions: Dict[str, str] = {}  # cookie value -> csrf seed
        self.documents: Dict[str, List[dict]] = {"build": [], "boot": []}
        self.files: Dict[str, bytes] = {}
        self.faults: Dict[str, list] = {}  # path -> [fault, ...] taken one per request
        self.expired_tokens: set = set()
        self.expire_after: Optional[int] = None  # _ajax requests each token serves, then 403
        self.token_uses: Dict[str, int] = {}
        self.boot_removed = False
        # When set, the backend's clock: its "today" and the Date of the frontend's answers.
        self.now: Optional[datetime] = None
        self.on_listing = None  # called with the collection before each _ajax answer
        self.requests: List[tuple] = []
        self.lock = threading.Lock()
        self.frontend = BackgroundServer(FrontendHandler, self)
        self.storage = BackgroundServer(StorageHandler, self)

    def start(self):
        self.frontend.start()
        self.storage.start()
        return self

    def stop(self):
        self.frontend.stop()
        self.storage.stop()

    def add(self, collection: str, item: dict, path: str, body: bytes) -> None:
        self.documents[collection].append(item)
        self.files[path] = body

    def token(self, seed: str) -> str:
        low, high = self.lifetime
        expires = int(time.time()) + secrets.choice(range(low, high + 1))
        mac = hmac.new(self.secret, ("%s%d" % (seed, expires)).encode(), hashlib.sha1).hexdigest()
        return "%d##%s" % (expires, mac)

    def valid(self, token: Optional[str], cookie: Optional[str]) -> bool:
        seed = self.sessions.get(cookie or "")
        if not token or seed is None or "##" not in token:
            return False
        expires, mac = token.split("##", 1)
        if not expires.isdigit() or int(expires) < time.time():
            return False
        good = hmac.new(self.secret, ("%s%s" % (seed, expires)).encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(good, mac) or token in self.expired_tokens:
            return False
        with self.lock:
            uses = self.token_uses.get(token, 0) + 1
            self.token_uses[token] = uses
            if self.expire_after is not None and uses > self.expire_after:
                self.expired_tokens.add(token)
                return False
        return True

    def expire_all(self) -> None:
        with self.lock:
            self.expired_tokens.update(self.token_uses)

    def listing(self, collection: str, query: List[tuple]) -> dict:
        params: Dict[str, List[str]] = {}
        for key, value in query:
            params.setdefault(key, []).append(value)
        items = list(self.documents[collection])
        today = self.now.date() if self.now is not None else self.today
        if "date_range" in params:
            try:
                days = int(params["date_range"][-1])
            except ValueError:
                days = 5
            start = datetime.combine(today, datetime.min.time(), timezone.utc) - timedelta(days=days)
            end = datetime.combine(today, datetime.max.time(), timezone.utc).replace(microsecond=0)
            low, high = start.timestamp() * 1000, end.timestamp() * 1000
            items = [item for item in items if low <= item["created_on"]["$date"] < high]
        if "sort" in params:
            descending = params.get("sort_order", ["-1"])[-1] != "1"
            for key in reversed(params["sort"]):
                items.sort(key=lambda item: json.dumps(item.get(key), sort_keys=True) if key != "created_on"
                           else item["created_on"]["$date"], reverse=descending)
        total = len(items)
        skip = int(params.get("skip", ["0"])[-1])
        limit = int(params.get("limit", ["0"])[-1])
        items = items[skip:skip + limit] if limit else items[skip:]
        fields, nfields = params.get("field"), params.get("nfield")
        if fields:
            keep = set(fields) | {"_id"}
            items = [{k: v for k, v in item.items() if k in keep} for item in items]
        if nfields:
            items = [{k: v for k, v in item.items() if k not in nfields} for item in items]
        return {"code": 200, "count": total, "limit": limit, "skip": skip, "result": items}


class FrontendHandler(QuietHandler):
    def do_GET(self):
        app: LegacySpecReplica = self.app
        url = urlsplit(self.path)
        cookies = dict(part.strip().split("=", 1) for part in (self.headers.get("Cookie") or "").split(";")
                       if "=" in part)
        cookie = cookies.get("kernelci.org")
        app.requests.append(("frontend", self.path, dict(self.headers)))
        if url.path == "/":
            headers = [("Content-Type", "text/html; charset=utf-8")]
            if cookie not in app.sessions:
                cookie = secrets.token_hex(12)
                app.sessions[cookie] = secrets.token_hex(20)
                headers.append(("Set-Cookie", "kernelci.org=%s; HttpOnly; Path=/" % cookie))
            page = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">\n'
                    '<meta name="csrf-token" content="%s">\n<title>Kernel CI</title></head>'
                    '<body><h1>Kernel CI</h1></body></html>' % app.token(app.sessions[cookie]))
            return self.send_whole(200, headers, page.encode())
        match = re.fullmatch(r"/_ajax/(build|boot)/?", url.path)
        if match is None:
            return self.send_whole(404, [("Content-Type", "text/html")], b"<h1>Not Found</h1>")
        if not app.valid(self.headers.get("X-CSRFToken"), cookie):
            return self.send_whole(403, [("Content-Type", "text/html")], b"<title>403 Forbidden</title>"
                                   b"<h1>Forbidden</h1>")
        collection = match.group(1)
        with app.lock:
            queue = app.faults.get("_ajax/" + collection)
            fault = queue.pop(0) if queue else None
        if fault is not None:  # the backend's error, passed through
            body = json.dumps({"code": fault, "reason": "Internal database error"}).encode()
            return self.send_whole(fault, [("Content-Type", "application/json; charset=UTF-8")], body)
        if collection == "boot" and app.boot_removed:
            body = json.dumps({"code": 404, "reason": "Resource '/boot' not found"}).encode()
            return self.send_whole(404, [("Content-Type", "application/json; charset=UTF-8")], body)
        if app.on_listing is not None:
            app.on_listing(collection)
        answer = app.listing(collection, parse_qsl(url.query, keep_blank_values=True))
        body = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
        headers = [("Content-Type", "application/json; charset=UTF-8"),
                   ("Access-Control-Allow-Headers", "authorization")]
        if app.now is not None:
            headers.append(("Date", format_datetime(app.now, usegmt=True)))
        self.send_whole(200, headers, body)


class StorageHandler(QuietHandler):
    def do_GET(self):
        app: LegacySpecReplica = self.app
        path = unquote(urlsplit(self.path).path).lstrip("/")
        app.requests.append(("storage", path, dict(self.headers)))
        with app.lock:
            queue = app.faults.get(path)
            fault = queue.pop(0) if queue else None
        body = app.files.get(path)
        if fault == "500":
            return self.send_whole(500, [("Content-Type", "text/html")], b"<h1>500 Internal Server Error</h1>")
        if isinstance(fault, tuple) and fault[0] == "slow":
            time.sleep(fault[1])
        if body is None:
            return self.send_whole(404, [("Content-Type", "text/html")], b"<h1>404 Not Found</h1>")
        if fault == "truncated":
            body = body[:len(body) // 2]
        if fault == "cut":  # announces the whole file, sends half, closes
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
            return self.drop_connection()
        self.send_whole(200, [("Content-Type", "application/octet-stream")], body)


def storage_path(item: dict, kind: str) -> str:
    resource = item["file_server_resource"]
    if kind == "build":
        return resource + "/build.json"
    prefix = "boot-" if item["lab_name"] == NON_LAVA_LAB else "lava-json-"
    return "%s/%s/%s%s.json" % (resource, item["lab_name"], prefix, item["board"])


def corpus(replica: LegacySpecReplica) -> Dict[str, str]:
    """Every sample of samples/manifest.json, plus the raw incomplete LAVA callback: {oid: path}."""
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    placed = {}
    for entry in manifest["objects"]:
        item = dict(entry["listing"])
        kind = entry["kind"]
        path = storage_path(item, kind)
        assert entry["url"].split("/", 3)[3] == path.replace("=", "%3D")
        replica.add("build" if kind == "build" else "boot", item, path, (SAMPLES / entry["path"]).read_bytes())
        placed[item["_id"]["$oid"]] = path
    raw_callback = LEGACY_DATA / "lava-callback-raw-incomplete-qemu.json"
    if not raw_callback.is_file():
        return placed
    qemu = {"_id": {"$oid": "5f92f0c859b5140d3b3a5c01"}, "created_on": {"$date": 1603465800000},
            "job": "mainline", "kernel": "v5.9-11-g1234567890ab", "git_branch": "master", "arch": "arm",
            "defconfig_full": "multi_v7_defconfig", "build_environment": "gcc-8",
            "file_server_resource": "mainline/master/v5.9-11-g1234567890ab/arm/multi_v7_defconfig/gcc-8",
            "lab_name": "mgalka-lava-local", "board": "qemu_arm-virt-gicv3", "device_type": "qemu"}
    path = storage_path(qemu, "lava")
    replica.add("boot", qemu, path, raw_callback.read_bytes())
    placed[qemu["_id"]["$oid"]] = path
    return placed


# ------------------------------------------------------------------------------------------
# Logstash http input (elk.md §1)
# ------------------------------------------------------------------------------------------

class LogstashSpecInput:
    def __init__(self, user=None, password=None, max_content_length=104857600, threads=2,
                 max_pending_requests=200):
        self.user, self.password = user, password
        self.max_content_length = max_content_length
        self.capacity = threads + max_pending_requests
        self.held = 0
        self.response_code = 200  # the input's `response_code`: 200, 201, 202 or 204
        self.response_headers = {"Content-Type": "text/plain"}  # its `response_headers`
        self.reject_blocked = 0  # requests answered 429 at once, unread, as while a push is blocked
        self.block = threading.Event()
        self.block.set()
        self.events: List[dict] = []
        self.answers: List[int] = []
        self.lock = threading.Lock()
        self.server = BackgroundServer(LogstashHandler, self)

    @property
    def url(self):
        return self.server.base_url


class LogstashHandler(QuietHandler):
    def do_POST(self):
        app: LogstashSpecInput = self.app
        with app.lock:
            reject_blocked = app.reject_blocked > 0
            app.reject_blocked -= reject_blocked
        if reject_blocked:  # something has been blocked for 10 s: 429 before the body, then close
            app.answers.append(429)
            return self.send_whole(429, [], close=True)
        with app.lock:
            if app.held >= app.capacity:
                app.answers.append(429)
                return self.send_whole(429, [])
            app.held += 1
        try:
            self._handle(app)
        finally:
            with app.lock:
                app.held -= 1

    do_PUT = do_GET = do_DELETE = do_PATCH = do_POST

    def _handle(self, app):
        length = int(self.headers.get("Content-Length") or 0)
        if length > app.max_content_length:  # compressed bodies are not sent by kcing; checked below
            app.answers.append(413)
            return self.send_whole(413, [], close=True)
        body = self.read_body()
        coding = (self.headers.get("Content-Encoding") or "").lower()
        if coding in ("gzip", "deflate"):
            try:
                body = gzip.decompress(body) if coding == "gzip" else zlib.decompress(body)
            except Exception as error:  # noqa: BLE001 - the input answers any decoding error so
                return self.send_whole(400, [("Content-Type", "text/plain")], str(error).encode())
        if len(body) > app.max_content_length:
            app.answers.append(413)
            return self.send_whole(413, [], close=True)
        app.block.wait()
        if app.user is not None and app.password is not None:
            expected = "Basic " + base64.b64encode(("%s:%s" % (app.user, app.password)).encode()).decode()
            given = self.headers.get("Authorization")
            if given is None:
                app.answers.append(401)
                return self.send_whole(401, [("WWW-Authenticate", 'Basic realm="Logstash HTTP Input"')])
            if given != expected:
                app.answers.append(401)
                return self.send_whole(401, [])
        mime = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        events = decode(body, mime)
        with app.lock:
            app.events.extend(events)
            app.answers.append(200)
        if app.response_code == 204:
            return self.send_whole(204, list(app.response_headers.items()))
        self.send_whole(app.response_code, list(app.response_headers.items()), b"ok")


def decode(body: bytes, mime: str) -> List[dict]:
    text = body.decode("utf-8", "replace")
    if mime != "application/json":
        return [{"message": text, "@version": "1"}]
    if not text.strip():
        return []
    failure = [{"message": text, "tags": ["_jsonparsefailure"], "@version": "1"}]
    try:
        value = json.loads(text, parse_constant=_not_json)  # Jackson reads no NaN or Infinity
    except ValueError:
        return failure
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(element, dict) for element in values):
        return failure
    events = []
    for element in values:
        event = dict(element)
        metadata = event.pop("@metadata", {})
        event.setdefault("@version", "1")
        events.append({"event": event, "metadata": metadata})
    return events


def _not_json(name: str):
    raise ValueError("%s is not JSON" % name)


def stored(*inputs: LogstashSpecInput) -> Dict[tuple, dict]:
    """(index, id) -> document, as the pipeline's elasticsearch output would index them (last wins)."""
    documents = {}
    for ls in inputs:
        for event in ls.events:
            assert "metadata" in event, event
            meta = event["metadata"]
            documents[(meta["index"], meta["id"])] = event["event"]
    return documents


def deliveries(*inputs: LogstashSpecInput) -> List[tuple]:
    return [(e["metadata"]["index"], e["metadata"]["id"]) for ls in inputs for e in ls.events]


# ------------------------------------------------------------------------------------------
# Kibana saved objects (elk.md §5)
# ------------------------------------------------------------------------------------------

class KibanaSpec:
    def __init__(self, starting_polls=0):
        self.objects: Dict[tuple, dict] = {}  # (space, type, id) -> object
        self.spaces = {"default"}
        self.starting_polls = starting_polls
        self.requests: List[tuple] = []
        self.server = BackgroundServer(KibanaHandler, self)

    @property
    def url(self):
        return self.server.base_url


def boom(status, message):
    return status, {"statusCode": status, "error": {400: "Bad Request", 404: "Not Found",
                                                     503: "Service Unavailable"}.get(status, "Error"),
                    "message": message}


class KibanaHandler(QuietHandler):
    def _route(self):
        app: KibanaSpec = self.app
        url = urlsplit(self.path)
        path, space = url.path, "default"
        match = re.match(r"/s/([a-z0-9_-]+)(/.*)", path)
        if match:
            space, path = match.group(1), match.group(2)
        body = self.read_body()
        app.requests.append((self.command, self.path, dict(self.headers), body))
        if path == "/api/status" and self.command == "GET":
            if app.starting_polls > 0:
                app.starting_polls -= 1
                return self._text(503, b"Kibana server is not ready yet")
            level = {"level": "available", "summary": "All services are available"}
            return self._json(200, {"name": "kb", "uuid": "5b2de169-2785-441b-ae8c-186a1936b17d",
                                    "version": {"number": "8.15.0", "build_flavor": "default"},
                                    "status": {"overall": level,
                                               "core": {"elasticsearch": level, "savedObjects": level},
                                               "plugins": {}}})
        if self.command != "GET" and "kbn-xsrf" not in {name.lower() for name in self.headers.keys()}:
            return self._json(*boom(400, "Request must contain a kbn-xsrf header."))
        if space not in app.spaces:
            return self._json(*boom(404, "Not Found"))
        if path.startswith("/api/spaces/space/") and self.command == "GET":
            wanted = path.rsplit("/", 1)[1]
            if wanted in app.spaces:
                return self._json(200, {"id": wanted, "name": wanted, "disabledFeatures": []})
            return self._json(*boom(404, "Saved object [space/%s] not found" % wanted))
        if path == "/api/saved_objects/_export" and self.command == "POST":
            return self._export(space, body)
        if path == "/api/saved_objects/_import" and self.command == "POST":
            return self._import(space, url.query, body)
        return self._json(*boom(404, "Not Found"))

    do_GET = do_POST = do_PUT = do_DELETE = _route

    def _json(self, status, value):
        self.send_whole(status, [("Content-Type", "application/json; charset=utf-8")], json.dumps(value).encode())

    def _text(self, status, body):
        self.send_whole(status, [("Content-Type", "text/plain; charset=utf-8")], body)

    def _export(self, space, body):
        app: KibanaSpec = self.app
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return self._json(*boom(400, "Invalid JSON"))
        if ("type" in request) == ("objects" in request):
            return self._json(*boom(400, "Either `type` or `objects` are required."))
        if "objects" in request:
            found = []
            for wanted in request["objects"]:
                obj = app.objects.get((space, wanted["type"], wanted["id"]))
                if obj is None:
                    return self._json(*boom(400, "Error fetching objects to export"))
                found.append(obj)
        else:
            types = request["type"] if isinstance(request["type"], list) else [request["type"]]
            found = sorted((obj for (s, t, _), obj in app.objects.items() if s == space and
                            ("*" in types or t in types)), key=lambda obj: obj["id"])
        lines = [json.dumps(obj, sort_keys=True) for obj in found]
        if not request.get("excludeExportDetails"):
            lines.append(json.dumps({"excludedObjects": [], "excludedObjectsCount": 0,
                                     "exportedCount": len(found), "missingRefCount": 0,
                                     "missingReferences": []}, sort_keys=True))
        self.send_whole(200, [("Content-Type", "application/ndjson"),
                              ("Content-Disposition", 'attachment; filename="export.ndjson"')],
                        "\n".join(lines).encode())

    def _import(self, space, query, body):
        app: KibanaSpec = self.app
        flags = dict(parse_qsl(query))
        overwrite = flags.get("overwrite") == "true"
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("multipart/form-data"):
            return self._json(*boom(415, "Unsupported Media Type"))
        message = message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body, policy=HTTP_POLICY)
        parts = [part for part in message.iter_parts() if part.get_param("name", header="content-disposition") == "file"]
        if not parts:
            return self._json(*boom(400, "[request body.file]: expected value of type [object] but got [undefined]"))
        filename = parts[0].get_filename() or ""
        if not filename.endswith(".ndjson"):
            return self._json(*boom(400, "Invalid file extension %s" % (Path(filename).suffix or filename)))
        errors, successes, writes = [], [], []
        objects = [json.loads(line) for line in parts[0].get_payload(decode=True).decode().split("\n")
                   if line.strip()]
        objects = [obj for obj in objects if "type" in obj]  # not the export details line
        in_file = {(obj["type"], obj["id"]) for obj in objects}
        for obj in objects:
            key = (space, obj["type"], obj["id"])
            meta = {"title": obj.get("attributes", {}).get("title")}
            if key in app.objects and not overwrite:
                errors.append({"id": obj["id"], "type": obj["type"], "meta": meta, "error": {"type": "conflict"}})
                continue
            # Kibana checks only the references to data views and saved searches.
            missing = [ref for ref in obj.get("references", []) if ref["type"] in ("index-pattern", "search")
                       and (space, ref["type"], ref["id"]) not in app.objects and (ref["type"], ref["id"]) not in in_file]
            if missing:
                errors.append({"id": obj["id"], "type": obj["type"], "meta": meta,
                               "error": {"type": "missing_references",
                                         "references": [{"type": r["type"], "id": r["id"]} for r in missing]}})
                continue
            stored_obj = {k: v for k, v in obj.items() if k != "namespaces"}
            stored_obj.setdefault("managed", False)
            stored_obj["version"] = "WzEsMV0="
            stored_obj["updated_at"] = "2026-12-07T00:00:00.000Z"
            writes.append((key, stored_obj))
            result = {"type": obj["type"], "id": obj["id"], "meta": meta}
            if overwrite:
                result["overwrite"] = True
            successes.append(result)
        # Kibana's createSavedObjects writes nothing while one object has an error the client is
        # to resolve, yet reports the others as successes (not said by elk.md §5.3).
        if not any(error["error"]["type"] in ("conflict", "ambiguous_conflict", "missing_references")
                   for error in errors):
            app.objects.update(writes)
        self._json(200, {"success": not errors, "successCount": len(successes),
                         "successResults": successes, "warnings": [],
                         **({"errors": errors} if errors else {})})



# ------------------------------------------------------------------------------------------
# Running kcing against them
# ------------------------------------------------------------------------------------------

TODAY = date(2020, 11, 19)
DAYS = "45"  # the samples' dates (2020-10-23 to 2020-11-19) are all within it


@pytest.fixture
def replica():
    running = LegacySpecReplica(TODAY).start()
    yield running
    running.stop()


@pytest.fixture
def inputs():
    started = {route: LogstashSpecInput() for route in ("build", "lava", "boot")}
    for ls in started.values():
        ls.server.start()
    yield started
    for ls in started.values():
        ls.server.stop()


def legacy_environ(replica: LegacySpecReplica, inputs, db: Path, **extra) -> Dict[str, str]:
    return clean_environ(KCI_HOST=replica.frontend.base_url.split("://", 1)[1], KCI_SCHEME="http",
                         KCI_STORAGE_URL=replica.storage.base_url, ES_BUILD=inputs["build"].url,
                         ES_LAVA=inputs["lava"].url, ES_BOOT=inputs["boot"].url, KCING_DB=str(db),
                         DRP_DAYS="36500", KCI_RETRY_BACKOFF="0.05", ES_RETRY_BACKOFF="0.05", **extra)


def test_gen_samples_never_saves_a_file_cut_short_and_saves_the_whole_file_next_run(replica, inputs, tmp_path):
    """Storage serving a JSON file cut short (a file still being written, sent whole with its
    Content-Length) is no sample: saved, it was "already present" for every later run, even once
    storage served the whole file, and its replay was rejected for good."""
    placed = corpus(replica)
    cut_id = "5fa2d4e059b5140d3b3a61e2"
    replica.faults[placed[cut_id]] = ["truncated"]
    samples = tmp_path / "samples"
    env = legacy_environ(replica, inputs, tmp_path / "kcing.db")
    args = ["gen_samples", "--source", "legacy", "--samples-dir", str(samples), "--days", DAYS]
    first = kcing(args, env, tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "%d saved, 0 already present, 1 failed" % (len(placed) - 1) in first.stdout
    assert "could not save build %s: not valid JSON" % cut_id in first.stderr
    assert "Traceback" not in first.stderr
    again = kcing(args, env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 saved, %d already present" % (len(placed) - 1) in again.stdout
    manifest = json.loads((samples / "manifest.json").read_text())
    assert {entry["upstream_id"] for entry in manifest["objects"]} == set(placed)
    for entry in manifest["objects"]:
        assert (samples / entry["path"]).read_bytes() == replica.files[placed[entry["upstream_id"]]]
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples)], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_feed_against_spec_doubles_delivers_everything_once_through_expiring_tokens_and_storage_failures(
        replica, inputs, tmp_path):
    """Tokens refused after one listing page each, a file answered 500 once, one cut short on the
    wire, one cut short as a file: the first run delivers the rest and exits 1; the next delivers
    what failed, and a third lists everything as delivered."""
    placed = corpus(replica)
    replica.expire_after = 1
    paths = list(placed.values())
    replica.faults.update({paths[0]: ["500"], paths[1]: ["truncated"], paths[2]: ["cut"]})
    env = legacy_environ(replica, inputs, tmp_path / "kcing.db", KCI_PAGE_SIZE="4")
    args = ["feed_es", "--days", DAYS]
    first = kcing(args, env, tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "listed %d" % len(placed) in first.stdout and "rejected 1, failed 0" in first.stdout
    second = kcing(args, env, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    third = kcing(args, env, tmp_path)
    assert third.returncode == 0 and "skipped %d (already delivered)" % len(placed) in third.stdout
    for run in (first, second, third):
        assert "Traceback" not in run.stderr
    keys = deliveries(*inputs.values())
    assert len(keys) == len(set(keys))
    assert all(event["event"].get("@version") == "1" for ls in inputs.values() for event in ls.events)


def test_feed_against_a_spec_logstash_with_basic_auth_and_a_small_max_content_length(replica, tmp_path):
    corpus(replica)
    inputs = {route: LogstashSpecInput(user="kcing", password="pässwort", max_content_length=200_000)
              for route in ("build", "lava", "boot")}
    for ls in inputs.values():
        ls.server.start()
    try:
        env = legacy_environ(replica, inputs, tmp_path / "kcing.db", LS_USER="kcing", LS_PASSWORD="pässwort")
        fed = kcing(["feed_es", "--days", DAYS], env, tmp_path)
        assert fed.returncode == 0, fed.stdout + fed.stderr
        assert 413 in inputs["lava"].answers
        keys = deliveries(*inputs.values())
        assert len(keys) == len(set(keys))
        wrong = legacy_environ(replica, inputs, tmp_path / "other.db", LS_USER="kcing", LS_PASSWORD="wrong")
        refused = kcing(["feed_es", "--days", DAYS], wrong, tmp_path)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].endswith("refused the request (401): check LS_USER and LS_PASSWORD")
    finally:
        for ls in inputs.values():
            ls.server.stop()


def test_setup_kbn_and_backup_kbn_against_a_spec_kibana(tmp_path):
    import shutil
    kibana = KibanaSpec(starting_polls=1)
    kibana.server.start()
    try:
        kdir = tmp_path / "kibana"
        shutil.copytree(REPO / "kibana", kdir)
        env = clean_environ(KB_URL=kibana.url, KCING_PROGRESS_EVERY="1")
        setup = kcing(["setup_kbn", "--kibana-dir", str(kdir), "--wait", "30"], env, tmp_path)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        lines = [line for line in (REPO / "kibana" / "saved_objects.ndjson").read_text().splitlines() if line]
        assert len(kibana.objects) == len(lines)
        again = kcing(["setup_kbn", "--kibana-dir", str(kdir)], env, tmp_path)
        assert again.returncode == 0 and "%d already present and unchanged" % len(lines) in again.stdout
        backup = kcing(["backup_kbn", "--kibana-dir", str(kdir)], env, tmp_path)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        assert (kdir / "saved_objects.ndjson").read_bytes() == (REPO / "kibana" / "saved_objects.ndjson").read_bytes()
        nowhere = kcing(["setup_kbn", "--kibana-dir", str(kdir), "--space", "ci"], env, tmp_path)
        assert nowhere.returncode == 2 and len(nowhere.stderr.splitlines()) == 1
    finally:
        kibana.server.stop()
