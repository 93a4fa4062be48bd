"""No core dump of the proxy: ``python -m parent_proxy`` calls :func:`forbid_core_dumps` once its settings are read,
before it opens the state or serves (and each ``WAIAAS_WORKERS`` process again, since the flag of step 2 does not
survive the ``execve`` that starts it).

The proxy's memory holds what a core dump would put on disk: the wallets' webhook secrets, the AWS credentials it
lends the enclave (cloud), agent tokens and owner requests in flight. As for the signer
(`enclave_app.core_dumps`, which the parent may not import: DESIGN.md section 2; the two stay alike, and
tests/test_core_dumps.py runs the same checks on both):

1. ``RLIMIT_CORE`` to 0, soft and hard.
2. Linux: ``prctl(PR_SET_DUMPABLE, 0)``: no core dump at all, also through a ``core_pattern`` pipe, and no debugger
   attach or ``/proc/PID/mem`` read by other processes of the same user without ``CAP_SYS_PTRACE``.

Fail-safe: a step that fails where it exists raises :class:`~parent_proxy.errors.CoreDumpError` and the proxy exits
1; without ``prctl`` (not Linux) step 1 alone applies, and the proxy logs it.
"""

from __future__ import annotations

import ctypes
import resource
import sys
from typing import Final

from parent_proxy.errors import CoreDumpError

PR_GET_DUMPABLE: Final = 3
PR_SET_DUMPABLE: Final = 4
"""From <linux/prctl.h>."""


def forbid_core_dumps() -> bool:
    """Steps 1 and 2 of the module docstring. True when both applied, False when the platform has no ``prctl`` (step
    1 alone); :class:`CoreDumpError` when a step failed."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        raise CoreDumpError(f"setrlimit(RLIMIT_CORE, 0) failed: {type(exc).__name__}") from None
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise CoreDumpError(f"prctl(PR_SET_DUMPABLE, 0) failed (errno {ctypes.get_errno()})")
    return True
