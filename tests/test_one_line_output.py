"""Text kcing quotes from outside (upstream names, Logstash's and Elasticsearch's answers, file
names) stays on its line: no line break, no terminal escape sequence, no line of kcing's own
forged, and no line without bound, on stderr, in the -l log file and on stdout.

The run tests run the real `kcing` program against the API replica and the Logstash emulators,
as cron would.
"""
from __future__ import annotations

import pytest

from kcing.errors import kept_on_one_line, one_line

# What a hostile answer would put into a line: a terminal escape (clear the screen), a carriage
# return and a line feed, a forged line of kcing's own, the other line breaks (U+2028, NEL), and
# the 8-bit control sequence introducer (0x9b), which a terminal in 8-bit mode obeys as ESC [.
HOSTILE = "\x1b[2J\rX\nkcing feed_es: run finished: all good\u2028Y\x9b31m\x85Z\x7f"


def controls_in(text: str) -> list:
    return [character for character in text if not (character.isprintable() or character == " ")]


@pytest.mark.parametrize("control", ["\x9b", "\x80", "\x90", "\x9d", "\x9f"])
def test_c1_controls_are_written_as_escapes(control):
    assert kept_on_one_line("a%sb" % control) == "a\\x%02xb" % ord(control)
    assert not controls_in(one_line("a%sb" % control))


def test_a_hostile_text_keeps_no_control_character():
    assert not controls_in(kept_on_one_line(HOSTILE))
    assert not controls_in(one_line(HOSTILE))
