"""``WAIAAS_SEALED_KEYS_DIR`` (`parent_proxy.settings`): an absolute path, never together with ``WAIAAS_DATA_BUCKET``,
and a directory the proxy can write, or start-up stops naming it (`parent_proxy.__main__.main`, status 2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parent_proxy.__main__ import main, open_sealed_copies
from parent_proxy.settings import SettingsError, load_settings
from tests.proxy.minimal_settings import BASE

DIR = "WAIAAS_SEALED_KEYS_DIR"


def test_unset_keeps_no_directory_copy_and_set_names_the_directory() -> None:
    assert load_settings(BASE).sealed_keys_dir is None and open_sealed_copies(load_settings(BASE)) is None
    settings = load_settings({**BASE, DIR: "/var/lib/waiaas/sealed"})
    assert settings.sealed_keys_dir == "/var/lib/waiaas/sealed"
    copies = open_sealed_copies(settings)
    assert copies is not None and copies.where == "the sealed-keys directory"
    assert repr(copies) == "SealedCopies(SealedDirectory('/var/lib/waiaas/sealed'))"


@pytest.mark.parametrize("value", ["", " ", "sealed", "./sealed", "~/sealed", "/var/lib/\0x"])
def test_a_path_that_is_not_absolute_stops_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match=r"^WAIAAS_SEALED_KEYS_DIR must be an absolute path$"):
        load_settings({**BASE, DIR: value})


def test_a_directory_and_a_data_bucket_together_stop_start_up() -> None:
    """One copy target per deployment: a copy in one and not the other would leave an operator looking in the wrong
    place for a key."""
    with pytest.raises(SettingsError, match=r"^WAIAAS_DATA_BUCKET and WAIAAS_SEALED_KEYS_DIR are both set: "):
        load_settings({**BASE, DIR: "/var/lib/waiaas/sealed", "WAIAAS_DATA_BUCKET": "waiaas-data@eu-west-1"})


@pytest.mark.parametrize("which", ["missing", "a file", "unwritable"])
def test_start_up_stops_naming_a_directory_it_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    if which == "unwritable":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux's /proc (a directory no one may add a file to, root included)")
        path = Path("/proc")
    else:
        path = tmp_path / "sealed"
        if which == "a file":
            path.write_bytes(b"")
    # A state the proxy cannot open (its directory does not exist): a proxy that went on past the check fails there
    # at once rather than serving.
    env = {**BASE, "WAIAAS_STATE": f"sqlite:{tmp_path}/no-such-dir/state.db", DIR: str(path)}
    assert main(env) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"parent_proxy: WAIAAS_SEALED_KEYS_DIR {re.escape(str(path))} (cannot be used: .+|is not a "
                        r"directory)\n", err), err  # fmt: skip
