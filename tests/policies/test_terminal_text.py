"""`policies.terminal_text`: what the owner, audit and policy tools write from data someone else chose cannot drive
the terminal, and ordinary text (non-ASCII letters included) is shown as it is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.terminal_text import safe_line, terminal_safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("x\r\x1b[2Kaudit verify: OK", "x\\x0d\\x1b[2Kaudit verify: OK"),  # CR + erase line: paints over FAILED
        ("w2\x1b[1D1", "w2\\x1b[1D1"),  # cursor left: w2 shows as w1
        ("{}\x1b]52;c;ZXZpbA==\x07", "{}\\x1b]52;c;ZXZpbA==\\x07"),  # OSC 52: writes the clipboard
        ("a\x9b2Kb", "a\\x9b2Kb"),  # C1 CSI: the 8-bit form of ESC [
        ("a\x85b\x7f", "a\\x85b\\x7f"),  # C1 NEL, DEL
        ("line\nforged line", "line\\x0aforged line"),  # a message stays one line
        ("tab\there", "tab\\x09here"),
        ("pay\u202eevil", "pay\\u202eevil"),  # right-to-left override
        ("zero\u200bwidth\u2028sep", "zero\\u200bwidth\\u2028sep"),
        ("\ue000private \U000e0041tag", "\\ue000private \\U000e0041tag"),
        ("lone \udc80", "lone \\udc80"),  # a surrogate (from surrogateescape decoding) would not even encode
    ],
)
def test_control_and_invisible_characters_are_escaped(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown
    assert safe_line(text) == shown + "\n"


@pytest.mark.parametrize("text", ["wallet w1", "Zürich, 東京, Ελλάδα, ✓ 🙂", "C:\\keys\\x1b is literal", ""])
def test_printable_text_is_left_alone(text: str) -> None:
    assert terminal_safe(text) == text


@given(st.text())
def test_the_output_is_always_printable_and_printable_input_unchanged(text: str) -> None:
    safe = terminal_safe(text)
    assert safe.isprintable()
    assert (safe == text) == text.isprintable()
