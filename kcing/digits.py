"""Which digits a number may be written in: 0-9 alone.

Python's str.isdigit(), int() and float() also take other scripts' digits ("٣", "３") and
str.isdigit() even superscripts ("²", which int() then refuses); HTTP, Elasticsearch, Logstash
and cron's sh read only 0-9. Both checks live here so every reader of numbers agrees.
"""
from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """Whether `text` is a number written in 0-9 alone (not empty, no sign, no other script's digits)."""
    return text.isascii() and text.isdigit()


def foreign_digits(text: str) -> bool:
    """Whether `text` holds a digit other than 0-9 ("٣", "３", "²"). int() and float() read any
    script's digits, no other tool reads them: such a number is a pasted mistake, taken as a
    number only by accident."""
    return any(not character.isascii() and (character.isdigit() or character.isdecimal()) for character in text)
