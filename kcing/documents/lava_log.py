"""The `log` of a LAVA callback: a YAML list with one flow mapping per line, parsed fast.

Each line looks like `- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "..."}` and
is almost always plain JSON after the leading "- ". `parse_log` decodes such lines as JSON
(about ten times faster than YAML), all of them at once when it can (see `_read_at_once`), and
gives every other line to the safe YAML loader on its own. The result is the list
`yamlsafe.load` returns for the whole text; tests compare both on the real files and on random
lines. When a line cannot be read on its own (an alias, a scalar continued on the next line),
the whole text goes to the YAML loader.
"""
from __future__ import annotations

import json
import re
from typing import Any, List, Optional, Tuple

import msgspec

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
    at_once = _read_at_once(text)
    if at_once is not None:
        return at_once
    return _read_by_line(text)


def _read_by_line(text: str) -> Tuple[List[Any], List[bool]]:
    items: List[Any] = []
    plain: List[bool] = []
    for line in text.split("\n"):
        if not line:
            continue
        read = _line_alone(line)
        if read is None:
            whole = _whole(text)
            return whole, [False] * len(whole)
        items.extend(read[0])
        plain.extend(read[1])
    return items, plain


def _line_alone(line: str) -> Optional[Tuple[List[Any], List[bool]]]:
    """The items of one non-empty line and their plain marks, or None when the line only makes
    sense read with the whole text."""
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
                return [item], ["\\" not in line]
    if not line.startswith(_ITEM_PREFIX):
        return None
    item = _json_item(line)
    if item is not _NOT_JSON:
        return [item], [False]
    parsed = _yaml_line(line)
    if parsed is None:
        return None
    return parsed, [False] * len(parsed)


# Reads the JSON array of many lines' items in one call, floats as `_DECODER` reads them.
_ARRAY_DECODER = msgspec.json.Decoder(float_hook=_yaml_compatible_float)
# A backslash JSON does not take as an escape, and YAML may ("\\0", "\\x41", "\\e"): its line is
# set apart (an escaped backslash before such a letter sets its line apart too, needlessly).
_NOT_A_JSON_ESCAPE = re.compile(r'\\[^"\\/bfnrtu]')
# Printable ASCII (what str.isprintable() accepts of ASCII) and the newline between lines.
_PRINTABLE_ASCII_LINES = bytes(range(0x20, 0x7f)) + b"\n"
_ALL_BUT_OPENING_BRACKETS = bytes(set(range(128)) - set(b"[{\n"))


def _read_at_once(text: str) -> Optional[Tuple[List[Any], List[bool]]]:
    """`_read_by_line(text)` for a log of usual lines, or None to read it line by line.

    Usual lines are what the line loop reads with its first, quickest test: "- {" and a short,
    shallow, printable ASCII JSON mapping without \\u escapes. Such lines are told apart with
    a few operations on the whole text, then decoded as one JSON array by one msgspec call. A
    line with a "!" (a YAML tag such as the Decimals of results lines), a \\u escape, an escape
    JSON lacks, or MAX_DEPTH brackets is read on its own, as the loop reads it, and its items
    put in its place. Any other line, or an array that does not decode to one value per line,
    sends the whole text to the loop.
    """
    if not text.isascii():
        return None
    lines = text.split("\n")
    if "" in lines:
        lines = [line for line in lines if line]
    if not lines or text.count("\n- {") + text.startswith("- {") != len(lines):
        return None  # a line does not start with "- {"
    ascii_text = text.encode("ascii")
    if max(map(len, lines)) > _SHORT_LINE or ascii_text.translate(None, _PRINTABLE_ASCII_LINES):
        return None  # a long line, or a character isprintable() refuses
    apart = {}  # number -> a line read on its own, as the line loop reads it
    if "!" in text or "\\u" in text or _NOT_A_JSON_ESCAPE.search(text):
        apart = {number: line for number, line in enumerate(lines)
                 if "!" in line or ("\\" in line and ("\\u" in line or _NOT_A_JSON_ESCAPE.search(line)))}
    # A line's depth is at most its brackets: the lines with MAX_DEPTH of them are set apart.
    # Counted on the text's brackets and newlines alone, as the lines' lengths.
    if max(map(len, ascii_text.translate(None, _ALL_BUT_OPENING_BRACKETS).split(b"\n"))) >= yamlsafe.MAX_DEPTH:
        apart.update((number, line) for number, line in enumerate(lines)
                     if line.count("[") + line.count("{") >= yamlsafe.MAX_DEPTH)
    usual = [line for number, line in enumerate(lines) if number not in apart] if apart else lines
    try:
        items = _ARRAY_DECODER.decode("[" + "\n".join(usual)[len(_ITEM_PREFIX):].replace("\n- ", ",") + "]")
    except (ValueError, RecursionError):  # msgspec's DecodeError is a ValueError
        return None
    if len(items) != len(usual):
        return None  # a line held more than one value
    plain = [True] * len(items) if "\\" not in text else ["\\" not in line for line in usual]
    if not apart:
        return items, plain
    # The set-apart lines' items in their places: before the one of rank r come its number - r
    # usual lines.
    merged_items: List[Any] = []
    merged_plain: List[bool] = []
    taken = 0
    for rank, number in enumerate(sorted(apart)):
        read = _line_alone(apart[number])
        if read is None:
            return None
        merged_items += items[taken:number - rank]
        merged_plain += plain[taken:number - rank]
        taken = number - rank
        merged_items += read[0]
        merged_plain += read[1]
    merged_items += items[taken:]
    merged_plain += plain[taken:]
    return merged_items, merged_plain


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
