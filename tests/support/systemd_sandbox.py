"""Run a command under the seccomp half of a systemd unit's sandbox, where systemd is not the init (this machine).

``python -m tests.support.systemd_sandbox UNIT_LINES_FILE -- COMMAND...`` loads seccomp filters equivalent to what
systemd 252 (Amazon Linux 2023's) loads for the unit's ``[Service]`` lines in the file, then replaces itself with
COMMAND. Emulated, as systemd does it (a filter per feature; the kernel takes the strictest answer):

- ``SystemCallFilter``: the first allow list plus ``@default``, less each ``~`` list that follows; anything else
  kills the process (SIGSYS). Groups are expanded by ``systemd-analyze syscall-filter``, so the lists are the
  installed systemd's own; names this architecture lacks are skipped, as systemd skips them.
- ``SystemCallArchitectures=native``: another architecture's calls kill the process.
- ``RestrictAddressFamilies`` (an allow list): ``socket()`` of another family fails with EAFNOSUPPORT.
- ``MemoryDenyWriteExecute``: writable and executable ``mmap``, executable ``mprotect``/``pkey_mprotect`` and
  ``shmat(SHM_EXEC)`` fail with EPERM.
- the calls other lines deny: ``ProtectClock`` (``@clock``), ``ProtectKernelModules`` (``@module``),
  ``ProtectKernelLogs`` (``syslog``), ``RestrictNamespaces=yes`` (``setns``; ``unshare`` and ``clone`` with a
  namespace flag: EPERM; ``clone3``: ENOSYS, so that glibc falls back to ``clone``), ``LockPersonality``
  (``personality`` other than ``PER_LINUX``), ``RestrictRealtime`` (realtime policies in ``sched_setscheduler``),
  ``RestrictSUIDSGID`` (set-user/group-id bits in the modes of ``chmod``, ``creat``, ``mkdir``, ``mknod`` and
  ``open`` with ``O_CREAT``, each call and its ``at`` form; not ``O_TMPFILE``), ``NoNewPrivileges``.

Not emulated (mounts, namespaces, capabilities, users: they need systemd; the emulated process keeps the caller's
user and capabilities): ``ProtectSystem``, ``ProtectHome``, ``PrivateTmp``, ``PrivateMounts``,
``ProtectKernelTunables``, ``ProtectControlGroups``, ``ProtectHostname``'s namespace, ``CapabilityBoundingSet``,
``UMask``, ``RemoveIPC``, ``User``.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

try:
    import pyseccomp as seccomp
except (ImportError, OSError, RuntimeError) as exc:  # RuntimeError: pyseccomp found no libseccomp
    seccomp = None
    _NO_SECCOMP: str | None = f"pyseccomp cannot load libseccomp ({exc})"
else:
    _NO_SECCOMP = None

SIGSYS_EXIT = -31
"""``Popen.returncode`` of a process the filter killed (SIGSYS)."""

_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
"""CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET."""
_SHM_EXEC = 0o100000
_SET_ID_BITS = (0o4000, 0o2000)  # S_ISUID, S_ISGID
_PER_LINUX = 0
_SCHED_REALTIME = (1, 2, 6)  # SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
_UNKNOWN_SYSCALL = -1  # libseccomp's __NR_SCMP_ERROR


def available() -> str | None:
    """Why the emulation cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "seccomp is Linux only"
    if _NO_SECCOMP is not None:
        return _NO_SECCOMP
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze (the syscall group lists) is not installed"
    return None


def service_lines(text: str) -> list[tuple[str, str]]:
    """``(key, value)`` of each ``Key=value`` line of ``text`` (comments and section headers skipped)."""
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not a unit line: {line!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


@functools.cache
def _group(name: str) -> frozenset[str]:
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    members: set[str] = set()
    for raw in listing.splitlines()[1:]:
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        members |= _group(item) if item.startswith("@") else {item}
    return frozenset(members)


def expand(items: Iterable[str]) -> set[str]:
    """The system call names ``items`` (names and ``@groups``) stand for."""
    names: set[str] = set()
    for item in items:
        names |= _group(item) if item.startswith("@") else {item}
    return names


def allowed_syscalls(lines: Sequence[tuple[str, str]]) -> set[str] | None:
    """The allow list the ``SystemCallFilter`` lines make (None: there is no allow list)."""
    allowed: set[str] | None = None
    for key, value in lines:
        if key != "SystemCallFilter" or not value:
            continue
        if value.startswith("~"):
            if allowed is None:
                raise ValueError("a deny list before any allow list is not emulated")
            allowed -= expand(value[1:].split())
        else:
            allowed = (allowed or expand(["@default"])) | expand(value.split())
    return allowed


def _add(filt: seccomp.SyscallFilter, action: int, name: str, *args: seccomp.Arg) -> None:
    """Add the rule, except for a name libseccomp does not know (systemd skips those too); any other refusal of a
    rule raises, so that no rule is dropped unseen."""
    if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) != _UNKNOWN_SYSCALL:
        filt.add_rule(action, name, *args)


def _flag(lines: Sequence[tuple[str, str]], key: str) -> bool:
    return any(k == key and v == "yes" for k, v in lines)


def _allow_list_filter(allowed: set[str]) -> seccomp.SyscallFilter:
    filt = seccomp.SyscallFilter(seccomp.KILL_PROCESS)
    for name in sorted(allowed):
        _add(filt, seccomp.ALLOW, name)
    return filt


def _families_filter(value: str) -> seccomp.SyscallFilter:
    allowed = sorted(getattr(socket, name).value for name in value.split())
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    refused = seccomp.ERRNO(errno.EAFNOSUPPORT)
    for family in range(allowed[-1]):
        if family not in allowed:
            _add(filt, refused, "socket", seccomp.Arg(0, seccomp.EQ, family))
    _add(filt, refused, "socket", seccomp.Arg(0, seccomp.GT, allowed[-1]))
    return filt


def _write_execute_filter() -> seccomp.SyscallFilter:
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)
    write_exec = mmap.PROT_WRITE | mmap.PROT_EXEC
    _add(filt, eperm, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, write_exec, write_exec))
    for name in ("mprotect", "pkey_mprotect"):
        _add(filt, eperm, name, seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
    _add(filt, eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, _SHM_EXEC, _SHM_EXEC))
    return filt


def _denials_filter(lines: Sequence[tuple[str, str]]) -> seccomp.SyscallFilter:
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)
    denied: set[str] = set()
    if _flag(lines, "ProtectClock"):
        denied |= expand(["@clock"])
    if _flag(lines, "ProtectKernelModules"):
        denied |= expand(["@module"])
    if _flag(lines, "ProtectKernelLogs"):
        denied.add("syslog")
    for name in sorted(denied):
        _add(filt, eperm, name)
    if _flag(lines, "RestrictNamespaces"):
        _add(filt, eperm, "setns")  # no namespace kept: systemd refuses every setns
        for flag in _NAMESPACE_FLAGS:
            for name in ("clone", "unshare"):
                _add(filt, eperm, name, seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        _add(filt, seccomp.ERRNO(errno.ENOSYS), "clone3")
    if _flag(lines, "LockPersonality"):
        _add(filt, eperm, "personality", seccomp.Arg(0, seccomp.NE, _PER_LINUX))
    if _flag(lines, "RestrictRealtime"):
        for policy in _SCHED_REALTIME:
            _add(filt, eperm, "sched_setscheduler", seccomp.Arg(1, seccomp.EQ, policy))
    if _flag(lines, "RestrictSUIDSGID"):
        for bit in _SET_ID_BITS:
            mode = (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("creat", 1))
            for name, arg in (*mode, ("mkdir", 1), ("mkdirat", 2), ("mknod", 1), ("mknodat", 2)):
                _add(filt, eperm, name, seccomp.Arg(arg, seccomp.MASKED_EQ, bit, bit))
            for name, flags in (("open", 1), ("openat", 2)):
                created = seccomp.Arg(flags, seccomp.MASKED_EQ, os.O_CREAT, os.O_CREAT)
                _add(filt, eperm, name, created, seccomp.Arg(flags + 1, seccomp.MASKED_EQ, bit, bit))
    return filt


def build_filters(lines: Sequence[tuple[str, str]]) -> list[seccomp.SyscallFilter]:
    """The filters for ``lines``, in load order (the system call allow list last: it must allow the loads)."""
    if ("SystemCallArchitectures", "native") not in lines:
        raise ValueError("only units with SystemCallArchitectures=native are emulated")
    filters = [_denials_filter(lines)]
    for key, value in lines:
        if key == "RestrictAddressFamilies" and value:
            if value.startswith("~"):
                raise ValueError("a family deny list is not emulated")
            filters.append(_families_filter(value))
    if _flag(lines, "MemoryDenyWriteExecute"):
        filters.append(_write_execute_filter())
    allowed = allowed_syscalls(lines)
    if allowed is not None:
        filters.append(_allow_list_filter(allowed))
    for filt in filters:
        filt.set_attr(seccomp.Attr.CTL_NNP, 1)  # NoNewPrivileges=yes (the kernel requires it for an unprivileged load)
    return filters


def main(argv: Sequence[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m tests.support.systemd_sandbox UNIT_LINES_FILE -- COMMAND...")
    lines = service_lines(Path(argv[0]).read_text(encoding="utf-8"))
    for filt in build_filters(lines):
        filt.load()
    os.execvp(argv[2], list(argv[2:]))  # noqa: S606 (the command under test, as systemd would start it)


if __name__ == "__main__":
    main(sys.argv[1:])
