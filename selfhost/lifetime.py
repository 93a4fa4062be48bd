"""How the services of ``waiaas selfhost up`` and ``waiaas demo`` end when the runner does.

Each service runs in a session of its own (:mod:`selfhost.local_stack`), so nothing the terminal sends reaches it;
the runner alone decides when the services stop, and two things make sure they never outlive it:

- :func:`stop_on_signals`: SIGHUP (terminal closed, SSH session dropped), SIGINT (Ctrl-C), SIGTERM (``kill``,
  ``timeout``, systemd) and SIGQUIT all become the same clean stop: :class:`KeyboardInterrupt` in the runner, whose
  ``finally`` blocks stop every service in reverse order. Once the stop has begun, further stop signals are ignored,
  so a second one cannot cut it short. A signal the runner was started with ignored (``nohup`` ignores SIGHUP)
  stays ignored.
- :func:`die_with_runner`: each service is started with a parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG,
  SIGTERM)``), so a runner that is killed outright (SIGKILL, the OOM killer), and so cannot clean up, still takes
  its services with it: each gets the SIGTERM the runner would have sent. Elsewhere there is no such signal and
  only the clean stop applies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final, NoReturn

STOP_SIGNALS: Final = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
PR_SET_PDEATHSIG: Final = 1
"""From <linux/prctl.h>."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, each of :data:`STOP_SIGNALS` raises :class:`KeyboardInterrupt` once (see the module
    docstring); the previous handlers are back on exit. Main thread only, as every Python signal handler."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    caught = [signum for signum, handler in previous.items() if handler is not signal.SIG_IGN]

    def stop(_signum: int, _frame: FrameType | None) -> NoReturn:
        for signum in caught:  # the stop that follows is not to be interrupted by a second signal
            signal.signal(signum, signal.SIG_IGN)
        raise KeyboardInterrupt

    for signum in caught:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def die_with_runner() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that gives the child SIGTERM when this process dies; None
    where the platform has no parent-death signal (not Linux).

    Run in the child between fork and exec: it asks for the signal, then checks that its parent is still this
    process, since a runner that died before the ``prctl`` call would never send it (the child then ends
    before it runs anything). Only the calling thread's exit triggers the signal: call it from the thread that
    lives as long as the runner (the main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    runner = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != runner:
            raise RuntimeError("the runner exited before this service started")

    return preexec
