"""Safe YAML loading for LAVA callbacks (job definition, results, log).

The stored logs contain `!!python/object/apply:decimal.Decimal ["2"]` tags, written by the
dispatcher's Python dumper; `yaml.safe_load` refuses them and the backend used the unsafe
loader. `LavaSafeLoader` stays a SafeLoader (libyaml's C one when available) and only adds a
constructor that reads every `python/...` tag as plain data: nothing is imported or called.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

from kcing.documents.coerce import one_line
from kcing.errors import RejectedInput

# Real callbacks nest about 8 levels deep. libyaml's composer recurses in C, so a deep enough
# nesting overflows the C stack and kills the process instead of raising: refuse it first.
MAX_DEPTH = 100
# Aliases are shared references, but copying out of them (merge keys, JSON encoding of a log
# message) expands them; a few dozen nested aliases make billions of nodes. Allow this many
# nodes beyond one per character of text.
EXPANSION_ALLOWANCE = 100_000

DECIMAL_SUFFIX = "object/apply:decimal.Decimal"

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LavaSafeLoader(_BaseLoader):
    """SafeLoader that reads `!!python/...` tags as data (Decimal as its argument)."""


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


LavaSafeLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_python_tag)

# What PyYAML raises on bad input: its own errors, plus builtin ones from the safe constructors
# on explicit tags with bad values (`!!int ''` IndexError, `!!bool x` KeyError,
# `!!timestamp x` AttributeError, `!!int 9...9` ValueError).
YAML_FAILURES = (yaml.YAMLError, ArithmeticError, LookupError, ValueError, TypeError, AttributeError, RecursionError)


def load(text: str, what: str) -> Any:
    """Parse one YAML document safely; raise RejectedInput naming `what` if it cannot be read."""
    if len(text) > MAX_DEPTH:
        # Shorter text cannot nest deeper than MAX_DEPTH nor expand far: skipping is exact.
        _refuse_hostile_shapes(text, what)
    loader = None
    try:
        loader = LavaSafeLoader(text)  # libyaml encodes the text first: a lone surrogate fails here
        return loader.get_single_data()
    except YAML_FAILURES as error:
        raise RejectedInput("%s is not valid YAML: %s" % (what, _describe(error))) from None
    finally:
        if loader is not None:
            loader.dispose()


def _describe(error: Exception) -> str:
    if isinstance(error, yaml.YAMLError):
        return one_line(error)
    return one_line("%s: %s" % (type(error).__name__, error))


def _refuse_hostile_shapes(text: str, what: str) -> None:
    """Walk the parse events (iterative in libyaml) and refuse deep nesting or alias bombs."""
    budget = len(text) + EXPANSION_ALLOWANCE
    anchored_sizes = {}
    open_collections = []  # (anchor, nodes counted before the collection started)
    nodes = 0
    loader = None
    try:
        loader = LavaSafeLoader(text)
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, AliasEvent):
                nodes += anchored_sizes.get(event.anchor, 1)
            elif isinstance(event, ScalarEvent):
                nodes += 1
            elif isinstance(event, CollectionStartEvent):
                open_collections.append((event.anchor, nodes))
                nodes += 1
                if len(open_collections) > MAX_DEPTH:
                    raise RejectedInput("%s nests deeper than %d levels" % (what, MAX_DEPTH))
            elif isinstance(event, CollectionEndEvent):
                anchor, before = open_collections.pop()
                if anchor is not None:
                    anchored_sizes[anchor] = nodes - before
            if nodes > budget:
                raise RejectedInput("%s expands (YAML aliases) beyond %d nodes" % (what, budget))
    except YAML_FAILURES:
        return  # a syntax error: the loader reports it with its own message
    finally:
        if loader is not None:
            loader.dispose()
