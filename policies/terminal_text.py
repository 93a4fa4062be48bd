"""Text the command-line tools write to a terminal, made safe when someone else chose part of it.

What the owner, audit and policy tools print is often built from data the reader did not write: an API answer
(``waiaas owner call``), a receipt or an attestation answer a parent relayed (``verify-wallet``), a record of the
log it keeps (``waiaas audit verify``), a check id of its multisig report, a policy file or a transaction handed to
``waiaas policy check`` (a field name, a file name). A terminal obeys control characters in that text: a carriage
return and ``ESC [ 2K`` erase a FAILED line and paint another one over it, ``ESC [ 1D`` moves the cursor so that
``w2`` shows as ``w1``, ``ESC ] 52`` writes the clipboard, a bidi override reorders what follows. The exit code
stays honest, but the reader reads the screen. Pure text handling, so it lives in `policies` (which the services
import, and which imports neither; DESIGN.md section 2), and the tools import it from here.

:func:`terminal_safe` writes every character that is not printable (`str.isprintable`: Unicode categories
``Cc`` (C0 and C1 controls, ESC, DEL, CR, LF, TAB), ``Cf`` (bidi overrides, zero-width characters), ``Cs``, ``Co``,
``Cn``, ``Zl``, ``Zp``, and every space separator except the ASCII space) as a Python-style escape: ``\\xNN`` below
U+0100, ``\\uNNNN`` below U+10000, ``\\UNNNNNNNN`` above. Printable text, ordinary non-ASCII letters included, is
left as it is; so is the backslash (an escaped character and a literal backslash sequence look alike on screen;
neither moves the cursor). A message is one line: a line break inside it is escaped too, and the tool adds the
final newline (:func:`safe_line`). JSON output has its own rule: ``json.dumps`` with ``ensure_ascii`` (the default)
escapes every control character (DEL included) and every non-ASCII character as ``\\uNNNN`` and stays valid JSON.
"""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_safe(text: str) -> str:
    """``text`` with every non-printable character escaped (see the module docstring); printable text unchanged."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def safe_line(text: str) -> str:
    """``text`` made terminal-safe, as one line: a newline is added after it (never taken from it)."""
    return terminal_safe(text) + "\n"
