"""Kibana saved objects through the `_export` / `_import` API (never the `.kibana*` indices).

Pure helpers turn an export into a reviewable file (stable order and key order, no volatile
metadata, the Kibana URL replaced by a placeholder) and read the import result; `KibanaClient`
does the HTTP. Every POST carries `kbn-xsrf`, which Kibana requires on all non-GET API calls.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import requests

from kcing.errors import ConfigError, KcingError, kept_short, one_line as reason_line
from kcing.http import (CHUNK, BodyTooLarge, certificate_refused, joined_within, json_value, resent_if_idle_closed,
                        seconds_text, socks_unsupported)
from kcing.netreason import connection_failure, no_tls_at_port
from kcing.overdue import Overdue, deadline as overall_deadline
from kcing.secrecy import masked
from kcing.strictjson import no_constants
from kcing.surrogates import lone_surrogates_escaped
from kcing.transport import answers_in_tls, basic_auth, proxy_note, speaks_tls_message
from kcing.webpage import html_page
from kcing.waiting import COUNTDOWN_EVERY, WaitReport

log = logging.getLogger(__name__)

PLACEHOLDER = "{{KB_URL}}"
# What kcing saves and restores. Types this Kibana does not know (lens without the plugin)
# are left out of the export instead of failing it.
EXPORT_TYPES = ("index-pattern", "search", "visualization", "lens", "dashboard")
# Rewritten by Kibana on every import or save: keeping them would make every backup a diff, and
# an imported `version` could be taken as a concurrency token. `namespaces` never belongs in a file.
VOLATILE_FIELDS = ("created_at", "created_by", "updated_at", "updated_by", "version", "namespaces")
XSRF_HEADERS = {"kbn-xsrf": "kcing"}
# Seconds to connect. Each wait for the answer's next bytes may last as long as the whole request
# (KB_REQUEST_DEADLINE): a large import can keep Kibana silent for minutes, and a shorter wait of
# the client's own would cut it before the time the setting gives it, however high it is set.
CONNECT_TIMEOUT = 10.0
DEADLINE = 300.0  # seconds for a whole request and its answer (KB_REQUEST_DEADLINE)
# The largest answer taken, read whole into memory: an export of every dashboard, visualization,
# data view and search of a space (Kibana exports 10,000 objects at most by default).
MAX_ANSWER_BYTES = 256 * 1024 * 1024
# While waiting for Kibana to be ready: how long past the wait a status answer may still come.
STATUS_ANSWER_MARGIN = 10.0
# The deepest nesting of arrays and objects a line may have. A saved object nests a dozen levels
# at most (its JSON-heavy parts, visState or panelsJSON, are strings). The standard library's
# json recurses once per level: a line nested near the interpreter's recursion limit (1,000)
# would end the command in RecursionError, as it is read or as it is written again.
MAX_NESTING = 200
_SPACE_ID = re.compile(r"^[a-z0-9_-]+$")
_NOT_EXPORTABLE = re.compile(r"non-exportable type\(s\): (.+)$")
_MESSAGE_LIMIT = 300


class KibanaUnavailable(KcingError):
    """Kibana could not be reached, was not ready in time, or failed with a 5xx."""

    exit_code = 3


class KibanaRefused(KcingError):
    """Kibana refused a request in a way that retrying cannot fix (a 4xx other than auth)."""

    exit_code = 3


# -- URLs and the placeholder ----------------------------------------------------------------

def check_space(space: str) -> str:
    """Return the space id ("" for the default space); Kibana ids are [a-z0-9_-]."""
    space = (space or "").strip()
    if space in ("", "default"):
        return ""
    if not _SPACE_ID.match(space):
        raise ConfigError("invalid Kibana space id %r: use lowercase letters, digits, '_' and '-'" % space)
    return space


def space_url(kibana_url: str, space: str) -> str:
    """The URL under which a space's apps and APIs live (`/s/<id>` unless default)."""
    space = check_space(space)
    return kibana_url.rstrip("/") + ("/s/%s" % space if space else "")


def _url_pattern(url: str) -> "re.Pattern":
    # The whole URL where it goes on into one of the space's apps, as an earlier kcing wrote links:
    # not a longer host, another port or path, nor one going on into another space (`/s/<id>`),
    # which the placeholder would put into the space restored to (`/s/ops/s/ci/app/...`), nor the
    # URL alone (a link to Kibana's front page), which the space's path would leave empty (`[Kibana]()`).
    return re.compile(re.escape(url) + r"(?=/app/)")


def link_base(url: str) -> str:
    """What links into a space's apps start with: the path of its URL (Kibana's base path, and
    `/s/<id>` outside the default space), without the scheme and host.

    The host is the one kcing reached Kibana at, which need not be the browser's: in docker
    compose it is `kibana`, a name only the containers resolve. A link from the path on leads to
    the Kibana the browser is on, whatever address it reaches it by."""
    return urlsplit(url).path.rstrip("/")


def _link_pattern(base: str) -> "re.Pattern":
    # A markdown link target into one of this space's apps: `](<base>/app/...`.
    return re.compile(r"(?<=\]\()" + re.escape(base) + r"(?=/app/)")


def hide_url(text: str, url: str) -> str:
    """Replace by the placeholder every link into the apps of the space at `url` (as
    `restore_url` wrote it), and `url` itself where it goes on into them (as earlier versions did)."""
    if not url:
        return text
    text = _url_pattern(url).sub(lambda _: PLACEHOLDER, text)
    return _link_pattern(link_base(url)).sub(lambda _: PLACEHOLDER, text)


def restore_url(text: str, url: str) -> str:
    """Replace the placeholder by the path of the space at `url` (`link_base`); refuse a path
    that JSON would have to escape.

    The placeholder sits inside JSON strings, sometimes nested several levels deep; a path
    without characters that need escaping stays valid at every level.
    """
    base = link_base(url)
    if json.dumps(base, ensure_ascii=False)[1:-1] != base:
        raise ConfigError("the Kibana URL %r contains characters that cannot go into saved objects" % url)
    return text.replace(PLACEHOLDER, base)


# -- NDJSON ----------------------------------------------------------------------------------

def _nesting(value: Any) -> int:
    """How many arrays and objects deep `value` goes, counted without recursing."""
    deepest, waiting = 0, [(value, 1)]
    while waiting:
        item, depth = waiting.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            waiting.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_ndjson(text: str) -> List[dict]:
    """Saved objects of an export; blank lines and the export-details line are skipped.

    Raises ValueError naming the line when a line is not a JSON saved object.
    """
    objects = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            # Kibana's JSON.parse refuses the whole import of a file holding NaN or Infinity.
            item = json.loads(line, parse_constant=no_constants)
            too_deep = _nesting(item) > MAX_NESTING
        except ValueError as error:
            raise ValueError("line %d is not JSON (%s)" % (number, error)) from None
        except RecursionError:  # the standard library's decoder recurses once per level
            too_deep = True
        if too_deep:
            raise ValueError("line %d is nested more than %d levels deep, deeper than any saved object"
                             % (number, MAX_NESTING))
        if isinstance(item, dict) and "exportedCount" in item:
            continue
        # An empty type is none: setup_kbn asks Kibana to export the file's types first, and
        # Kibana refuses the whole export when one is empty.
        if not (isinstance(item, dict) and isinstance(item.get("type"), str) and item["type"]
                and isinstance(item.get("id"), str)):
            raise ValueError("line %d is not a saved object (no type and id)" % number)
        # What kcing reads of an object (a title, the references' type and id) must be where an
        # export puts it: a hand-edited line is refused here, not failed on halfway through.
        if not isinstance(item.get("attributes", {}), dict):
            raise ValueError("line %d is not a saved object (its attributes are not a JSON object)" % number)
        references = item.get("references") or []
        if not (isinstance(references, list) and all(
                isinstance(ref, dict) and isinstance(ref.get("type"), str) and isinstance(ref.get("id"), str)
                for ref in references)):
            raise ValueError("line %d is not a saved object (its references are not a list of objects with a type "
                             "and an id)" % number)
        objects.append(item)
    return objects


def without_popularity(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A data view without the popularity counts of its fields (`count` in its `fieldAttrs`),
    which Discover raises and saves each time someone adds a field as a column: usage, not a
    change anyone made to the data view. Any other object, or a `fieldAttrs` that is not the JSON
    object Kibana writes, is returned as it is."""
    attributes = obj.get("attributes")
    if obj.get("type") != "index-pattern" or not isinstance(attributes, dict) \
            or not isinstance(attributes.get("fieldAttrs"), str):
        return obj
    try:
        fields = json.loads(attributes["fieldAttrs"])
    except ValueError:
        return obj
    if not isinstance(fields, dict) or not any(isinstance(attrs, dict) and "count" in attrs
                                               for attrs in fields.values()):
        return obj
    kept = {}
    for name, attrs in fields.items():
        if isinstance(attrs, dict):
            attrs = {key: value for key, value in attrs.items() if key != "count"}
            if not attrs:
                continue
        kept[name] = attrs
    text = json.dumps(kept, separators=(",", ":"), ensure_ascii=False)
    return dict(obj, attributes=dict(attributes, fieldAttrs=text))


def stable_object(obj: Mapping[str, Any]) -> dict:
    """The object without the metadata Kibana rewrites on every save or import, nor the
    popularity counts Discover keeps in data views."""
    return {key: value for key, value in without_popularity(obj).items() if key not in VOLATILE_FIELDS}


def under_origin_ids(objects: Iterable[Mapping[str, Any]]) -> List[dict]:
    """The objects of an export under the ids they were imported with, references following.

    Since Kibana 8 the id of a dashboard, visualization, data view or search is unique across
    spaces: one imported into a space while another space holds its id is written under a new
    random id, with the id of the file as its `originId`. Under that origin it is the file's
    object again. An origin that two objects of the export claim, or that another one has as
    its id, is left as it is.
    """
    objects = list(objects)
    ids = {(obj["type"], obj["id"]) for obj in objects}
    claims: dict = {}
    for obj in objects:
        origin = obj.get("originId")
        if isinstance(origin, str) and origin and origin != obj["id"]:
            claims.setdefault((obj["type"], origin), []).append(obj["id"])
    renamed = {(kind, holders[0]): origin for (kind, origin), holders in claims.items()
               if len(holders) == 1 and (kind, origin) not in ids}
    result = []
    for obj in objects:
        copy = dict(obj)
        if "references" in obj:
            copy["references"] = [dict(ref, id=renamed.get((ref.get("type"), ref.get("id")), ref.get("id")))
                                  if isinstance(ref, dict) else ref for ref in obj.get("references") or ()]
        key = (obj["type"], obj["id"])
        if key in renamed:
            copy["id"] = renamed[key]
            del copy["originId"]
        result.append(copy)
    return result


def canonical_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """One object per line, under the ids they were imported with, sorted by type then id,
    keys sorted, compact, final newline.

    Compact separators and sorted keys are also how Kibana writes exports, so a line changes
    only when the object does.
    """
    ordered = sorted((stable_object(obj) for obj in under_origin_ids(objects)), key=lambda obj: (obj["type"], obj["id"]))
    return import_text(ordered)


def export_types(objects: Iterable[Mapping[str, Any]]) -> Tuple[str, ...]:
    """The types to export before importing `objects`: kcing's (EXPORT_TYPES), and any other
    type the file holds (a tag or a map a backed-up dashboard used). An object of a type left out
    of the export would be taken as new, so sent, and Kibana would answer it with a conflict that
    holds back the whole import; it would be missing from the backup made first too."""
    objects = list(objects)
    # And the types the file's objects refer to: Kibana's export follows references only from the
    # objects it holds, so a tag a new dashboard uses was taken as missing (`broken_references`).
    referred = {ref.get("type") for obj in objects for ref in obj.get("references") or () if isinstance(ref, dict)}
    extra = sorted(({obj["type"] for obj in objects} | {name for name in referred if isinstance(name, str)})
                   - set(EXPORT_TYPES))
    return EXPORT_TYPES + tuple(extra)


def count_by_type(objects: Iterable[Mapping[str, Any]]) -> str:
    """"4 index-pattern, 2 dashboard" in a stable order (for summaries)."""
    counts: dict = {}
    for obj in objects:
        counts[obj["type"]] = counts.get(obj["type"], 0) + 1
    return ", ".join("%d %s" % (counts[name], name) for name in sorted(counts)) or "no objects"


def unsupported_types(message: str) -> List[str]:
    """Types named by Kibana's "Trying to export non-exportable type(s): a, b" 400 message."""
    found = _NOT_EXPORTABLE.search(message or "")
    return [name.strip() for name in found.group(1).split(",")] if found else []


def backup_name(now: float) -> str:
    """saved_objects-<UTC timestamp>.ndjson; sorts by time."""
    return "saved_objects-%s.ndjson" % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


# -- import results --------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportProblem:
    """One entry of the import result's `errors`."""

    type: str
    id: str
    title: str
    # Kibana's: conflict, ambiguous_conflict, missing_references, unsupported_type, unknown;
    # kcing's own: broken_references (see broken_references), dangling_references (see
    # dangling_references).
    error: str
    references: Tuple[Tuple[str, str], ...] = ()  # (type, id) of missing references
    message: str = ""


# Import errors that Kibana expects the client to resolve (`_resolve_import_errors`) before it
# writes anything: while one object of a file has one, Kibana creates none of the file's
# objects, and yet counts the others in `successCount` and `successResults`.
RESOLVABLE_ERRORS = ("conflict", "ambiguous_conflict", "missing_references")


@dataclass(frozen=True)
class ImportReport:
    success: bool
    success_count: int  # what Kibana's `successCount` says: not necessarily written
    problems: Tuple[ImportProblem, ...]

    @property
    def held_back(self) -> bool:
        """True when Kibana wrote none of the objects: one of them has a resolvable error."""
        return any(problem.error in RESOLVABLE_ERRORS for problem in self.problems)

    @property
    def imported(self) -> int:
        """How many objects Kibana actually wrote."""
        return 0 if self.held_back else self.success_count


def read_import_result(body: Mapping[str, Any]) -> ImportReport:
    """The 200 body of `_import`: Kibana reports per-object failures there, not in the status.
    ValueError when it has no boolean `success`, which every import result of Kibana has."""
    if not isinstance(body.get("success"), bool):
        raise ValueError("no success")
    problems = []
    for entry in body.get("errors") or ():
        error = entry.get("error") or {}
        title = entry.get("title") or (entry.get("meta") or {}).get("title") or ""
        refs = tuple((ref.get("type", "?"), ref.get("id", "?")) for ref in error.get("references") or ())
        problems.append(ImportProblem(entry.get("type", "?"), entry.get("id", "?"), str(title),
                                      error.get("type", "unknown"), refs, one_line(error.get("message", ""))))
    return ImportReport(body["success"] and not problems, int(body.get("successCount") or 0),
                        tuple(problems))


# How many characters of an object's type, id or title a problem line quotes.
_NAME_LIMIT = 200


def _quoted_name(text: str) -> str:
    """A type, id or title as Kibana gave it, fit for one line: controls written as escapes, cut."""
    return kept_short(text, _NAME_LIMIT)


def describe(problem: ImportProblem) -> str:
    """One line a user can act on. What it quotes comes from Kibana's answer (a title, an id, the
    type of the error), which may hold line breaks or terminal escapes."""
    return _described_problem(replace(
        problem, type=_quoted_name(problem.type), id=_quoted_name(problem.id), title=_quoted_name(problem.title),
        error=_quoted_name(problem.error), references=tuple(tuple(map(_quoted_name, ref)) for ref in problem.references)))


def _described_problem(problem: ImportProblem) -> str:
    what = "%s %s" % (problem.type, problem.id) + (' "%s"' % problem.title if problem.title else "")
    if problem.error == "conflict":
        return "conflict: %s already exists; run with --overwrite to replace it" % what
    if problem.error == "ambiguous_conflict":
        return "ambiguous conflict: %s matches several existing objects; resolve it in Kibana" % what
    if problem.error == "missing_references":
        missing = ", ".join("%s %s" % ref for ref in problem.references) or "?"
        return "missing references: %s refers to %s, found neither in the file nor in Kibana" % (what, missing)
    if problem.error == "broken_references":
        missing = ", ".join("%s %s" % ref for ref in problem.references) or "?"
        return ("broken references: %s refers to %s, found neither in the file nor in Kibana: Kibana imports it with "
                "what uses them broken" % (what, missing))
    if problem.error == "dangling_references":
        missing = ", ".join("%s %s" % ref for ref in problem.references) or "?"
        return ("dangling references: %s refers to %s, which Kibana does not hold: a setup_kbn of the file restores it "
                "with what uses them broken, or not at all" % (what, missing))
    if problem.error == "unsupported_type":
        return "unsupported type: %s (this Kibana does not know the type %s)" % (what, problem.type)
    return "%s: %s%s" % (problem.error, what, ": " + problem.message if problem.message else "")


@dataclass(frozen=True)
class ImportPlan:
    """The file's objects split by what Kibana holds: not there yet, there with other content,
    there with the same content."""

    new: Tuple[dict, ...]
    changed: Tuple[dict, ...]
    unchanged: Tuple[dict, ...]

    def to_send(self, overwrite: bool) -> Tuple[dict, ...]:
        """What to import: the new objects, and the changed ones only when replacing them.

        Objects already in Kibana are never sent without overwrite: Kibana would answer each with
        a conflict and, because of it, write none of the file's objects, the new ones included."""
        return self.new + (self.changed if overwrite else ())


def _content(obj: Mapping[str, Any], url: str = ""):
    # Only attributes and references count: Kibana rewrites the migration versions on import,
    # and Discover the popularity counts of a data view's fields each time it is used. Links into
    # the space at `url` count as the backup writes them (`hide_url`): a link Kibana holds with its
    # whole URL is the one the file restores as a path.
    obj = without_popularity(obj)
    attributes = obj.get("attributes")
    if url:
        attributes = json.loads(hide_url(json.dumps(attributes, ensure_ascii=False), url))
    return (attributes, sorted(json.dumps(ref, sort_keys=True) for ref in obj.get("references") or ()))


def plan_import(wanted: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]],
                url: str = "") -> ImportPlan:
    """Split the objects to import (`wanted`) by the objects of the space (`current`), these
    under the ids they were imported with (an object Kibana gave a new id is still the one the
    file names, and Kibana matches them so too: its import finds it by its origin); the links into
    the space at `url` compared as a backup of it writes them."""
    held = {(obj["type"], obj["id"]): _content(obj, url) for obj in under_origin_ids(current)}
    new, changed, unchanged = [], [], []
    for obj in wanted:
        key = (obj["type"], obj["id"])
        if key not in held:
            new.append(obj)
        elif held[key] == _content(obj, url):
            unchanged.append(obj)
        else:
            changed.append(obj)
    return ImportPlan(tuple(new), tuple(changed), tuple(unchanged))


def import_text(objects: Iterable[Mapping[str, Any]]) -> str:
    """The NDJSON of `objects`, one per line in their order, keys sorted, compact, as `_import`
    reads it. Half of a character (a lone surrogate, which Kibana's export writes escaped) stays
    escaped: UTF-8 cannot carry it as it is."""
    return "".join(lone_surrogates_escaped(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
                   + "\n" for obj in objects)


# The only reference types Kibana's import checks (its validateReferences): a missing one is a
# `missing_references` error that holds the whole import back; others it does not look for.
CHECKED_REFERENCE_TYPES = ("index-pattern", "search")


def _unresolved(objects: Sequence[Mapping[str, Any]], held: set, error: str,
                skipped_types: Sequence[str] = ()) -> List[ImportProblem]:
    """One `error` problem per object referring to (type, id) pairs not in `held`, references of
    `skipped_types` left out."""
    problems = []
    for obj in objects:
        missing = tuple(dict.fromkeys(
            (ref.get("type"), ref.get("id")) for ref in obj.get("references") or ()
            if isinstance(ref, dict) and ref.get("type") not in skipped_types
            and (ref.get("type"), ref.get("id")) not in held))
        if missing:
            problems.append(ImportProblem(obj["type"], obj["id"], str((obj.get("attributes") or {}).get("title", "")),
                                          error, missing))
    return problems


def broken_references(wanted: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]) -> List[ImportProblem]:
    """The objects to import that refer to objects neither among them nor in Kibana (`current`,
    matched under the ids they were imported with), of types Kibana's import does not check: it
    imports them with that part broken (a dashboard's panel), and says nothing."""
    wanted = list(wanted)
    held = {(obj["type"], obj["id"]) for obj in under_origin_ids(current)} | {(obj["type"], obj["id"]) for obj in wanted}
    return _unresolved(wanted, held, "broken_references", CHECKED_REFERENCE_TYPES)


def dangling_references(exported: Iterable[Mapping[str, Any]]) -> List[ImportProblem]:
    """The objects of an export (`KibanaClient.export`, which includes the objects they refer to)
    that refer to objects it does not hold: Kibana lacks them (deleted while still in use). A file
    of them is no whole backup: its import reports or breaks what refers to them."""
    exported = list(exported)
    return _unresolved(exported, {(obj["type"], obj["id"]) for obj in exported}, "dangling_references")


def conflict(obj: Mapping[str, Any]) -> ImportProblem:
    """The problem reported for an object of the file that Kibana holds with other content."""
    return ImportProblem(obj["type"], obj["id"], str((obj.get("attributes") or {}).get("title", "")), "conflict")


# -- HTTP errors -----------------------------------------------------------------------------

def one_line(text: Any) -> str:
    """Collapse whitespace (Kibana's security messages span lines), write the other controls as
    escapes (a page's terminal escapes) and cap the length; secrets are masked first (a proxy's
    page echoing the request quotes its Authorization header)."""
    return reason_line(masked(str(text)), _MESSAGE_LIMIT)


def body_text(response: Answer) -> str:
    """The body as UTF-8 text, undecodable bytes replaced.

    Kibana answers `application/ndjson` and JSON without a charset, and both are UTF-8: left to
    requests, such a body would be decoded by a charset guess, which reads short UTF-8 texts as
    windows-1250, johab or another charset.
    """
    return response.content.decode("utf-8", "replace")


def response_message(response: Answer) -> str:
    """The Boom `message` of an error body, what an HTML page is, or the body's text."""
    try:
        body = json_value(response.content)
    except ValueError:
        text = body_text(response)
        return one_line(html_page(text) or text)
    if isinstance(body, dict) and body.get("message"):
        return one_line(body["message"])
    return one_line(body_text(response))


def said(message: str) -> str:
    """`: message` to follow a status, or nothing for an answer that said nothing (an empty
    body, as a proxy in front of Kibana answers its 503)."""
    return ": %s" % message if message else ""


# Statuses a proxy before Kibana answers of its own: refusing the client, or failing to reach Kibana.
PROXY_MAY_ANSWER = frozenset({401, 403, 407, 502, 503, 504})


def error_for(status: int, message: str, action: str, url: str, user: str, api_key: bool = False,
              through: str = "") -> KcingError:
    """The error to raise when Kibana answers `status` to `action` (an HTTP error, not 2xx);
    `user` is the basic-auth user sent, `api_key` whether an API key was sent instead; `through`:
    what to say of a proxy the request went through (transport.proxy_note), which a refusal of
    credentials may have come from."""
    error = _error_for(status, message, action, url, user, api_key)
    if through and status in PROXY_MAY_ANSWER:
        error.args = (error.args[0] + through,)
    return error


def _error_for(status: int, message: str, action: str, url: str, user: str, api_key: bool) -> KcingError:
    detail = said(message)
    if status == 401:
        if api_key:
            hint = "check KB_API_KEY (an expired or invalidated key is refused)"
        else:
            hint = "check KB_USER and KB_PASSWORD" if user else "set KB_USER and KB_PASSWORD, or KB_API_KEY"
        return ConfigError("Kibana at %s refused the credentials to %s (HTTP 401); %s" % (url, action, hint))
    if status == 403:
        if not (api_key or user):
            # Kibana's anonymous access (xpack.security.authc.anonymous) lets some requests in.
            return ConfigError("Kibana at %s does not let a request without credentials %s (HTTP 403)%s; set KB_USER "
                               "and KB_PASSWORD, or KB_API_KEY" % (url, action, detail))
        who = "The Kibana API key (KB_API_KEY)" if api_key else "Kibana user %r" % user
        return ConfigError("%s may not %s at %s (HTTP 403)%s" % (who, action, url, detail))
    if status == 404:  # a setting to fix, as a refused login is (exit 2), not a Kibana that refuses
        return ConfigError("Kibana at %s has no such API or space to %s (HTTP 404)%s; check KB_URL and KB_SPACE"
                           % (url, action, detail))
    if status == 503:
        return KibanaUnavailable("Kibana at %s is not ready to %s (HTTP 503)%s" % (url, action, detail))
    if status >= 500:
        return KibanaUnavailable("Kibana at %s failed to %s (HTTP %d)%s" % (url, action, status, detail))
    if status == 413:
        return KibanaRefused("Kibana at %s refused to %s (HTTP 413)%s; raise savedObjects.maxImportPayloadBytes in "
                             "kibana.yml, or the body size limit of a proxy in front of Kibana" % (url, action, detail))
    return KibanaRefused("Kibana at %s refused to %s (HTTP %d)%s" % (url, action, status, detail))


def redirect_error(url: str, status: int, location: Optional[str], action: str) -> ConfigError:
    """A redirect from Kibana's API: Kibana sends none, so something in front of it does (a proxy
    sending http to https, or to its login page). A setting to fix, not a Kibana to wait for."""
    return ConfigError("Kibana at %s answered HTTP %d, a redirect to %s: set KB_URL to the address Kibana answers "
                       "at itself (kcing follows no redirect when it asks to %s)"
                       % (url, status, one_line(location or "nowhere (no Location)"), action))


def not_kibana(url: str, answer: str) -> ConfigError:
    """What answered GET /api/status is not Kibana (a setting to fix, not a Kibana to wait for)."""
    return ConfigError("%s answered GET /api/status with %s: KB_URL does not lead to Kibana" % (url, answer))


def unreachable_reason(error: requests.RequestException) -> str:
    """A short cause instead of urllib3's nested repr."""
    return connection_failure(error)


def _untrusted_because(error: requests.RequestException, url: str) -> str:
    """What to change: the CA bundle only when the certificate's signer is what is unknown."""
    if "mismatch" in str(error).lower():  # OpenSSL's "Hostname mismatch" or "IP address mismatch"
        return "it is not valid for %s: name Kibana in KB_URL by a host name the certificate holds" % (
            urlsplit(url).hostname)
    return "point KB_CA_BUNDLE at the CA bundle that signed it"


# -- client ----------------------------------------------------------------------------------

class Utf8BasicAuth(requests.auth.AuthBase):
    """Basic auth with the name and password in UTF-8, as Kibana (and Elasticsearch behind it)
    decodes them. requests encodes them as latin-1: a password such as "pässwort" was refused
    with 401, and one latin-1 cannot encode at all ended kcing with an internal error."""

    def __init__(self, user: str, password: str):
        self.header = basic_auth(user, password)

    def __call__(self, request):
        request.headers["Authorization"] = self.header
        return request


class ApiKeyAuth(requests.auth.AuthBase):
    """An Elasticsearch API key, which Kibana takes as `Authorization: ApiKey <encoded key>`."""

    def __init__(self, encoded: str):
        self.header = "ApiKey " + encoded

    def __call__(self, request):
        request.headers["Authorization"] = self.header
        return request


@dataclass(frozen=True)
class Answer:
    """An answer of Kibana read whole: what the client looks at of it."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class KibanaClient:
    """Status, the space, export and import against one Kibana space. Credentials never reach a
    log line."""

    def __init__(self, session: requests.Session, url: str, space: str = "",
                 auth: Optional[Tuple[str, str]] = None, deadline: float = DEADLINE, api_key: str = ""):
        """`auth`: a basic-auth (user, password); `api_key`: an encoded API key, sent instead."""
        self.session = session
        self.url = url.rstrip("/")
        self.space = check_space(space)
        self.auth = None if api_key else auth
        self.api_key = bool(api_key)
        self._auth = ApiKeyAuth(api_key) if api_key else Utf8BasicAuth(*auth) if auth else None
        self.timeout = (CONNECT_TIMEOUT, deadline)
        self.deadline = deadline
        self.max_answer_bytes = MAX_ANSWER_BYTES

    @property
    def space_label(self) -> str:
        return self.space or "default"

    def _request(self, method: str, path: str, action: str, in_space: bool = True, within: Optional[float] = None,
                 **kwargs) -> Answer:
        """The answer to one request, whole within KB_REQUEST_DEADLINE, or `within` seconds when sooner."""
        url = (space_url(self.url, self.space) if in_space else self.url) + path
        started = time.monotonic()
        deadline, timeout = self.deadline, self.timeout
        if within is not None and within < deadline:
            deadline = within
            timeout = tuple(min(part, within) for part in timeout)
        try:
            with overall_deadline(deadline):
                # verify= given per request: requests would otherwise let REQUESTS_CA_BUNDLE or
                # CURL_CA_BUNDLE from the environment replace the session's (KB_CA_BUNDLE).
                # No redirect is followed: one to a POST comes back as a GET of the new address (or
                # of a proxy's login page), whose answer would be read as Kibana's to the POST.
                # Read here, held to MAX_ANSWER_BYTES: requests would read a body of any length into
                # memory (one without end fills gigabytes before the deadline cuts it).
                response = self._sent(method, url, timeout, kwargs)
                with response:
                    answer = Answer(response.status_code, response.headers,
                                    joined_within(response.iter_content(CHUNK), self.max_answer_bytes,
                                                  response.headers.get("Content-Length", "")))
        except BodyTooLarge as error:
            raise KibanaRefused("Kibana at %s sent an answer larger than kcing takes (%s) to %s"
                                % (self.url, error, action)) from None
        except Overdue:
            if deadline < self.deadline:  # the caller's limit, which its own message names
                raise KibanaUnavailable("Kibana at %s sent no whole answer to %s" % (self.url, action)) from None
            raise KibanaUnavailable("Kibana at %s sent no whole answer within %s to %s (KB_REQUEST_DEADLINE)"
                                    % (self.url, seconds_text(deadline), action)) from None
        except requests.exceptions.ContentDecodingError:
            # Kibana was reached and answered: a body its Content-Encoding does not decode (a
            # proxy's broken compression) is no connection that failed.
            raise KibanaRefused("Kibana at %s sent an answer to %s that does not decode as its Content-Encoding says"
                                % (self.url, action)) from None
        except requests.RequestException as error:
            unsupported = socks_unsupported(error, url)
            if unsupported is not None:
                raise unsupported from None
            if certificate_refused(error):
                # Not a Kibana still starting: waiting out --wait cannot help, a setting can.
                raise ConfigError("the TLS certificate of Kibana at %s is not trusted: %s"
                                  % (self.url, _untrusted_because(error, url))) from None
            if no_tls_at_port(error):
                # Nor is a server without TLS at the port: a Kibana starting answers no plain HTTP there.
                raise ConfigError("Kibana at %s answers without TLS at that port: check KB_URL's scheme (is it an "
                                  "http:// server?)" % self.url) from None
            if answers_in_tls(self.url, error, direct=not self.session.trust_env):
                raise ConfigError(speaks_tls_message("KB_URL", self.url, "Kibana")) from None
            raise KibanaUnavailable("cannot reach Kibana at %s to %s (%s)%s"
                                    % (self.url, action, unreachable_reason(error), self._through())) from None
        log.debug("%s %s [status:%s duration:%.3fs]", method, url, answer.status_code, time.monotonic() - started)
        if 300 <= answer.status_code < 400:
            raise redirect_error(self.url, answer.status_code, answer.headers.get("Location"), action)
        return answer

    def _sent(self, method: str, url: str, timeout, kwargs) -> requests.Response:
        """The answer's status line and headers. A request that got no answer on a kept-alive
        connection Kibana closed is sent again at once on another (`resent_if_idle_closed`):
        harmless, an import too, which names every object by its id (never new copies)."""
        return resent_if_idle_closed(
            lambda: self.session.request(method, url, auth=self._auth, timeout=timeout, verify=self.session.verify,
                                         allow_redirects=False, stream=True, **kwargs),
            getattr(self.session, "pool_size", 0), "%s %s" % (method, url), "Kibana")

    def _through(self) -> str:
        """What to say of a proxy of the environment Kibana's requests go through (none is read
        by a session that does not trust the environment)."""
        return proxy_note(self.url) if self.session.trust_env else ""

    def _raise_unless_ok(self, response: Answer, action: str) -> None:
        if response.status_code != 200:
            user = self.auth[0] if self.auth else ""
            raise error_for(response.status_code, response_message(response), action, self.url, user, self.api_key,
                            self._through())

    def status(self, within: Optional[float] = None) -> Optional[str]:
        """None when Kibana is ready, else why not. Auth and "not a Kibana" errors are raised.
        `within`: the seconds the answer may take, when fewer than KB_REQUEST_DEADLINE."""
        action = "report its status"
        try:
            response = self._request("GET", "/api/status", action, in_space=False, within=within)
        except KibanaUnavailable as error:
            return str(error)
        if response.status_code in (401, 403, 404):
            self._raise_unless_ok(response, action)
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            # Kibana refuses no plain GET of its status: what answers is not Kibana (Elasticsearch's
            # port, another web server), and waiting will not make it one.
            raise not_kibana(self.url, "HTTP %d%s" % (response.status_code, said(response_message(response))))
        if response.status_code != 200:
            through = self._through() if response.status_code in PROXY_MAY_ANSWER else ""
            return "Kibana at %s is not ready (HTTP %d%s)%s" % (
                self.url, response.status_code, said(_status_level(response) or response_message(response)), through)
        level = _status_level(response)
        if not level:
            kind = (response.headers.get("Content-Type") or "no Content-Type").split(";")[0].strip()
            raise not_kibana(self.url, "HTTP 200, %s, not Kibana's status" % kind)
        # The status code is Kibana's word on its core services (Elasticsearch and saved objects,
        # all the saved objects API needs): 503 while one is unavailable. The overall level adds
        # in every plugin's, so one plugin unavailable makes it `unavailable` in a 200 answer, and
        # waiting for it would refuse a Kibana whose import and export work. (Kibana 7's status
        # said green, yellow or red, and red is not taken as ready.)
        if level == "red":
            return "Kibana at %s is not ready (status red)" % self.url
        if level not in ("available", "green"):
            # Said at info level when only plugins are behind it: a run that goes well says
            # nothing under --quiet, and a plugin degraded for good would make every cron run speak.
            log.log(logging.INFO if _core_available(response) else logging.WARNING,
                    "Kibana at %s reports status %s but answers 200 (its core services are up); going on",
                    self.url, one_line(level))
        return None

    def wait_ready(self, timeout: float, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep, interval: float = 2.0,
                   every: float = COUNTDOWN_EVERY) -> None:
        """Poll `/api/status` until Kibana is ready; raise KibanaUnavailable after `timeout` s."""
        deadline = clock() + timeout
        waiting = WaitReport("Kibana at %s to be ready" % self.url, timeout, clock, every)
        while True:
            # A Kibana that takes the connection and does not answer holds the wait to --wait
            # (and a margin for a slow answer), not to a whole request's deadline.
            reason = self.status(within=max(0.0, deadline - clock()) + STATUS_ANSWER_MARGIN)
            if reason is None:
                return
            remaining = deadline - clock()
            if remaining <= 0:
                raise KibanaUnavailable("%s; gave up after waiting %gs" % (reason, timeout))
            waiting.not_ready(reason)
            sleep(min(interval, remaining))

    def check_space(self) -> None:
        """ConfigError unless the space exists. Kibana's saved objects API takes any space id
        without checking it (elastic/kibana#67164): a mistyped space would export nothing and
        take an import nobody sees until a space of that id is created."""
        if not self.space:
            return  # the default space always exists
        action = "read the space %s" % self.space
        response = self._request("GET", "/api/spaces/space/%s" % self.space, action, in_space=False)
        if response.status_code == 404:
            raise ConfigError("Kibana at %s has no space %r (HTTP 404): create it in Kibana, or check KB_SPACE "
                              "and --space" % (self.url, self.space))
        self._raise_unless_ok(response, action)

    def export(self, types: Sequence[str] = EXPORT_TYPES) -> List[dict]:
        """Every saved object of `types` (and what they reference) in this space."""
        wanted = list(types)
        action = "export saved objects"
        while wanted:
            body = {"type": wanted, "excludeExportDetails": True, "includeReferencesDeep": True}
            response = self._request("POST", "/api/saved_objects/_export", action, json=body, headers=XSRF_HEADERS)
            unknown = unsupported_types(response_message(response)) if response.status_code == 400 else []
            if unknown and set(unknown) <= set(wanted):
                log.info("Kibana at %s does not export %s; leaving them out", self.url, ", ".join(unknown))
                wanted = [name for name in wanted if name not in unknown]
                continue
            self._raise_unless_ok(response, action)
            self._refuse_html_page(response, "the export", "saved objects")
            try:
                return parse_ndjson(response.content.decode("utf-8"))
            except ValueError as error:  # UnicodeDecodeError included
                raise KibanaRefused("Kibana at %s sent an unreadable export: %s" % (self.url, error)) from None
        return []

    def import_ndjson(self, text: str, overwrite: bool) -> ImportReport:
        """POST `text` as the multipart file `_import` expects; never creates new copies."""
        params = {"overwrite": "true" if overwrite else "false", "createNewCopies": "false"}
        files = {"file": ("saved_objects.ndjson", text.encode("utf-8"), "application/ndjson")}
        action = "import saved objects"
        response = self._request("POST", "/api/saved_objects/_import", action, params=params,
                                 files=files, headers=XSRF_HEADERS)
        self._raise_unless_ok(response, action)
        self._refuse_html_page(response, "the import", "an import result")
        try:
            return read_import_result(json_value(response.content))
        except (ValueError, AttributeError, TypeError):
            raise KibanaRefused("Kibana at %s sent an unreadable import result" % self.url) from None

    def _refuse_html_page(self, response: Answer, what: str, expected: str) -> None:
        """KibanaRefused naming the page when a 200 answer is an HTML page: Kibana's API answers
        with none, a proxy or login page in front of it does."""
        page = html_page(body_text(response))
        if page:
            raise KibanaRefused("Kibana at %s answered %s with %s, not %s: something in front of Kibana (a proxy, a "
                                "login page) answered instead" % (self.url, what, one_line(page), expected))


def _status_level(response: Answer) -> str:
    try:
        overall = json_value(response.content)["status"]["overall"]
        return str(overall.get("level") or overall.get("state") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def _core_available(response: Answer) -> bool:
    """Whether the status lists its core services (Elasticsearch, saved objects), all available:
    then a level other than available comes from plugins alone, which the saved objects API does
    not need. (The status of a request without credentials lists no core service.)"""
    try:
        core = json_value(response.content)["status"]["core"]
        levels = [service["level"] for service in core.values()]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(levels) and all(level == "available" for level in levels)
