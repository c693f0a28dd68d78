"""The shortcuts that make documents cheap give exactly what the general code gives.

A LAVA job has thousands of log lines, so its log documents are built in one loop that does per
line only what differs between lines, and validation, encoding and id packing take the common
case at once. Each test here runs a shortcut and the general path it stands for on the same
input, odd cases included, and compares documents, bytes and rejection reasons.
"""
import json
import random
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from kcing.building import encoded_documents
from kcing.documents import check_lines, documents_for, parts_for, yamlsafe
from kcing.documents.identity import IdPrefix, document_id
from kcing.documents.lava import _JobContext, _LineTimes, _log_documents, _log_line, _log_parts, line_timestamp
from kcing.documents.lava_log import parse_log, parse_log_marked, read_log_text
from kcing.documents.validate import TIMESTAMP, check, check_all, routing_fine
from kcing.errors import RejectedInput
from kcing.ledger import docids
from kcing.records import LAVA, Document, _ENCODER
from kcing.sinks.batching import LOGSTASH_SEPARATOR, Encoded
from kcing.sinks.encoding import LINES_ENCODERS, logstash_json, ndjson_record
from tests.test_documents_lava import MESON, REAL_FILES, SAMPLES, property_seed, real_bytes, real_callback

WHEN = datetime(2020, 11, 19, 7, 6, 18, 385000, tzinfo=timezone.utc)
COMMON = {"job": "mainline", "board": "meson-gxbb-p200", "lab_name": "lab-baylibre", "lava_job_id": 123,
          "boot_result": "pass", "boot_time": None}


def _context(common=None):
    return _JobContext(("lab-baylibre", 123, "meson-gxbb-p200"), WHEN, dict(COMMON if common is None else common))


def _general_log_documents(items, common=None):
    """The log documents as any other document is made: fields, then `check` serialises the body."""
    context = _context(common)
    documents = []
    for lineno, item in enumerate(items, 1):
        fields, dt = _log_line(lineno, item)
        documents.append(context.document("log", (lineno,), fields, timestamp=line_timestamp(dt)))
    for document in documents:
        check(document)
    return documents


def _outcome(make):
    try:
        return make()
    except RejectedInput as refusal:
        return "rejected: %s" % refusal


# -- log documents ----------------------------------------------------------------------------

ODD_ITEMS = [
    {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "lava-dispatcher, installed"},
    {"dt": "2020-11-19T07:03:25.400000", "lvl": "target", "msg": "same second"},
    {"dt": "2020-11-19T07:03:25.4", "lvl": "target", "msg": "short fraction"},
    {"dt": "2020-11-19T07:03:25.4000000", "lvl": "target", "msg": "seven digits"},
    {"dt": "2020-11-19T07:03:25.40a000", "lvl": "debug", "msg": "not digits"},
    {"dt": "2020-11-19T07:03:25.٤٠٠٠٠٠", "lvl": "debug", "msg": "other digits"},
    {"dt": "2020-02-30T00:00:00.000001", "lvl": "debug", "msg": "no such day"},
    {"dt": "2020-02-30T00:00:00.000002", "lvl": "debug", "msg": "no such day again"},
    {"dt": "1960-01-01T00:00:00.000001", "msg": "too early"},
    {"dt": "2020-11-19T07:03:26.000001+02:00", "lvl": "None", "msg": "a zone"},
    {"dt": "2020-11-19T07:03:26.000001\n", "lvl": " null ", "msg": 17},
    {"dt": None, "lvl": 3, "msg": 1.5},
    {"dt": 17, "lvl": True, "msg": {"case": "x", "result": "pass"}},
    {"lvl": ["a"], "msg": ["x", 1]},
    {"lvl": {"a": 1}, "msg": None},
    {"lvl": "", "msg": ""},
    {"lvl": "débogage", "msg": "ünïcode ✓"},
    {},
    "a plain line",
    42,
    None,
    ["a", "list"],
    {"dt": "2020-11-19T07:03:27.5", "lvl": "info", "msg": "quote \" backslash \\ tab \t"},
]


def test_log_documents_made_in_one_loop_equal_those_made_one_by_one():
    fast = _log_documents(_context(), ODD_ITEMS)
    general = _general_log_documents(ODD_ITEMS)
    assert fast == general  # kind, index, id, @timestamp, body
    assert [document.body_json for document in fast] == [_ENCODER.encode(document.body) for document in general]
    assert [document.to_json() for document in fast] == [document.to_json() for document in general]


def test_log_documents_of_random_lines_equal_those_made_one_by_one():
    rng = random.Random(15)
    values = [None, "", "info", "None", 0, 1, 2.5, True, [], {}, ["x"], {"k": "v"}, "2020-11-19T07:03:25.393174",
              "2020-11-19T07:03:25.393", "2021-01-01T00:00:00", "2020-11-19T07:03:25.393174Z", "é"]
    items = []
    for _ in range(400):
        if rng.random() < 0.1:
            items.append(rng.choice(values))
        else:
            items.append({key: rng.choice(values) for key in rng.sample(["dt", "lvl", "msg", "ns"], rng.randint(0, 4))})
    fast = _log_documents(_context(), items)
    general = _general_log_documents(items)
    assert fast == general
    assert [document.body_json for document in fast] == [_ENCODER.encode(document.body) for document in general]


def test_log_documents_of_lines_read_from_text_equal_those_made_one_by_one():
    lines = [
        {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "plain text"},
        {"dt": "2020-11-19T07:03:25.393175", "lvl": "info", "msg": 'a "quoted" word'},
        {"dt": "2020-11-19T07:03:25.393176", "lvl": "target", "msg": "back\\slash"},
        {"dt": "2020-11-19T07:03:25.393177", "lvl": "target", "msg": "tab\there"},
        {"dt": "2020-11-19T07:03:25.393178", "lvl": "target", "msg": "caf\u00e9 \u2713"},
        {"dt": "2020-11-19T07:03:25.393179", "lvl": "results", "msg": {"case": "x", "result": "pass"}},
        {"dt": "2020-11-19T07:03:25.393180", "lvl": "target", "msg": ""},
        {"dt": "2020-11-19T07:03:25.393181", "lvl": "target", "msg": 17},
    ]
    text = "".join("- %s\n" % json.dumps(line, ensure_ascii=True) for line in lines)
    text += '- {"dt": "2020-11-19T07:03:26.0", "lvl": "info", "msg": !!python/object/apply:decimal.Decimal ["2"]}\n'
    text += "- {\"msg\": \"raw \u00e9 is not ASCII\"}\n"
    items, plain = parse_log_marked(text)
    assert items == parse_log(text) and len(plain) == len(items) and any(plain) and not all(plain)
    fast = _log_documents(_context(), items, plain)
    general = _general_log_documents(items)
    assert fast == general
    assert [document.to_json() for document in fast] == [document.to_json() for document in general]


# Usual lines, which the quick way cuts into their texts, and lines that differ from them in one
# thing, with the time edges of a line's @timestamp.
LOG_TEXT_LINES = [
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "usual"}',
    '- {"dt": "2020-11-19T07:03:25.393", "lvl": "info", "msg": "milliseconds only"}',
    '- {"dt": "2020-11-19T07:03:25.39", "lvl": "info", "msg": "two digits"}',
    '- {"dt": "2020-11-19T07:03:25.3931740", "lvl": "info", "msg": "seven digits"}',
    '- {"dt": "2020-11-19T07:03:25", "lvl": "info", "msg": "no fraction"}',
    '- {"dt": "2020-11-19 07:03:25.393174", "lvl": "info", "msg": "a space for the T"}',
    '- {"dt": "2020-02-30T00:00:00.000001", "lvl": "debug", "msg": "no such day"}',
    '- {"dt": "2020-02-30T00:00:00.500000", "lvl": "debug", "msg": "no such day, same second"}',
    '- {"dt": "1960-01-01T00:00:00.000001", "lvl": "debug", "msg": "too early"}',
    '- {"dt": "9999-12-31T23:59:59.999999", "lvl": "debug", "msg": "too late"}',
    '- {"dt": "2020-11-19T25:03:25.393174", "lvl": "info", "msg": "no such hour"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "None", "msg": "a level that says none"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "", "msg": ""}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": " null ", "msg": " spaces "}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "a \\"quote\\" and a \\\\ backslash"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "tab\\there"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "raw\ttab"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "\\b\\f\\n\\r\\t\\\\"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "a \\/ slash"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "\\u001b[0;32m colour"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "YAML alone: \\e \\0 \\x41 \\N"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "ta\\tget", "msg": "an escape in the level"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "a backslash at the end \\\\"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "caf\u00e9"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "caf\\u00e9"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "carriage return"}\r',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "trailing space"} ',
    '- {"dt": "2020-11-19T07:03:25.393174",  "lvl": "target", "msg": "two spaces"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "x", "ns": "common"}',
    '- {"lvl": "target", "dt": "2020-11-19T07:03:25.393174", "msg": "another order"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "results", "msg": {"case": "x", "result": "pass"}}',
    '- {"dt": "2020-11-19T07:03:26.0", "lvl": "info", "msg": !!python/object/apply:decimal.Decimal ["2"]}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "{#}: [x] & *y !z %w @v `u\' -"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "usual"}',
    '- "a plain line"',
    '- {"dt": "2020-11-19T07:03:25.\u0663\u0669\u0663", "lvl": "info", "msg": "other digits"}',
    '- {"dt": "2020-11-19T07:03:27.100000", "lvl": 3, "msg": 1.5}',
]


def _documents_of_log_text(text, common=None):
    made, lines = _log_parts(_context(common), read_log_text(text))
    return made if lines is None else lines.documents()


def _assert_like_one_by_one(text, common=None):
    fast = _documents_of_log_text(text, common)
    general = _general_log_documents(yamlsafe.load(text, "log") or [], common)
    assert fast == general  # kind, index, id, @timestamp, body
    assert [document.body_json or _ENCODER.encode(document.body) for document in fast] \
        == [_ENCODER.encode(document.body) for document in general]
    assert [document.to_json() for document in fast] == [document.to_json() for document in general]


def test_log_documents_of_usual_lines_cut_as_texts_equal_those_made_one_by_one():
    text = "\n".join(LOG_TEXT_LINES) + "\n"
    log = read_log_text(text)
    assert log.lines is not None and sum(not other for *_, other in log.lines) >= 10  # the quick way
    _assert_like_one_by_one(text)
    # Every line alone, first and last, and without a newline at the end.
    for line in LOG_TEXT_LINES:
        _assert_like_one_by_one(line)
        _assert_like_one_by_one(LOG_TEXT_LINES[0] + "\n" + line + "\n" + LOG_TEXT_LINES[0])
    # A shared field named like a line's: the documents are made one by one from the same items.
    _assert_like_one_by_one(text, dict(COMMON, level="job level"))


def test_log_documents_of_random_usual_and_other_lines_equal_those_made_one_by_one():
    rng = random.Random(property_seed())
    seconds = ["2020-11-19T07:03:%02d" % n for n in range(3)] + ["2020-02-30T00:00:00", "1960-01-01T00:00:00"]
    levels = ["info", "debug", "target", "None", "", "results", "x" * 300]
    messages = ["", "plain", 'a "quote"', "back\\slash", "tab\t", "\b\f\n\r", "\x1b[0m", "/", "caf\u00e9", "  spaced  ",
                "[x]: {y}", "#", "\\"]
    for _ in range(200):
        lines = []
        for _ in range(rng.randint(1, 25)):
            dt = rng.choice(seconds) + "." + "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 3, 4, 6, 7])))
            line = "- " + json.dumps({"dt": dt, "lvl": rng.choice(levels), "msg": rng.choice(messages)},
                                     ensure_ascii=rng.random() < 0.7)
            if rng.random() < 0.1:
                line = rng.choice([line + " ", line.replace(", ", ",  ", 1), '- {"msg": 17}', "- [a, b]", "- null"])
            lines.append(line)
        text = "\n".join(lines) + rng.choice(["", "\n", "\n\n"])
        _assert_like_one_by_one(text)


@pytest.mark.parametrize("item", [
    {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "bad \udc80 byte"},
    {"dt": "2020-11-19T07:03:25.393174", "lvl": "bad \ud800", "msg": "fine"},
])
def test_a_lone_surrogate_in_a_line_is_refused_with_the_same_reason(item):
    items = [{"lvl": "info", "msg": "fine"}, item]
    assert _outcome(lambda: _log_documents(_context(), items)) == _outcome(lambda: _general_log_documents(items))
    assert _outcome(lambda: _log_documents(_context(), items)).startswith("rejected: ")


def test_shared_fields_named_like_a_line_field_still_give_the_general_documents():
    common = dict(COMMON, message="shared")
    items = [{"lvl": "info", "msg": "own"}, {"lvl": "info"}]
    assert _log_documents(_context(common), items) == _general_log_documents(items, common)


def test_no_log_lines_make_no_documents_and_read_no_shared_fields():
    bad_common = dict(COMMON, _id="would be refused")
    assert _log_documents(_context(bad_common), []) == []


def test_line_ids_made_at_once_are_the_ids_of_each_line():
    ids = IdPrefix("log", "lab-baylibre", 123, "meson-gxbb-p200")
    assert ids.numbered(12) == [document_id("log", "lab-baylibre", 123, "meson-gxbb-p200", n) for n in range(1, 13)]
    assert ids.numbered(0) == []


# -- line times -------------------------------------------------------------------------------

def test_line_times_remembered_per_second_equal_the_general_reading():
    rng = random.Random(2)
    seconds = ["2020-11-19T07:03:25", "2020-11-19T07:03:26", "2020-02-30T00:00:00", "1969-12-31T23:59:59",
               "9999-12-31T23:59:59", "2020-11-19T24:00:00"]
    tails = ["", ".1", ".12", ".123", ".1234", ".123456", ".1234567", ".12a456", ".12 456", ".", ".١٢٣", "Z",
             "+00:00", ".123456\n", ".123456Z", ".000", ".000000"]  # at hour 24, the next midnight
    values = [rng.choice(seconds) + rng.choice(tails) for _ in range(3000)] + [None, 5, "", "x" * 30]
    rng.shuffle(values)
    values.sort(key=lambda value: rng.random() < 0.7)  # long runs within a second, as logs are
    times = _LineTimes()
    assert [times.of(value) for value in values] == [line_timestamp(value) for value in values]


class _Python314Datetime(datetime):
    """datetime as Python 3.14 on reads ISO text: hour 24, zeros after it, is the next midnight."""

    @classmethod
    def fromisoformat(cls, text):
        if text[10:13] == "T24" and not text[13:].strip(":.0"):
            return datetime.fromisoformat(text[:11] + "00" + text[13:]) + timedelta(days=1)
        return datetime.fromisoformat(text)


def test_a_log_line_at_hour_24_is_the_next_midnight_on_a_python_whose_fromisoformat_reads_it(monkeypatch):
    """The text of a line's second is its timestamp only when it is a time as written: where
    fromisoformat reads hour 24 (Python 3.14), "T24:00:00.000Z" would be sent as it is."""
    from kcing.documents import lava

    monkeypatch.setattr(lava, "datetime", _Python314Datetime)
    lines = ["2020-11-19T24:00:00.000000", "2020-11-19T24:00:00.000", "2020-11-19T23:59:59.999999"]
    times = _LineTimes()
    assert [times.of(dt) for dt in lines] == [line_timestamp(dt) for dt in lines] == [
        "2020-11-20T00:00:00.000Z", "2020-11-20T00:00:00.000Z", "2020-11-19T23:59:59.999Z"]


# -- validation -------------------------------------------------------------------------------

def _doc(**changes):
    # One index and kind object for all, and the body's JSON made: as a builder makes documents.
    fields = dict(kind="log", index="log-2020.11.19", doc_id="a" * 40, timestamp="2020-11-19T07:03:25.393Z",
                  body={"lineno": 1}, body_json='{"lineno":1}')
    fields.update(changes)
    return Document(**fields)


@pytest.mark.parametrize("bad", [
    dict(timestamp="2020-11-19 07:03:25"), dict(timestamp=None), dict(doc_id=""), dict(doc_id="é" * 300),
    dict(doc_id="x" * 513), dict(doc_id="\ud800"), dict(doc_id=7), dict(index="log-2020.11.20x"),
    dict(kind="boot"), dict(body={"_id": 1}, body_json=None),
    dict(body={"host": "scalar"}, body_json=None),
    dict(timestamp="2020-11-19T07:03:25.393Z\n2020-11-19T07:03:26.393Z"),
    dict(timestamp="2020-11-19T07:03:25.393Z\n\n"),
    dict(timestamp=b"2020-11-19T07:03:25.393Z"), dict(doc_id="a\nb" * 200),
])
def test_checking_an_object_at_once_refuses_what_checking_each_document_refuses(bad):
    good = [_doc(doc_id="%040x" % n) for n in range(3)]
    documents = good + [_doc(**bad)] + [_doc(doc_id="f" * 40)]
    expected = None
    for document in documents:
        try:
            check(document)
        except RejectedInput as refusal:
            expected = str(refusal)
            break
    assert expected is not None
    with pytest.raises(RejectedInput) as refused:
        check_all([_doc(doc_id="%040x" % n) for n in range(3)] + [_doc(**bad)] + [_doc(doc_id="f" * 40)])
    assert str(refused.value) == expected


@pytest.mark.parametrize("odd", [
    dict(timestamp="2020-11-19T07:03:25.393Z\n"), dict(timestamp="2020-11-19T07:03:25+02:00"),
    dict(doc_id="x" * 512), dict(doc_id="a\nb"),
])
def test_checking_an_object_at_once_accepts_what_checking_each_document_accepts(odd):
    documents = [_doc(doc_id="%040x" % n) for n in range(3)] + [_doc(**odd)] + [_doc(doc_id="f" * 40)]
    for document in documents:
        check(document)
    check_all(documents)


def test_checking_an_object_at_once_still_serialises_every_body():
    documents = [_doc(doc_id="%040x" % n, body={"lineno": n}, body_json=None) for n in range(3)]
    check_all(documents)
    assert [document.body_json for document in documents] == ['{"lineno":0}', '{"lineno":1}', '{"lineno":2}']


# -- encoding and ids -------------------------------------------------------------------------

VERSION = 1729045378113000  # an API node's `updated`, 2024-10-16T02:22:58.113000, in microseconds


class _Text(str):
    pass


def _versioned_and_odd(documents, body):
    """`documents`, the first of them again with a version, and odd ones with and without."""
    odd = Document("log", "log-2020.11.19", 'quote " and é', "2020-11-19T07:03:25.393Z", body)
    # An index of a str subclass: encoded the general encoder's way, not the shortcut's.
    not_a_text = Document("log", _Text("log-2020.11.19"), "ab" * 20, "2020-11-19T07:03:25.393Z", body)
    versioned = [Document(d.kind, d.index, d.doc_id, d.timestamp, d.body, d.body_json, VERSION)
                 for d in (documents[0], odd, not_a_text)]
    return documents + [odd, not_a_text] + versioned


def test_the_wire_json_is_the_encoding_of_the_wire_object():
    documents = documents_for(LAVA, json.dumps(real_callback(MESON)).encode(), WHEN)
    for document in _versioned_and_odd(documents, {"a": 1}):
        assert document.to_json() == _ENCODER.encode(document.to_wire())
        metadata = json.loads(document.to_json())["@metadata"]
        # A text of digits, which the pipeline's pattern checks and Elasticsearch reads as a long.
        assert metadata.get("version") == (None if document.version is None else str(VERSION))


def test_an_ndjson_record_is_the_action_and_the_stored_document_as_json():
    from kcing.sinks.ndjson import NdjsonDirSink

    documents = documents_for(LAVA, json.dumps(real_callback(MESON)).encode(), WHEN)
    for document in _versioned_and_odd(documents[:50], {"a": "é"}):
        metadata = {"_index": document.index, "_id": document.doc_id}
        if document.version is not None:
            metadata.update(version=VERSION, version_type="external_gte")
        action = json.dumps({"index": metadata}, separators=(",", ":"))
        stored = _ENCODER.encode(dict(document.body, **{"@timestamp": document.timestamp}))
        assert NdjsonDirSink.encode(document) == (action + "\n" + stored + "\n").encode("utf-8")


@pytest.mark.parametrize("ids, problem", [
    (["ab" * 20, "cd" * 20, "ab" * 20], None),
    (["ab" * 20, "ab cd " + "ef" * 17], "a document id is 40 hex digits"),
    (["ab" * 19, "zz" * 20], "a document id is 40 hex digits"),
    ([], None),
    (["ab" * 19], "a document id is 40 hex digits"),
    (["ab" * 21], "a document id is 40 hex digits"),
    (["ab" * 19 + "a", "ab" * 20 + "a"], "non-hexadecimal"),
])
def test_packing_a_list_of_ids_gives_what_packing_one_by_one_gives(ids, problem):
    def one_by_one():
        return docids.pack(iter(ids))  # not a list: the general way

    def at_once():
        return docids.pack(list(ids))

    if problem is None:
        assert at_once() == one_by_one() == bytes.fromhex("".join(sorted(set(ids))))
        return
    with pytest.raises(ValueError) as general:
        one_by_one()
    with pytest.raises(ValueError) as shortcut:
        at_once()
    assert str(shortcut.value) == str(general.value) and problem in str(general.value)


# -- a LAVA job's log encoded from its parts --------------------------------------------------

def _encoded_in_general(kind, content, encode, separator):
    """What a worker answered before log documents were encoded from their parts."""
    documents = documents_for(kind, content, WHEN)
    return Encoded.of([encode(document) for document in documents], separator).data, \
        [encode(document) for document in documents], docids.by_index(documents)


def _encoded_from_parts(kind, content, encode, separator):
    built = encoded_documents(kind, content, WHEN, None, encode, separator)
    return built.encoded.data, built.items, built.kept


def _lava_files():
    """The real LAVA callbacks, the samples', and variants with odd log lines and odd shared fields."""
    files = [real_bytes(name) for name in REAL_FILES]
    files += [path.read_bytes() for path in sorted((SAMPLES / "lava").glob("*.json"))]
    odd = real_callback(MESON)
    odd["log"] = "\n".join("- " + json.dumps(item) for item in ODD_ITEMS if item is not None) + "\n"
    files.append(json.dumps(odd).encode())
    unicode_lab = real_callback(MESON)
    unicode_lab["lab_name"] = "lab-bäylibre ✓"
    files.append(json.dumps(unicode_lab, ensure_ascii=False).encode())
    named_like_a_line_field = real_callback(MESON)  # its log documents are made one by one
    named_like_a_line_field["definition"] = named_like_a_line_field["definition"].replace(
        "metadata:", "metadata:\n  message: shared", 1)
    files.append(json.dumps(named_like_a_line_field).encode())
    no_log = real_callback(MESON)
    del no_log["log"]
    files.append(json.dumps(no_log).encode())
    return files


@pytest.mark.parametrize("encode, separator", [(logstash_json, LOGSTASH_SEPARATOR), (ndjson_record, b"")],
                         ids=["logstash", "ndjson"])
def test_log_documents_encoded_from_their_parts_are_the_bytes_and_ids_of_the_documents(encode, separator):
    files = _lava_files()
    assert len(files) >= 9
    for content in files:
        expected = _outcome(lambda: _encoded_in_general(LAVA, content, encode, separator))
        assert _outcome(lambda: _encoded_from_parts(LAVA, content, encode, separator)) == expected
    assert encode in LINES_ENCODERS  # the parts were taken


def test_log_lines_of_random_items_encode_as_their_documents():
    seed = random.Random(20201119)
    for _ in range(60):
        callback = real_callback(MESON)
        items = [seed.choice(ODD_ITEMS) for _ in range(seed.randint(1, 40))]
        callback["log"] = "\n".join("- " + json.dumps(item) for item in items if item is not None) + "\n"
        content = json.dumps(callback).encode()
        for encode, separator in ((logstash_json, LOGSTASH_SEPARATOR), (ndjson_record, b"")):
            expected = _outcome(lambda: _encoded_in_general(LAVA, content, encode, separator))
            assert _outcome(lambda: _encoded_from_parts(LAVA, content, encode, separator)) == expected


@pytest.mark.parametrize("odd", ['a "quote"', "a \\ backslash", "caf\u00e9", "tab\t", "\x7f", "\u2028", ""])
@pytest.mark.parametrize("where", ["timestamps", "ids"])
def test_log_lines_whose_timestamps_or_ids_need_escaping_encode_as_their_documents(odd, where):
    # Timestamps and ids are quoted as they are only when none needs escaping: the encoders
    # must not depend on their having been checked.
    lines = parts_for(LAVA, real_bytes(MESON), WHEN)[1]
    getattr(lines, where)[5] = odd
    for encode in (logstash_json, ndjson_record):
        texts = LINES_ENCODERS[encode](lines)
        assert [text.encode("utf-8") for text in texts] == [encode(document) for document in lines.documents()]


def test_log_lines_with_their_job_s_version_encode_as_their_documents():
    lines = parts_for(LAVA, real_bytes(MESON), WHEN)[1]
    lines.version = VERSION
    documents = lines.documents()
    assert {document.version for document in documents} == {VERSION}
    for encode in (logstash_json, ndjson_record):
        texts = LINES_ENCODERS[encode](lines)
        assert [text.encode("utf-8") for text in texts] == [encode(document) for document in documents]


def test_a_log_refused_from_its_parts_is_refused_for_the_same_reason():
    callback = real_callback(MESON)
    callback["log"] = '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "a \\ud800 lone surrogate"}\n'
    content = json.dumps(callback).encode()
    general = _outcome(lambda: _encoded_in_general(LAVA, content, logstash_json, LOGSTASH_SEPARATOR))
    assert general.startswith("rejected: ")
    assert _outcome(lambda: _encoded_from_parts(LAVA, content, logstash_json, LOGSTASH_SEPARATOR)) == general


def test_checking_log_lines_at_once_refuses_what_checking_their_documents_refuses():
    lines = parts_for(LAVA, real_bytes(MESON), WHEN)[1]
    for bad in ("2020-11-19 07:03:25", "2020-11-19T07:03:25.393Z\n2020-11-19T07:03:25.393Z", None):
        lines.timestamps[7] = bad
        with pytest.raises(RejectedInput) as from_parts:
            check_lines(lines)
        with pytest.raises(RejectedInput) as one_by_one:
            check_all(lines.documents())
        assert str(from_parts.value) == str(one_by_one.value)


USUAL_TIMESTAMPS = ["2020-11-19T07:03:%02d.%03dZ" % (n % 60, n) for n in range(300)]


@pytest.mark.parametrize("odd", [
    None, "2020-11-19T07:03:25.393+02:00", "2020-11-19T07:03:25Z", "2020-11-19T07:03:25.393174Z",
    "2020-11-19T07:03:25.393z", "2020-11-19 07:03:25.393Z", "2020-11-19T07:03:25.39XZ", "\u0662020-11-19T07:03:25.393Z",
    "2020-11-19T07:03:25.393Z\n", "", "x" * 24,
])
@pytest.mark.parametrize("where", [0, 150, 299])
def test_timestamps_checked_at_once_are_judged_as_the_full_check_judges_them(odd, where):
    # routing_fine compares the usual shape as bytes first; whatever that says, the answer is
    # the one the timestamp expression gives.
    timestamps = list(USUAL_TIMESTAMPS)
    timestamps[where] = odd
    ids = IdPrefix("log", "a/b", 1).numbered(len(timestamps))
    full = all(type(stamp) is str and TIMESTAMP.match(stamp) is not None and "\n" not in stamp
               for stamp in timestamps)
    assert routing_fine(timestamps, ids) is full
    assert routing_fine(USUAL_TIMESTAMPS, ids) is True


# -- YAML text scalars ------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "a: &x text\nb: *x\nc: !!str 12\nd: '12'\ne: 12\nf: [*x, *x]\n",
    "- &m {k: v, n: 1}\n- <<: *m\n  k: w\n- !!str\n- ''\n- ~\n",
    "lava:\n- {name: job, result: pass, measurement: !!python/object/apply:decimal.Decimal ['4.27']}\n",
    "[" * 3 + "x" + "]" * 3,
    "a: 1\na: 2\n? [k]\n: v\n",
    "{a: 1, !!str 2: b, 3: c, '': d, ~: e, a: last}\n",
    "base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n  =: value\n",
    "- " + "\n- ".join("k%d: v" % n for n in range(40)) + "\n",  # enough indicators for the guarded composer
])
def test_yaml_text_scalars_load_as_the_general_constructor_loads_them(text, monkeypatch):
    shortcut = repr(_outcome(lambda: yamlsafe.load(text, "results")))
    general = yaml.constructor.SafeConstructor
    monkeypatch.setattr(yamlsafe.LavaSafeLoader, "construct_object", general.construct_object)
    monkeypatch.setattr(yamlsafe.LavaSafeLoader, "construct_mapping", general.construct_mapping)
    assert shortcut == repr(_outcome(lambda: yamlsafe.load(text, "results")))


# -- log lines --------------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "x"}',
    '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "x"}   ',
    '- {"msg": "x"} # a comment',
    '- {"msg": "x"}, {"msg": "y"}',
    '- {"msg": "x"}}',
    '-  {"msg": "x"}',
    '- {"msg": 1.5e3}',
    '- {"msg": 1.5e+3}',
    '- {"msg": NaN}',
    '- {"msg": "x", "msg": "y"}',
    '- {"msg": !!python/object/apply:decimal.Decimal ["2"]}',
    '- {"msg": "x\\ty"}',
    '- {"a": [[[[{"b": []}]]]]}',
    '- {msg: x}',
])
def test_a_log_line_read_at_once_equals_the_yaml_reading(line):
    text = '- {"msg": "first"}\n' + line + "\n"
    assert repr(_outcome(lambda: parse_log(text))) == repr(_outcome(lambda: yamlsafe.load(text, "log") or []))
