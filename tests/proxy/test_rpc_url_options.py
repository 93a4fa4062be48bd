"""``--rpc-url-file`` and the warning on ``--rpc-url`` (parent_proxy.rpc_url_options), shared by `waiaas selfhost up`
and the owner commands that read the chain.

Review s21 (secret hygiene): `waiaas selfhost up --rpc-url URL` kept a provider's API key (in the path or query) in
/proc/PID/cmdline, readable by every local user, for the runner's whole life; there was no other way to give it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parent_proxy.rpc_url_options import command_line_warning, exposed_parts, rpc_url_option


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("https://rpc.example.com", []),
        ("https://rpc.example.com/", []),
        ("http://127.0.0.1:8899", []),
        ("https://rpc.example.com#fragment", []),  # never sent
        ("https://rpc.example.com/v2/KEY", ["path"]),
        ("https://rpc.example.com?api-key=KEY", ["query"]),
        ("https://rpc.example.com/?api-key=KEY", ["query"]),
        ("https://KEY@rpc.example.com", ["user info"]),
        ("https://u:KEY@rpc.example.com:8443/v2/KEY?k=KEY", ["user info", "path", "query"]),
    ],
)
def test_the_parts_that_can_hold_a_key_are_named(url: str, parts: list[str]) -> None:
    assert exposed_parts(url) == parts
    warning = command_line_warning(url)
    assert (warning is None) == (not parts)
    if warning is not None:
        assert "KEY" not in warning and warning.startswith(f"--rpc-url has a {' and a '.join(parts)}, ")


def test_a_url_on_the_command_line_is_used_with_a_warning_only_when_it_shows_a_key() -> None:
    warnings: list[str] = []
    assert rpc_url_option("https://rpc.example.com/", None, warnings.append) == "https://rpc.example.com/"
    assert warnings == []
    url = "https://rpc.example.com/v2/SECRETKEY"
    assert rpc_url_option(url, None, warnings.append) == url
    assert len(warnings) == 1 and "SECRETKEY" not in warnings[0] and "--rpc-url-file FILE instead" in warnings[0]


def test_a_refused_url_gets_the_refusal_and_no_warning() -> None:
    warnings: list[str] = []
    with pytest.raises(ValueError, match=r"^--rpc-url must be https \(plain http only to localhost") as refused:
        rpc_url_option("http://10.0.0.5:8899/SECRETKEY", None, warnings.append)
    assert warnings == [] and "SECRETKEY" not in str(refused.value)


def _url_file(tmp_path: Path, text: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "rpc-url"
    path.write_bytes(text)
    path.chmod(mode)
    return path


def test_the_file_gives_its_first_line_stripped_without_a_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    path = _url_file(tmp_path, b"  https://rpc.example.com/v2/SECRETKEY \r\nsecond line\n")
    assert rpc_url_option(None, path, warnings.append) == "https://rpc.example.com/v2/SECRETKEY"
    assert warnings == []


def test_a_pipe_works_too(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.write(write, b"https://rpc.example.com/v2/SECRETKEY\n")
    os.close(write)
    try:
        assert rpc_url_option(None, Path(f"/dev/fd/{read}"), print) == "https://rpc.example.com/v2/SECRETKEY"
    finally:
        os.close(read)


def test_a_file_open_to_others_is_used_with_a_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    path = _url_file(tmp_path, b"https://rpc.example.com/v2/SECRETKEY\n", 0o644)
    assert rpc_url_option(None, path, warnings.append) == "https://rpc.example.com/v2/SECRETKEY"
    assert warnings == [f"--rpc-url-file {path} is accessible to group or others (mode 644); chmod 600 it"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\nhttps://rpc.example.com\n", "the first line is empty"),
        (b"   \n", "the first line is empty"),
        (b"https://rpc.example.com/\xff\n", "the first line is not UTF-8 text"),
        (b"ftp://rpc.example.com/SECRETKEY\n", "the URL must be an http(s) URL"),
        (b"http://rpc.example.com/SECRETKEY\n", "the URL must be https (plain http only to localhost"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_not_the_url(tmp_path: Path, content: bytes, message: str) -> None:
    path = _url_file(tmp_path, content)
    with pytest.raises(ValueError, match=r"^--rpc-url-file ") as refused:
        rpc_url_option(None, path, print)
    assert str(refused.value).startswith(f"--rpc-url-file {path}: {message}")
    assert "SECRETKEY" not in str(refused.value)


def test_a_missing_file_and_both_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing: cannot be read \(No such file or directory\)$"):
        rpc_url_option(None, tmp_path / "missing", print)
    with pytest.raises(ValueError, match=r"^give --rpc-url or --rpc-url-file, not both$"):
        rpc_url_option("https://rpc.example.com", _url_file(tmp_path, b"https://rpc.example.com\n"), print)
    assert rpc_url_option(None, None, print) is None
