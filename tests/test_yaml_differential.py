"""kcing's YAML loading (`yamlsafe.load`, the log reader, the results and definition readers)
against PyYAML's own SafeLoader, on many generated texts shaped like LAVA's and beyond.

The promise: a text within the loader's limits loads to exactly what PyYAML's SafeLoader loads,
the `!!python/object/apply:decimal.Decimal` tag read as its one argument (and any other
`!!python/...` tag as the plain data under it); a text beyond them, and only such a text, is
refused with its reason; nothing else ever escapes. Values are compared with their types (bool
is not int, int is not float, a date is not a datetime nor a text) and mappings in their order.

The texts come from a fixed seed, so a failure names a text that fails again.
"""
from __future__ import annotations

import datetime
import json
import math
import random
from typing import Any, List, Optional, Tuple

import pytest
import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from kcing.documents import lava_job, lava_results, yamlsafe
from kcing.documents.lava_log import parse_log
from kcing.errors import RejectedInput

SEED = 20201119
TEXTS = 2500

# Plain scalars that YAML 1.1 resolves to another type than text, or nearly does.
PLAIN_WORDS = [
    "yes", "No", "ON", "off", "y", "n", "true", "False", "~", "null", "Null", "NULL", "",
    "0o17", "0x1F", "0x_1F", "-0x1f", "0b101", "017", "08", "0", "-0", "+12", "1_000", "1__0", "1:30", "-1:30:00",
    "190:20:30", "1:2:3:4", "08:00", "1.5", "1.5e+3", "1e5", "1.5e3", ".inf", "-.Inf", "+.INF", ".NaN", ".5", "1.",
    "-.5", "685.230_15e+03", "190:20:30.15", "0E-10", "4.2700000000", "None", "2020-01-01", "2002-12-14",
    "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "2001-12-15T02:59:43.1Z", "2001-1-1",
    "2020-11-19 07:06:18.379641+00:00", "2020-02-30", "12:30:45", "=", "<<", "-", "abc", "a b", "x:y", "-x",
    "1.2.3", "0x", "äö", "日本", "login-action", "/results/testcase/7782950",
]
TAGS = ["!!str", "!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary", "!", "!local", "!!python/str",
        "!!python/object/apply:decimal.Decimal", "!!python/tuple", "!!merge", "!!value", "!<tag:yaml.org,2002:str>",
        "!!map", "!!seq", "!!set", "!!omap", "!!pairs", "!!unknown"]
ODD_CHARACTERS = "ab :-#'\"\\\t\n{}[],&*!|>%@`?é\u2028\x85\ufeff\U0001F600"
DECIMAL = "!!python/object/apply:decimal.Decimal"


# -- the reference --------------------------------------------------------------------------------

def _python_tag_as_data(loader, suffix: str, node) -> Any:
    """kcing's documented reading of `!!python/...` tags: the plain data under the tag, and for a
    Decimal its one argument, a number or a text."""
    if isinstance(node, SequenceNode):
        data = loader.construct_sequence(node, deep=True)
    elif isinstance(node, MappingNode):
        data = loader.construct_mapping(node, deep=True)
    else:
        data = loader.construct_scalar(node)
    if suffix != "object/apply:decimal.Decimal":
        return data
    arguments = data.get("args") if isinstance(data, dict) else data
    if (isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], (str, int, float))
            and not isinstance(arguments[0], bool)):
        return arguments[0]
    raise yaml.constructor.ConstructorError(None, None, "Decimal arguments", node.start_mark)


class ReferenceLoader(yaml.CSafeLoader):
    """PyYAML's SafeLoader on libyaml's parser, the parser kcing reads with."""


ReferenceLoader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag_as_data)


def reference(text: str) -> Tuple[str, Any]:
    try:
        return "ok", yaml.load(text, Loader=ReferenceLoader)
    except Exception as error:  # noqa: BLE001 - any failure is PyYAML refusing the text
        return "error", "%s: %s" % (type(error).__name__, error)


def beyond_the_limits(text: str) -> List[str]:
    """The loader's documented limits that `text` passes, in words of their reasons, from PyYAML's events and node graph
    (an alias is the node it names): nesting deeper than MAX_DEPTH as written, or as a value (an
    alias as deep as what it names, a merge key's mapping's pairs in the mapping that has the
    key), or expanding beyond the allowances, an alias counting as a copy."""
    try:
        root = yaml.compose(text, Loader=ReferenceLoader)
        written = max(_written_levels(text), default=0)
    except Exception:  # noqa: BLE001 - refused by PyYAML as well
        return []
    if written > yamlsafe.MAX_DEPTH:
        return ["nests deeper"]
    directives = [token for token in (yaml.scan(text, Loader=ReferenceLoader) if "%TAG" in text else ())
                  if isinstance(token, yaml.DirectiveToken) and token.name == "TAG"]
    if len(directives) > yamlsafe.MAX_TAG_DIRECTIVES:
        return ["%TAG directives"]
    if root is None:
        return []
    measured = {}

    def measure(node) -> Tuple[int, int, int]:  # (levels of its value, nodes, characters), once per node
        if measured.get(id(node), ()) is None:
            raise RecursionError("an alias inside the structure it names")
        if id(node) not in measured:
            measured[id(node)] = None
            if isinstance(node, ScalarNode):
                measured[id(node)] = (0, 1, len(node.value))
            else:
                pairs = node.value if isinstance(node, MappingNode) else [(None, item) for item in node.value]
                levels, nodes, characters = 0, 1, 0
                for key, value in pairs:
                    for child in (key, value) if key is not None else (value,):
                        child_levels, child_nodes, child_characters = measure(child)
                        if child is value and key is not None and key.tag == "tag:yaml.org,2002:merge":
                            child_levels -= 1 if isinstance(value, MappingNode) else 2
                        levels, nodes, characters = (max(levels, child_levels), nodes + child_nodes,
                                                     characters + child_characters)
                measured[id(node)] = (1 + levels, nodes, characters)
        return measured[id(node)]

    try:
        levels, nodes, characters = measure(root)
    except RecursionError:
        return ["inside the structure it names"]
    limits = ["nests deeper"] if levels > yamlsafe.MAX_DEPTH else []
    if (nodes > yamlsafe.EXPANSION_NODES_ALLOWANCE + len(text)
            or characters > yamlsafe.EXPANSION_CHARACTERS_ALLOWANCE + len(text)):
        limits.append("expands")  # the one met first is named
    return limits


def _written_levels(text: str):
    """The nesting level of collections at each event of `text`."""
    level = 0
    for event in yaml.parse(text, Loader=ReferenceLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            level += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            level -= 1
        yield level


def typed(value: Any) -> Any:
    """`value` with every type spelled out, so that equal texts mean equal values and types."""
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, dict):
        return ("dict", [(typed(key), typed(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(item) for item in value])
    if isinstance(value, (set, frozenset)):
        return ("set", sorted((typed(item) for item in value), key=repr))
    if isinstance(value, datetime.datetime):
        return ("datetime", value.isoformat())
    return (type(value).__name__, repr(value))


def kcing(read, text: str) -> Tuple[str, Any]:
    try:
        return "ok", read(text)
    except RejectedInput as refusal:
        return "refused", str(refusal)


def disagreement(text: str, read=lambda text: yamlsafe.load(text, "text")) -> Optional[str]:
    """How kcing's reading of `text` breaks the promise, or None."""
    ours, theirs = kcing(read, text), reference(text)
    if ours[0] == "ok" and theirs[0] == "ok":
        limits = beyond_the_limits(text)
        if limits:
            return "loads a text beyond the limits (%s)" % ", ".join(limits)
        return None if typed(ours[1]) == typed(theirs[1]) else "loads %r, PyYAML %r" % (ours[1], theirs[1])
    if ours[0] == "ok":
        return "loads %r, which PyYAML refuses: %s" % (ours[1], theirs[1])
    if theirs[0] == "ok":
        if not any(limit in ours[1] for limit in beyond_the_limits(text)):
            return "refused (%s), PyYAML loads %r" % (ours[1], theirs[1])
    return None


# -- the texts ------------------------------------------------------------------------------------

class TextMaker:
    """Random YAML texts: block and flow collections, every scalar style, tags, anchors and aliases,
    merge keys, complex keys, comments and document markers. Most are valid YAML, some are not."""

    def __init__(self, rnd: random.Random):
        self.rnd = rnd
        self.anchors: List[str] = []
        self.count = 0

    def scalar_text(self) -> str:
        rnd = self.rnd
        pick = rnd.random()
        if pick < 0.55:
            return rnd.choice(PLAIN_WORDS)
        if pick < 0.7:
            return str(rnd.randint(-10 ** 6, 10 ** 6))
        if pick < 0.8:
            return repr(rnd.uniform(-1e6, 1e6))
        return "".join(rnd.choice(ODD_CHARACTERS) for _ in range(rnd.randint(0, 8)))

    def scalar(self) -> str:
        rnd = self.rnd
        text = self.scalar_text()
        style = rnd.random()
        if style < 0.5 and _plain_is_safe(text):
            return text
        if style < 0.75 and "\n" not in text:
            return "'" + text.replace("'", "''") + "'"
        return json.dumps(text, ensure_ascii=rnd.random() < 0.5)

    def properties(self) -> Tuple[str, Optional[str]]:
        rnd = self.rnd
        parts, anchor = [], None
        if rnd.random() < 0.12:
            parts.append(rnd.choice(TAGS))
        if rnd.random() < 0.15:
            self.count += 1
            anchor = "a%d" % self.count
            parts.append("&" + anchor)
        rnd.shuffle(parts)
        return (" ".join(parts) + " " if parts else ""), anchor

    def alias(self) -> Optional[str]:
        if self.anchors and self.rnd.random() < 0.2:
            return "*" + self.rnd.choice(self.anchors)
        return None

    def flow(self, depth: int) -> str:
        rnd = self.rnd
        alias = self.alias()
        if alias:
            return alias
        prefix, anchor = self.properties()
        pick = rnd.random()
        if depth <= 0 or pick < 0.5:
            text = prefix + self.scalar()
        elif pick < 0.75:
            text = prefix + "[" + ", ".join(self.flow(depth - 1) for _ in range(rnd.randint(0, 4))) + "]"
        else:
            pairs = [self.flow_key(depth - 1) + ": " + self.flow(depth - 1) for _ in range(rnd.randint(0, 4))]
            text = prefix + "{" + ", ".join(pairs) + "}"
        if anchor:
            self.anchors.append(anchor)
        return text

    def flow_key(self, depth: int) -> str:
        rnd = self.rnd
        pick = rnd.random()
        if pick < 0.1:
            return "<<"
        if pick < 0.16 and self.anchors:
            return "*" + rnd.choice(self.anchors) + " "
        if pick < 0.25:
            return "? " + self.flow(depth)
        text = self.scalar()
        return text if "\n" not in text else json.dumps(text)

    def block(self, depth: int, indent: int) -> str:
        """A node after `key:` or `- `: a flow node on the line, or block lines below it."""
        rnd = self.rnd
        pick = rnd.random()
        if depth <= 0 or pick < 0.35:
            return " " + (self.block_scalar(indent) if rnd.random() < 0.1 else self.flow(min(depth, 2)))
        alias = self.alias()
        if alias:
            return " " + alias
        prefix, anchor = self.properties()
        inner = " " * (indent + rnd.choice([1, 2, 4]))
        lines = []
        for _ in range(rnd.randint(1, 4)):
            if pick < 0.65:
                lines.append(inner + "-" + self.block(depth - 1, len(inner) + 1))
            elif rnd.random() < 0.1:
                merged = " *" + rnd.choice(self.anchors) if self.anchors and rnd.random() < 0.7 else \
                    self.block(depth - 1, len(inner))
                lines.append(inner + "<<:" + merged)
            elif rnd.random() < 0.06:
                lines.append(inner + "?" + self.block(depth - 1, len(inner) + 1))
                lines.append(inner + ":" + self.block(depth - 1, len(inner) + 1))
            else:
                lines.append(inner + self.flow_key(0) + ":" + self.block(depth - 1, len(inner)))
            if rnd.random() < 0.1:
                lines.append(inner + "# a comment naming *x and &y")
        if anchor:
            self.anchors.append(anchor)
        return (" " + prefix.rstrip() if prefix else "") + "\n" + "\n".join(lines)

    def block_scalar(self, indent: int) -> str:
        rnd = self.rnd
        header = rnd.choice("|>") + rnd.choice(["", "-", "+", "2", "1-", "+2"])
        inner = " " * (indent + 2)
        body = [inner + ("  " if rnd.random() < 0.2 else "") + self.scalar_text().replace("\n", " ")
                for _ in range(rnd.randint(0, 3))]
        if rnd.random() < 0.3:
            body.insert(rnd.randint(0, len(body)), "")
        return header + "\n" + "\n".join(body)

    def deep(self) -> str:
        """Nesting and aliases around the depth limit."""
        rnd = self.rnd
        levels = rnd.randint(90, 101)
        inner = rnd.choice(["x", "[1]", "{a: [2]}", ""])
        text = "a: &deep " + "[" * levels + inner + "]" * levels + "\n"
        if rnd.random() < 0.5:
            text = "a: &deep " + "{k: " * levels + inner + "}" * levels + "\n"
        around = rnd.randint(0, 12)
        use = rnd.choice(["*deep", "{<<: {k: *deep}}", "[*deep]", "{k: *deep}", "{<<: *deep}", "{<<: [*deep]}",
                          "&self [*self]", "&self {<<: *deep, k: *self}"])
        return text + "b: " + "[" * around + use + "]" * around + "\n"

    def document(self) -> str:
        rnd = self.rnd
        if rnd.random() < 0.03:
            return self.deep()
        depth = rnd.randint(0, 5)
        body = self.block(depth, -1).lstrip(" ").lstrip("\n") if rnd.random() < 0.5 else self.flow(depth)
        head = "\ufeff" if rnd.random() < 0.05 else ""
        if rnd.random() < 0.1:
            head += "%YAML 1.1\n---\n" if rnd.random() < 0.3 else "--- "
        elif rnd.random() < 0.03:
            directives = rnd.choice([1, yamlsafe.MAX_TAG_DIRECTIVES, yamlsafe.MAX_TAG_DIRECTIVES + 1])
            head += "".join("%%TAG !t%d! tag:yaml.org,2002:\n" % number for number in range(directives))
            head += "--- !t0!%s " % rnd.choice(["str", "int", "seq", "python/tuple"])
        if rnd.random() < 0.05:
            head = "# head\n" + head
        tail = ""
        if rnd.random() < 0.1:
            tail = "\n..." + ("\n" if rnd.random() < 0.5 else "")
        elif rnd.random() < 0.02:
            tail = "\n---\nx"
        if rnd.random() < 0.1:
            tail += "\n# trailing *"  # an alias sign: the text goes to kcing's own composer
        text = head + body + tail
        return text.replace("\n", "\r\n") if rnd.random() < 0.03 else text


def _plain_is_safe(text: str) -> bool:
    """Whether `text` written plain is read back as one plain scalar (or is a word meant so)."""
    if text in PLAIN_WORDS and text and not any(mark in text for mark in ",[]{}#"):
        return True
    if not text or text != text.strip() or text[0] in "-?:,[]{}#&*!|>'\"%@`":
        return False
    return not any(mark in text for mark in ("\n", ": ", " #", "\t", ",", "[", "]", "{", "}", "\u2028", "\x85",
                                             "\ufeff")) and not text.endswith(":")


def dumped(rnd: random.Random) -> str:
    """What PyYAML's own dumper writes for a random value: shared values become anchors and aliases."""
    shared: List[Any] = []

    def value(depth: int) -> Any:
        pick = rnd.random()
        if depth <= 0 or pick < 0.5:
            return rnd.choice([None, True, False, rnd.randint(-10 ** 12, 10 ** 12), rnd.uniform(-1e9, 1e9),
                               float("inf"), rnd.choice(PLAIN_WORDS), datetime.date(2020, 1, rnd.randint(1, 28)),
                               datetime.datetime(2020, 11, 19, 7, 6, 18, rnd.randint(0, 999999)),
                               b"\x00\xffbin", "line\nbreak\n", "  spaced  ", "tab\there", "x" * rnd.randint(0, 120)])
        if shared and rnd.random() < 0.2:
            return rnd.choice(shared)
        if pick < 0.75:
            made: Any = [value(depth - 1) for _ in range(rnd.randint(0, 4))]
        else:
            made = {rnd.choice([rnd.choice(PLAIN_WORDS), rnd.randint(0, 100), None, True, 1.5,
                                datetime.date(2020, 1, 1)]): value(depth - 1) for _ in range(rnd.randint(0, 4))}
        shared.append(made)
        return made

    return yaml.safe_dump(value(rnd.randint(0, 6)), default_flow_style=rnd.choice([True, False, None]),
                          allow_unicode=rnd.random() < 0.5, width=rnd.choice([20, 80, 1000]),
                          explicit_start=rnd.random() < 0.3, explicit_end=rnd.random() < 0.3,
                          canonical=rnd.random() < 0.1, sort_keys=False)


def yaml_texts(seed: int, count: int) -> List[str]:
    rnd = random.Random(seed)
    return [dumped(rnd) if rnd.random() < 0.3 else TextMaker(rnd).document() for _ in range(count)]


def anchored_texts(seed: int, count: int) -> List[str]:
    """Mappings of anchored values, each nesting aliases and merge keys of the ones before
    inside a few dozen levels of its own: values around the depth and expansion limits."""
    rnd = random.Random(seed)

    def value(depth: int, anchors: List[str]) -> str:
        pick = rnd.random()
        if anchors and pick < 0.3:
            return "*" + rnd.choice(anchors)
        if depth <= 0 or pick < 0.4:
            return rnd.choice(["x", "1", "[]", "{}"])
        if pick < 0.6:
            return "[" + ", ".join(value(depth - 1, anchors) for _ in range(rnd.randint(1, 2))) + "]"
        pairs = []
        for number in range(rnd.randint(1, 3)):
            if anchors and rnd.random() < 0.4:
                merged = rnd.choice(["*%s", "[*%s]", "[*%s, *%s]"]).replace("%s", rnd.choice(anchors))
                pairs.append("<<: " + rnd.choice([merged, "{k%d: %s}" % (number, value(depth - 1, anchors))]))
            else:
                pairs.append("k%d: %s" % (number, value(depth - 1, anchors)))
        return "{" + ", ".join(pairs) + "}"

    texts = []
    for _ in range(count):
        anchors: List[str] = []
        lines = []
        for number in range(rnd.randint(1, 8)):
            around = rnd.randint(0, 40)
            body = "[" * around + value(rnd.randint(1, 40), anchors) + "]" * around
            lines.append("a%d: &a%d %s" % (number, number, body if rnd.random() < 0.5 else "{m: %s}" % body))
            anchors.append("a%d" % number)
        texts.append("\n".join(lines) + "\n")
    return texts


def log_line(rnd: random.Random) -> str:
    """One line of a LAVA log: the dispatcher's usual line, a results line with a Decimal, a JSON
    line, or a line of any YAML."""
    pick = rnd.random()
    message = "".join(rnd.choice("abc xyz-=_/.:0123456789" + ODD_CHARACTERS[:-3]) for _ in range(rnd.randint(0, 20)))
    if pick < 0.35:
        return '- {"dt": "2020-11-19T07:03:%02d.%06d", "lvl": "%s", "msg": %s}' % (
            rnd.randint(0, 61), rnd.randint(0, 999999), rnd.choice(["info", "target", "debug", ""]),
            json.dumps(message, ensure_ascii=rnd.random() < 0.5))
    if pick < 0.5:
        return ('- {"dt": "2020-11-19T07:03:25.393174", "lvl": "results", "msg": {"case": "x", "measurement": '
                '%s ["%s"], "result": "pass"}}' % (DECIMAL, rnd.choice(["2", "0E-10", "4.27", "x"])))
    if pick < 0.7:
        item = {"lvl": "debug", "msg": [message, rnd.randint(-10 ** 20, 10 ** 20), rnd.uniform(-9, 9), None, True]}
        return "- " + json.dumps(item, ensure_ascii=rnd.random() < 0.5,
                                 separators=rnd.choice([(", ", ": "), (",", ":"), (", ", " : ")]))
    if pick < 0.97:
        return "- " + TextMaker(rnd).flow(rnd.randint(0, 3)).replace("\n", " ")
    return rnd.choice(["", "# a comment", "  continued", "---", "- ", "- - a", "- a: 1", "  b: 2", "- |", "- >-",
                       "  text", "- &x a", "- *x", "- ? a", "- : b", "- !!binary aGk=", '- "a', '  b"', "- [a,", "  b]",
                       "- {a: 1, <<: {b: 2}}", "- !!set {a, b}", "- 2020-01-01 10:00:00"])


def log_texts(seed: int, count: int) -> List[str]:
    rnd = random.Random(seed)
    texts = []
    for _ in range(count):
        lines = [log_line(rnd) for _ in range(rnd.randint(0, 10))]
        separator = "\n" if rnd.random() < 0.9 else rnd.choice(["\r\n", "\n\n", "\r"])
        texts.append(separator.join(lines) + (separator if rnd.random() < 0.7 else ""))
    return texts


# -- the tests --------------------------------------------------------------------------------------

def disagreements(texts: List[str], read=None) -> List[str]:
    found = []
    for text in texts:
        problem = disagreement(text) if read is None else disagreement(text, read)
        if problem is not None:
            found.append("%r: %s" % (text[:300], problem[:300]))
    return found


@pytest.mark.parametrize("composer", ["as chosen", "kcing's own"])
def test_generated_yaml_loads_as_pyyaml_loads_it_or_is_refused_beyond_the_limits(composer, monkeypatch):
    if composer == "kcing's own":  # texts without an alias and short take libyaml's composer
        monkeypatch.setattr(yamlsafe, "_cannot_be_hostile", lambda text: False)
    texts = yaml_texts(SEED, TEXTS)
    loaded = sum(reference(text)[0] == "ok" for text in texts)
    assert loaded > len(texts) * 0.6  # the texts are mostly valid YAML: the comparison says something
    assert disagreements(texts) == []


def test_generated_aliases_and_merge_keys_nest_and_expand_as_pyyaml_makes_them_or_are_refused():
    texts = anchored_texts(SEED, 150)
    outcomes = [reference(text)[0] == "ok" and not beyond_the_limits(text) for text in texts]
    assert 0.2 * len(texts) < sum(outcomes) < 0.8 * len(texts)  # within the limits and beyond them
    assert disagreements(texts) == []


def test_generated_logs_read_line_by_line_as_pyyaml_reads_them_whole():
    """The log reader's items are the loader's (none for an empty log), and a log that is no list
    is refused."""
    def read(text: str) -> Any:
        loaded = kcing(lambda text: yamlsafe.load(text, "log"), text)
        try:
            items = parse_log(text)
        except RejectedInput as refusal:
            assert loaded[0] == "refused" or "not a YAML list" in str(refusal) and not isinstance(loaded[1], list), \
                (text, refusal)
            raise
        assert loaded[0] == "ok" and typed(items) == typed(loaded[1] or []), text
        return loaded[1]

    texts = log_texts(SEED, TEXTS // 2)
    assert sum(reference(text)[0] == "ok" for text in texts) > len(texts) * 0.5
    assert [problem for problem in disagreements(texts, read) if "not a YAML list" not in problem] == []


def test_generated_results_suites_are_their_yaml_list_of_test_cases():
    """`read_suites` keeps what the loader reads: a list of mappings (nothing is none), else the
    suite is refused."""
    for text in yaml_texts(SEED + 1, 600) + log_texts(SEED + 1, 200):
        outcome, value = reference(text)
        try:
            suites = lava_results.read_suites({"0_dmesg": text})
        except RejectedInput as refusal:
            assert (outcome != "ok" or beyond_the_limits(text) or value is not None
                    and not (isinstance(value, list) and all(isinstance(case, dict) for case in value))), \
                (text, refusal)
        else:
            assert outcome == "ok" and typed(suites["0_dmesg"]) == typed(value or []), text


def test_generated_definitions_are_their_yaml_mapping():
    for text in yaml_texts(SEED + 2, 600):
        definition_text = "metadata: {kernel.tree: next}\nrest: " + text.replace("\n", "\n  ")
        outcome, value = reference(definition_text)
        try:
            definition = lava_job.read_definition({"definition": definition_text}, 1)
        except RejectedInput:
            assert outcome != "ok" or beyond_the_limits(definition_text), definition_text
        else:
            assert outcome == "ok" and typed(definition) == typed(value), definition_text
