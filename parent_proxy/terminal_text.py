"""The owner and audit tools' terminal-safe text: `policies.terminal_text`, re-exported.

The escaping is pure text handling, so it lives in `policies`, where ``waiaas policy check`` (which may not import
the services, DESIGN.md section 2) uses it too; the owner and audit tools import it from here.
"""

from __future__ import annotations

from policies.terminal_text import safe_line, terminal_safe

__all__ = ["safe_line", "terminal_safe"]
