"""Differential fuzzing of document encoding: odd upstream values against a reference encoding.

Real payloads (samples/, the real files of ../shared/data/upstream, envelopes of the real
KernelCI API nodes) get odd values put into the fields that become document fields: control
characters, U+2028/U+2029, NEL, BOM, escaped lone surrogates and pairs, quotes and backslashes
anywhere, very long texts, odd numbers (huge, 1e400, -0, 1.0, NaN, Infinity), empty texts, keys
with dots; LAVA logs get odd lines. Each mutated file goes through `encoded_documents` with
both sinks' encoders. Every encoded document must be strict JSON (UTF-8, no NaN or Infinity, no
lone surrogate, no duplicate key, no raw line break) and decode to exactly what the reference
describes: each document's body as a dict, with its routing, encoded by the standard library's
JSON encoder. A file the reference cannot encode must be rejected, with a reason.

    python -m tests.encoding_fuzz [CASES] [SEED]
"""
from __future__ import annotations

import gzip
import json
import random
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import yaml

from kcing.building import encoded_documents
from kcing.documents import documents_for, json_object, lava, yamlsafe
from kcing.documents.fields import field_problems
from kcing.documents.typed import without_missing
from kcing.errors import RejectedInput, kept_on_one_line
from kcing.sinks.batching import LOGSTASH_SEPARATOR
from kcing.sinks.encoding import logstash_json, ndjson_record

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "upstream"
CREATED = datetime(2020, 11, 19, 7, 0, tzinfo=timezone.utc)

# The longest rejection reason expected: one line of a log, quoting a value cut short.
MAX_REASON = 1000
# (kind, record): a payload to mutate, as its JSON value.
Seed = Tuple[str, Any]

LONG = 40_000
ODD_TEXTS = [
    "", " ", "None", "null", "\x00", "\x01", "\x08", "\t", "\n", "\r", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f",
    "\x85", "\xa0", "\u2028", "\u2029", "\ufeff", "\ufffe", "\uffff", "\ud800", "\udc80", "\udfff",
    "\ud83d\ude00", "\U0001f600", "\ude00\ud83d", '"', "\\", '\\"', '"\\', "\\u0041", "\\ud800", "\\n",
    "a\"b", "a\\b", '"start', 'end"', "\\start", "end\\", "x" * LONG, ("\\\"\x00" * (LONG // 3)),
    "\u2028" * 1000, "é" * LONG, "</script>", "${jndi:x}", "%{field}", "a.b", "\x00\ud800\x1f\u2029",
]
# Numbers as they stand in the file's text (some no Python float or JSON number can write).
ODD_NUMBERS = [
    "0", "-0", "-0.0", "1", "1.0", "1e0", "1E+2", "1e400", "-1e400", "1e39", "3.4028234663852886e38",
    "9223372036854775807", "9223372036854775808", "-9223372036854775809", "1" * 30, "1" * 5000,
    "NaN", "Infinity", "-Infinity", "0.1", "1e-400", "5e-324", "123456789012345678901234567890.5",
]
# LAVA log times: usual, of the second the real logs begin with in other shapes, and no times.
ODD_TIMES = [
    "2020-11-19T07:03:25.393174", "2020-11-19T07:03:25.393", "2020-11-19T07:03:25", "2020-11-19T07:03:25.3931745",
    "2020-11-19T07:03:25.393Z", "2020-11-19T07:03:25.393+01:00", "2020-11-19T07:03:25,393", "2020-11-19 07:03:25.393",
    "2020-11-19T24:00:00.000", "2020-11-19T24:00:00.001", "2020-11-19T23:59:60.000", "2020-02-30T00:00:00.000",
    "1969-12-31T23:59:59.999", "9999-12-31T23:59:59.999", "2020-13-19T07:03:25.393174", "", "x",
]
ODD_KEYS = ["a.b", ".a", "a.", "", "_id", "@timestamp", "@metadata", "a..b", "\x00", "\u2028", "key\"q", "é"]


# Seeds ---------------------------------------------------------------------------------


def seeds() -> List[Seed]:
    found: List[Seed] = []
    manifest = json.loads((REPO / "samples" / "manifest.json").read_text())
    for entry in manifest["objects"]:
        found.append((entry["kind"], json.loads((REPO / "samples" / entry["path"]).read_text())))
    for path in sorted((SHARED / "legacy").glob("*.json")):
        found.append(("lava", json.loads(path.read_text())))
    found += api_envelopes()
    return found


def api_envelopes() -> List[Seed]:
    """Envelopes of the real KernelCI API nodes, as the API source makes them (a lab job with its
    callback, the checkout, the nodes of the 2023 list)."""
    maestro = SHARED / "maestro"
    envelopes: List[Seed] = []
    job_path = maestro / "job-node-lava-tast-staging-2024-10.json"
    raw_path = SHARED / "legacy" / "lava-callback-raw-incomplete-qemu.json"
    if job_path.is_file() and raw_path.is_file():
        job = json.loads(job_path.read_text())
        envelopes.append(("job", {"node": job, "viewer_url": "https://api/viewer?node_id=%s" % job.get("id"),
                                  "callback_data": raw_path.read_text()}))
        test = dict(job, kind="test", name="baseline.login", result="fail", parent=job.get("id"),
                    id="6" + str(job.get("id"))[1:], data=dict(job.get("data") or {}, misc={"measurement": 12.5}))
        envelopes.append(("test", {"node": test, "job_node": job}))
    envelopes += generated_envelopes()
    listed = maestro / "nodes-list-parent-null-api-doc.txt"
    if listed.is_file():
        for node in json.loads("{" + listed.read_text())["items"][:3]:
            envelopes.append(("node", {"node": node}))
    return envelopes


FILES_URL = "http://127.0.0.1:9/files"


def generated_envelopes() -> List[Seed]:
    """Envelopes of a realistic checkout tree (tests/fakes/api_data.py), one per node of each
    kind: the checkout, kbuilds, lab jobs with their callback, tests, the regression."""
    from tests.fakes.api_corpus import ApiCorpus
    from tests.fakes.api_data import checkout_tree

    corpus = ApiCorpus()
    checkout_tree(corpus, FILES_URL, CREATED)
    nodes = {node["id"]: node for node in corpus._nodes}

    def job_of(node: dict) -> Optional[dict]:
        parent = nodes.get(node.get("parent"))
        while parent is not None and parent.get("kind") != "job":
            parent = nodes.get(parent.get("parent"))
        return parent

    envelopes: List[Seed] = []
    for node in nodes.values():
        envelope: dict = {"node": node, "viewer_url": "https://api/viewer?node_id=%s" % node["id"]}
        kind = node["kind"]
        if kind in ("job", "test") and job_of(node) is not None:
            envelope["job_node"] = job_of(node)
        if kind == "regression":
            for role in ("fail_node", "pass_node"):
                if node["data"].get(role) in nodes:
                    envelope[role] = nodes[node["data"][role]]
        callback = (node.get("artifacts") or {}).get("callback_data")
        if callback:
            content = corpus._files.get(callback[len(FILES_URL) + 1:])
            content = content() if callable(content) else content
            if content is not None:
                envelope["callback_data"] = (gzip.decompress(content) if content[:2] == b"\x1f\x8b"
                                             else content).decode("utf-8", "replace")
        envelopes.append((kind, envelope))
    return envelopes


# Mutations -----------------------------------------------------------------------------

# A number or raw bytes that the file's text holds as they are: written as a placeholder
# string, then put in place of its quoted form.
_RAW = "\x02RAW%d\x03"


class Mutated:
    """A record being mutated, and the raw texts its JSON text is to hold."""

    def __init__(self, record: Any):
        self.record = record
        self.raw: List[bytes] = []

    def raw_value(self, text: bytes) -> str:
        self.raw.append(text)
        return _RAW % (len(self.raw) - 1)

    def content(self, ensure_ascii: bool) -> bytes:
        text = json.dumps(self.record, ensure_ascii=ensure_ascii)
        data = text.encode("utf-8", "surrogatepass")
        for number, raw in enumerate(self.raw):
            data = data.replace(json.dumps(_RAW % number).encode(), raw)
        return data


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """(path, value) of every scalar and every mapping inside `value`."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from leaves(item, path + (key,))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from leaves(item, path + (position,))
    else:
        yield path, value


def set_at(record: Any, path: tuple, value: Any) -> None:
    for step in path[:-1]:
        record = record[step]
    record[path[-1]] = value


def odd_text(rng: random.Random) -> str:
    text = rng.choice(ODD_TEXTS)
    shape = rng.random()
    if shape < 0.3:
        return "kernel" + text + "tail"
    if shape < 0.4:
        return text + rng.choice(ODD_TEXTS)
    return text


def mutate_callback(rng: random.Random, mutated: Mutated) -> Optional[str]:
    """`mutate_json` of the LAVA callback a KernelCI API lab job's envelope holds as JSON text."""
    record = mutated.record
    try:
        callback = Mutated(json.loads(record.get("callback_data")))
    except (ValueError, TypeError):
        return None
    change = mutate_json(rng, callback)
    data = callback.content(rng.random() < 0.5)
    try:
        record["callback_data"] = data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # bytes that are no UTF-8: the source replaces them as it reads the artifact
        record["callback_data"] = data.decode("utf-8", "replace")
    return "callback_data: " + change


def mutate_json(rng: random.Random, mutated: Mutated) -> str:
    """Put an odd value somewhere in the record's JSON (not inside its YAML texts)."""
    places = list(leaves(mutated.record))
    path, value = rng.choice(places)
    if isinstance(value, dict):
        key = rng.choice(ODD_KEYS)
        value[key] = odd_text(rng) if rng.random() < 0.5 else mutated.raw_value(rng.choice(ODD_NUMBERS).encode())
        return "key %r at %r" % (key, path)
    if not path:
        return "nothing"
    choice = rng.random()
    if choice < 0.6 or isinstance(value, str) and choice < 0.7:
        new = odd_text(rng)
    elif choice < 0.98:
        new = mutated.raw_value(rng.choice(ODD_NUMBERS).encode())
    else:
        new = mutated.raw_value(b'"\xff\xfe"' if rng.random() < 0.5 else b'"\xed\xa0\x80"')
    set_at(mutated.record, path, new)
    return "%r at %r" % (new[:40] if isinstance(new, str) else new, path)


def _yaml_text(rng: random.Random, text: str) -> str:
    """`text` as a YAML double-quoted scalar, escaped one of the ways YAML allows."""
    if rng.random() < 0.5:
        return json.dumps(text, ensure_ascii=rng.random() < 0.5)
    out = []
    for character in text:
        code = ord(character)
        if character in '"\\':
            out.append("\\" + character)
        elif code < 0x20 or code == 0x7f or 0xd800 <= code <= 0xdfff or code in (0x85, 0x2028, 0x2029, 0xfeff):
            out.append(rng.choice(["\\x%02x" % code if code < 0x100 else "\\u%04x" % code, "\\u%04x" % code]))
        else:
            out.append(character)
    return '"%s"' % "".join(out)


def odd_log_line(rng: random.Random) -> str:
    dt = rng.choice(ODD_TIMES)
    level = rng.choice(["info", "target", "debug", "None", "", '"', "\\", "lvl\x00", "\u2028"])
    message = odd_text(rng)
    shape = rng.random()
    if shape < 0.3:  # the usual shape, read by a regular expression: printable ASCII, few escapes
        plain = "".join(character for character in message[:200] if " " <= character <= "~" or character in "\t\n")
        return '- {"dt": %s, "lvl": "%s", "msg": %s}' % (json.dumps(dt), rng.choice(["info", "target", "None", ""]),
                                                         json.dumps(plain))
    if shape < 0.4:  # a results line with the dispatcher's Decimal tag, odd texts around it
        tag = '!!python/object/apply:decimal.Decimal [%s]' % json.dumps(rng.choice(["2", "", "1e400", "x", '"', "\\"]))
        return ('- {"dt": %s, "lvl": "results", "msg": {"case": %s, "definition": "0_dmesg", "measurement": %s, '
                '"result": %s, "units": "lines"}}' % (json.dumps(dt), _yaml_text(rng, rng.choice([message, tag])), tag,
                                                      _yaml_text(rng, rng.choice(["pass", message, tag]))))
    if shape < 0.5:
        return '- {"dt": %s, "lvl": %s, "msg": %s}' % (json.dumps(dt), _yaml_text(rng, level), _yaml_text(rng, message))
    if shape < 0.7:
        return '- {"dt": %s, "lvl": "info", "msg": %s}' % (json.dumps(dt), rng.choice(ODD_NUMBERS))
    if shape < 0.8:
        return "- %s" % _yaml_text(rng, message)
    if shape < 0.9:
        return '- {"dt": %s, "lvl": "info", "msg": {%s: %s}}' % (json.dumps(dt), _yaml_text(rng, odd_text(rng)),
                                                              _yaml_text(rng, message))
    return '- {"dt": "%s", "lvl": "info", "msg": "%s"}' % (dt, message.replace("\\", "\\\\").replace('"', '\\"'))


def mutate_log(rng: random.Random, mutated: Mutated) -> Optional[str]:
    """Add odd lines to the LAVA log the record holds (a legacy file's, or a job's callback)."""
    record = mutated.record
    callback = None
    if isinstance(record.get("callback_data"), str):
        try:
            callback = json.loads(record["callback_data"])
        except ValueError:
            return None
        holder = callback
    else:
        holder = record
    log = holder.get("log")
    if not isinstance(log, str):
        return None
    lines = log.splitlines()
    added = [odd_log_line(rng) for _ in range(rng.randint(1, 4))]
    for line in added:
        lines.insert(rng.randint(0, len(lines)), line)
    holder["log"] = "\n".join(lines) + "\n"
    if callback is not None:
        record["callback_data"] = json.dumps(callback, ensure_ascii=rng.random() < 0.5)
    return "log lines %r" % added


def mutate_yaml_metadata(rng: random.Random, mutated: Mutated) -> Optional[str]:
    """An odd value for one key of a LAVA definition's `metadata:` (fields of every document),
    or an odd key added there."""
    record = mutated.record
    try:
        definition = yaml.load(record.get("definition"), Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, ValueError, AttributeError, TypeError):  # a text the mutations made no YAML
        return None
    metadata = definition.get("metadata") if isinstance(definition, dict) else None
    if not isinstance(metadata, dict) or not metadata:
        return None
    key = rng.choice(sorted(metadata, key=str)) if rng.random() < 0.9 else rng.choice(ODD_KEYS)
    value = odd_text(rng) if rng.random() < 0.7 else rng.choice([1e39, -0.0, 1.0, 10 ** 30, float("nan"), True, None])
    metadata[key] = value
    try:
        record["definition"] = yaml.dump(definition, Dumper=yaml.SafeDumper, allow_unicode=rng.random() < 0.5,
                                         width=rng.choice([80, 10 ** 6]))
    except yaml.YAMLError:
        return None
    return "definition metadata %r: %r" % (key, value if not isinstance(value, str) else value[:60])


def mutate_results(rng: random.Random, mutated: Mutated) -> Optional[str]:
    """An odd test case name, measurement, unit or suite name in a LAVA file's `results` YAML."""
    results = mutated.record.get("results")
    if not isinstance(results, dict) or not results:
        return None
    suite = rng.choice(sorted(results))
    text = results[suite]
    if not isinstance(text, str):
        return None
    if rng.random() < 0.2:
        name = odd_text(rng)
        results[name] = results.pop(suite)
        return "suite %r" % name[:60]
    lines = text.splitlines()
    places = [number for number, line in enumerate(lines)
              if re.match(r"  (name|measurement|unit|level|result|logged|id): ", line)]
    if not places:
        return None
    where = rng.choice(places)
    key = lines[where].split(":", 1)[0]
    value = _yaml_text(rng, odd_text(rng)) if rng.random() < 0.7 else rng.choice(ODD_NUMBERS)
    lines[where] = "%s: %s" % (key, value)
    results[suite] = "\n".join(lines) + "\n"
    return "results %s %s: %r" % (suite, key.strip(), value[:60])


def mutated_case(rng: random.Random, seed: Seed) -> Tuple[str, bytes, str]:
    """(kind, file content, what was changed) of one random mutation of `seed`."""
    kind, record = seed
    mutated = Mutated(json.loads(json.dumps(record)))
    said = []
    for _ in range(rng.randint(1, 3)):
        way = rng.random()
        change = None
        if way < 0.3:
            change = mutate_log(rng, mutated)
        elif way < 0.45:
            change = mutate_yaml_metadata(rng, mutated)
        elif way < 0.6:
            change = mutate_results(rng, mutated)
        elif way < 0.75:
            change = mutate_callback(rng, mutated)
        if change is None:
            change = mutate_json(rng, mutated)
        said.append(change)
    return kind, mutated.content(ensure_ascii=rng.random() < 0.5), "; ".join(said)


# Checks --------------------------------------------------------------------------------


class NotStrict(ValueError):
    pass


def _refuse_constant(name: str):
    raise NotStrict("the constant %s is no JSON" % name)


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise NotStrict("a key repeats: %r" % keys)
    return dict(pairs)


def strict_value(line: bytes) -> Any:
    """The JSON value of one encoded document, as Jackson reads it; NotStrict when it would not."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotStrict("not UTF-8: %s" % error) from None
    if "\n" in text or "\r" in text:
        raise NotStrict("a raw line break")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except NotStrict:
        raise
    except ValueError as error:
        raise NotStrict("not JSON: %s" % error) from None
    for _, leaf in leaves(value):
        if isinstance(leaf, str) and _has_surrogate(leaf):
            raise NotStrict("a lone surrogate in %r" % leaf[:60])
    for path, leaf in leaves(value):
        if isinstance(leaf, dict) and any(_has_surrogate(key) for key in leaf):
            raise NotStrict("a lone surrogate in a key at %r" % (path,))
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def canonical(value: Any) -> str:
    """A text equal for equal JSON values alone: 1 and 1.0, 0.0 and -0.0 differ."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=True)


_REFERENCE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def reference_lines(kind: str, content: bytes) -> Tuple[Optional[List[Tuple[str, str, str]]], Optional[str]]:
    """([(index, id, wire JSON)], None) of the reference encoding of the file's documents, or
    (None, reason) when the file is rejected or a document cannot be encoded."""
    try:
        documents = documents_for(kind, content, CREATED, "lab-fuzz")
    except RejectedInput as error:
        return None, str(error)
    lines = []
    for document in documents:
        wire = dict(document.body)
        wire["@timestamp"] = document.timestamp
        wire["@metadata"] = routing(document.index, document.doc_id, document.version)
        try:
            text = _REFERENCE.encode(wire)
            text.encode("utf-8")
        except (ValueError, UnicodeEncodeError) as error:
            return None, "reference cannot encode: %s" % error
        lines.append((document.index, document.doc_id, text))
    return lines, None


def routing(index: str, doc_id: str, version: Optional[int]) -> dict:
    """A document's `@metadata`: where it goes, and its node's version as a text of digits."""
    return dict({"index": index, "id": doc_id}, **({} if version is None else {"version": str(version)}))


def contract_problems(kind: str, content: bytes) -> List[str]:
    """Fields of the file's documents that break the contract of `fields.FIELDS`: a value
    Elasticsearch would refuse for its mapping (a long beyond 64 bits, a float beyond 32)."""
    try:
        documents = documents_for(kind, content, CREATED, "lab-fuzz")
    except RejectedInput:
        return []
    return ["%s document: %s" % (document.kind, "; ".join(problems)[:300]) for document in documents
            for problems in [field_problems(document.kind, document.body)] if problems][:1]


def log_text_of(kind: str, content: bytes) -> Optional[str]:
    """The YAML log a LAVA file or a lab job's envelope holds, if any."""
    try:
        record = json_object(content)  # as kcing reads a file: escaped lone surrogates replaced
        if kind != "lava":
            record = json_object(record["callback_data"].encode("utf-8", "surrogatepass"))
        log = record.get("log")
    except (RejectedInput, KeyError, AttributeError):
        return None
    return log if isinstance(log, str) else None


def log_problems(kind: str, content: bytes, reference: List[Tuple[str, str, str]]) -> List[str]:
    """How the log documents differ from the log read whole by the YAML loader, line by line
    as `lava._log_line` reads an item: the reference for the fast reading of usual lines."""
    logs = [json.loads(text) for index, _, text in reference if index.startswith("log-")]
    text = log_text_of(kind, content)
    if not logs or text is None:
        return []
    try:
        items = yamlsafe.load(text, "log") or []
    except RejectedInput as error:
        return ["log documents made of a log the YAML loader refuses: %s" % error]
    if len(items) != len(logs):
        return ["%d log documents for %d log items" % (len(logs), len(items))]
    for lineno, (item, document) in enumerate(zip(items, logs), 1):
        fields, dt = lava._log_line(lineno, item)
        expected = without_missing(fields)
        actual = {name: document.get(name) for name in ("lineno", "level", "message") if name in document}
        if canonical(actual) != canonical(expected):
            return ["log line %d: %s, read whole %s" % (lineno, canonical(actual)[:200], canonical(expected)[:200])]
        timestamp = lava.line_timestamp(dt)
        if timestamp is not None and document["@timestamp"] != timestamp:
            return ["log line %d: @timestamp %s, read whole %s" % (lineno, document["@timestamp"], timestamp)]
    return []


def problems_of(kind: str, content: bytes) -> List[str]:
    """What is wrong with the encoding of one file's documents (empty: nothing)."""
    reference, refused = reference_lines(kind, content)
    found = log_problems(kind, content, reference) + contract_problems(kind, content) if reference else []
    for name, encode, separator in (("logstash", logstash_json, LOGSTASH_SEPARATOR), ("ndjson", ndjson_record, b"")):
        try:
            built = encoded_documents(kind, content, CREATED, "lab-fuzz", encode, separator)
        except RejectedInput as error:
            if reference is not None:
                found.append("%s: rejected (%s) where the reference encodes %d documents"
                             % (name, error, len(reference)))
            elif not str(error).strip() or kept_on_one_line(str(error)) != str(error) or len(str(error)) > MAX_REASON:
                found.append("%s: a rejection without a short one-line reason: %r" % (name, str(error)[:300]))
            continue
        except Exception as error:  # noqa: BLE001: any other exception is a finding
            found.append("%s: %s: %s" % (name, type(error).__name__, error))
            continue
        if reference is None:
            found.append("%s: encoded %d documents where the reference refuses: %s" % (name, len(built.items), refused))
            continue
        items = built.items
        if len(items) != len(reference):
            found.append("%s: %d documents, the reference %d" % (name, len(items), len(reference)))
            continue
        for position, (item, (index, doc_id, text)) in enumerate(zip(items, reference)):
            problem = _item_problem(name, item, index, doc_id, text)
            if problem:
                found.append("%s document %d: %s" % (name, position, problem))
                break
    return found


def _item_problem(name: str, item: bytes, index: str, doc_id: str, reference_text: str) -> Optional[str]:
    expected = json.loads(reference_text)
    try:
        if name == "logstash":
            actual = strict_value(item)
        else:
            if not item.endswith(b"\n") or item.count(b"\n") != 2:
                return "not two lines: %r" % item[:200]
            action_line, source_line, _ = item.split(b"\n")
            action = strict_value(action_line)
            version = expected["@metadata"].get("version")
            versioning = {} if version is None else {"version": int(version), "version_type": "external_gte"}
            if action != {"index": dict({"_index": index, "_id": doc_id}, **versioning)}:
                return "action %r" % action
            actual = strict_value(source_line)
            actual["@metadata"] = routing(index, doc_id, None if version is None else int(version))
    except NotStrict as error:
        return "%s: %r" % (error, item[:300])
    if canonical(actual) != canonical(expected):
        differing = sorted(key for key in set(actual) | set(expected)
                           if canonical(actual.get(key)) != canonical(expected.get(key)))
        return "differs from the reference in %s: %s" % (differing, "; ".join(
            "%s: %s != %s" % (key, canonical(actual.get(key))[:120], canonical(expected.get(key))[:120])
            for key in differing[:3]))
    return None


def run(cases: int, seed: int, report: Callable[[str], None] = print) -> List[Tuple[str, str, bytes, List[str]]]:
    """Fuzz `cases` mutations; return (kind, change, content, problems) of each failing one."""
    rng = random.Random(seed)
    payloads = seeds()
    failures = []
    for number in range(cases):
        kind, content, change = mutated_case(rng, rng.choice(payloads))
        problems = problems_of(kind, content)
        if problems:
            failures.append((kind, change, content, problems))
            report("case %d (%s): %s\n  %s" % (number, kind, change[:300], "\n  ".join(p[:400] for p in problems)))
    return failures


LEGACY_KINDS = ("build", "lava", "boot")


def samples_directory(root: Path, cases: List[Tuple[str, bytes]]) -> None:
    """A samples directory holding `cases` (kind, content), its manifest dating each as CREATED
    (without a sha256: a hand-made manifest's files are fed as they are)."""
    entries = []
    for number, (kind, content) in enumerate(cases):
        path = "%s/%06d.json" % (kind, number)
        (root / kind).mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)
        entries.append({"kind": kind, "upstream_id": "fuzz%06d" % number, "path": path,
                        "date": CREATED.isoformat(), "listing": {"lab_name": "lab-fuzz"}})
    (root / "manifest.json").write_text(json.dumps({"format": 1, "source": "legacy", "objects": entries}))


def through_kcing(cases: int, seed: int, workdir: Path) -> List[str]:
    """`kcing.py feed_es --source samples --output` over `cases` mutated legacy files: every line
    it writes must be strict JSON and a document the reference makes of one of the files, and it
    must write as many as the reference makes of the files it does not refuse."""
    from tests.feedrun import clean_environ, kcing

    rng = random.Random(seed)
    payloads = [payload for payload in seeds() if payload[0] in LEGACY_KINDS]
    made = [mutated_case(rng, rng.choice(payloads))[:2] for _ in range(cases)]
    samples_directory(workdir / "samples", made)
    expected = {}
    total = 0
    for kind, content in made:
        reference, _ = reference_lines(kind, content)
        for index, doc_id, text in reference or []:
            expected.setdefault((index, doc_id), set()).add(canonical(json.loads(text)))
            total += 1
    out = workdir / "out"
    environ = clean_environ(KCING_DB=str(workdir / "fuzz.db"))
    done = kcing(["feed_es", "--source", "samples", "--samples-dir", str(workdir / "samples"), "--output", str(out)],
                 environ, workdir, timeout=600)
    problems = []
    if done.returncode not in (0, 1) or "Traceback" in done.stderr:
        problems.append("kcing exited %d: %s" % (done.returncode, done.stderr[-2000:]))
    written = 0
    for path in sorted(out.glob("*.ndjson")):
        lines = path.read_bytes().split(b"\n")
        if lines[-1] != b"":
            problems.append("%s does not end with a line break" % path.name)
        for action_line, source_line in zip(lines[0:-1:2], lines[1:-1:2]):
            written += 1
            try:
                action = strict_value(action_line)["index"]
                source = strict_value(source_line)
            except NotStrict as error:
                problems.append("%s: %s" % (path.name, error))
                continue
            source["@metadata"] = {"index": action["_index"], "id": action["_id"]}
            if canonical(source) not in expected.get((action["_index"], action["_id"]), ()):
                problems.append("%s: %s/%s is no document of the reference"
                                % (path.name, action["_index"], action["_id"]))
    if written != total:
        problems.append("%d documents written, the reference makes %d" % (written, total))
    return problems


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    start = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    failed = run(count, start)
    print("%d of %d cases failed" % (len(failed), count))
    if len(sys.argv) > 3:
        import tempfile
        with tempfile.TemporaryDirectory() as scratch:
            print("\n".join(through_kcing(int(sys.argv[3]), start, Path(scratch))) or "kcing.py: no problem")
