"""Container paths of the self-host bundle, and their mapping onto a local directory.

``selfhost/docker-compose.yml`` mounts four things into the containers; these constants name them once, so that
the compose tests and the local runner (which starts the same commands as plain processes) agree on them:

==========================  ==========================================  =======================  ============
container path              what lives there                            mounted in               locally
==========================  ==========================================  =======================  ============
``/run/waiaas``             the signer's Unix socket                    signer (rw), proxy (ro)  ``socket``
``/var/lib/waiaas/state``   SQLite state: wallets with their sealed     proxy only               ``state``
                            agent keys, tokens, counters, audit log
``/var/lib/waiaas/sealed``  a write-once copy of each sealed agent      proxy only               ``sealed``
                            key (``WAIAAS_SEALED_KEYS_DIR``)
``/run/secrets``            the unseal secret (a Compose secret)        signer only              ``secrets``
==========================  ==========================================  =======================  ============

The signer keeps nothing on disk: the proxy stores each wallet's sealed key and hands it over when the wallet is
loaded, as the parent does in the cloud (DESIGN.md section 3), and writes each new one, once, into the sealed-keys
directory before the state keeps it (`parent_proxy.sealed_directory`), as the parent writes the data bucket.

:func:`translate` rewrites a command-line argument or an environment value that mentions one of these container
paths (``unix:/run/waiaas/signer.sock``, ``sqlite:/var/lib/waiaas/state/waiaas.db``, a quoted path inside a
``python -c`` healthcheck) into the same path under a local root directory. Only whole path components are
rewritten (``/run/waiaasx`` is left alone), and a value that still points into a container-only tree afterwards is
refused rather than passed on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

SOCKET_DIR: Final = "/run/waiaas"
SIGNER_SOCKET: Final = f"{SOCKET_DIR}/signer.sock"
STATE_DIR: Final = "/var/lib/waiaas/state"
SEALED_DIR: Final = "/var/lib/waiaas/sealed"
SECRETS_DIR: Final = "/run/secrets"

UNSEAL_SECRET_NAME: Final = "waiaas_unseal_secret"  # noqa: S105 (a file name, not a secret)
"""Name of the Compose secret (and of its file under ``/run/secrets``) holding the operator's unseal secret."""
UNSEAL_SECRET_FILE: Final = f"{SECRETS_DIR}/{UNSEAL_SECRET_NAME}"

SERVICE_UID: Final = 10001
"""Numeric uid:gid both images run as. One id for both services because the signer's Unix socket is created
with the process umask (0022) and connecting to it needs write permission on it; see docs/selfhost.md."""

CONTAINER_TO_LOCAL: Final[Mapping[str, str]] = {
    SOCKET_DIR: "socket",
    STATE_DIR: "state",
    SEALED_DIR: "sealed",
    SECRETS_DIR: "secrets",
}
"""Container directory -> subdirectory of the local root used when the services run as local processes."""

_CONTAINER_ONLY_TREES: Final = ("/run/waiaas", "/var/lib/waiaas", "/run/secrets")


class PathMappingError(ValueError):
    """A value refers to a container path that has no local counterpart."""


def _pattern(container_dir: str) -> re.Pattern[str]:
    # The container directory, as a whole path: at the start, or after ':' or '=' (address schemes, key=value) or a
    # quote (a path inside a `python -c` healthcheck), and followed by '/', a closing quote or the end.
    return re.compile(rf"(?:^|(?<=[:='\"])){re.escape(container_dir)}(?=[/'\"]|$)")


_PATTERNS: Final = tuple(
    (_pattern(container_dir), local)
    for container_dir, local in sorted(CONTAINER_TO_LOCAL.items(), key=lambda item: len(item[0]), reverse=True)
)


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    # A function, not a replacement string: a backslash in the local root must not be read as an escape.
    def replace(_match: re.Match[str]) -> str:
        return text

    return replace


def local_dirs(root: Path) -> dict[str, Path]:
    """The local directory standing in for each container directory, under ``root``."""
    return {container_dir: root / local for container_dir, local in CONTAINER_TO_LOCAL.items()}


def translate(value: str, root: Path) -> str:
    """Rewrite the container paths in ``value`` to their counterparts under ``root``.

    Raises :class:`PathMappingError` if the result still refers to a container-only tree (a path this module
    does not know about, which would silently point at the wrong place on the host).
    """
    result = value
    for pattern, local in _PATTERNS:
        result = pattern.sub(_literal(str(root / local)), result)
    for tree in _CONTAINER_ONLY_TREES:
        if _pattern(tree).search(result):
            # The value itself is not echoed: environment values may be sensitive.
            raise PathMappingError(f"no local mapping for a path under {tree}")
    return result
