"""The sealed-keys directory (`parent_proxy.sealed_directory`) on a real file system: each copy written once, whole,
with owner-only modes, never outside the directory, and a crashed put leaving nothing a reader takes for a copy.

Before: the self-host bundle kept a wallet's sealed agent key only in its state, which a restore from an older backup
replaces whole; there was no directory target at all."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from parent_proxy.sealed_directory import (
    STALE_TEMP_SECONDS,
    TEMP_PREFIX,
    CopyMismatch,
    DirectoryUnavailable,
    SealedDirectory,
    check_directory,
)

AGENT = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
BLOB = b"\xa3sealed-blob-bytes" * 8
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def top(tmp_path: Path) -> Path:
    path = tmp_path / "sealed"
    path.mkdir(mode=0o700)
    return path


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_copy_is_written_once_owner_only_and_nothing_else_is_left(top: Path) -> None:
    assert SealedDirectory(top).put_new(f"w1/{AGENT}", BLOB, content_type="application/octet-stream") is True
    assert tree(top) == ["w1", f"w1/{AGENT}"]  # no temporary file left beside it
    assert (top / "w1" / AGENT).read_bytes() == BLOB
    assert (mode(top / "w1"), mode(top / "w1" / AGENT)) == (0o700, 0o400)


def test_the_same_bytes_again_count_as_written_and_the_file_is_not_replaced(top: Path) -> None:
    copies = SealedDirectory(top)
    copies.put_new(f"w1/{AGENT}", BLOB, content_type="x")
    first = (top / "w1" / AGENT).stat()
    assert copies.put_new(f"w1/{AGENT}", BLOB, content_type="x") is False  # a retried put whose answer was lost
    again = (top / "w1" / AGENT).stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert tree(top) == ["w1", f"w1/{AGENT}"]


@pytest.mark.parametrize(
    ("other", "how"),
    [(BLOB[:-1] + b"!", "of the same size, other bytes"), (BLOB + b"!", "of another size"), (b"", "of another size")],
)
def test_other_bytes_under_the_name_are_refused_and_kept(top: Path, other: bytes, how: str) -> None:
    """A different blob under a fresh agent key's name is never taken for this one, and the file there stays."""
    copies = SealedDirectory(top)
    copies.put_new(f"w1/{AGENT}", BLOB, content_type="x")
    message = rf"^{re.escape(str(top))}/w1/{AGENT} holds another sealed blob than this one \({how}\)"
    with pytest.raises(CopyMismatch, match=message):
        copies.put_new(f"w1/{AGENT}", other, content_type="x")
    assert (top / "w1" / AGENT).read_bytes() == BLOB
    assert tree(top) == ["w1", f"w1/{AGENT}"]


@pytest.mark.parametrize(
    "key",
    [
        f"../{AGENT}", f"w1/../{AGENT}", "w1/..", "../..", f"./{AGENT}", "w1/.", f"/w1/{AGENT}", f"w1/{AGENT}/x",
        f"w1//{AGENT}", f"w1/{AGENT}/", "w1", "", "/", f"/{AGENT}", f"w1/{TEMP_PREFIX}{AGENT}-00", f"w1/{AGENT}\0",
        f"w1\\..\\{AGENT}", f"w 1/{AGENT}",
    ],
)  # fmt: skip
def test_a_name_that_could_leave_the_directory_is_refused(top: Path, key: str) -> None:
    outside = sorted(p.name for p in top.parent.iterdir())
    with pytest.raises(DirectoryUnavailable, match=r"^a sealed copy's name must be <wallet id>/<agent public key>$"):
        SealedDirectory(top).put_new(key, BLOB, content_type="x")
    assert tree(top) == [] and sorted(p.name for p in top.parent.iterdir()) == outside


def test_a_link_in_place_of_a_wallet_directory_is_not_followed(top: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (top / "w1").symlink_to(elsewhere)
    with pytest.raises(DirectoryUnavailable, match=rf"^writing w1/{AGENT} under {re.escape(str(top))} failed: "):
        SealedDirectory(top).put_new(f"w1/{AGENT}", BLOB, content_type="x")
    assert list(elsewhere.iterdir()) == []


def test_the_configured_directory_may_itself_be_a_link(top: Path, tmp_path: Path) -> None:
    """The operator's path is taken as the start-up check takes it; only what lies inside is never followed."""
    link = tmp_path / "link"
    link.symlink_to(top)
    check_directory(link, now=time.time())
    assert SealedDirectory(link).put_new(f"w1/{AGENT}", BLOB, content_type="x") is True
    assert (top / "w1" / AGENT).read_bytes() == BLOB


def test_a_link_at_the_final_name_is_neither_followed_nor_replaced(top: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(BLOB)
    (top / "w1").mkdir(mode=0o700)
    (top / "w1" / AGENT).symlink_to(target)
    with pytest.raises(DirectoryUnavailable, match=rf"^writing w1/{AGENT} under {re.escape(str(top))} failed: "):
        SealedDirectory(top).put_new(f"w1/{AGENT}", BLOB, content_type="x")
    assert (top / "w1" / AGENT).is_symlink() and tree(top) == ["w1", f"w1/{AGENT}"]


@pytest.mark.parametrize("broken", ["the directory is gone", "a file holds the wallet's name"])
def test_what_the_file_system_refuses_is_directory_unavailable(top: Path, broken: str) -> None:
    if broken == "the directory is gone":
        top.rmdir()
    else:
        (top / "w1").write_bytes(b"")
    message = rf"^writing w1/{AGENT} under {re.escape(str(top))} failed: [A-Z]"
    with pytest.raises(DirectoryUnavailable, match=message) as refused:
        SealedDirectory(top).put_new(f"w1/{AGENT}", BLOB, content_type="x")
    assert not isinstance(refused.value, CopyMismatch)


def test_a_crash_before_the_link_leaves_only_a_temporary_file(top: Path) -> None:
    """The put's process dies between its synced temporary file and the link (a power cut there): the final name
    does not exist, half-written or otherwise; the next put of the copy writes it; a start-up check removes the
    leftover once it is stale, and only then."""
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from parent_proxy.sealed_directory import SealedDirectory
        os.link = lambda *args, **kwargs: os._exit(9)  # dies where the link would be made
        SealedDirectory(Path(sys.argv[1])).put_new("w1/{AGENT}", bytes.fromhex("{BLOB.hex()}"), content_type="x")
    """)
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    died = subprocess.run(
        [sys.executable, "-c", script, str(top)], cwd=REPO, env=environment, capture_output=True, check=False
    )
    assert died.returncode == 9, died.stderr
    (leftover,) = tree(top / "w1")
    assert leftover.startswith(f"{TEMP_PREFIX}{AGENT}-") and mode(top / "w1" / leftover) == 0o400
    assert not (top / "w1" / AGENT).exists()
    assert SealedDirectory(top).put_new(f"w1/{AGENT}", BLOB, content_type="x") is True  # the leftover is no copy
    assert (top / "w1" / AGENT).read_bytes() == BLOB
    check_directory(top, now=time.time())  # fresh: it may be a put under way in another worker
    assert sorted(tree(top / "w1")) == sorted([leftover, AGENT])
    check_directory(top, now=time.time() + STALE_TEMP_SECONDS + 1)
    assert tree(top / "w1") == [AGENT]


def test_the_start_up_check_takes_a_writable_directory_and_leaves_it_as_it_was(top: Path) -> None:
    SealedDirectory(top).put_new(f"w1/{AGENT}", BLOB, content_type="x")
    check_directory(top, now=time.time() + 10 * STALE_TEMP_SECONDS)
    assert tree(top) == ["w1", f"w1/{AGENT}"]


def test_the_start_up_check_refuses_what_is_no_usable_directory(tmp_path: Path) -> None:
    missing = rf"^{re.escape(str(tmp_path))}/missing cannot be used: No such file or directory$"
    with pytest.raises(DirectoryUnavailable, match=missing):
        check_directory(tmp_path / "missing", now=time.time())
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DirectoryUnavailable, match=rf"^{re.escape(str(tmp_path))}/file is not a directory$"):
        check_directory(tmp_path / "file", now=time.time())


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_the_start_up_check_refuses_a_directory_it_cannot_write() -> None:
    # /proc refuses a new file even to root (a chmod would not stop the root user these tests may run as).
    with pytest.raises(DirectoryUnavailable, match=r"^/proc cannot be used: "):
        check_directory(Path("/proc"), now=time.time())
