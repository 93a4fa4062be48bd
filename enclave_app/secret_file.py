"""The operator secret file of the self-hosted signer: the one rule for its mode, and how it is read.

Whoever reads the unseal secret and a copy of the state opens every sealed agent key, so the file must be a regular
file that no one but its owner may touch: no permission bit for group or others (0400, as selfhost/secrets/README.md
makes it, or 0600). Three places apply this one rule (:func:`check_secret_file_mode`), each refusing with
:class:`~enclave_app.errors.SecretFileError` (the file and the reason, never a byte of it):

- the signer itself (``python -m enclave_app`` with the local sealer), before it reads the secret: it exits 1 and
  serves nothing (before, it read a world-readable file without a word);
- ``waiaas selfhost up`` and ``waiaas demo``, on the file they hand the signer (`selfhost.local_stack`,
  `selfhost.deployment`);
- ``waiaas selfhost reseal``, on the old and the new secret (`selfhost.reseal`).

The compose bundle passes it unchanged: Compose mounts a file secret as a bind mount of the host file, which keeps
its host owner and mode (the ``uid``/``gid``/``mode`` options of a service's secret apply to Swarm only), so the
signer in its container sees the mode the operator set on the host, 0400 and owned by uid 10001 as the README says.

Reading (:func:`read_operator_secret`): the mode is checked on the open file (``fstat``), so the file checked is the
file read; it is opened non-blocking, so a FIFO is refused at once instead of waited on; the secret is the file's
bytes without trailing CR/LF (an editor's final newline is not part of it). The one reading rule for the signer and
for ``waiaas selfhost reseal``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from enclave_app.errors import SecretFileError

SHARED_BITS: Final = stat.S_IRWXG | stat.S_IRWXO
"""Permission bits that must all be clear: any of them lets another user at the file (or at its replacement)."""
REQUIRED_MODE: Final = "0400"
"""The mode the messages ask for (0600 passes too)."""


def check_secret_file_mode(path: Path, st_mode: int) -> None:
    """Return if ``st_mode`` (from ``stat`` or ``fstat`` of ``path``) is a regular file's with none of
    `SHARED_BITS`; else :class:`SecretFileError` naming ``path``, its mode and the mode it needs."""
    if not stat.S_ISREG(st_mode):
        raise SecretFileError(f"{path}: not a regular file")
    mode = stat.S_IMODE(st_mode)
    if mode & SHARED_BITS:
        raise SecretFileError(f"{path}: readable by group or others (mode {mode:04o}; chmod {REQUIRED_MODE} it)")


def read_operator_secret(path: Path) -> bytes:
    """The operator secret in ``path`` as the signer uses it (module docstring); :class:`SecretFileError` if the file
    cannot be opened or read, is not a regular file, or is open to group or others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretFileError(f"{path}: {exc.strerror or 'cannot be opened'}") from None
    with os.fdopen(fd, "rb") as handle:
        check_secret_file_mode(path, os.fstat(handle.fileno()).st_mode)
        try:
            data = handle.read()
        except OSError as exc:
            raise SecretFileError(f"{path}: {exc.strerror or 'cannot be read'}") from None
    return data.rstrip(b"\r\n")
