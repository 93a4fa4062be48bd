"""The self-hosted target of the sealed-key copies: a directory (``WAIAAS_SEALED_KEYS_DIR``), each copy written once.

    <directory>/<wallet id>/<agent public key, base58>      a sealed agent key, as the store holds it

The self-host bundle mounts a volume of its own there (``sealed-keys``, proxy only: selfhost/docker-compose.yml), so
a blob survives a state that is overwritten, lost or restored from an older backup, as the data bucket keeps the
cloud's (`parent_proxy.sealed_copies`; docs/selfhost.md says how to put one back). Each put, in order:

1. the name is checked: exactly ``<wallet id>/<agent key>``, each part `NAME_PART` (a letter or digit first, so no
   ``.``, ``..``, empty part or temporary name can be one; ``/`` only between the two);
2. the wallet's directory is made (mode 0700) if new, and the top directory synced so its entry is durable;
3. the body goes into a temporary file in the wallet's directory (``.tmp-<agent key>-<random>``, mode 0400, made
   exclusively, never following a link), which is synced;
4. the temporary file is hard-linked to the final name: ``link`` refuses a name that exists, so nothing here ever
   replaces a file, and the final name appears whole or not at all; then the wallet's directory is synced;
5. the temporary name is removed.

A final name that exists already (step 4) is read back: the same bytes count as written (an earlier attempt of this
very put, whose answer was lost); other bytes are `CopyMismatch`, a different blob under a fresh agent key's name,
never accepted. A crash before step 4 leaves only a temporary file, which no reader takes for a copy (its name starts
with a dot) and which `check_directory` removes at the next start once it is `STALE_TEMP_SECONDS` old.

Errors (never a blob's bytes in a message; the caller, `sealed_copies.keep_sealed_copy`, refuses the request with
503 and nothing stored)::

    DirectoryUnavailable      the directory refused: any OSError (named by its strerror), or a name outside the rule
    └── CopyMismatch          the final name holds other bytes
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Final

NAME_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""One part of a copy's name: a wallet id (`policies.identifiers`, at most 64 of these characters) or a base58 agent
key. The first character is a letter or digit: ``.``, ``..`` and the temporary names (`TEMP_PREFIX`) are not parts."""
TEMP_PREFIX: Final = ".tmp-"
DIRECTORY_MODE: Final = 0o700
FILE_MODE: Final = 0o400
STALE_TEMP_SECONDS: Final = 3600.0
"""A temporary file this old is a crashed put's (a put takes milliseconds): `check_directory` removes it."""
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_OPEN_TOP: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
"""The configured directory itself may be a link (the operator's choice, as `check_directory` takes it)."""
_OPEN_WALLET: Final = _OPEN_TOP | _NOFOLLOW
"""A wallet's directory, inside it, never through a link."""


class DirectoryUnavailable(Exception):
    """The sealed-keys directory refused a copy, or the copy's name is outside the rule. The message names the
    operation and the reason, never a body."""


class CopyMismatch(DirectoryUnavailable):
    """The copy's name holds other bytes than the ones the put would write."""


def check_directory(path: Path, *, now: float) -> None:
    """At start-up: ``path`` is an existing directory this process can write (a file is made in it and removed), and
    each wallet directory's temporary files older than `STALE_TEMP_SECONDS` (at ``now``, seconds since the epoch)
    are removed. `DirectoryUnavailable` naming the path otherwise."""
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            raise DirectoryUnavailable(f"{path} is not a directory")
        with tempfile.TemporaryFile(dir=path):
            pass
        for wallet in os.scandir(path):
            if wallet.is_dir(follow_symlinks=False) and NAME_PART.fullmatch(wallet.name):
                _remove_stale_temps(Path(wallet.path), now)
    except OSError as exc:
        raise DirectoryUnavailable(f"{path} cannot be used: {exc.strerror or type(exc).__name__}") from None


def _remove_stale_temps(directory: Path, now: float) -> None:
    for entry in os.scandir(directory):
        if not entry.name.startswith(TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
            continue
        if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _parts(key: str) -> tuple[str, str]:
    parts = key.split("/")
    if len(parts) != 2 or not all(NAME_PART.fullmatch(part) for part in parts):
        raise DirectoryUnavailable("a sealed copy's name must be <wallet id>/<agent public key>")
    return parts[0], parts[1]


class SealedDirectory:
    """Write-once copies in one directory (blocking: run off the event loop, as `sealed_copies` does)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SealedDirectory({str(self.path)!r})"

    def put_new(self, key: str, body: bytes, *, content_type: str) -> bool:
        """Write ``body`` at ``key`` (``<wallet id>/<agent key>``) unless the name exists (module docstring): True
        when written, False when the name holds these very bytes, `CopyMismatch` when it holds others,
        `DirectoryUnavailable` for anything the file system refuses. ``content_type`` is the bucket's; a file has
        none."""
        del content_type
        wallet, name = _parts(key)
        try:
            return self._put(wallet, name, body)
        except OSError as exc:
            raise DirectoryUnavailable(f"writing {wallet}/{name} under {self.path} failed: "
                                       f"{exc.strerror or type(exc).__name__}") from None  # fmt: skip

    def _put(self, wallet: str, name: str, body: bytes) -> bool:
        top = os.open(self.path, _OPEN_TOP)
        try:
            try:
                os.mkdir(wallet, DIRECTORY_MODE, dir_fd=top)  # 2.
                os.fsync(top)
            except FileExistsError:
                pass
            directory = os.open(wallet, _OPEN_WALLET, dir_fd=top)
        finally:
            os.close(top)
        try:
            return self._link_new(directory, wallet, name, body)
        finally:
            os.close(directory)

    def _link_new(self, directory: int, wallet: str, name: str, body: bytes) -> bool:
        temp = f"{TEMP_PREFIX}{name}-{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE, dir_fd=directory)  # 3.
        try:
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temp, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)  # 4.
            except FileExistsError:
                self._check_same(directory, wallet, name, body)
                return False
            os.fsync(directory)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=directory)  # 5.

    def _check_same(self, directory: int, wallet: str, name: str, body: bytes) -> None:
        """`CopyMismatch` unless the file at ``name`` holds ``body``, byte for byte."""
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=directory)
        try:
            size = os.fstat(fd).st_size
            there = b"" if size != len(body) else _read_all(fd, size)
        finally:
            os.close(fd)
        if size != len(body) or there != body:
            how = "of another size" if size != len(body) else "of the same size, other bytes"
            raise CopyMismatch(f"{self.path}/{wallet}/{name} holds another sealed blob than this one ({how}); "
                               "it is kept as it is and nothing was stored")  # fmt: skip


def _read_all(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size + 1  # one more than expected: a file grown meanwhile reads as other bytes
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
