"""Escaped lone surrogates in JSON text, which no UTF-8 output can carry."""
from __future__ import annotations

import re

# An escaped backslash, an escaped surrogate pair, or an escaped lone surrogate (6 characters).
_ESCAPES = re.compile(
    r"\\\\"
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)
# Half of a character in a str (json.loads makes one of an escaped lone surrogate).
_LONE = re.compile("[\ud800-\udfff]")


def lone_surrogates_replaced(text: str) -> str:
    """JSON `text` with escaped lone surrogates ("\\udcff") replaced by U+FFFD.

    Python writes them for undecodable bytes (surrogateescape); they load as strings that
    cannot be encoded as UTF-8, so neither libyaml, the ids nor the sink could take them.
    Escaped backslashes are matched too so that a literal "\\\\udcff" stays as it is.
    """
    if "\\ud" not in text and "\\uD" not in text:
        return text
    return _ESCAPES.sub(lambda match: "\\ufffd" if len(match.group()) == 6 else match.group(), text)


def lone_surrogates_escaped(text: str) -> str:
    """JSON `text` written with its characters as they are (`ensure_ascii=False`), each lone
    surrogate written as its escape ("\\ud83d") instead, as JavaScript's JSON.stringify writes it:
    the same JSON, in a text UTF-8 can carry."""
    return _LONE.sub(lambda found: "\\u%04x" % ord(found.group()), text)
