"""No core dump of the signer: ``python -m enclave_app`` calls :func:`forbid_core_dumps` once its settings are read,
before it reads the unseal secret or makes any key.

A core dump is the process's memory on disk: the unseal secret (self-host), every agent key it unsealed, its session
key. The compose bundle sets ``ulimits: core: 0`` on the container, and ``waiaas selfhost up`` on the processes it
starts (`selfhost.lifetime.child_setup`), but a signer started any other way (by hand, another supervisor) inherits
its caller's limit, often ``unlimited`` in a developer's shell. So the process sees to it itself:

1. ``RLIMIT_CORE`` to 0, soft and hard: no core file, and (the hard limit) the process cannot raise it again.
2. Linux: ``prctl(PR_SET_DUMPABLE, 0)``. The kernel makes no core dump of a non-dumpable process at all, also where
   ``core_pattern`` pipes dumps to a program (``|...``: the limit is then that program's to honour), and processes
   of the same user without ``CAP_SYS_PTRACE`` can no longer attach a debugger or read its memory
   (``/proc/PID/mem``). The flag lasts until the next ``execve``.

Fail-safe: a step that fails where it exists raises :class:`~enclave_app.errors.CoreDumpError`, and the signer exits
1 before any secret is in memory. Where there is no ``prctl`` (not Linux: a developer's run of ``waiaas selfhost
up`` on macOS; the Nitro Enclave and the compose images are Linux), step 1 alone applies: :func:`forbid_core_dumps`
says so and the signer logs it; refusing there would refuse a platform, not a failure.

`parent_proxy.core_dumps` does the same for the proxy (the parent may not import this package's runtime modules).
"""

from __future__ import annotations

import ctypes
import resource
import sys
from typing import Final

from enclave_app.errors import CoreDumpError

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
