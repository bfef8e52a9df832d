"""Text shown on a terminal: control characters escaped, every script kept."""

from __future__ import annotations

from utils.text import terminal_safe

ESCAPES = "\x1b[31mred\x1b[0m \x1b]0;owned\x07 \x9b2J \x7f\x00"  # colour, window title (OSC), C1 CSI, DEL, NUL
SCRIPTS = "আমি আজ খুব খুশি 我很高兴 😀 café"


def test_control_characters_are_shown_escaped_and_nothing_else_changes():
    shown = terminal_safe(ESCAPES + " " + SCRIPTS)
    assert shown == r"\x1b[31mred\x1b[0m \x1b]0;owned\x07 \x9b2J \x7f\x00 " + SCRIPTS
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in shown)


def test_newline_and_tab_stay_where_a_layout_needs_them():
    assert terminal_safe("a\nb\tc\rd", keep="\n\t") == "a\nb\tc\\x0dd"
    assert terminal_safe("a\nb") == "a\\x0ab"
