"""The `log` of a LAVA callback: a YAML list with one flow mapping per line, parsed fast.

Each line looks like `- {"dt": "2020-11-19T07:03:25.393174", "lvl": "info", "msg": "..."}` and
nearly always of the same form: three texts of printable ASCII with nothing to escape. Those
lines are cut into their texts by one regular expression over the whole log (`read_log_text`);
every other line is decoded as JSON where YAML would read it alike (about ten times faster than
YAML), else given to the safe YAML loader on its own. The result is the list `yamlsafe.load`
returns for the whole text; tests compare both on the real files and on random lines. When a
line cannot be read on its own (an alias, a scalar continued on the next line, a block scalar
taking in the blank lines or the line break after it), or anchors are on more than one line, the
whole text goes to the YAML loader.
"""
from __future__ import annotations

import json
import re
from json.decoder import scanstring
from typing import Any, Dict, List, Optional, Tuple

from kcing.documents import yamlsafe
from kcing.errors import RejectedInput

# A JSON line takes the fast path only if YAML would read it identically. These make YAML
# read a line differently from JSON, or fail on it: control characters (a tab is not YAML
# flow whitespace), C1 controls and NEL, U+2028/U+2029 (YAML line breaks), a BOM, U+FFFE/F,
# lone surrogates, and escaped surrogates, high or low (JSON joins pairs and decodes a lone one,
# libyaml refuses them all).
_YAML_SENSITIVE_CHARACTER = re.compile(
    "[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
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
    return read_log_text(text).marked()[0]


def parse_log_marked(text: str) -> Tuple[List[Any], List[bool]]:
    """`parse_log(text)`, and for each item whether its line was printable ASCII without a
    backslash: then no text in the item has a character JSON escapes (a quote, a backslash, a
    control character), and its JSON is the text in quotes."""
    return read_log_text(text).marked()


class LogText:
    """A log's items as read, in one of two forms.

    Read line by line (`lines` is not None): one tuple per non-empty line, in order,
    `(dt, lvl, msg, "")` for a usual line (see `_USUAL_LINE_OR_OTHER`), whose item is the
    mapping of dt, lvl and `message_text(msg)` (msg as it stands in the line), or
    `("", "", "", line)` for any other line, whose items and plain marks are `apart[line]`.
    Read whole (`lines` is None): the items and their marks.
    A log document builder takes the usual lines' texts as they are, without making a mapping.
    """

    __slots__ = ("lines", "apart", "_marked")

    def __init__(self, lines: Optional[List[Tuple[str, str, str, str]]], apart: Dict[str, Tuple[List[Any], List[bool]]],
                 marked: Optional[Tuple[List[Any], List[bool]]] = None):
        self.lines = lines
        self.apart = apart
        self._marked = marked

    @classmethod
    def of_items(cls, items: List[Any], plain: Optional[List[bool]] = None) -> "LogText":
        return cls(None, {}, (items, [False] * len(items) if plain is None else plain))

    def __len__(self) -> int:
        if self.lines is None:
            return len(self._marked[0])
        apart = self.apart
        return len(self.lines) + sum(len(apart[other][0]) - 1 for _, _, _, other in self.lines if other)

    def marked(self) -> Tuple[List[Any], List[bool]]:
        """The items, each with whether its texts need no JSON escaping."""
        if self._marked is None:
            items: List[Any] = []
            plain: List[bool] = []
            for dt, lvl, msg, other in self.lines:
                if other:
                    items += self.apart[other][0]
                    plain += self.apart[other][1]
                else:
                    items.append({"dt": dt, "lvl": lvl, "msg": message_text(msg)})
                    plain.append("\\" not in msg)
            self._marked = items, plain
        return self._marked


# A usual line of a LAVA log, as the dispatcher writes nearly all of them: a flow mapping of a
# "dt" with 3 to 6 decimals of a second, a "lvl" and a "msg", all three texts of
# printable ASCII without a quote or a backslash, except that the message may hold the escapes
# that JSON and YAML read alike and that JSON writes back the same way (\" \\ \b \f \n \r \t).
# YAML and JSON read such a line alike, to those three texts (no other escape, no tag, no alias,
# no line break), and the JSON of each text is the text in quotes as it stands in the line. Any
# other non-empty line is taken whole, in the fourth group.
_PLAIN_TEXT = r'[ !#-\[\]-~]*'
_MESSAGE = _PLAIN_TEXT + r'(?:\\["\\bfnrt]' + _PLAIN_TEXT + r')*'
_USUAL_LINE_OR_OTHER = re.compile(
    r'^- \{"dt": "([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3,6})", '
    r'"lvl": "(' + _PLAIN_TEXT + r')", "msg": "(' + _MESSAGE + r')"\}$|^(.+)$', re.MULTILINE)


def message_text(msg: str) -> str:
    """The text of a usual line's message as it stands in the line (its JSON without quotes)."""
    return scanstring('"%s"' % msg, 1)[0] if "\\" in msg else msg


def read_log_text(text: str) -> LogText:
    """The items of `text`, equal to `yamlsafe.load(text)`: line by line when every line can be
    read on its own (nearly always), else whole.

    The usual lines are told apart and cut into their texts by one regular expression over the
    whole text; each other line is read on its own, once however often it repeats (repeats
    share their items, which nothing changes). When one cannot be read on its own (an alias, a
    scalar continued on the next line), or when more than one line may define an anchor (see
    `_anchors_may_repeat`), the whole text goes to the YAML loader.
    """
    lines = _USUAL_LINE_OR_OTHER.findall(text)
    apart = {}
    anchored = set()
    for other in {line[3] for line in lines if line[3]}:
        read = _line_alone(other)
        if read is None:
            return _read_whole(text)
        items, plain, by_loader = read
        if by_loader and "&" in other:
            anchored.add(other)
        apart[other] = items, plain
    if anchored and _anchors_may_repeat(lines, anchored):
        return _read_whole(text)
    return LogText(lines, apart)


def _anchors_may_repeat(lines: List[Tuple[str, str, str, str]], anchored: set) -> bool:
    """Whether more than one of `lines`, a repeat included, is in `anchored`.

    The loader refuses a text that defines an anchor twice, and a line read alone knows only its
    own anchors: two lines that may define one (read by the loader, with a `&`) may define the
    same, so the text is read whole. Only the loader reads an anchor: JSON has none.
    """
    return sum(other in anchored for _, _, _, other in lines) > 1


def _read_whole(text: str) -> LogText:
    return LogText.of_items(_whole(text))


def _line_alone(line: str) -> Optional[Tuple[List[Any], List[bool], bool]]:
    """The items of one non-empty line, their plain marks and whether the YAML loader read them,
    or None when the line only makes sense read with the whole text."""
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
                return [item], ["\\" not in line], False
    if not line.startswith(_ITEM_PREFIX):
        return None
    item = _json_item(line)
    if item is _NOT_JSON and DECIMAL_TAG in line:
        item = _json_item_untagged(line)
    if item is not _NOT_JSON:
        return [item], [False], False
    parsed = _yaml_line(line)
    if parsed is None:
        return None
    return parsed, [False] * len(parsed), True


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


# The tag of a results line's measurement (`"measurement": !!python/object/apply:decimal.Decimal
# ["2"]`), which the loader reads as its one quoted text ("2"), as the value of a quoted key.
DECIMAL_TAG = "!!python/object/apply:decimal.Decimal"
_TAGGED_VALUE = re.compile(r'(?<=": )!!python/object/apply:decimal\.Decimal \[("[^"\\]*")\]')


def _json_item_untagged(line: str) -> Any:
    """`_json_item` of `line` with each tagged value replaced by its quoted text, which JSON then
    reads as the loader reads the tagged value; _NOT_JSON when a tag may be in a quoted text.

    Without a backslash in the line, a position is in a quoted text when an odd number of
    quotes come before it: a tag found there is left, and the line goes to the YAML loader.
    The brackets are counted before the replacement: a tag's list is a level of nesting to the
    loader, which JSON no longer sees.
    """
    if "\\" in line or line.count("[") + line.count("{") >= yamlsafe.MAX_DEPTH:
        return _NOT_JSON
    parts = []
    position = 0
    quotes = 0  # before the tag, counted on from the last one: the line is scanned once
    for tagged in _TAGGED_VALUE.finditer(line):
        quotes += line.count('"', position, tagged.start())
        if quotes % 2:
            return _NOT_JSON
        parts += (line[position:tagged.start()], tagged.group(1))
        position = tagged.end()
    if not parts:
        return _NOT_JSON
    parts.append(line[position:])
    return _json_item("".join(parts))


def _reads_alike(line: str) -> bool:
    """Whether nothing in `line` makes YAML read it differently from JSON."""
    # Printable ASCII, the common case, is tested by two quick string methods.
    if not (line.isascii() and line.isprintable()) and _YAML_SENSITIVE_CHARACTER.search(line):
        return False
    return "\\u" not in line or not _SURROGATE_ESCAPE.search(line)


def _yaml_line(line: str):
    """The items of one line read alone, or None if it only makes sense with its neighbours.

    A line that may hold an alias (`*`) is not read alone: an alias can point at another line,
    and the loader's limit on alias expansion counts the whole text, not one line. Nor is one
    that may hold a block text whose value depends on what follows the line (see
    `_block_text_may_reach_past`).
    """
    if "*" in line or _block_text_may_reach_past(line):
        return None
    try:
        parsed = yamlsafe.load(line, "log")
    except RejectedInput:
        return None
    return parsed if isinstance(parsed, list) else None


# Line breaks to YAML besides "\n": a line of the log may hold several lines of YAML.
_INNER_LINE_BREAKS = ("\r", "\x85", "\u2028", "\u2029")


def _block_text_may_reach_past(line: str) -> bool:
    """Whether `line` may hold a block text (`|`, `>`) whose value takes in what follows the line:
    the blank lines after it, which the line loop skips, when it keeps its trailing line breaks
    (`|+`, `>2+`); the line's own "\n", which ends its last content line, when its content
    lines are within this line (after a CR, NEL, U+2028 or U+2029)."""
    if "|" not in line and ">" not in line:
        return False
    return "+" in line or any(inner in line for inner in _INNER_LINE_BREAKS)


def _whole(text: str) -> List[Any]:
    parsed = yamlsafe.load(text, "log")
    if parsed is None:
        return []
    if not isinstance(parsed, list):
        raise RejectedInput("log is not a YAML list")
    return parsed
