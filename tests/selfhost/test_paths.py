"""selfhost.paths: container paths onto a local root, whole components only, and nothing left pointing inside."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfhost import paths
from selfhost.paths import PathMappingError, local_dirs, translate

ROOT = Path("/tmp/waiaas-local")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("unix:/run/waiaas/signer.sock", f"unix:{ROOT}/socket/signer.sock"),
        ("sqlite:/var/lib/waiaas/state/waiaas.db", f"sqlite:{ROOT}/state/waiaas.db"),
        ("/var/lib/waiaas/state", f"{ROOT}/state"),
        ("/var/lib/waiaas/sealed", f"{ROOT}/sealed"),
        ("/run/secrets/waiaas_unseal_secret", f"{ROOT}/secrets/waiaas_unseal_secret"),
        ("KEY=/run/waiaas/signer.sock", f"KEY={ROOT}/socket/signer.sock"),
        ("os.stat('/run/waiaas/signer.sock')", f"os.stat('{ROOT}/socket/signer.sock')"),
    ],
)
def test_known_paths_are_mapped(value: str, expected: str) -> None:
    assert translate(value, ROOT) == expected


@pytest.mark.parametrize(
    "value",
    ["litesvm", "127.0.0.1", "8080", "/run/waiaasx/y", "http://127.0.0.1:8080/run/waiaas", "python", "-m"],
)
def test_other_values_are_left_alone(value: str) -> None:
    assert translate(value, ROOT) == value


@pytest.mark.parametrize("value", ["/var/lib/waiaas/keys/x", "unix:/var/lib/waiaas", "/var/lib/waiaas"])
def test_unmapped_container_paths_are_refused(value: str) -> None:
    with pytest.raises(PathMappingError, match="no local mapping for a path under /var/lib/waiaas"):
        translate(value, ROOT)


def test_the_error_does_not_echo_the_value() -> None:
    with pytest.raises(PathMappingError, match="no local mapping for a path under /var/lib/waiaas") as info:
        translate("hunter2:/var/lib/waiaas/x", ROOT)
    assert "hunter2" not in str(info.value)


def test_local_dirs_cover_every_container_dir() -> None:
    dirs = local_dirs(ROOT)
    assert set(dirs) == {paths.SOCKET_DIR, paths.STATE_DIR, paths.SEALED_DIR, paths.SECRETS_DIR}
    assert len(set(dirs.values())) == len(dirs)
    assert all(path.parent == ROOT for path in dirs.values())


def test_a_backslash_in_the_root_is_taken_literally() -> None:
    assert translate("/run/waiaas/s", Path("/tmp/a\\1")) == "/tmp/a\\1/socket/s"


@given(
    container_dir=st.sampled_from(sorted(paths.CONTAINER_TO_LOCAL)),
    rest=st.lists(st.text(alphabet="abcxyz._-0189", min_size=1, max_size=8), max_size=3),
    prefix=st.sampled_from(["", "unix:", "sqlite:", "X="]),
)
def test_mapping_keeps_the_rest_of_the_path(container_dir: str, rest: list[str], prefix: str) -> None:
    suffix = "".join(f"/{part}" for part in rest)
    local = local_dirs(ROOT)[container_dir]
    assert translate(f"{prefix}{container_dir}{suffix}", ROOT) == f"{prefix}{local}{suffix}"
