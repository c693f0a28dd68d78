"""setup_es: one composable index template per document kind, made from the field catalogue.

The bodies are pure functions of `kcing.documents.fields.FIELDS`; `mapping_templates/*.json` are
the same bodies written out for review and for curl users (`python -m kcing.admin.templates`
rewrites them, and a test fails when they drift from the catalogue).

Indices are `<kind>-YYYY.MM.DD`, so each template matches `<kind>-*` at priority 200: above the
built-in templates (priority 100, `logs-*-*` and friends, which `log-*` does not overlap), and
unique among kcing's own, since Elasticsearch refuses overlapping patterns of equal priority.
A user template whose patterns overlap kcing's at priority 200 makes Elasticsearch refuse kcing's
(`install` leaves that one out, installs the rest, and says what to do); one at a higher
priority takes precedence over kcing's for the indices both match (`install` warns: documents
would get mappings kcing did not choose).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from elasticsearch import ApiError, BadRequestError, Elasticsearch, SSLError, TransportError

from kcing.admin.elastic import AnswerTooLarge, Redirected, elastic_errors, reason_of, translate
from kcing.admin.retention import index_day
from kcing.documents.fields import BOOLEAN, DATE, FIELDS, FLOAT, KEYWORD, LONG, SUB_OBJECTS, TEXT
from kcing.errors import ConfigError, ElasticsearchError, kept_short
from kcing.plural import counted, verb
from kcing.records import DOCUMENT_KINDS
from kcing.waiting import COUNTDOWN_EVERY, WaitReport

log = logging.getLogger(__name__)

KINDS = DOCUMENT_KINDS
PRIORITY = 200
POLICY_NAME = "kcing-retention"
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "mapping_templates"
# Lucene refuses a term over 32766 bytes, and with it the whole document; 8191 characters of
# UTF-8 always fit. A longer keyword stays in _source, only unsearchable.
KEYWORD_LIMIT = 8191
# Free text that nobody aggregates on, and that would cost a keyword copy per log line.
UNAGGREGATED_TEXT = frozenset({"message", "commit_message"})
# The dynamic-mapping default for a text field's keyword copy: enough for an error message.
TEXT_KEYWORD_LIMIT = 256
# Statuses that mean "not ready yet": wait-for-status timed out, or the node is starting or busy.
_NOT_READY = frozenset({408, 429, 502, 503, 504})
_POLL_INTERVAL = 1.0
# The health request may block for the whole wait; give the HTTP read that long plus a margin.
_HEALTH_READ_MARGIN = 10.0


def template_name(kind: str) -> str:
    return "kcing-%s" % kind


def index_pattern(kind: str) -> str:
    return "%s-*" % kind


def field_mapping(name: str, field_type: str) -> dict:
    """The mapping of one catalogue field."""
    if field_type == KEYWORD:
        return {"type": "keyword", "ignore_above": KEYWORD_LIMIT}
    if field_type == TEXT:
        # Offsets in the index: a highlighter (Discover highlights every search) reads where the
        # words are from there rather than analysing the text again, which Elasticsearch refuses
        # for the whole search past index.highlight.max_analyzed_offset (a log line of over a
        # million characters, a progress bar drawn with carriage returns).
        if name in UNAGGREGATED_TEXT:
            return {"type": "text", "index_options": "offsets"}
        return {"type": "text", "index_options": "offsets",
                "fields": {"keyword": {"type": "keyword", "ignore_above": TEXT_KEYWORD_LIMIT}}}
    if field_type in (LONG, FLOAT, BOOLEAN, DATE):
        return {"type": field_type}
    raise ValueError("field %s has unknown type %r" % (name, field_type))


def properties(fields: Mapping[str, str], sub_objects: Mapping[str, Mapping[str, str]] = None) -> dict:
    """Mapping properties for `fields`, plus one object per entry of `sub_objects`."""
    mapped = {"@timestamp": {"type": "date"}}
    mapped.update((name, field_mapping(name, field_type)) for name, field_type in fields.items())
    for name, inner in (sub_objects or {}).items():
        mapped[name] = {"properties": {key: field_mapping(key, value) for key, value in inner.items()}}
    return mapped


def template_body(kind: str, fields: Mapping[str, Mapping[str, str]] = FIELDS,
                  sub_objects: Mapping[str, Mapping[str, str]] = SUB_OBJECTS,
                  policy: Optional[str] = None) -> dict:
    """The composable template for `kind`; with `policy`, new indices are managed by that ILM policy."""
    # One replica wherever a second node can hold it, none on a single node (which then stays
    # green): a cluster that loses a node keeps kcing's data, and the docker compose node is not
    # left yellow for good.
    settings: Dict[str, object] = {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
    if policy:
        settings["index.lifecycle.name"] = policy
        # Age counts from the date in the index name, not from creation: a backfill of old days
        # creates old-dated indices today, and they must not outlive the retention by that much.
        settings["index.lifecycle.parse_origination_date"] = True
    body = {
        "index_patterns": [index_pattern(kind)],
        "priority": PRIORITY,
        # Logstash creates each day's index by writing to it: a cluster that turned auto-creation
        # off (action.auto_create_index: false, a common hardening) would refuse every document,
        # after Logstash acknowledged it. This template's setting decides for kcing's patterns.
        "allow_auto_create": True,
        "template": {
            "settings": settings,
            "mappings": {
                # Every field kcing writes is in the catalogue and mapped above. Anything else
                # (Logstash's @version, a field added by hand) is kept in _source but not mapped:
                # the mapping never grows by guesswork, and a later document can never be refused
                # because a guessed type does not fit it.
                "dynamic": False,
                # Kept off in case dynamic mapping is ever turned on: a string that looks like a
                # date would make a date field that refuses later text.
                "date_detection": False,
                "properties": properties(fields[kind], sub_objects),
            },
        },
    }
    return with_digest(body, "kcing %s documents (%s)" % (kind, index_pattern(kind)))


def as_read_back(body: dict) -> dict:
    """Template `body` as Elasticsearch gives it back once put: its settings nested under `index`,
    each value a string (`"number_of_shards": 1` reads `{"index": {"number_of_shards": "1"}}`),
    and an empty `composed_of`; the rest as written."""
    read = json.loads(json.dumps(body))
    settings = read.get("template", {}).get("settings")
    if settings:
        nested: Dict[str, object] = {}
        for key, value in settings.items():
            key = key if key.startswith("index.") else "index." + key
            *parents, last = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = str(value).lower() if isinstance(value, bool) else str(value)
        read["template"]["settings"] = nested
    read.setdefault("composed_of", [])
    return read


# Keys of a template that kcing's bodies leave out and that change the indices it makes: a
# template holding one is not kcing's. Any other key a node keeps beside a body (the time it was
# changed, say) says nothing of the indices.
_SHAPING_KEYS = ("data_stream", "composed_of", "ignore_missing_component_templates")


def same_template(stored: Mapping, body: dict) -> bool:
    """Whether the template Elasticsearch holds is `body`: one edited by hand keeps the `_meta`
    (and the digest in it) of the body it was, so the digest alone cannot tell."""
    expected = as_read_back(body)
    held = {key: value for key, value in stored.items() if key in expected or key in _SHAPING_KEYS}
    return held == expected


def retention_policy(days: int) -> dict:
    """The ILM policy body that deletes an index when drp would: `days` days after the end of the
    day in its name (its last document is then `days` days old).

    ILM counts an index's age from its origination date, the start of that day: a min_age of
    `days` would delete it a day before drp, and reconcile, which checks the indices drp keeps,
    would find their documents missing and have them sent again, for ILM to delete once more."""
    body = {"policy": {"phases": {"delete": {"min_age": "%dd" % (days + 1), "actions": {"delete": {}}}}}}
    body["policy"]["_meta"] = {"managed_by": "kcing", "digest": _digest(body)}
    return body


def with_digest(body: dict, description: str) -> dict:
    """`body` with `_meta` saying kcing manages it and a digest of the rest (which tells an unchanged
    ILM policy; a template is compared whole, `same_template`)."""
    return {**body, "_meta": {"managed_by": "kcing", "description": description, "digest": _digest(body)}}


def _digest(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def template_files() -> Dict[str, str]:
    """{file name: text} of mapping_templates/ (templates without ILM)."""
    return {"%s.json" % kind: json.dumps(template_body(kind), indent=2, sort_keys=True) + "\n" for kind in KINDS}


def write_template_files(directory: Path = TEMPLATE_DIR) -> List[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in template_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# -- talking to Elasticsearch ------------------------------------------------------------------

def wait_until_ready(client: Elasticsearch, host: str, timeout: float,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep, every: float = COUNTDOWN_EVERY) -> str:
    """Return the cluster status once it is yellow or green; ElasticsearchError after `timeout` s.

    Refused connections and 503s (a node still starting) are waited out; bad credentials, TLS
    problems and version mismatches are not, as waiting cannot fix them.
    """
    deadline = clock() + timeout
    waiting = WaitReport("Elasticsearch at %s to be ready" % host, timeout, clock, every)
    while True:
        remaining = max(0.0, deadline - clock())
        try:
            health = client.options(request_timeout=remaining + _HEALTH_READ_MARGIN, max_retries=0).cluster.health(
                wait_for_status="yellow", timeout="%dms" % int(remaining * 1000))
            return kept_short(health.get("status"))  # printed, as the cluster gave it
        except ApiError as error:
            if error.meta.status not in _NOT_READY:
                raise translate(error, host, "checking cluster health") from None
            last = _not_ready_reason(error)
        except (SSLError, AnswerTooLarge, Redirected) as error:
            # Not a node still starting: asking again would read as much again, or be sent
            # away again, every poll.
            raise translate(error, host, "checking cluster health") from None
        except TransportError as error:
            # Unreachable, or an answer that is not JSON: cut short, or a proxy's page while the
            # node behind it starts (the client reads the body before its status). Waited out,
            # but for a setting to fix (an http:// ES_HOST at a port that speaks TLS).
            failure = translate(error, host, "checking cluster health")
            if isinstance(failure, ConfigError):
                raise failure from None
            last = str(failure)
        if clock() >= deadline:
            raise ElasticsearchError("Elasticsearch at %s was not ready (yellow or green) within %gs: %s"
                                     % (host, timeout, last))
        waiting.not_ready(last)
        sleep(min(_POLL_INTERVAL, max(0.0, deadline - clock())))


def _not_ready_reason(error: ApiError) -> str:
    body = error.body
    if error.meta.status == 408 and isinstance(body, dict) and "status" in body:
        return "cluster status still %s" % kept_short(body["status"])
    return "%d %s" % (error.meta.status, reason_of(error))


@dataclass(frozen=True)
class Change:
    """One object setup_es manages, and what happened to it: created, updated, unchanged, or
    conflict (not installed: `detail` says why and what to do)."""

    what: str  # "template" or "ILM policy"
    name: str
    outcome: str
    detail: str = ""


def patterns_overlap(a: str, b: str) -> bool:
    """True if some index name matches both patterns (`*` is the only wildcard of index patterns)."""
    seen: Dict[Tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) not in seen:
            if i == len(a) and j == len(b):
                result = True
            elif i < len(a) and a[i] == "*":
                result = match(i + 1, j) or (j < len(b) and match(i, j + 1))
            elif j < len(b) and b[j] == "*":
                result = match(i, j + 1) or (i < len(a) and match(i + 1, j))
            else:
                result = i < len(a) and j < len(b) and a[i] == b[j] and match(i + 1, j + 1)
            seen[(i, j)] = result
        return seen[(i, j)]

    return match(0, 0)


def rivals(body: dict, others: Mapping[str, dict]) -> List[Tuple[str, dict]]:
    """The templates in `others` ({name: template}) whose patterns overlap `body`'s, by name."""
    mine = body["index_patterns"]
    found = []
    for name, other in sorted(others.items()):
        theirs = other.get("index_patterns") or []
        theirs = [theirs] if isinstance(theirs, str) else theirs
        if any(patterns_overlap(a, b) for a in mine for b in theirs):
            found.append((name, other))
    return found


def _patterns(template: dict) -> str:
    patterns = template.get("index_patterns") or []
    return ", ".join([patterns] if isinstance(patterns, str) else patterns)


def conflict_detail(name: str, body: dict, other_name: str, other: dict) -> str:
    """Why kcing's template `name` cannot be installed beside `other` (same priority), and what to do."""
    return ("index template %s (%s) not installed: the index template %s (%s) has the same priority [%d] and "
            "patterns that overlap, which Elasticsearch refuses; give %s a priority below %d (kcing's then applies) "
            "or above it (yours then applies), or patterns that leave %s alone, then run setup_es again"
            % (name, _patterns(body), other_name, _patterns(other), body["priority"], other_name, body["priority"],
               _patterns(body)))


def override_warning(name: str, body: dict, other_name: str, other: dict) -> str:
    """What a user template with a higher priority than kcing's `name` does to kcing's indices."""
    return ("index template %s (%s; priority %s) takes precedence over %s (%s; priority %d) for the indices both "
            "match: they get its mappings and settings, not kcing's; give %s a priority below %d or patterns that "
            "leave %s alone" % (other_name, _patterns(other), other.get("priority", 0), name, _patterns(body),
                                body["priority"], other_name, body["priority"], _patterns(body)))


# Elasticsearch's refusal of a template that would leave data streams it matches without a
# data-stream template: "... would cause data streams [a, b] to no longer match a data stream template".
_STREAMS_LEFT = re.compile(r"would cause data streams \[([^\]]*)\] to no longer match")


def streams_left_detail(name: str, body: Mapping, listed: str) -> str:
    """What a user is told of a kcing template refused for the data streams it would take over."""
    names = [stream.strip() for stream in listed.split(",") if stream.strip()]
    # Elasticsearch names every stream no data-stream template matches, those it did not match
    # before too (one restored from a snapshot without its template): the ones this template takes.
    # (A name holds no `*`: one that overlaps a pattern matches it.)
    taken = [name for name in names if any(patterns_overlap(name, pattern) for pattern in body["index_patterns"])]
    names = taken or names
    one = len(names) == 1
    return ("Elasticsearch refuses the index template %s: the data stream%s %s, matched by %s, would no longer match a "
            "data stream template (kcing's indices are not data streams); delete %s (DELETE /_data_stream/%s, "
            "documents and all) or give the template that made %s a priority above %d, then run setup_es again"
            % (name, "" if one else "s", ", ".join(names), _patterns(body), "it" if one else "them", ",".join(names),
               "it" if one else "them", body["priority"]))


def lifecycle_name(template: Mapping) -> Optional[str]:
    """The ILM policy a template gives the indices it makes (`index.lifecycle.name`, nested as
    Elasticsearch gives a template back, or flat as written), or None."""
    settings = (template.get("template") or {}).get("settings") or {}
    index = settings.get("index") if isinstance(settings.get("index"), dict) else {}
    lifecycle = index.get("lifecycle") if isinstance(index.get("lifecycle"), dict) else {}
    name = settings.get("index.lifecycle.name") or lifecycle.get("name")
    return str(name) if name else None


def dropped_policies(existing: Mapping[str, dict], templates: Mapping[str, dict]) -> List[str]:
    """The ILM policies kcing's templates as Elasticsearch holds them (`existing`) name, and the
    ones about to replace them (`templates`) do not."""
    return sorted({lifecycle_name(existing[name]) for name, body in templates.items()
                   if name in existing and lifecycle_name(existing[name]) and not lifecycle_name(body)})


def dropped_policy_warning(policies: List[str], templates: Mapping[str, dict]) -> str:
    """A setup_es without --ilm after one with it: the templates lose the policy, but each index
    keeps the settings it was created with, so ILM goes on deleting those indices by it, on its
    own schedule, whatever DRP_DAYS drp is given later."""
    patterns = ",".join(sorted({pattern for body in templates.values() for pattern in body["index_patterns"]}))
    return ("the index templates named the ILM policy %s until this run: the indices created meanwhile keep it, and "
            "ILM goes on deleting them by it whatever drp keeps; to keep them, take them out of it: POST /%s/_ilm/remove"
            % (" and ".join(policies), patterns))


def install(client: Elasticsearch, host: str, templates: Mapping[str, dict],
            policy: Optional[Tuple[str, dict]] = None) -> List[Change]:
    """Put the ILM policy (first: the templates name it) and the templates; skip unchanged ones.

    Running it again with the same catalogue changes nothing and reports every object unchanged.
    """
    changes = []
    if policy is not None:
        name, body = policy
        changes.append(_put_policy(client, host, name, body))
    with elastic_errors(host, "reading the index templates"):
        found = client.options(ignore_status=404).indices.get_index_template()
    existing = {item["name"]: item.get("index_template") or {} for item in found.get("index_templates", [])}
    dropped = dropped_policies(existing, templates)
    if dropped:
        log.warning("%s", dropped_policy_warning(dropped, templates))
    others = {name: template for name, template in existing.items() if name not in templates}
    for name, body in templates.items():
        overlapping = rivals(body, others)
        same = [(other, spec) for other, spec in overlapping if spec.get("priority", 0) == body["priority"]]
        if same:
            changes.append(Change("template", name, "conflict", conflict_detail(name, body, *same[0])))
            continue
        for other, spec in overlapping:
            if spec.get("priority", 0) > body["priority"]:
                log.warning("%s", override_warning(name, body, other, spec))
        if name in existing and same_template(existing[name], body):
            changes.append(Change("template", name, "unchanged"))
            continue
        with elastic_errors(host, "installing the index template %s" % name):
            try:
                client.indices.put_index_template(name=name, body=body)
            except BadRequestError as refusal:
                streams = _STREAMS_LEFT.search(reason_of(refusal))
                if streams is None:
                    raise
                # Refused for what the cluster holds (a data stream under a kcing name): the
                # other kinds' templates are installed all the same, as for a conflict seen first.
                changes.append(Change("template", name, "conflict", streams_left_detail(name, body, streams.group(1))))
                continue
        changes.append(Change("template", name, "updated" if name in existing else "created"))
    return changes


def _put_policy(client: Elasticsearch, host: str, name: str, body: dict) -> Change:
    with elastic_errors(host, "reading the ILM policy %s" % name):
        found = client.options(ignore_status=404).ilm.get_lifecycle(name=name)
    existing = found.body.get(name) if found.meta.status == 200 else None
    if existing is not None:
        stored = existing.get("policy") or {}
        meta = stored.get("_meta") or {}
        # The digest of the body it was, and what that body decides: a policy edited in place
        # (Dev Tools' GET, edit, PUT) keeps its `_meta`.
        if meta.get("digest") == body["policy"]["_meta"]["digest"] and _phases(stored) == _phases(body["policy"]):
            return Change("ILM policy", name, "unchanged")
    with elastic_errors(host, "installing the ILM policy %s" % name):
        client.ilm.put_lifecycle(name=name, body=body)
    return Change("ILM policy", name, "updated" if existing is not None else "created")


def _phases(policy: Mapping) -> dict:
    """What an ILM policy decides: each phase's `min_age` and actions, not the options Elasticsearch
    adds to an action as it reads it back (the delete action's `delete_searchable_snapshot`)."""
    phases = policy.get("phases")
    return {name: (phase.get("min_age"), sorted(phase.get("actions") or ()))
            for name, phase in (phases.items() if isinstance(phases, dict) else ()) if isinstance(phase, dict)}


# Existing indices named, and fields named, in the warnings about mappings kcing did not make.
NAMED_MISFITS = 5
NAMED_FIELDS = 3
# Only the types of an index's fields (and of its objects' fields): a small answer however many indices.
_TYPES_ONLY = "*.mappings.properties.*.type,*.mappings.properties.*.properties.*.type"


def field_types(properties: Mapping[str, dict], prefix: str = "") -> Dict[str, str]:
    """{dotted field name: mapped type} of mapping `properties`, the fields of objects included."""
    types: Dict[str, str] = {}
    for name, spec in (properties or {}).items():
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("properties"), dict):
            types.update(field_types(spec["properties"], prefix + name + "."))
        if "type" in spec:
            types[prefix + name] = str(spec["type"])
    return types


def mapping_misfits(intended: Mapping[str, dict], found: Mapping[str, dict]) -> Dict[str, List[Tuple[str, str, str]]]:
    """{index: [(field, its type, the template's type)]} of the kcing indices in `found` (a
    GET /<index> answer) whose mapping gives a field the template maps another type."""
    misfits = {}
    for index, description in sorted(found.items()):
        day_kind = index.rsplit("-", 1)[0]
        template = intended.get(template_name(day_kind))
        if template is None or index_day(index) is None:
            continue
        wanted = field_types(template["template"]["mappings"]["properties"])
        mapped = field_types(((description or {}).get("mappings") or {}).get("properties") or {})
        different = [(field, mapped[field], wanted[field]) for field in sorted(wanted)
                     if field in mapped and mapped[field] != wanted[field]]
        if different:
            misfits[index] = different
    return misfits


def misfit_warnings(misfits: Mapping[str, List[Tuple[str, str, str]]]) -> List[str]:
    """One line per index (the first few) whose mapping kcing's template did not make, and what it means."""
    lines = []
    for index, different in sorted(misfits.items())[:NAMED_MISFITS]:
        fields = "; ".join("%s is %s, not %s" % item for item in different[:NAMED_FIELDS])
        more = (" and %s" % counted(len(different) - NAMED_FIELDS, "more field")
                if len(different) > NAMED_FIELDS else "")
        lines.append("index %s has a mapping kcing's template %s did not make (the index was created before the "
                     "template, or by another one): %s%s; it keeps those types until it is deleted (drp does when "
                     "it expires) or reindexed, and the visualisations that use those fields fail or miss it"
                     % (index, template_name(index.rsplit("-", 1)[0]), fields, more))
    if len(misfits) > NAMED_MISFITS:
        others = len(misfits) - NAMED_MISFITS
        lines.append("%s %s a mapping kcing's templates did not make: %s"
                     % (counted(others, "more index", "more indices"), verb(others, "has", "have"),
                        ", ".join(sorted(misfits)[NAMED_MISFITS:][:20])
                        + (" ..." if len(misfits) > NAMED_MISFITS + 20 else "")))
    return lines


def existing_misfits(client: Elasticsearch, host: str, templates: Mapping[str, dict]) -> List[str]:
    """Warnings about the existing (open) kcing indices whose mapping is not the templates': a
    template shapes only the indices created after it, so an index Logstash created before
    setup_es ran keeps the types Elasticsearch guessed (text for every keyword). Only a warning:
    when the answer cannot be had, say so and go on.

    Hidden ones too: a pattern leaves them out unless asked, and a kcing index someone hid still
    takes Logstash's documents (and is deleted by drp when it expires)."""
    patterns = ",".join(sorted({pattern for body in templates.values() for pattern in body["index_patterns"]}))
    try:
        found = client.options(ignore_status=404).indices.get(index=patterns, filter_path=_TYPES_ONLY,
                                                              expand_wildcards="open,hidden")
    except (ApiError, TransportError) as error:
        return ["could not check the mappings of the existing indices (%s): %s"
                % (patterns, translate(error, host, "reading their mappings"))]
    body = getattr(found, "body", found)
    return misfit_warnings(mapping_misfits(templates, body if isinstance(body, dict) and "error" not in body else {}))


def templates_for(policy: Optional[str] = None) -> Dict[str, dict]:
    """{template name: body} for every kind."""
    return {template_name(kind): template_body(kind, policy=policy) for kind in KINDS}


if __name__ == "__main__":
    for written in write_template_files(Path(sys.argv[1]) if len(sys.argv) > 1 else TEMPLATE_DIR):
        print(written)
