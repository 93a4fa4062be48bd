"""How the services of ``waiaas selfhost up`` and ``waiaas demo`` end when the runner does.

Each service runs in a session of its own (:mod:`selfhost.local_stack`), so nothing the terminal sends reaches it;
the runner alone decides when the services stop, and three things make sure they never outlive it:

- :func:`stop_on_signals`: SIGHUP (terminal closed, SSH session dropped), SIGINT (Ctrl-C), SIGTERM (``kill``,
  ``timeout``, systemd) and SIGQUIT all become the same clean stop: :class:`KeyboardInterrupt` in the runner, whose
  ``finally`` blocks stop every service in reverse order. A signal the runner was started with ignored (``nohup``
  ignores SIGHUP) stays ignored.
- :func:`signals_held`: while the services are being stopped (``ProcessGroup.stop_all``) the stop signals are
  blocked, so a second one cannot cut the stop short (it is delivered once that group is stopped, and the next
  ``finally`` still stops the rest); and they are blocked while a process is forked and recorded, where Python
  would otherwise run the handler inside a fork callback that swallows its exception (the stop would be lost),
  or between the fork and the record (the process would not be stopped).
- :func:`child_setup`: each service is started with a parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG,
  SIGTERM)``), so a runner that is killed outright (SIGKILL, the OOM killer), and so cannot clean up, still takes
  its services with it: each gets the SIGTERM the runner would have sent. Elsewhere there is no such signal and
  only the clean stop applies.

The runner starts no threads: a blocked signal is then deferred for the whole process, not handled by another
thread.

:func:`child_setup` also sets each process's core-file limit to 0 (soft and hard), as the compose file's
``ulimits: core: 0`` does for the containers: the runner's own limit (often ``unlimited`` in a developer's shell)
would otherwise be inherited, and a crash of the signer would write its unseal secret and unsealed agent keys to a
core file. The signer and the proxy also forbid core dumps themselves at start-up (`enclave_app.core_dumps`,
`parent_proxy.core_dumps`); this covers every process started here, the local chain and the healthchecks too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final, NoReturn

STOP_SIGNALS: Final = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
PR_SET_PDEATHSIG: Final = 1
"""From <linux/prctl.h>."""


def _stop(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, each of :data:`STOP_SIGNALS` raises :class:`KeyboardInterrupt` (see the module docstring);
    the previous handlers are back on exit. Main thread only, as every Python signal handler."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[set[int | signal.Signals]]:
    """:data:`STOP_SIGNALS` blocked within the block, delivered (if any came) at its end; yields the mask before."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield before
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def child_setup(mask: set[int | signal.Signals]) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`, for a fork made within :func:`signals_held` (``mask``: what it
    yielded). Call it from the main thread: only the exit of the thread that started a child triggers the
    parent-death signal. Run in the child between fork and exec: the runner's signal mask back, the core-file limit
    to 0 (module docstring), then (Linux) the parent-death signal, and a check that the parent is still the runner,
    since a runner that died before the ``prctl`` call would never send it (the child then ends before it runs
    anything)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    runner = os.getpid()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # lowering never fails; an error stops the start
        if prctl is None:
            return
        if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != runner:
            raise RuntimeError("the runner exited before this process started")

    return setup
