"""Safe YAML loading for LAVA callbacks (job definition, results, log).

The stored logs contain `!!python/object/apply:decimal.Decimal ["2"]` tags, written by the
dispatcher's Python dumper; `yaml.safe_load` refuses them and the backend used the unsafe
loader. `LavaSafeLoader` stays a SafeLoader (libyaml's C parser when available) and only adds a
constructor that reads every `python/...` tag as plain data: nothing is imported or called.

It also composes the document itself, in one pass over the parser's events, to refuse what a
hostile file could do to the code that reads the result:

- nesting deeper than MAX_DEPTH (libyaml's own composer recurses in C, and a deep enough
  nesting overflows the C stack and kills the process instead of raising), and a value nesting
  deeper through aliases: an alias holds what it names at its place, and a few lines that each
  name the one before nest a value thousands of levels deep, which the code that walks a log
  message would recurse into until RecursionError;
- an alias inside the structure it names (`&x [*x]`): the result would contain itself, and
  any code walking it recurses until RecursionError;
- aliases that expand beyond the limits below. An alias is a shared reference, but everything
  downstream copies out of it (merge keys, the JSON of a log message, one document per log
  line), so each one costs as much as what it names: one 512 KiB string named 12,000 times is
  6 GB of documents from a 1.3 MB file.

Before it parses a text, and while it constructs the values, it refuses what would take time
quadratic in the text: many `%TAG` directives (`_too_many_tag_directives`), many mapping keys that
are no text sharing one hash value (`_count_keys_by_hash`), and a base 60 integer longer than the
digits of a decimal one (`_construct_integer`).
"""
from __future__ import annotations

import re
import sys
from typing import Any, List, Optional

import yaml
from yaml.events import (
    AliasEvent, MappingEndEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.tokens import DirectiveToken

from kcing.errors import RejectedInput, one_line

# Real callbacks nest about 8 levels deep.
MAX_DEPTH = 100
# Expansion limits, counting every alias as a copy of what it names: the nodes and the
# characters of scalars a text may expand to, beyond what it holds itself (one node and one
# character per character of text).
EXPANSION_NODES_ALLOWANCE = 100_000
EXPANSION_CHARACTERS_ALLOWANCE = 8 << 20
# Distinct mapping keys of one text that may share a hash value (see `_count_keys_by_hash`); real
# callbacks have a handful of keys that are no text at all.
MAX_KEYS_OF_ONE_HASH = 64

# The most `%TAG` directives a text may have (see `_too_many_tag_directives`); real texts have none.
MAX_TAG_DIRECTIVES = 64

DECIMAL_SUFFIX = "object/apply:decimal.Decimal"
# The most digits of an integer: Python's own limit on reading a decimal one (a longer one is
# refused as not valid YAML), also held to base 60 ones, which are read in quadratic time.
MAX_INTEGER_DIGITS = sys.int_info.default_max_str_digits
_TOO_MANY_DIGITS = 10 ** MAX_INTEGER_DIGITS  # the least integer of one digit more
_SAFE_INTEGER_BITS = int(MAX_INTEGER_DIGITS * 3.32)  # one of no more bits is below it (3.32 < log2 10)

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_TEXT_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"


class HostileShape(yaml.YAMLError):
    """A well-formed YAML text refused for what it would expand to."""


class _Open:
    """A collection being composed, and the counts when it started (for its anchor's size)."""

    __slots__ = ("node", "anchor", "nodes", "characters", "key", "merged", "height", "through")

    def __init__(self, node, anchor: Optional[str], nodes: int, characters: int, merged: bool):
        self.node = node
        self.anchor = anchor
        self.nodes = nodes
        self.characters = characters
        self.key = None  # a mapping's key waiting for its value
        self.merged = merged  # the value of a merge key
        self.height = 1  # the levels its value nests so far (see `_value_height`)
        self.through = None  # the alias that gave it that height, if one did


class LavaSafeLoader(_BaseLoader):
    """SafeLoader that reads `!!python/...` tags as data (Decimal as its argument) and composes
    within the depth and expansion limits."""

    def __init__(self, stream):
        super().__init__(stream)
        self.text = stream if isinstance(stream, str) else ""
        self.text_length = len(self.text)
        self.harmless = isinstance(stream, str) and _cannot_be_hostile(stream)
        self.keys_by_hash = {}  # hash value -> the distinct keys that are no text with it

    def construct_object(self, node, deep=False):
        # A text scalar's value is its text (`construct_yaml_str`), whether or not an alias
        # names it again: most nodes of a results text are text, and the general path's
        # bookkeeping for anchors and recursion cost more than the rest of their loading.
        if type(node) is ScalarNode and node.tag == _TEXT_TAG:
            return node.value
        return super().construct_object(node, deep)

    def construct_mapping(self, node, deep=False):
        # A mapping whose keys are all text (nearly every one in a callback) has no merge key
        # to flatten and no unhashable key to refuse: its pairs are read in order, as the
        # general path reads them, without those checks per key.
        if type(node) is MappingNode and all(type(key) is ScalarNode and key.tag == _TEXT_TAG
                                             for key, _ in node.value):
            construct = self.construct_object
            return {key.value: construct(value, deep=deep) for key, value in node.value}
        if not isinstance(node, MappingNode):
            return super().construct_mapping(node, deep)
        self.flatten_mapping(node)  # the keys merged in are keys of this mapping too
        self._count_keys_by_hash(node)
        # SafeConstructor's own would flatten the mapping again before this: flattened above.
        return yaml.constructor.BaseConstructor.construct_mapping(self, node, deep)

    def _count_keys_by_hash(self, node) -> None:
        """Refuse a text whose mapping keys that are no text (numbers, booleans, null) share one
        hash value more than MAX_KEYS_OF_ONE_HASH times, counted over the whole text (mappings
        are merged downstream: a job's bootloader addresses).

        Python hashes an integer as its value modulo 2**61 - 1, the same on every run: a mapping
        of keys 0, 2**61 - 1, 2 * (2**61 - 1), ... puts every key on one chain, and making it
        takes time quadratic in them (a megabyte of such keys, seven seconds). Text keys hash
        differently on every run."""
        by_hash = self.keys_by_hash
        for key_node, _ in node.value:
            if type(key_node) is not ScalarNode or key_node.tag == _TEXT_TAG:
                continue
            key = self.construct_object(key_node)  # kept: the mapping takes the same object
            try:
                same = by_hash.setdefault(hash(key), [])
            except TypeError:
                continue  # unhashable: the mapping refuses it
            if key not in same:
                same.append(key)
                if len(same) > MAX_KEYS_OF_ONE_HASH:
                    raise HostileShape("more than %d mapping keys share one hash value (line %d): a hash flood"
                                       % (MAX_KEYS_OF_ONE_HASH, key_node.start_mark.line + 1))

    def flatten_mapping(self, node):
        # SafeConstructor's own, which deletes each merge key from the list in place: a mapping
        # of many `<<` keys took time quadratic in them (a megabyte of them, over a second, five
        # megabytes, ten). The same pairs in the same order, made in one pass per mapping. And
        # without recursion: the mappings that merge keys bring in are flattened first, from a
        # list (a chain of anchored mappings, each merging the one before through mappings nested
        # in merge keys, took two frames a mapping and ended in RecursionError).
        for mapping in _merge_order(node):
            self._flatten_one(mapping)

    def _flatten_one(self, node) -> None:
        """Flatten `node`, whose merged mappings are flattened already."""
        if not any(key.tag == _MERGE_TAG for key, _ in node.value):
            for key, _ in node.value:
                if key.tag == _VALUE_TAG:
                    key.tag = _TEXT_TAG
            return
        merged, kept = [], []
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                merged += _merged_pairs(node, value)
            else:
                if key.tag == _VALUE_TAG:
                    key.tag = _TEXT_TAG
                kept.append((key, value))
        node.value = merged + kept

    def get_single_node(self):
        if _too_many_tag_directives(self.text):
            raise HostileShape("more than %d %%TAG directives" % MAX_TAG_DIRECTIVES)
        if self.harmless:
            return super().get_single_node()  # libyaml's own composer: faster on small texts
        self.get_event()  # stream start
        document = None
        if not self.check_event(yaml.StreamEndEvent):
            self.get_event()  # document start
            document = self._compose_root()
            self.get_event()  # document end
        if not self.check_event(yaml.StreamEndEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError("expected a single document in the stream", document.start_mark,
                                              "but found another document", event.start_mark)
        self.get_event()
        return document

    def _compose_root(self):
        """The document's node, composed without recursion, within the limits."""
        anchors = {}  # name -> node
        sizes = {}  # name -> (nodes, characters) its alias copies
        heights = {}  # name -> the levels its value nests (see `_value_height`), 0 for a scalar
        stack: List[_Open] = []
        open_anchors = set()
        nodes = characters = 0
        node_budget = EXPANSION_NODES_ALLOWANCE + self.text_length
        character_budget = EXPANSION_CHARACTERS_ALLOWANCE + self.text_length
        get_event = self.get_event
        # Without path resolvers (this loader has none), a scalar's implicit tag depends on its
        # text alone, and a quoted one is text: resolved once per distinct plain text.
        by_text = {} if not self.yaml_path_resolvers else None
        text_tag = self.DEFAULT_SCALAR_TAG
        while True:
            event = get_event()
            kind = type(event)
            if kind is ScalarEvent:
                value = event.value
                tag = event.tag
                if tag is None or tag == "!":
                    if by_text is None:
                        tag = self.resolve(ScalarNode, value, event.implicit)
                    elif not event.implicit[0]:
                        tag = text_tag
                    else:
                        tag = by_text.get(value)
                        if tag is None:
                            tag = by_text[value] = self.resolve(ScalarNode, value, event.implicit)
                node = ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
                nodes += 1
                characters += len(value)
                if event.anchor is not None:
                    _define(anchors, event, node)
                    sizes[event.anchor] = (1, len(value))
                    heights[event.anchor] = 0
            elif kind is AliasEvent:
                name = event.anchor
                if name not in anchors:
                    raise yaml.composer.ComposerError(None, None, "found undefined alias %r" % name, event.start_mark)
                if name in open_anchors:
                    raise HostileShape("YAML alias *%s is inside the structure it names (line %d)"
                                       % (name, event.start_mark.line + 1))
                node = anchors[name]
                if heights[name] and stack:
                    _raise_height(stack[-1], 1 + _value_height(node, heights[name], _merges_into(stack)), event)
                copied_nodes, copied_characters = sizes[name]
                nodes += copied_nodes
                characters += copied_characters
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                closed = stack.pop()
                closed.node.end_mark = event.end_mark
                if closed.anchor is not None:
                    open_anchors.discard(closed.anchor)
                    sizes[closed.anchor] = (nodes - closed.nodes, characters - closed.characters)
                    heights[closed.anchor] = closed.height
                if not stack:
                    return closed.node
                _raise_height(stack[-1], 1 + _value_height(closed.node, closed.height, closed.merged), closed.through)
                continue
            else:  # a collection starts
                collection = SequenceNode if kind is SequenceStartEvent else MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self.resolve(collection, None, event.implicit)
                node = collection(tag, [], event.start_mark, None, flow_style=event.flow_style)
                if event.anchor is not None:
                    _define(anchors, event, node)
                    open_anchors.add(event.anchor)
                if len(stack) >= MAX_DEPTH:
                    raise HostileShape("nests deeper than %d levels" % MAX_DEPTH)
                merged = _merges_into(stack)
                _attach(stack, node)
                stack.append(_Open(node, event.anchor, nodes, characters, merged))
                nodes += 1
                continue
            if nodes > node_budget or characters > character_budget:
                raise HostileShape("expands (YAML aliases) beyond %d nodes or %d characters of text"
                                   % (node_budget, character_budget))
            if not stack:
                return node
            _attach(stack, node)


def _merge_order(node) -> list:
    """`node` and the mappings its merge keys bring in, and theirs, each after those it merges:
    the order to flatten them in, each once."""
    order, seen = [], set()
    pending = [(node, False)]
    while pending:
        mapping, merged_ones_listed = pending.pop()
        if merged_ones_listed:
            order.append(mapping)
        elif id(mapping) not in seen:
            seen.add(id(mapping))
            pending.append((mapping, True))
            pending += [(merged, False) for merged in reversed(_merged_mappings(mapping))]
    return order


def _merged_mappings(node) -> list:
    """The mappings the merge keys of `node` name, in order (what is no mapping is refused when
    `node` is flattened)."""
    mappings = []
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            if isinstance(value, MappingNode):
                mappings.append(value)
            elif isinstance(value, SequenceNode):
                mappings += [item for item in value.value if isinstance(item, MappingNode)]
    return mappings


def _merged_pairs(node, value) -> list:
    """The pairs the value of one merge key of `node` brings in, flattened already, as
    SafeConstructor merges them: a mapping's own, or those of a list of mappings, the last one's
    first."""
    if isinstance(value, MappingNode):
        return value.value
    if not isinstance(value, SequenceNode):
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping", node.start_mark,
            "expected a mapping or list of mappings for merging, but found %s" % value.id, value.start_mark)
    for mapping in value.value:
        if not isinstance(mapping, MappingNode):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "expected a mapping for merging, but found %s" % mapping.id, mapping.start_mark)
    pairs = []
    for mapping in reversed(value.value):
        pairs += mapping.value
    return pairs


def _merges_into(stack: List[_Open]) -> bool:
    """Whether the node that comes next at the top of `stack` is the value of a merge key."""
    parent = stack[-1] if stack else None
    return parent is not None and parent.key is not None and parent.key.tag == _MERGE_TAG


def _value_height(node, height: int, merged: bool) -> int:
    """The levels that `node`, whose value nests `height` levels, adds below the mapping or list
    that holds it. The value of a merge key adds its pairs to the mapping that has the key: a
    mapping one level less, a list of mappings two."""
    if not merged:
        return height
    return height - (1 if type(node) is MappingNode else 2)


def _raise_height(parent: _Open, height: int, alias) -> None:
    """Note that `parent`'s value nests `height` levels, through `alias` if one made it so; refuse
    it beyond MAX_DEPTH.

    The text's own nesting is held to MAX_DEPTH as it is composed: only aliases take a value
    deeper. The composer keeps one node for an alias, but the value holds what it names at the
    alias's place, and so on through the aliases in that."""
    if height <= parent.height:
        return
    parent.height, parent.through = height, alias
    if height > MAX_DEPTH:
        raise HostileShape("nests deeper than %d levels through YAML alias *%s (line %d)"
                           % (MAX_DEPTH, alias.anchor, alias.start_mark.line + 1))


def _too_many_tag_directives(text: str) -> bool:
    """Whether `text` has more than MAX_TAG_DIRECTIVES `%TAG` directives.

    libyaml compares each directive with every one before it, and looks the handle of each tag
    up among them one after the other: 200,000 directives (7 MB) took two minutes, a text of
    100 MB would take hours. A directive starts a line with `%TAG` (after the text's byte order
    mark, for the first), so a text with few such lines has few directives; one with more is
    scanned (not parsed) to count those that are directives and not lines of a text scalar, in
    time linear in it."""
    if text.count("%TAG") <= MAX_TAG_DIRECTIVES or len(_DIRECTIVE_LINE.findall(text)) <= MAX_TAG_DIRECTIVES:
        return False
    directives = 0
    try:
        for token in yaml.scan(text, Loader=_BaseLoader):
            if type(token) is DirectiveToken and token.name == "TAG":
                directives += 1
                if directives > MAX_TAG_DIRECTIVES:
                    return True
    except yaml.YAMLError:
        pass  # the parser stops at the same place, with the reason
    return False


# `%TAG` at the start of a line, after any of YAML's line breaks (CR, NEL, LS and PS too).
_DIRECTIVE_LINE = re.compile("(?:\\A\ufeff?|[\n\r\x85\u2028\u2029])%TAG")


def _cannot_be_hostile(text: str) -> bool:
    """True when `text` has no alias and too few indicators to nest MAX_DEPTH levels.

    Every collection starts with an indicator of its own (`[`, `{`, `-`, `?`, or the `:` after
    its first key), so their count bounds the depth; an alias needs a `*`. Most single log
    lines that are not JSON pass, and go to the C composer at no risk.
    """
    return "*" not in text and (text.count("[") + text.count("{") + text.count("-") + text.count(":")
                                + text.count("?")) < MAX_DEPTH


def _define(anchors: dict, event, node) -> None:
    if event.anchor in anchors:
        raise yaml.composer.ComposerError("found duplicate anchor %r; first occurrence" % event.anchor,
                                          anchors[event.anchor].start_mark, "second occurrence", event.start_mark)
    anchors[event.anchor] = node


def _attach(stack: List[_Open], node) -> None:
    """Add `node` to the innermost open collection (a mapping takes a key, then its value)."""
    if not stack:
        return
    parent = stack[-1]
    if type(parent.node) is SequenceNode:
        parent.node.value.append(node)
    elif parent.key is None:
        parent.key = node
    else:
        parent.node.value.append((parent.key, node))
        parent.key = None


def _construct_python_tag(loader: LavaSafeLoader, suffix: str, node: yaml.Node) -> Any:
    value = _construct_plain(loader, node)
    if suffix != DECIMAL_SUFFIX:
        return value
    arguments = value.get("args") if isinstance(value, dict) else value
    if isinstance(arguments, list) and len(arguments) == 1 and _is_number_or_text(arguments[0]):
        return arguments[0]
    raise yaml.constructor.ConstructorError(None, None, "unexpected Decimal arguments", node.start_mark)


def _construct_plain(loader: LavaSafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


def _is_number_or_text(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _construct_integer(loader: LavaSafeLoader, node: yaml.Node) -> int:
    """An integer as SafeConstructor reads it, but a base 60 one (`1:30:00`) longer than the
    digits Python reads a decimal integer of: SafeConstructor adds up its places one by one,
    each a multiplication as long as the number, in time quadratic in its length (a megabyte of
    `1:0:0...` took twenty seconds), where Python refuses a decimal integer of more digits."""
    text = node.value if isinstance(node, ScalarNode) else ""
    if ":" in text and len(text) > MAX_INTEGER_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, "a base 60 integer of %d characters, more than the %d digits an integer may have"
            % (len(text), MAX_INTEGER_DIGITS), node.start_mark)
    value = loader.construct_yaml_int(node)
    # A hexadecimal, octal or binary one is read in linear time at any length, but one beyond
    # those digits cannot be written as a decimal number, as its document must be.
    if value.bit_length() > _SAFE_INTEGER_BITS and abs(value) >= _TOO_MANY_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, "an integer (%s...) of more than the %d decimal digits an integer may have"
            % (text[:12], MAX_INTEGER_DIGITS), node.start_mark)
    return value


LavaSafeLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_python_tag)
LavaSafeLoader.add_constructor("tag:yaml.org,2002:int", _construct_integer)

# What PyYAML raises on bad input: its own errors, plus builtin ones from the safe constructors
# on explicit tags with bad values (`!!int ''` IndexError, `!!bool x` KeyError,
# `!!timestamp x` AttributeError, `!!int 9...9` ValueError).
YAML_FAILURES = (yaml.YAMLError, ArithmeticError, LookupError, ValueError, TypeError, AttributeError, RecursionError)


def load(text: str, what: str) -> Any:
    """Parse one YAML document safely; raise RejectedInput naming `what` if it cannot be read
    or is refused (too deep, self-referencing, expanding beyond the limits)."""
    loader = None
    try:
        loader = LavaSafeLoader(text)  # libyaml encodes the text first: a lone surrogate fails here
        return loader.get_single_data()
    except HostileShape as refusal:
        raise RejectedInput("%s refused: %s" % (what, one_line(refusal))) from None
    except YAML_FAILURES as error:
        raise RejectedInput("%s is not valid YAML: %s" % (what, _describe(error))) from None
    finally:
        if loader is not None:
            loader.dispose()


def _describe(error: Exception) -> str:
    if isinstance(error, yaml.YAMLError):
        return one_line(error)
    return one_line("%s: %s" % (type(error).__name__, error))
