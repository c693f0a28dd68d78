"""The `log` of a LAVA callback: a YAML list with one flow mapping per line, parsed fast.

Each line looks like `- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "..."}` and
is almost always plain JSON after the leading "- ". `parse_log` decodes such lines with `json`
(about ten times faster than YAML) and gives every other line to the safe YAML loader on its
own. The result is the list `yamlsafe.load` returns for the whole text; tests compare both on
the real files and on random lines. When a line cannot be read on its own (an alias, a scalar
continued on the next line), the whole text goes to the YAML loader.
"""
from __future__ import annotations

import json
import re
from typing import Any, List, Tuple

from kcing.documents import yamlsafe
from kcing.errors import RejectedInput

# A JSON line takes the fast path only if YAML would read it identically. These make YAML
# read a line differently from JSON, or fail on it: control characters (a tab is not YAML
# flow whitespace), C1 controls and NEL, U+2028/U+2029 (YAML line breaks), a BOM, U+FFFE/F,
# lone surrogates, and escaped surrogates (JSON joins pairs, libyaml refuses them).
_YAML_SENSITIVE_CHARACTER = re.compile(
    "[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]")
# YAML 1.1 reads a number as a float only with a dot and a signed exponent ("1.5e+3");
# JSON's "1e5" or "1.5e3" are strings to YAML.
_YAML_FLOAT = re.compile(r"-?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?")
_ITEM_PREFIX = "- "
# YAML allows at most 1024 characters from the start of a mapping key to its ":"; JSON has no
# limit. Lines up to this length cannot exceed it; longer ones are checked key by key.
_SHORT_LINE = 1000
# A decoded key this long is at most 12 * 80 + 2 characters as JSON text (escapes included).
_LONGEST_SAFE_KEY = 80
_SPACE_BEFORE_COLON = re.compile(r'"\s+:')


class _NotLikeYaml(ValueError):
    """A JSON literal that YAML would read as a different type."""


def _yaml_compatible_float(literal: str) -> float:
    if not _YAML_FLOAT.fullmatch(literal):
        raise _NotLikeYaml(literal)
    return float(literal)


def _refuse_constant(literal: str) -> Any:
    raise _NotLikeYaml(literal)  # NaN and Infinity are plain strings to YAML


def _object_with_short_keys(pairs: list) -> dict:
    for key, _ in pairs:
        if len(key) > _LONGEST_SAFE_KEY:
            raise _NotLikeYaml(key)
    return dict(pairs)


_DECODER = json.JSONDecoder(parse_float=_yaml_compatible_float, parse_constant=_refuse_constant)
_LONG_LINE_DECODER = json.JSONDecoder(parse_float=_yaml_compatible_float, parse_constant=_refuse_constant,
                                      object_pairs_hook=_object_with_short_keys)
_NOT_JSON = object()


# The decoder's scanner reads one JSON value from a position in a string: a line's item is read
# in place, after its "- ", without the decoder's Python layers (checks, slicing, whitespace).
_SCAN = _DECODER.scan_once


def parse_log(text: str) -> List[Any]:
    """Return the log items of `text`, equal to `yamlsafe.load(text)` (an empty log is [])."""
    return parse_log_marked(text)[0]


def parse_log_marked(text: str) -> Tuple[List[Any], List[bool]]:
    """`parse_log(text)`, and for each item whether its line was printable ASCII without a
    backslash: then no text in the item has a character JSON escapes (a quote, a backslash, a
    control character), and its JSON is the text in quotes."""
    items: List[Any] = []
    plain: List[bool] = []
    for line in text.split("\n"):
        if not line:
            continue
        # The usual line, read at once: what `_json_item` would read with `_DECODER` (a short,
        # shallow, printable ASCII mapping without \u escapes, nothing after it). Anything else,
        # a failure included, takes the general way below.
        if (line.startswith("- {") and len(line) <= _SHORT_LINE and line.isascii() and line.isprintable()
                and ("\\" not in line or "\\u" not in line)
                and line.count("[") + line.count("{") < yamlsafe.MAX_DEPTH):
            try:
                item, end = _SCAN(line, len(_ITEM_PREFIX))
            except (StopIteration, ValueError, RecursionError):
                pass
            else:
                if end == len(line):
                    items.append(item)
                    plain.append("\\" not in line)
                    continue
        if not line.startswith(_ITEM_PREFIX):
            whole = _whole(text)
            return whole, [False] * len(whole)
        item = _json_item(line)
        if item is not _NOT_JSON:
            items.append(item)
            plain.append(False)
            continue
        parsed = _yaml_line(line)
        if parsed is None:
            whole = _whole(text)
            return whole, [False] * len(whole)
        items.extend(parsed)
        plain.extend([False] * len(parsed))
    return items, plain


def _json_item(line: str) -> Any:
    if not _reads_alike(line):
        return _NOT_JSON
    # Brackets bound the nesting depth (plus one for the log's own list); deeper lines go to
    # YAML, whose loader enforces the limit.
    if line.count("[") + line.count("{") >= yamlsafe.MAX_DEPTH:
        return _NOT_JSON
    decoder = _DECODER
    if len(line) > _SHORT_LINE:
        if _SPACE_BEFORE_COLON.search(line):
            return _NOT_JSON
        decoder = _LONG_LINE_DECODER
    try:
        return decoder.decode(line[len(_ITEM_PREFIX):])
    except (ValueError, RecursionError):
        return _NOT_JSON


def _reads_alike(line: str) -> bool:
    """Whether nothing in `line` makes YAML read it differently from JSON."""
    # Printable ASCII, the common case, is tested by two quick string methods.
    if not (line.isascii() and line.isprintable()) and _YAML_SENSITIVE_CHARACTER.search(line):
        return False
    return "\\u" not in line or not _SURROGATE_ESCAPE.search(line)


def _yaml_line(line: str):
    """The items of one line read alone, or None if it only makes sense with its neighbours.

    A line that may hold an alias (`*`) is not read alone: an alias can point at another line,
    and the loader's limit on alias expansion counts the whole text, not one line.
    """
    if "*" in line:
        return None
    try:
        parsed = yamlsafe.load(line, "log")
    except RejectedInput:
        return None
    return parsed if isinstance(parsed, list) else None


def _whole(text: str) -> List[Any]:
    parsed = yamlsafe.load(text, "log")
    if parsed is None:
        return []
    if not isinstance(parsed, list):
        raise RejectedInput("log is not a YAML list")
    return parsed
