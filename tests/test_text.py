"""one_line: every exception shown to a user is cut to one short line the same way (dnd_engine.text)."""

from __future__ import annotations

from dnd_engine.text import first_line, one_line


def test_one_line_takes_the_first_non_blank_line_stripped():
    assert one_line(ValueError("\n  bad value  \nTraceback (most recent call last):\n  ...")) == "bad value"


def test_one_line_says_the_type_when_the_message_is_empty():
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("  \n ")) == "RuntimeError"
    assert one_line(OSError(), typed=True) == "OSError"


def test_one_line_typed_and_limited():
    assert one_line(ValueError("x" * 500), typed=True) == "ValueError: " + "x" * 300
    assert one_line(ValueError("abcdef"), limit=3) == "abc"
    assert one_line(ValueError("a\nb"), limit=None) == "a"


def test_first_line_of_plain_text():
    assert first_line("") == ""
    assert first_line("\n\nsecond\nthird") == "second"
