"""Hostile but well-formed upstream input costs the object that carries it, never the run, the
machine or a secret: YAML that refers to itself or expands without bound, storage redirects and
artifact URLs that lead off the upstream origins, signed URLs in errors, credentials in host
settings, and a local_settings.py that fails to load.

The feed tests run the real `kcing` program against the legacy replica or the KernelCI API
replica and the Logstash emulators, as cron would.
"""
from __future__ import annotations

import json
import re
import resource
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from kcing import documents as documents_module, urls
from kcing.documents import documents_for, yamlsafe
from kcing.errors import RejectedInput
from kcing.http import RetryPolicy, new_session
from kcing.ledger.ledger import Ledger
from kcing.pipeline import FeedOptions, feed
from kcing.records import LAVA, UpstreamObject
from kcing.sources import legacy as legacy_source
from kcing.sources.requester import Requester
from tests.fakes.api_data import checkout_tree, object_id
from tests.fakes.api_replica import ApiReplica
from tests.fakes.logstash_emulator import LogstashEmulator
from tests.fakes.rogue_http import RogueFront, answer
from tests.faults.world import CatalogObject, World, sample_objects
from tests.feedrun import REPO, SAMPLES, api_feed_environ, clean_environ, kcing, ledger_rows
from tests.fakes.list_sink import ListSink

pytestmark = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")

REAL_LEGACY = REPO.parent / "shared" / "data" / "upstream" / "legacy"
SELF_REFERENCING_LINE = "- {msg: &x [*x]}"
SIGNATURE = "sLmFlvZHXRrZsSGubsDUIvTiv2BtzgDq6vALfkrtWnv8"


def nested_through_aliases(lines: int, levels: int = 98) -> str:
    """`lines` log lines whose messages nest `levels` lists, each around an alias of the one
    before: within the depth limit as written, its last message nests lines * levels deep."""
    messages = ["&m0 " + "[" * levels + "x" + "]" * levels]
    messages += ["&m%d %s*m%d%s" % (line, "[" * levels, line - 1, "]" * levels) for line in range(1, lines)]
    return "".join('- {"lvl": "debug", "msg": %s}\n' % message for message in messages)


def tag_directives(count: int, line_break: str = "\n") -> str:
    """A results suite's YAML text: a list of one text after `count` %TAG directives."""
    return ("".join("%%TAG !t%d! tag:yaml.org,2002:%s" % (number, line_break) for number in range(count))
            + "--- [!t0!str 1]" + line_break)


def scalar_alias_bomb(size: int = 512 << 10, aliases: int = 12_000) -> str:
    """One anchored string of `size` characters, then `aliases` log lines that name it."""
    return '- {msg: &blob "%s"}\n' % ("A" * size) + "- {msg: *blob}\n" * aliases


def lava_with_log_lines(content: bytes, extra: str) -> bytes:
    callback = json.loads(content)
    callback["log"] = callback["log"].rstrip("\n") + "\n" + extra
    return json.dumps(callback).encode()


# The YAML loader ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    SELF_REFERENCING_LINE, "&a {b: *a}", "&a [1, [2, [3, *a]]]", "&m {x: 1, <<: *m}", "a: &a {b: [c, *a]}",
], ids=["log line", "mapping", "nested", "merge key", "inside a mapping"])
def test_a_self_referencing_alias_is_refused_explicitly(text):
    with pytest.raises(RejectedInput, match=r"log refused: YAML alias \*[a-z]+ is inside the structure it names"):
        yamlsafe.load(text, "log")


def test_a_lava_file_with_a_self_referencing_log_line_is_rejected_not_a_crash():
    lava = next((SAMPLES / "lava").glob("*.json"))
    with pytest.raises(RejectedInput, match="inside the structure it names"):
        documents_for(LAVA, lava_with_log_lines(lava.read_bytes(), SELF_REFERENCING_LINE))


@pytest.mark.parametrize("text, line", [
    (nested_through_aliases(2), 2),
    (nested_through_aliases(40), 2),
    ("a: &x [[1]]\nb: " + "[" * 98 + "*x" + "]" * 98, 2),  # the mapping, 98 lists, and 2 more through *x
    ("- &x " + "[" * 99 + "]" * 99 + "\n- [*x]", 2),
    # The mapping, 2 lists and a mapping that the 98 levels of *x's mapping are merged into.
    ("a: &x " + "{k: " * 98 + "v" + "}" * 98 + "\nb: [[{<<: [*x]}]]", 2),
], ids=["two log lines", "forty log lines", "one level too deep", "a list deeper", "merged from a list"])
def test_an_alias_nesting_its_value_beyond_the_depth_limit_is_refused_for_its_depth(text, line):
    """An alias holds what it names at its place: a value as deep as the alias plus what it names.
    Each alias naming the one before, a few lines nested a log message thousands of levels deep,
    which the log document code walked until RecursionError."""
    with pytest.raises(RejectedInput, match=r"log refused: nests deeper than 100 levels through YAML alias \*[a-z0-9]+ "
                                            r"\(line %d\)" % line):
        yamlsafe.load(text, "log")


@pytest.mark.parametrize("text", [
    nested_through_aliases(1),
    "a: &x [[1]]\nb: " + "[" * 97 + "*x" + "]" * 97,
    "- &x " + "[" * 99 + "]" * 99 + "\n- *x",
    "- &x " + "[" * 99 + "]" * 99 + "\n- " + "[" * 99 + "]" * 99
    + "\n- {a: &s text, b: " + "[" * 98 + "*s" + "]" * 98 + "}",
    # A merge key's mapping gives its pairs to the mapping that has the key: no level more.
    "- &x " + "{k: " * 99 + "v" + "}" * 99 + "\n- {<<: *x}\n- {<<: [*x, {}]}",
    "a0: &a0 {k0: 0}\n" + "".join("a%d: &a%d {<<: *a%d, k%d: %d}\n" % (n, n, n - 1, n, n) for n in range(1, 150)),
], ids=["a log line", "a list of lists", "an alias of a list", "an alias of text", "merged", "a chain of merges"])
def test_aliases_reaching_exactly_the_depth_limit_still_load(text):
    assert yamlsafe.load(text, "log") == yaml.safe_load(text)


def test_many_tag_directives_are_refused_before_libyaml_reads_them_in_time_quadratic_in_them():
    """libyaml compares each %TAG directive with every one before it: 200,000 of them (7 MB)
    took two minutes to parse, and a 100 MB file would take hours."""
    started = time.process_time()
    with pytest.raises(RejectedInput, match="results refused: more than 64 %TAG directives"):
        yamlsafe.load(tag_directives(200_000), "results")
    assert time.process_time() - started < 2
    assert yamlsafe.load(tag_directives(64), "results") == ["1"]


@pytest.mark.parametrize("line_break", ["\r", "\r\n", "\x85", "\u2028", "\u2029"],
                         ids=["CR", "CRLF", "NEL", "LS", "PS"])
@pytest.mark.parametrize("byte_order_mark", ["", "\ufeff"], ids=["", "BOM"])
def test_tag_directives_are_counted_after_every_line_break_of_yaml(line_break, byte_order_mark):
    with pytest.raises(RejectedInput, match="more than 64 %TAG directives"):
        yamlsafe.load(byte_order_mark + tag_directives(65, line_break), "results")
    assert yamlsafe.load(byte_order_mark + tag_directives(64, line_break), "results") == ["1"]


@pytest.mark.parametrize("text", ['"%s"' % ("\n%TAG in a text" * 100), "a\n" + "%TAG in a text\n" * 100],
                         ids=["quoted", "plain"])
def test_lines_of_a_text_that_begin_with_percent_tag_are_no_directives(text):
    assert yamlsafe.load(text, "results") == yaml.safe_load(text)


def test_only_tag_directives_count_and_64_of_them_load():
    """64 %TAG directives beside a %YAML one, before a text with a line that begins with %TAG:
    65 lines begin with %TAG and 65 are directives, but 64 of them are %TAG ones."""
    text = "%YAML 1.1\n" + tag_directives(64).replace("--- [!t0!str 1]", '--- [!t0!str 1, "a\n%TAG b"]')
    assert yamlsafe.load(text, "results") == ["1", "a %TAG b"]


def test_an_alias_bomb_through_one_scalar_is_refused_fast_and_small():
    text = scalar_alias_bomb()
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(RejectedInput, match=r"log refused: expands \(YAML aliases\) beyond"):
            yamlsafe.load(text, "log")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.process_time() - started < 5
    assert peak < 32 << 20, "loading took %d MB" % (peak >> 20)


@pytest.mark.parametrize("text, expected", [
    # A big string named a few times stays within the character allowance (8 MiB beyond the text).
    ('- &blob "%s"\n' % ("B" * (1 << 20)) + "- *blob\n" * 7, 8),
    # Real definitions share mappings through anchors and merge keys.
    ("a: &a {x: 1}\nb: *a\nc: {<<: *a, y: 2}\n", 3),
])
def test_aliases_within_the_limits_still_load(text, expected):
    assert len(yamlsafe.load(text, "definition")) == expected


def test_the_expansion_limit_counts_every_alias_of_a_string():
    """Just past the character allowance: refused, though the file itself is small."""
    size = 1 << 20
    text = '- &blob "%s"\n' % ("B" * size) + "- *blob\n" * ((yamlsafe.EXPANSION_CHARACTERS_ALLOWANCE // size) + 2)
    assert len(text) < 2 * size
    with pytest.raises(RejectedInput, match="expands"):
        yamlsafe.load(text, "log")


def real_yaml_texts() -> list:
    """Every YAML text of the real LAVA callbacks: definitions, result suites, logs and log lines."""
    texts = []
    for path in sorted((SAMPLES / "lava").glob("*.json")) + sorted(REAL_LEGACY.glob("lava-json-*.json")):
        callback = json.loads(path.read_bytes())
        found = [callback.get("definition"), callback.get("log")] + list((callback.get("results") or {}).values())
        texts += [text for text in found if isinstance(text, str)]
        texts += (callback.get("log") or "").split("\n")[:300]
    return texts


def test_the_composer_reads_real_files_as_libyaml_does(monkeypatch):
    """kcing's own composer (which enforces the limits) against libyaml's, on real YAML."""
    class Plain(yaml.CSafeLoader):
        pass
    Plain.add_multi_constructor("tag:yaml.org,2002:python/", yamlsafe._construct_python_tag)
    monkeypatch.setattr(yamlsafe, "_cannot_be_hostile", lambda text: False)  # never take the shortcut
    texts = real_yaml_texts()
    assert len(texts) > 300
    for text in texts:
        assert yamlsafe.load(text, "log") == yaml.load(text, Plain), text[:200]


@pytest.mark.parametrize("text", ["- " * 99 + "x", "[" * 99 + "]" * 99, "a:\n" + "".join(
    "%s- k%d:\n" % ("  " * (2 * level + 1), level) for level in range(48)) + "  " * 98 + "- x\n"])
def test_the_shortcut_for_small_texts_never_skips_the_depth_limit(text):
    """Texts that take libyaml's composer nest less than MAX_DEPTH; one level more is refused."""
    assert yamlsafe._cannot_be_hostile(text)
    yamlsafe.load(text, "log")
    with pytest.raises(RejectedInput, match="nests deeper"):
        yamlsafe.load("[" * 101 + "]" * 101, "log")


def construction_seconds(text: str) -> float:
    """CPU seconds the loader takes to make the values of `text`'s nodes, once composed."""
    loader = yamlsafe.LavaSafeLoader(text)
    try:
        node = loader.get_single_node()
        started = time.process_time()
        loader.construct_document(node)
        return time.process_time() - started
    finally:
        loader.dispose()


def test_many_merge_keys_are_merged_in_time_linear_in_them():
    """SafeConstructor deleted each `<<` key from its mapping's list in place: 160,000 of them
    (1.3 MB) took about six times as long to make as as many plain keys, growing fourfold with
    each doubling. They now take no longer than plain keys, and merge as they did."""
    count = 160_000
    merges = "{" + ", ".join(["<<: {}"] * (count - 2) + ["<<: {a: 1, b: 2}", "<<: [{b: 3}, {c: 4}]"]) + ", a: 0}"
    plain = "{" + ", ".join("k%d: 1" % number for number in range(count)) + "}"
    assert list(yamlsafe.load(merges, "x").items()) == [("a", 0), ("b", 3), ("c", 4)]
    assert construction_seconds(merges) < 2.5 * construction_seconds(plain) + 0.05


@pytest.mark.parametrize("text", [
    "{<<: [{a: 1, b: 1}, {a: 2, c: 2}], c: 3}",
    "top: {<<: [&m {<<: {x: 1}, y: 2}, {z: 3}], w: 4}\nagain: *m\n",
    "top: {<<: [{<<: [{x: 1}, {x: 2, y: 2}]}, {<<: {y: 3, z: 3}}]}\n",
], ids=["the first mapping of a list wins", "a listed mapping with a merge key", "lists in listed mappings"])
def test_a_merge_key_naming_a_list_of_mappings_merges_as_pyyaml_does(text):
    """The mappings of a list a merge key names: the first one's value of a key wins over the
    later ones', and a listed mapping that merges others brings in their pairs too."""
    assert yamlsafe.load(text, "x") == yaml.load(text, Loader=yaml.SafeLoader)


def merges_flattened_last_first(links: int, levels: int) -> str:
    """A YAML list of `links` anchored mappings, each merging the one before through `levels`
    mappings nested in merge keys, and each nested a level less deep than the one before: the
    constructor makes the values of a level after those of the level above, and so flattens the
    last mapping first, through every one before it at once."""
    lines = []
    for link in range(links):
        merged = "{k: v}" if link == 0 else "{<<: " * levels + "*a%d" % (link - 1) + "}" * levels
        lines.append("- " + "[" * (links - link) + "&a%d %s" % (link, merged) + "]" * (links - link))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("links, levels", [(30, 30), (45, 50)])
def test_a_chain_of_merges_flattened_from_its_end_loads_without_recursion(links, levels):
    """Flattening each merged mapping inside the one that merges it took two frames a mapping:
    900 of them (6 KB) were refused as 'not valid YAML: RecursionError', which PyYAML loads."""
    text = merges_flattened_last_first(links, levels)
    loaded = yamlsafe.load(text, "definition")
    assert isinstance(loaded, list) and len(loaded) == links
    innermost = []
    for number, item in enumerate(loaded):
        for _ in range(links - number):
            (item,) = item
        innermost.append(item)
    assert innermost == [{"k": "v"}] * links
    if links * levels < 1000:
        assert loaded == yaml.safe_load(text)


def test_a_definition_with_a_chain_of_merges_is_read():
    lava = next((SAMPLES / "lava").glob("*.json"))
    callback = json.loads(lava.read_bytes())
    chain = merges_flattened_last_first(30, 30).replace("\n", "\n  ")
    callback["definition"] = callback["definition"].rstrip("\n") + "\ncontext:\n  " + chain
    documents = documents_for(LAVA, json.dumps(callback).encode())
    assert [document.kind for document in documents].count("boot") == 1


def test_a_long_base_60_integer_is_refused_as_a_long_decimal_one_is_without_reading_it():
    """SafeConstructor reads `1:0:0...` place by place, each step a multiplication as long as
    the number: 400,000 places (800 kB) took seven seconds, quadratic in them. Beyond the digits
    Python reads a decimal integer of, it is refused at once, as a decimal one is; it costs less
    than the same places written as a list of integers, and a short one still reads."""
    places = 400_000
    sexagesimal = "a: 1" + ":0" * places
    as_a_list = "a: [1" + ", 0" * places + "]"
    started = time.process_time()
    with pytest.raises(RejectedInput, match="a base 60 integer of 800001 characters, more than the 4300 digits"):
        yamlsafe.load(sexagesimal, "definition")
    refusing = time.process_time() - started
    started = time.process_time()
    assert len(yamlsafe.load(as_a_list, "definition")["a"]) == places + 1
    assert refusing < time.process_time() - started
    with pytest.raises(RejectedInput, match="Exceeds the limit"):
        yamlsafe.load("a: 1" + "0" * 4300, "definition")
    assert yamlsafe.load("a: 1:30:00\nb: -1" + ":0" * 2000, "definition") == {"a": 5400, "b": -(60 ** 2000)}


@pytest.mark.parametrize("written", ["0x" + "f" * 3600, "-0x" + "f" * 3600, "0b" + "1" * 14300, "0" + "7" * 4800],
                         ids=["hexadecimal", "negative", "binary", "octal"])
def test_an_integer_in_another_base_too_long_to_write_in_decimal_is_refused_for_that(written):
    # Read in linear time at any length, but its document needs it in decimal, which Python
    # writes to 4300 digits: the file was refused with the writer's ValueError, not a reason.
    with pytest.raises(RejectedInput, match=r"an integer \(%s\.\.\.\) of more than the 4300 decimal digits"
                                            % re.escape(written[:12])):
        yamlsafe.load("a: %s\n" % written, "results")
    short = written[:-3000] if written.startswith(("0x", "-0x")) else written[:-1000]
    assert len(str(yamlsafe.load("a: %s\n" % short, "results")["a"])) <= 4300
    assert len(str(yamlsafe.load("a: " + "9" * 4300, "results")["a"])) == 4300


HASH_MODULUS = (1 << 61) - 1  # Python hashes an integer as its value modulo this


def test_integer_keys_of_one_hash_value_are_refused_before_a_mapping_is_made_of_them():
    """Keys 0, 2**61 - 1, 2 * (2**61 - 1), ... all hash alike, and a mapping of 32,000 of them
    (1 MB) took seven seconds to make, quadratic in them, where as many other integer keys took
    a tenth of a second. The text is refused after a few, in a mapping or spread over many."""
    count = 32_000
    flood = "{" + ", ".join("%d: 0" % (number * HASH_MODULUS) for number in range(count)) + "}"
    spread = "\n".join("- {%d: 0}" % (number * HASH_MODULUS) for number in range(count))
    usual = "{" + ", ".join("%d: 0" % (number * 1_000_003) for number in range(count)) + "}"
    started = time.process_time()
    with pytest.raises(RejectedInput, match="more than 64 mapping keys share one hash value"):
        yamlsafe.load(flood, "definition")
    refusing = time.process_time() - started
    started = time.process_time()
    assert len(yamlsafe.load(usual, "definition")) == count
    assert refusing < 2 * (time.process_time() - started)
    with pytest.raises(RejectedInput, match=r"more than 64 mapping keys share one hash value \(line 65\)"):
        yamlsafe.load(spread, "definition")
    few = "{" + ", ".join("%d: %d" % (number * HASH_MODULUS, number) for number in range(64)) + ", 0: x, -1: y, -2: z}"
    assert yamlsafe.load(few, "definition") == {**{number * HASH_MODULUS: number for number in range(1, 64)},
                                                0: "x", -1: "y", -2: "z"}


# The legacy front page ----------------------------------------------------------------------------

@pytest.mark.parametrize("page, token", [
    ('<meta name="csrf-token" content="1700000000##abc">\n<title>Kernel CI Dashboard</title>', "1700000000##abc"),
    ('<meta name="csrf-token"\n      content="t##1">', "t##1"),
    ('<meta name="csrf-token" content=""><meta name="x" content="later">', "later"),
    ('<meta content="before" name="csrf-token">', None),
    ("<html>no token</html>", None),
])
def test_the_csrf_token_is_read_as_the_original_tool_read_it(page, token):
    assert legacy_source.csrf_token(page) == token


def test_a_front_page_naming_the_token_often_without_one_is_read_in_linear_time():
    """Before, the pattern was tried again from each "csrf-token" to the end of the page: a
    front page of a quarter megabyte took ten seconds, every run, before listing anything."""
    page = '<meta name="csrf-token" x>' * 40_000  # 1 MB
    started = time.process_time()
    assert legacy_source.csrf_token(page) is None
    assert time.process_time() - started < 1


# Any exception while making one object's documents -----------------------------------------------

class TwoLavaFiles:
    name = "samples"

    def __init__(self, content: bytes):
        self.content = content
        self.objects = [UpstreamObject("samples", LAVA, "lava-%d" % number, "lava-%d.json" % number)
                        for number in (1, 2)]

    def list_objects(self):
        yield from self.objects

    def fetch(self, obj):
        return self.content


def test_an_unexpected_exception_rejects_only_its_object_with_the_class_named(monkeypatch):
    """A bug no check foresaw, met by one file: that file is rejected, the other delivered."""
    lava = next((SAMPLES / "lava").glob("*.json")).read_bytes()
    real = documents_module.parts_for  # what document building calls
    calls = []

    def documents_with_a_bug(kind, content, created, *rest):
        calls.append(kind)
        if len(calls) == 1:
            raise ZeroDivisionError("division by zero")
        return real(kind, content, created, *rest)

    monkeypatch.setattr(documents_module, "parts_for", documents_with_a_bug)
    ledger = Ledger.open(":memory:")
    sink = ListSink()
    summary = feed(TwoLavaFiles(lava), ledger, sink, FeedOptions(threads=1))
    assert (summary.delivered, summary.rejected, summary.exit_code) == (1, 1, 1)
    (problem,) = summary.problems
    assert problem.startswith("lava lava-1: documents could not be made: ZeroDivisionError"), problem
    first, second = ledger.row("samples", LAVA, "lava-1"), ledger.row("samples", LAVA, "lava-2")
    assert first.state == "rejected" and "ZeroDivisionError" in first.last_error
    assert second.state == "delivered"
    assert sum(len(batch) for batch in sink.batches) == len(documents_module.documents_for(LAVA, lava, None))


class FetchWithABug(TwoLavaFiles):
    def fetch(self, obj):
        if obj is self.objects[0]:
            return {}["no such key"]
        return self.content


def test_an_unexpected_exception_while_fetching_rejects_only_its_object():
    lava = next((SAMPLES / "lava").glob("*.json")).read_bytes()
    ledger = Ledger.open(":memory:")
    summary = feed(FetchWithABug(lava), ledger, ListSink(), FeedOptions(threads=1))
    assert (summary.delivered, summary.rejected, summary.exit_code) == (1, 1, 1)
    assert "could not be fetched: KeyError" in ledger.row("samples", LAVA, "lava-1").last_error


# The real feed against poisoned files -------------------------------------------------------------

def poisoned_world(tmp_path, extra_log: str):
    world = World(tmp_path)
    target = next(obj for obj in world.catalog.values() if obj.kind == "lava")
    world.set_file(target.path, lava_with_log_lines(world.content(target), extra_log))
    return world, target


def assert_only_target_rejected(world, result, target, reason):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.error_line is None, result.stderr
    assert set(result.problems) == {target.key}, result.stdout
    assert reason in result.problems[target.key]
    rows = world.ledger_rows()
    assert rows[target.key]["state"] == "rejected" and reason in rows[target.key]["last_error"]
    assert {row["state"] for key, row in rows.items() if key != target.key} == {"delivered"}
    assert world.stored() == world.expected() and world.stored()


def test_a_self_referencing_log_line_costs_its_file_only_run_after_run(tmp_path):
    world, target = poisoned_world(tmp_path, SELF_REFERENCING_LINE)
    with world:
        for _ in range(2):  # the next run meets the same file: still no crash, the rest stays delivered
            result = world.run(world.environ())
            assert_only_target_rejected(world, result, target, "inside the structure it names")


def test_log_messages_nested_too_deep_through_aliases_cost_their_file_only_with_the_reason(tmp_path):
    world, target = poisoned_world(tmp_path, nested_through_aliases(12))
    with world:
        result = world.run(world.environ())
        assert "RecursionError" not in result.stdout + result.stderr
        assert_only_target_rejected(world, result, target,
                                    "log refused: nests deeper than 100 levels through YAML alias")


def test_a_results_suite_of_many_tag_directives_costs_its_file_only_and_no_more_time(tmp_path):
    world = World(tmp_path)
    target = next(obj for obj in world.catalog.values() if obj.kind == "lava")
    callback = json.loads(world.content(target))
    callback["results"]["0_dmesg"] = tag_directives(200_000)
    world.set_file(target.path, json.dumps(callback).encode())
    with world:
        started = time.monotonic()
        result = world.run(world.environ(), timeout=300)
        assert time.monotonic() - started < 60  # the directives alone took two minutes
        assert_only_target_rejected(world, result, target, "results['0_dmesg'] refused: more than 64 %TAG directives")


def test_a_scalar_alias_bomb_is_rejected_within_bounded_memory(tmp_path):
    world, target = poisoned_world(tmp_path, scalar_alias_bomb())
    limit = 1536 << 20  # the bomb expands to about 6 GB: without the bound the run dies here

    def bounded():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with world:
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es"], env=world.environ(),
                                cwd=str(tmp_path), capture_output=True, text=True, timeout=300, preexec_fn=bounded)
        assert time.monotonic() - started < 120
        result.problems = {}
        for line in result.stdout.splitlines():
            if line.startswith("  problem: "):
                kind, rest = line[len("  problem: "):].split(" ", 1)
                upstream_id, _, reason = rest.partition(": ")
                result.problems[(kind, upstream_id)] = reason
        result.error_line = next((line for line in result.stderr.splitlines() if line.startswith("kcing feed_es:")),
                                 None)
        assert_only_target_rejected(world, result, target, "expands (YAML aliases) beyond")


def test_a_listing_item_with_a_name_of_megabytes_is_rejected_with_a_reason_of_one_short_line(tmp_path):
    """The reason quotes the start of the name only: it goes on a log line, the summary and the ledger."""
    objects = list(sample_objects())
    lava, content = next((obj, content) for obj, content in objects if obj.kind == "lava")
    board = "b" * (1 << 20) + " and more"  # a space: no storage path segment
    listing = dict(lava.listing, _id={"$oid": "0" * 23 + "1"}, board=board)
    hostile = CatalogObject(lava.kind, "0" * 23 + "1", lava.path + ".unused", lava.created, listing)
    world = World(tmp_path, objects=objects + [(hostile, content)])
    with world:
        result = world.run(world.environ())
    assert result.returncode == 1, result.stderr
    assert set(result.problems) == {hostile.key}
    reason = result.problems[hostile.key]
    assert reason.startswith("unsafe storage path segment 'lava-json-bbbb") and len(reason) < 200, reason[:300]
    assert max(map(len, (result.stdout + result.stderr).splitlines())) < 1000
    rows = world.ledger_rows()
    assert rows[hostile.key]["state"] == "rejected" and rows[hostile.key]["last_error"] == reason
    assert {row["state"] for key, row in rows.items() if key != hostile.key} == {"delivered"}


# Storage redirects off the upstream origins -------------------------------------------------------

@pytest.fixture
def canary():
    """A server that must never be asked anything: redirects and artifact URLs point at it."""
    with LogstashEmulator(name="canary") as server:
        yield server


def off_origin_locations(world, canary, target) -> dict:
    storage_port = urlsplit(world.replica.storage_url).port
    return {
        "another port": "%s/%s" % (canary.url, target.path),
        "another host name for the same server": "http://localhost:%d/%s" % (storage_port, target.path),
        "a file: URL": "file:///etc/passwd",
        "https on the same host": "https://127.0.0.1:%d/%s" % (storage_port, target.path),
    }


def assert_only_rejected(world, result, target, reason: str) -> None:
    """The run went on past `target`, rejected for `reason`, and ended with exit 1 and no error."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.error_line is None, result.stderr
    assert set(result.problems) == {target.key}, result.stdout
    assert reason in result.problems[target.key]
    assert world.ledger_rows()[target.key]["state"] == "rejected"


@pytest.mark.parametrize("where", ["another port", "another host name for the same server", "a file: URL",
                                   "https on the same host"])
def test_a_storage_redirect_off_the_upstream_origins_is_rejected_and_never_followed(tmp_path, canary, where):
    with World(tmp_path) as world:
        target = next(obj for obj in world.catalog.values() if obj.kind == "build")
        world.replica.storage.redirect(target.path, off_origin_locations(world, canary, target)[where], count=None)
        result = world.run(world.environ())
        assert_only_rejected(world, result, target, "not an upstream origin")
        asked = [request for request in world.replica.storage.requests if request.path == "/" + target.path]
        assert len(asked) == 1, "retried, as if the refusal could pass"
        assert not canary.requests
        held = set(world.stored())
        assert not set(world.documents_of(target)) & held
        assert held == set(world.expected()) - set(world.documents_of(target))


def test_a_storage_redirect_within_the_origin_is_followed(tmp_path):
    with World(tmp_path) as world:
        target = next(obj for obj in world.catalog.values() if obj.kind == "build")
        world.replica.storage.redirect(target.path, "/" + target.path, status=301)  # once, then served
        result = world.run(world.environ())
        assert result.returncode == 0, result.stderr
        assert world.stored() == world.expected()


def test_a_storage_redirect_to_a_url_parsers_read_differently_is_rejected_and_never_followed(tmp_path, canary):
    """`http://<canary>\\@<storage>/...`: urllib.parse reads the storage host after the "@", the
    HTTP client ends the host at the backslash and would ask the canary."""
    with World(tmp_path) as world:
        target = next(obj for obj in world.catalog.values() if obj.kind == "build")
        location = "http://%s\\@%s/%s" % (urlsplit(canary.url).netloc, urlsplit(world.replica.storage_url).netloc,
                                           target.path)
        world.replica.storage.redirect(target.path, location, count=None)
        result = world.run(world.environ())
        assert_only_rejected(world, result, target, "redirected: an ambiguous URL (a backslash in its host part)")
        assert not canary.requests
        assert set(world.stored()) == set(world.expected()) - set(world.documents_of(target))


# KernelCI API artifacts off the upstream origins --------------------------------------------------

@pytest.fixture
def api_replica():
    replica = ApiReplica()
    replica.start()
    replica.tree = checkout_tree(replica.corpus, replica.files_url, datetime.now(timezone.utc) - timedelta(days=1))
    yield replica
    replica.stop()


def watermark(db: Path):
    with sqlite3.connect(str(db)) as conn:
        row = conn.execute("SELECT position FROM watermark WHERE source = 'api'").fetchone()
    return datetime.fromisoformat(row[0]).replace(tzinfo=timezone.utc) if row else None


def newest_updated(replica) -> datetime:
    return max(datetime.fromisoformat(node["updated"]).replace(tzinfo=timezone.utc)
               for node in replica.corpus.nodes())


def point_artifact(replica, node: dict, name: str, url: str) -> None:
    replica.corpus.update(node["id"], when=datetime.fromisoformat(node["updated"]).replace(tzinfo=timezone.utc),
                          artifacts=dict(node["artifacts"], **{name: url}))


def test_api_artifacts_off_the_upstream_origins_are_never_fetched_nor_hold_the_watermark(
        tmp_path, api_replica, logstash, canary):
    db = tmp_path / "kcing.db"
    baseline, kbuild = api_replica.tree["baseline"], api_replica.tree["kbuild-x86"]
    point_artifact(api_replica, baseline, "callback_data", canary.url + "/lava_callback.json.gz?sv=1&sig=" + SIGNATURE)
    point_artifact(api_replica, kbuild, "build_log", "file:///etc/passwd")
    result = kcing(["feed_es", "--with-logs"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not canary.requests
    rows = {row["upstream_id"].split(".")[0]: row for row in ledger_rows(db)}
    for node, artifact in ((baseline, "callback_data"), (kbuild, "build_log")):
        assert rows[node["id"]]["state"] == "rejected"
        assert rows[node["id"]]["last_error"].startswith(artifact + ": GET refused")
        assert "not an upstream origin" in rows[node["id"]]["last_error"]
    assert {row["state"] for node_id, row in rows.items() if node_id not in (baseline["id"], kbuild["id"])} \
        == {"delivered"}
    assert SIGNATURE not in result.stdout + result.stderr
    # A refused version is settled: the next run does not list everything since it for ever.
    assert watermark(db) == newest_updated(api_replica)


@pytest.mark.parametrize("between, reason", [
    ("\\", "a backslash in its host part"),
    ("\t", "a control character"),
    (" ", "whitespace in its host part"),
], ids=["backslash", "tab", "space"])
def test_an_api_artifact_url_parsers_read_differently_is_refused_and_its_host_never_asked(
        tmp_path, api_replica, logstash, canary, between, reason):
    """`http://<canary><between>@<storage>/...`: urllib.parse, which the allow-list was judged
    with, reads the storage host after the "@"; the HTTP client ends the host part at a backslash
    (or keeps what Python's parser drops) and connects to the canary."""
    db = tmp_path / "kcing.db"
    kbuild = api_replica.tree["kbuild-x86"]
    storage = urlsplit(kbuild["artifacts"]["build_log"])
    url = "http://%s%s@%s%s" % (urlsplit(canary.url).netloc, between, storage.netloc, storage.path)
    point_artifact(api_replica, kbuild, "build_log", url)
    result = kcing(["feed_es", "--with-logs"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "kcing feed_es:" not in result.stderr, result.stderr
    assert not canary.requests
    rows = {row["upstream_id"].split(".")[0]: row for row in ledger_rows(db)}
    assert rows[kbuild["id"]]["state"] == "rejected"
    assert rows[kbuild["id"]]["last_error"] == "build_log: GET refused: an ambiguous URL (%s), never fetched" % reason
    assert {row["state"] for node_id, row in rows.items() if node_id != kbuild["id"]} == {"delivered"}


def test_each_request_is_judged_as_it_is_sent_the_first_and_every_redirect(api_replica, canary):
    """The last check sits where requests hands a request over to be sent, on its URL as
    requests prepared it: asked of the session itself, past the Requester's first look, an
    ambiguous URL still reaches nothing off the origins, and nor does a redirect."""
    requester = Requester(new_session(), RetryPolicy(attempts=1), 5,
                          allowed_origins=urls.origins([api_replica.files_url]))
    canary_host = urlsplit(canary.url).netloc
    storage = urlsplit(api_replica.files_url)
    path = urlsplit(api_replica.tree["kbuild-x86"]["artifacts"]["build_log"]).path
    with pytest.raises(RejectedInput, match=r"GET refused: http://%s is not an upstream origin" % canary_host):
        requester.session.get("http://%s\\@%s%s" % (canary_host, storage.netloc, path), timeout=5)
    # Without the hook that refuses a redirect with a clearer message, the request made to follow
    # it is refused all the same.
    requester.session.hooks["response"].clear()
    api_replica.redirect(path, "%s/elsewhere" % canary.url)
    with pytest.raises(RejectedInput, match=r"GET refused: http://%s is not an upstream origin" % canary_host):
        requester.session.get(api_replica.files_url + path[len(storage.path):], timeout=5)
    assert not canary.requests
    assert requester.session.get(api_replica.files_url + path[len(storage.path):], timeout=5).status_code == 200


def test_an_artifact_url_no_parser_reads_is_refused_with_the_reason_never_sent(api_replica):
    requester = Requester(new_session(), RetryPolicy(attempts=1), 5,
                          allowed_origins=urls.origins([api_replica.files_url]))
    with pytest.raises(RejectedInput, match=r"GET refused: not a URL \(Invalid IPv6 URL\)"):
        requester.get("http://[::1/lava_callback.json.gz")
    assert not api_replica.requests


def test_a_storage_url_setting_with_a_bad_port_stops_the_run_before_any_node_is_settled(
        tmp_path, api_replica, logstash):
    """`KCI_API_STORAGE_URL=http://host:99999` used to be taken, its nodes refused as another origin
    and settled, the watermark moved past them: never delivered once the typo was fixed."""
    db = tmp_path / "kcing.db"
    storage = urlsplit(api_replica.files_url)
    for node in api_replica.corpus.nodes():  # relative artifact paths: KCI_API_STORAGE_URL makes them URLs
        artifacts = node.get("artifacts")
        if isinstance(artifacts, dict):
            relative = {name: url[len(api_replica.files_url) + 1:] if url.startswith(api_replica.files_url) else url
                        for name, url in artifacts.items()}
            api_replica.corpus.update(node["id"], when=datetime.fromisoformat(node["updated"]).replace(
                tzinfo=timezone.utc), artifacts=relative)
    typo = "%s://%s:99999%s" % (storage.scheme, storage.hostname, storage.path)
    refused = kcing(["feed_es", "--with-logs"],
                    api_feed_environ(api_replica, logstash, db, KCI_DAYS="30", KCI_API_STORAGE_URL=typo), tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line == ("kcing feed_es: invalid KCI_API_STORAGE_URL=%r (from environment): the port must be a number "
                    "from 1 to 65535" % typo)
    assert not db.exists() and not logstash.store
    fixed = kcing(["feed_es", "--with-logs"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert {row["state"] for row in ledger_rows(db)} == {"delivered"}
    assert any(index.startswith("log-") for index, _ in logstash.store)


def test_a_node_whose_artifacts_are_not_a_mapping_is_delivered_without_logs(tmp_path, api_replica, logstash):
    db = tmp_path / "kcing.db"
    baseline = api_replica.tree["baseline"]
    api_replica.corpus.update(baseline["id"], when=datetime.fromisoformat(baseline["updated"]).replace(
        tzinfo=timezone.utc), artifacts=["callback_data", "lava_log"])
    result = kcing(["feed_es", "--with-logs"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {row["state"] for row in ledger_rows(db)} == {"delivered"}


def copied_node(replica, original: dict, seed: str, **changes) -> dict:
    """A new node like `original` (another id), with `changes` to its fields as they are."""
    return replica.corpus.add(dict(original, id=object_id(seed), **changes))


def test_node_times_beyond_the_calendar_cost_their_node_at_most(tmp_path, api_replica, logstash):
    """Offsets that move year 1 or 9999 out of Python's calendar, and a year no index is named
    after: the node whose `created` says so is dated by its id, the one whose `updated` says so
    is rejected, and the others are delivered, run after run."""
    db = tmp_path / "kcing.db"
    login = api_replica.tree["login"]
    dated_by_id = [copied_node(api_replica, login, "created-%d" % number, name="login-%d" % number, created=created)
                   for number, created in enumerate(("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00",
                                                     "9999-12-31T23:59:59.999999"))]
    undated = copied_node(api_replica, login, "updated", name="login-late", updated="9999-12-31T23:59:59-14:00")
    for _ in range(2):
        result = kcing(["feed_es"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
        rows = {row["upstream_id"].split(".")[0]: row for row in ledger_rows(db)}
        assert rows[undated["id"]]["state"] == "rejected"
        assert "listed node's updated time is no date: '9999-12-31T23:59:59-14:00'" in rows[undated["id"]]["last_error"]
        assert {row["state"] for node_id, row in rows.items() if node_id != undated["id"]} == {"delivered"}
    for node in dated_by_id:
        made = datetime.fromtimestamp(int(node["id"][:8], 16), tz=timezone.utc)
        (document,) = [document for document in logstash.store.values()
                       if document.get("kernelci_api", {}).get("node_id") == node["id"]]
        assert document["@timestamp"].startswith(made.strftime("%Y-%m-%dT%H:%M:%S"))


def test_an_api_artifact_redirected_off_the_origins_is_refused(tmp_path, api_replica, logstash, canary):
    db = tmp_path / "kcing.db"
    baseline = api_replica.tree["baseline"]
    api_replica.redirect(urlsplit(baseline["artifacts"]["callback_data"]).path, canary.url + "/callback.json.gz",
                         count=None)
    result = kcing(["feed_es", "--with-logs"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
    assert result.returncode == 1, result.stderr
    assert not canary.requests
    row = next(row for row in ledger_rows(db) if row["upstream_id"].startswith(baseline["id"]))
    assert row["state"] == "rejected" and "redirected" in row["last_error"]


def test_a_listing_redirected_off_the_origins_stops_the_run_with_one_line(tmp_path, api_replica, logstash, canary):
    db = tmp_path / "kcing.db"
    api_replica.redirect("/latest/nodes", canary.url + "/latest/nodes", count=None)
    result = kcing(["feed_es"], api_feed_environ(api_replica, logstash, db, KCI_DAYS="30"), tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("kcing feed_es:")]
    assert "redirected" in line and "not an upstream origin" in line
    assert not canary.requests and not logstash.store
    assert watermark(db) is None


def test_the_api_token_never_follows_a_redirect_to_another_origin(tmp_path, api_replica, logstash):
    """A listing redirected to another origin kcing may fetch from (an artifact host): the request
    there goes without the token, which only the API's own origin is sent."""
    api_replica.token = "s3cret-token-value"
    heard = []

    def heard_then_forwarded(front, sock, request) -> bool:
        heard.append({name.lower(): value for name, value in request.headers.items()})
        return front._forward(sock, request)

    with RogueFront(api_replica.api_url.rsplit("/latest", 1)[0]) as other:
        other.on("GET", "/", heard_then_forwarded, count=None)
        api_replica.redirect("/latest/nodes", other.url + "/latest/nodes", count=1)
        env = api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="30",
                               KCI_API_TOKEN="s3cret-token-value", KCI_ARTIFACT_ORIGINS=other.url)
        result = kcing(["feed_es"], env, tmp_path)
    assert heard and not [headers for headers in heard if "authorization" in headers]
    # Asked without its token, the API refuses: the run stops, as for any refused token.
    assert result.returncode == 2, result.stderr
    assert "s3cret-token-value" not in result.stdout + result.stderr


def test_an_api_page_nested_too_deeply_stops_the_run_in_one_line(tmp_path, api_replica, logstash):
    deep = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's JSON decoder recurses
    with RogueFront(api_replica.api_url.rsplit("/latest", 1)[0]) as front:
        front.on("GET", "/latest/nodes", answer(200, (("Content-Type", "application/json"),), deep), count=None)
        env = api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="30",
                               KCI_API_URL=front.url + "/latest")
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("kcing feed_es:")]
    assert "answered a malformed page" in line
    assert watermark(tmp_path / "kcing.db") is None


def test_kci_artifact_origins_allows_another_artifact_host(tmp_path, api_replica, logstash):
    """Artifacts on a second storage host are refused, then fetched once that host is allowed."""
    baseline = api_replica.tree["baseline"]
    path = urlsplit(baseline["artifacts"]["callback_data"]).path[len("/files/"):]
    with ApiReplica() as other_host:
        other_host.corpus.add_file(path, api_replica.corpus.read(path))
        point_artifact(api_replica, baseline, "callback_data", "%s/%s" % (other_host.files_url, path))
        refused = kcing(["feed_es", "--with-logs"],
                        api_feed_environ(api_replica, logstash, tmp_path / "refused.db", KCI_DAYS="30"), tmp_path)
        assert refused.returncode == 1 and "not an upstream origin" in refused.stdout
        assert not other_host.file_requests()
        allowed = kcing(["feed_es", "--with-logs"],
                        api_feed_environ(api_replica, logstash, tmp_path / "allowed.db", KCI_DAYS="30",
                                         KCI_ARTIFACT_ORIGINS=other_host.url), tmp_path)
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert [request.path for request in other_host.file_requests()] == ["/files/" + path]
    logs = [body for (index, _), body in logstash.store.items()
            if index.startswith("log-") and body["kernelci_api"]["node_id"] == baseline["id"]]
    assert logs


# Signed URLs never shown nor stored ---------------------------------------------------------------

def test_a_failing_signed_artifact_url_never_shows_its_signature(tmp_path, api_replica, logstash):
    db, log = tmp_path / "kcing.db", tmp_path / "feed.log"
    baseline = api_replica.tree["baseline"]
    url = baseline["artifacts"]["callback_data"] + "?sv=2022-11-02&se=2024-10-17T19%3A19%3A12Z&sig=" + SIGNATURE
    point_artifact(api_replica, baseline, "callback_data", url)
    api_replica.fail_next(urlsplit(url).path, 500, count=None)
    env = api_feed_environ(api_replica, logstash, db, KCI_DAYS="30", KCI_MAX_RETRIES="2")
    result = kcing(["feed_es", "--with-logs", "-d", "-l", str(log)], env, tmp_path)
    assert result.returncode == 1, result.stderr
    row = next(row for row in ledger_rows(db) if row["upstream_id"].startswith(baseline["id"]))
    assert row["state"] == "failed" and "sig=***" in row["last_error"], row["last_error"]
    status = kcing(["status", "--json", "--db", str(db)], env, tmp_path)
    assert status.returncode == 0
    shown = {"stdout": result.stdout, "stderr": result.stderr, "the -l log": log.read_text(),
             "status --json": status.stdout}
    assert "sig=***" in shown["status --json"]
    for where, text in shown.items():
        assert SIGNATURE not in text, where
    for path in tmp_path.iterdir():
        if path.name.startswith("kcing.db"):
            assert SIGNATURE.encode() not in path.read_bytes(), path.name


@pytest.mark.parametrize("text, expected", [
    ("GET https://x.file.core.windows.net/a/log.txt.gz?sv=2022-11-02&sp=r&sig=abc%2Bdef%3D failed",
     "GET https://x.file.core.windows.net/a/log.txt.gz?sv=2022-11-02&sp=r&sig=*** failed"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("'http://h/x?token=t0k&kind=job'", "'http://h/x?token=***&kind=job'"),
    ("fetch https://user:pw@host/x failed", "fetch https://***@host/x failed"),
    ("GET /latest/nodes?kind=job&offset=500", "GET /latest/nodes?kind=job&offset=500"),
])
def test_signed_url_parameters_and_url_credentials_are_redacted(text, expected):
    assert urls.redacted(text) == expected


@pytest.mark.parametrize("url, allowed", [
    ("https://files.kernelci.org/x/log.txt.gz?sig=1", True),
    ("https://FILES.kernelci.org:443/x", True),
    ("http://files.kernelci.org/x", False),
    ("https://files.kernelci.org:8443/x", False),
    ("https://files.kernelci.org.evil.example/x", False),
    ("file:///etc/passwd", False),
    ("gopher://files.kernelci.org/x", False),
    ("//files.kernelci.org/x", False),
    ("https://[::1", False),
    ("https://files.kernelci.org:99999/x", False),
    ("https://evil.example\\@files.kernelci.org/x", False),
    ("https://evil.example\t@files.kernelci.org/x", False),
    ("https://evil.example @files.kernelci.org/x", False),
    ("https://files.kernelci.org/x/\\@evil.example/y", True),
    ("https://files.kernelci.org\\@evil.example/x", False),
    (" https://files.kernelci.org/x", False),
    ("https://fıles.kernelci.org/x", False),
])
def test_only_the_configured_origins_are_allowed(url, allowed):
    assert urls.origin_allowed(url, urls.origins(["https://files.kernelci.org"])) is allowed


@pytest.mark.parametrize("url, origin", [
    ("http://127.0.0.2:8080/%5C@127.0.0.1:9000/x", ("http", "127.0.0.2", 8080)),  # requests' form of a backslash
    ("http://127.0.0.2:8080%5C@127.0.0.1:9000/x", ("http", "127.0.0.1", 9000)),  # a redirect's, requoted
    ("HTTPS://Files.KernelCI.org/x", ("https", "files.kernelci.org", 443)),
    ("http://[::1]:8080/x", ("http", "::1", 8080)),
    ("http://127.0.0.2:8080\\@127.0.0.1:9000/x", None),
    ("http://127.0.0.1:99999/x", None),
    ("file:///etc/passwd", None),
])
def test_a_request_is_judged_by_the_origin_the_http_client_connects_to(url, origin):
    assert urls.origin_as_sent(url) == origin


# Credentials in host and URL settings -------------------------------------------------------------

PASSWORD = "pw-Kq8Zr2Lm"


@pytest.mark.parametrize("setting, value", [
    ("KCI_HOST", "kcing:%s@{host}" % PASSWORD),
    ("KCI_STORAGE_URL", "kcing:%s@{host}" % PASSWORD),
    ("KCI_STORAGE_URL", "http://kcing:%s@{host}" % PASSWORD),
    ("KCI_API_URL", "http://kcing:%s@{host}/latest" % PASSWORD),
    ("KCI_API_STORAGE_URL", "http://{host}/files?token=%s" % PASSWORD),
    ("KCI_ARTIFACT_ORIGINS", "https://a.example,http://kcing:%s@{host}" % PASSWORD),
    ("ES_HOST", "http://elastic:%s@{host}" % PASSWORD),
    ("KB_URL", "kibana:%s@{host}" % PASSWORD),
])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry run"])
def test_credentials_in_a_host_or_url_setting_are_refused_without_being_shown(tmp_path, setting, value, dry_run):
    with World(tmp_path) as world:
        host = world.replica.frontend_url.split("://", 1)[1]
        log = tmp_path / "feed.log"
        env = dict(world.environ(), **{setting: value.format(host=host)})
        result = kcing(["feed_es", "-l", str(log)] + (["--dry-run"] if dry_run else []), env, tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and setting in lines[0], result.stderr
        assert "would fetch" not in result.stdout
        for text in (result.stdout, result.stderr, log.read_text()):
            assert PASSWORD not in text
        assert not world.db.exists()
        assert not world.replica.frontend.requests


# local_settings.py that fails to load -------------------------------------------------------------

@pytest.mark.parametrize("source, error, line", [
    ('ES_LAVA = "http://ls:8338"\nLS_PASSWORD = %s\n' % PASSWORD.replace("-", "_"), "NameError", 2),
    ('LS_PASSWORD = "%s\n' % PASSWORD, "SyntaxError", 1),
    ('import base64\nLS_PASSWORD = base64.b64decode("%s")\n' % PASSWORD, "Error", 2),
    # sys.exit would end kcing itself: with 0, every command did nothing and said it succeeded.
    ('import sys\nsys.exit(0)\n', "SystemExit", 2),
    ('import sys\nsys.exit("password=%s")\n' % PASSWORD, "SystemExit", 2),
], ids=["unquoted value", "unterminated string", "exception while running", "sys.exit(0)", "sys.exit(text)"])
def test_a_local_settings_error_names_file_line_and_class_only(tmp_path, source, error, line):
    (tmp_path / "local_settings.py").write_text(source)
    result = kcing(["status", "--db", str(tmp_path / "none.db")], clean_environ(), tmp_path)
    assert result.returncode == 2
    (message,) = result.stderr.strip().splitlines()
    assert "local_settings.py" in message and error in message and "line %d" % line in message, message
    assert PASSWORD not in message and PASSWORD.replace("-", "_") not in message
    assert "b64decode" not in message and "Traceback" not in result.stderr


def test_by_default_artifacts_of_kernelci_s_own_storages_are_fetched_and_no_others():
    # Production nodes name files.kernelci.org; staging nodes files-staging.kernelci.org (as the
    # real staging job in ../shared/data/upstream/maestro does), older ones an Azure file share.
    from kcing import settings as settings_module
    allowed = settings_module.load(environ={}, local_file=Path("/nonexistent/local_settings.py")).upstream_origins
    for url in ["https://files.kernelci.org/x/log.txt.gz", "https://files-staging.kernelci.org/x/log.txt.gz",
                "https://kciapistagingstorage1.file.core.windows.net/staging/x?sv=1&sig=2"]:
        assert urls.origin_allowed(url, allowed), url
    for url in ["https://evil.example/x", "https://files-staging.kernelci.org.evil.example/x"]:
        assert not urls.origin_allowed(url, allowed), url
