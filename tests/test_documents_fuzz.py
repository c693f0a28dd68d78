"""Mutated real files, and KernelCI API nodes changed anywhere, give valid documents or
RejectedInput with a reason, never another exception.

The mutations are random but seeded: the seed is printed (shown with any failure) and can be
set with KCING_FUZZ_SEED=<number>, or KCING_FUZZ_SEED=random for a fresh one.
"""
import copy
import functools
import json
import operator
import os
import random
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.documents.fields import FIELDS, KEYWORD_ARRAYS, NULLABLE, TYPES, field_problems
from kcing.documents.validate import check
from kcing.errors import RejectedInput
from kcing.records import BOOT, BUILD, LAVA
from tests.fakes.api_data import sample_envelopes

HERE = Path(__file__).resolve()
LEGACY = HERE.parents[2] / "shared" / "data" / "upstream" / "legacy"
SAMPLES = HERE.parents[1] / "samples"
LISTED = datetime(2020, 11, 19, 7, 6, 19, tzinfo=timezone.utc)
DEFAULT_SEED = 20201119


def fuzz_seed() -> int:
    chosen = os.environ.get("KCING_FUZZ_SEED", "")
    if chosen == "random":
        return random.SystemRandom().randrange(2 ** 32)
    return int(chosen) if chosen else DEFAULT_SEED


SEED = fuzz_seed()

# Files to mutate: (kind, path). Real LAVA callbacks, plus the bundled build and boot samples.
SOURCES = [(LAVA, LEGACY / name) for name in (
    "lava-json-meson-gxbb-p200.json", "lava-json-jetson-tk1.json", "lava-callback-raw-incomplete-qemu.json")]
SOURCES += [(BUILD, path) for path in sorted((SAMPLES / "build").glob("*.json"))[:2]]
SOURCES += [(BOOT, path) for path in sorted((SAMPLES / "boot").glob("*.json"))[:2]]


def deep_list(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


WRONG_VALUES = [
    None, 0, -1, 2 ** 70, 1.5, 1e308, True, "", "None", "x", "é\u2028\ud7ff\U0001f600", "x" * 1_000_000,
    [], {}, ["a", {"b": None}], {"$date": 1559278018512}, deep_list(500), "2020-13-45 25:61:00+99:00",
]
YAML_GARBAGE = [
    ":", "[", "{", "}", "- ", "\t", "&a", "*a", "*undefined", "? ", "%YAML 1.1\n", "---\n", "...\n",
    "!!python/object/apply:os.system [ls]",
    "!!timestamp x", "!!int ''", "!!bool maybe", "!!binary ###", "!!set {a, b}", "!!omap x", "!foo x",
    "<<: *a", "!!python/object/apply:decimal.Decimal [1, 2]", "\x00", "\ufeff", "\x85", "'", '"', "\\",
    "[" * 3000, "- " * 3000, "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
    # Aliases inside what they name: the result would contain itself.
    "- {msg: &x [*x]}", "&x [*x]", "{a: &b {c: [*b]}}", "&m {<<: *m}",
    # One string named many times: small file, gigabytes of documents.
    '- {msg: &s "%s"}\n' % ("s" * 65536) + "- {msg: *s}\n" * 200,
]


# -- mutations: each returns new file bytes ------------------------------------------------------

def truncate(rng, content, record):
    return content[:rng.randrange(len(content))]


def flip_bytes(rng, content, record):
    mutated = bytearray(content)
    for _ in range(rng.randint(1, 8)):
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
    return bytes(mutated)


def insert_non_utf8(rng, content, record):
    at = rng.randrange(len(content))
    return content[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]) + content[at:]


def empty(rng, content, record):
    return b""


def deep_json(rng, content, record):
    return b"[" * rng.choice([10, 1000, 100_000]) + content


def wrong_type(rng, content, record):
    key = rng.choice(sorted(record))
    record[key] = rng.choice(WRONG_VALUES)
    return json.dumps(record).encode("utf-8")


def escaped_surrogate(rng, content, record):
    key = rng.choice([key for key in sorted(record) if isinstance(record[key], str)])
    return json.dumps(record).replace(json.dumps(record[key]), '"\\ud800%s"' % key, 1).encode("utf-8")


def yaml_garbage(rng, content, record):
    """Insert YAML garbage at a random place in the definition, a results suite or the log."""
    texts = [("definition", None), ("log", None)] + [("results", suite) for suite in sorted(record.get("results") or {})]
    key, suite = rng.choice(texts)
    holder = record["results"] if suite else record
    name = suite or key
    if not isinstance(holder.get(name), str):
        return json.dumps(record).encode("utf-8")
    lines = holder[name].split("\n")
    at = rng.randrange(len(lines))
    garbage = rng.choice(YAML_GARBAGE)
    lines[at] = rng.choice([garbage, lines[at][: rng.randrange(len(lines[at]) + 1)] + garbage, garbage + lines[at]])
    holder[name] = "\n".join(lines)
    return json.dumps(record).encode("utf-8")


def drop_log_lines(rng, content, record):
    if isinstance(record.get("log"), str):
        lines = record["log"].split("\n")
        record["log"] = "\n".join(line for line in lines if rng.random() > 0.3)
    return json.dumps(record).encode("utf-8")


MUTATIONS = {
    "truncate": (truncate, 6),
    "flip-bytes": (flip_bytes, 6),
    "non-utf8": (insert_non_utf8, 2),
    "empty": (empty, 1),
    "deep-json": (deep_json, 2),
    "wrong-type": (wrong_type, 20),
    "escaped-surrogate": (escaped_surrogate, 2),
}
LAVA_MUTATIONS = {
    "yaml-garbage": (yaml_garbage, 30),
    "drop-log-lines": (drop_log_lines, 2),
}


def cases():
    for kind, path in SOURCES:
        mutations = dict(MUTATIONS, **(LAVA_MUTATIONS if kind == LAVA else {}))
        for name, (_, count) in mutations.items():
            for number in range(count):
                yield pytest.param(kind, path, name, number, id="%s-%s-%d" % (path.stem[:24], name, number))


@pytest.mark.parametrize("kind, path, mutation, number", cases())
def test_mutated_files_give_documents_or_a_reason(kind, path, mutation, number):
    if not path.is_file():
        pytest.skip("%s is absent (real files live in shared/ beside the repository)" % path)
    print("fuzz seed:", SEED, "(KCING_FUZZ_SEED)")
    rng = random.Random("%d/%s/%s/%d" % (SEED, path.name, mutation, number))
    content = path.read_bytes()
    mutate = dict(MUTATIONS, **LAVA_MUTATIONS)[mutation][0]
    mutated = mutate(rng, content, json.loads(content))
    try:
        documents = documents_for(kind, mutated, LISTED if rng.random() < 0.9 else None)
    except RejectedInput as refusal:
        reason = str(refusal)
        assert reason and "\n" not in reason and len(reason) <= 300, reason
        return
    for document in documents:
        check(document)
        assert field_problems(document.kind, document.body) == [], (SEED, mutation, number)
    assert len({document.doc_id for document in documents}) == len(documents)


@pytest.mark.parametrize("garbage", YAML_GARBAGE, ids=range(len(YAML_GARBAGE)))
def test_yaml_garbage_alone_is_data_or_a_reason(garbage):
    """Each shape on its own, as a whole log: documents or a one-line reason, nothing else."""
    lava = LEGACY / "lava-json-meson-gxbb-p200.json"
    if not lava.is_file():
        pytest.skip("%s is absent" % lava)
    record = json.loads(lava.read_bytes())
    record["log"] = garbage
    try:
        documents_for(LAVA, json.dumps(record).encode("utf-8"), LISTED)
    except RejectedInput as refusal:
        assert "\n" not in str(refusal) and len(str(refusal)) <= 300


def test_the_fields_contract_is_well_formed():
    assert set(FIELDS) == {"build", "boot", "test", "log", "regression"}
    assert {field_type for fields in FIELDS.values() for field_type in fields.values()} <= set(TYPES)
    declared = {name for fields in FIELDS.values() for name in fields}
    assert NULLABLE <= declared and KEYWORD_ARRAYS <= declared
    assert not any(name.startswith(("_", "@")) for name in declared)


# -- KernelCI API nodes: a wrong value anywhere in a node or what comes with it -----------------

def value_paths(value, path=()):
    """Every place in `value`, as the keys and indices that lead to it."""
    members = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, member in members:
        yield path + (key,)
        yield from value_paths(member, path + (key,))


def changed_somewhere(rng, envelope):
    """The envelope with one to three places set to a wrong value or removed."""
    envelope = copy.deepcopy(envelope)
    for _ in range(rng.randint(1, 3)):
        places = list(value_paths(envelope))
        if not places:
            break
        *lead, last = rng.choice(places)
        holder = functools.reduce(operator.getitem, lead, envelope)
        if isinstance(holder, dict) and rng.random() < 0.25:
            del holder[last]
        else:
            holder[last] = copy.deepcopy(rng.choice(WRONG_VALUES[:-2]))  # not the deep list nor a huge string
    return envelope


API_CASES = 40


@pytest.mark.parametrize("number", range(API_CASES))
def test_api_nodes_changed_anywhere_give_documents_or_a_reason(number):
    # A node's every member, its job's, its regression's runs and its callback can be anything the
    # API sends one day; documents_for makes valid documents of it or refuses it in one line.
    print("fuzz seed:", SEED, "(KCING_FUZZ_SEED)")
    rng = random.Random("%d/api/%d" % (SEED, number))
    envelopes = sample_envelopes(LISTED, LEGACY / "lava-json-meson-gxbb-p200.json")
    made = refused = 0
    for _ in range(25):
        kind, envelope = rng.choice(envelopes)
        content = json.dumps(changed_somewhere(rng, envelope)).encode("utf-8")
        try:
            documents = documents_for(kind, content, LISTED)
        except RejectedInput as refusal:
            reason = str(refusal)
            assert reason and "\n" not in reason and len(reason) <= 300, reason
            refused += 1
            continue
        for document in documents:
            check(document)
            assert field_problems(document.kind, document.body) == [], (SEED, number)
        assert len({document.doc_id for document in documents}) == len(documents)
        made += 1
    assert made + refused == 25
