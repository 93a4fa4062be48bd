"""Static checks of the self-host images' recipes: pinned bases, hash-locked installs, non-root users.

No image is built here (there is no Docker engine in CI); these read the Dockerfiles and the lock file. The lock's
hashes were checked against PyPI when it was generated (docs/selfhost.md, "Upgrade").
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from selfhost import paths
from tests.selfhost.compose_config import REPO, SELFHOST

DOCKERFILES = {"signer": SELFHOST / "Dockerfile.signer", "proxy": SELFHOST / "Dockerfile.proxy"}
LOCK = SELFHOST / "requirements.lock"

_FROM = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?\s*$", re.IGNORECASE)
_PINNED_BASE = re.compile(r"python:3\.11[\w.-]*@sha256:[0-9a-f]{64}")
_REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+) \\$")


def instructions(path: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def stages(path: Path) -> list[tuple[str, str | None, list[str]]]:
    """(base image, stage name, instructions) for each stage."""
    result: list[tuple[str, str | None, list[str]]] = []
    for line in instructions(path):
        if match := _FROM.match(line):
            result.append((match["image"], match["stage"], []))
        elif result:
            result[-1][2].append(line)
        elif not line.upper().startswith("ARG "):
            raise AssertionError(f"instruction before the first FROM: {line}")
    return result


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("service", DOCKERFILES)
def test_bases_are_pinned_by_digest(service: str) -> None:
    found = stages(DOCKERFILES[service])
    assert len(found) >= 2, "multi-stage: a build stage and a runtime stage"
    seen: set[str] = set()
    for image, stage, _ in found:
        assert image in seen or _PINNED_BASE.fullmatch(image), image
        if stage:
            seen.add(stage)


def test_both_images_share_one_base() -> None:
    bases = {image for path in DOCKERFILES.values() for image, _, _ in stages(path) if "@sha256:" in image}
    assert len(bases) == 1, bases


@pytest.mark.parametrize("service", DOCKERFILES)
def test_runtime_stage_runs_as_the_service_user(service: str) -> None:
    *_, (_, _, final) = stages(DOCKERFILES[service])
    users = [line.split(None, 1)[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the runtime stage sets USER"
    assert users[-1] == f"{paths.SERVICE_UID}:{paths.SERVICE_UID}"
    # The runtime stage gets the built virtualenv, and runs no package installer of its own.
    assert any(line.startswith("COPY --from=build ") for line in final)
    assert not any(re.search(r"\bpip\b.*\binstall\b|apt-get", line) for line in final)


@pytest.mark.parametrize("service", DOCKERFILES)
def test_every_locked_install_checks_hashes(service: str) -> None:
    lines = instructions(DOCKERFILES[service])
    installs = [line for line in lines if re.search(r"\bpip install\b", line)]
    assert installs
    for line in installs:
        if " -r " in line:
            assert "--require-hashes" in line and "requirements.lock" in line, line
        else:
            # The project itself: from the copied source, with no index and no build isolation (which would
            # fetch an unpinned setuptools).
            assert "--no-index" in line and "--no-build-isolation" in line and "--no-deps" in line, line
    assert not any(line.upper().startswith("ADD ") for line in lines), "ADD can fetch URLs; use COPY"


@pytest.mark.parametrize("service", DOCKERFILES)
def test_no_build_timestamps(service: str) -> None:
    text = "\n".join(instructions(DOCKERFILES[service]))
    assert "useradd" not in text and "adduser" not in text, "useradd stamps /etc/shadow with the build day"
    assert not re.search(r"\$\(date|BUILD_DATE|org\.opencontainers\.image\.created", text)
    assert "SOURCE_DATE_EPOCH" in text


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    result: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if match := _REQUIREMENT.match(line):
            current = normalize(match["name"])
            assert current not in result, current
            result[current] = (match["version"], 0)
        elif line.startswith("--hash=sha256:"):
            assert current is not None
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}( \\)?", line), line
            version, count = result[current]
            result[current] = (version, count + 1)
        else:
            raise AssertionError(f"unexpected line in requirements.lock: {line}")
    return result


def test_lock_pins_everything_with_hashes() -> None:
    entries = locked()
    assert entries
    for name, (_version, hashes) in entries.items():
        assert hashes >= 1, name


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    assert match, spec
    return normalize(match.group(0))


def test_lock_covers_the_runtime_and_build_requirements() -> None:
    project: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = {requirement_name(spec) for spec in project["project"]["dependencies"]}
    wanted |= {requirement_name(spec) for spec in project["build-system"]["requires"]}
    missing = wanted - set(locked())
    assert not missing, f"regenerate selfhost/requirements.lock (docs/selfhost.md): missing {sorted(missing)}"


LOCAL_ONLY = ("selfhost/.env", "selfhost/secrets/", "selfhost/backup/")
"""Paths of the bundle that hold local settings, the unseal secret or a state backup (sealed agent keys, webhook
secrets in clear, the audit log): never in an image's build context, never in git."""


@pytest.mark.parametrize("service", DOCKERFILES)
def test_build_context_leaves_secrets_and_backups_out(service: str) -> None:
    ignore = Path(f"{DOCKERFILES[service]}.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignore, "deny by default"
    last_inclusion = max(i for i, line in enumerate(ignore) if line.startswith("!"))
    for path in LOCAL_ONLY:  # excluded after every "!" line, so that none of them (`!selfhost/`) lets it back in
        assert path in ignore[last_inclusion + 1 :], path


def test_git_ignores_local_secrets_settings_and_backups() -> None:
    def ignored(relative: str) -> bool:
        result = subprocess.run(
            ["git", "check-ignore", "--quiet", "--no-index", relative], cwd=REPO, check=False, timeout=30
        )
        return result.returncode == 0

    assert ignored("selfhost/secrets/waiaas_unseal_secret")
    assert ignored("selfhost/.env")
    assert ignored("selfhost/backup/waiaas.db")
    assert not ignored("selfhost/secrets/README.md")
    assert not ignored("selfhost/.env.example")
