"""Which digits a number may be written in: 0-9 alone, and how a number is spelt.

Python's str.isdigit(), int() and float() also take other scripts' digits ("٣", "３") and
str.isdigit() even superscripts ("²", which int() then refuses); HTTP, Elasticsearch, Logstash
and cron's sh read only 0-9. Both checks live here so every reader of numbers agrees.
int() and float() also read spellings of Python's own: "1_0" (read as 10, whether 1.0 or 10 was
meant), "+3", and float() "nan", "inf" and "infinity". A setting or flag takes a number only as
other tools write it, so that a value means the same to kcing as to whoever wrote it.
"""
from __future__ import annotations

import re

# A whole number: 0-9 alone, with a minus sign (which the range of a count then refuses, saying it).
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
# A decimal number as C's strtod, JSON or Java read it: digits with a point, and an exponent.
_DECIMAL_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def ascii_digits(text: str) -> bool:
    """Whether `text` is a number written in 0-9 alone (not empty, no sign, no other script's digits)."""
    return text.isascii() and text.isdigit()


def foreign_digits(text: str) -> bool:
    """Whether `text` holds a digit other than 0-9 ("٣", "３", "²"). int() and float() read any
    script's digits, no other tool reads them: such a number is a pasted mistake, taken as a
    number only by accident."""
    return any(not character.isascii() and (character.isdigit() or character.isdecimal()) for character in text)


def whole_number_spelling(text: str) -> bool:
    """Whether `text` is a whole number as every tool writes it: 0-9 alone, with an optional
    leading minus; not "1_0", "+3" or " 3" (the caller strips what it means to drop)."""
    return _WHOLE_NUMBER.fullmatch(text) is not None


def decimal_number_spelling(text: str) -> bool:
    """Whether `text` is a number as every tool writes it (`0.5`, `.5`, `10`, `1e-3`): not "1_0",
    "+1", "nan" or "inf", which float() alone reads."""
    return _DECIMAL_NUMBER.fullmatch(text) is not None
