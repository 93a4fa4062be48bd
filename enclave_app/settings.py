"""Start-up settings of the enclave app: one frozen object built once from the environment.

Every security setting is required (no defaults): where to listen, which NSM, which sealer, and the trust root.
The one exception, ``REQUIRE_MULTISIG``, defaults to its safe value (``true``: refuse more), so leaving it out can
never weaken the enclave. A missing or malformed value raises :class:`~enclave_app.errors.SettingsError` naming the
variable (never echoing a value). Booleans are ``true`` or ``false``, in any letter case, and nothing else.

=====================================  ========================================================================
variable                               meaning
=====================================  ========================================================================
WAIAAS_ENCLAVE_LISTEN                  required: ``vsock:<cid>:<port>`` | ``unix:/path`` | ``tcp:127.0.0.1:<port>``
                                       (tcp on a loopback address only: the protocol has no authentication)
WAIAAS_ENCLAVE_NSM                     required: ``device`` (/dev/nsm), ``none`` (self-hosted without Nitro:
                                       no attestation, and ``attestation`` answers say so) or
                                       ``unsafe-development`` (documents from a throw-away root)
WAIAAS_ENCLAVE_ALLOW_UNSAFE_NSM        required, boolean: must be ``true`` with ``unsafe-development``, ``false``
                                       otherwise (a second, explicit opt-in to documents that prove nothing)
WAIAAS_ENCLAVE_ATTESTATION_ROOT        required with ``device``: PEM file of the AWS Nitro root; at start-up the
                                       enclave verifies one of its own documents under it; forbidden otherwise
WAIAAS_ENCLAVE_SEALER                  required: ``kms`` or ``local``; ``kms`` is refused with NSM ``none`` (KMS
                                       releases sealed keys only to an attested enclave); ``kms`` uses the AWS
                                       credentials each wallet request carries (the parent's
                                       ``WAIAAS_ENCLAVE_KMS_CREDENTIALS=host``), none of its own
WAIAAS_ENCLAVE_KMS_KEY_ID              required with ``kms``: the seal key's full ARN (``arn:aws:kms:<region>:
                                       <account>:key/<id>``, in ``KMS_REGION``; no alias, no bare key id)
WAIAAS_ENCLAVE_KMS_REGION              required with ``kms``: e.g. ``eu-west-1``
WAIAAS_ENCLAVE_KMS_PROXY               optional with ``kms``: vsock address of the parent's vsock-proxy; when
                                       set, a forwarder listens on 127.0.0.1:443 (``kms.<region>.amazonaws.com``
                                       resolves there inside the image)
WAIAAS_ENCLAVE_LOCAL_SECRET_FILE       required with ``local``: file holding the operator secret (>= 16 bytes)
WAIAAS_ENCLAVE_MAX_CONNECTIONS         optional: 1..1024, default 64
WAIAAS_ENCLAVE_REQUIRE_MULTISIG        optional, boolean, default ``true``: ``install_policy`` refuses a policy whose
                                       ``rules.squads_multisig`` is null (``multisig_required``), so every policy
                                       the enclave signs under names the wallet's Squads multisig; ``false`` only
                                       on a chain without the Squads program (the self-host local chain, tests).
                                       Fixed ``true`` in the enclave image (enclave_app/Dockerfile: PCR0 covers it)
=====================================  ========================================================================
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from enclave_app.errors import SettingsError, TransportError
from enclave_app.server import MAX_CONNECTIONS
from enclave_app.transport import Address, TcpAddress, VsockAddress, parse_address

PREFIX = "WAIAAS_ENCLAVE_"
MAX_CONNECTIONS_LIMIT = 1024
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}\Z")
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z]{2}(?:-[a-z]+)+-\d{1,2}):(\d{12}):key/([A-Za-z0-9-]{1,128})\Z")
"""A full key ARN (partition, region, account, key id). Not an alias and not a bare key id: those are looked up in
the account of whoever's credentials sign the call, and the parent lends the credentials (a hostile parent could
lend its own account's and have the agent keys sealed under a key it can use)."""


@dataclass(frozen=True, slots=True)
class Settings:
    listen: Address
    nsm: Literal["device", "unsafe-development", "none"]
    sealer: Literal["kms", "local"]
    attestation_root: Path | None = None
    kms_key_id: str | None = None
    kms_region: str | None = None
    kms_proxy: VsockAddress | None = None
    local_secret_file: Path | None = field(default=None, repr=False)
    max_connections: int = MAX_CONNECTIONS
    require_multisig: bool = True


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    return None if value is None else value.strip()


def _required(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    if not value:
        raise SettingsError(f"{PREFIX}{name} is required")
    return value


def _forbidden(env: Mapping[str, str], name: str, because: str) -> None:
    if _get(env, name) is not None:
        raise SettingsError(f"{PREFIX}{name} must not be set {because}")


def _true_or_false(name: str, value: str) -> bool:
    """``true`` or ``false`` in any letter case (``value`` is stripped by `_get`), as the proxy reads its own
    (``parent_proxy.settings.parse_bool``): the self-host compose file hands the text of one setting to both
    (``WAIAAS_REQUIRE_MULTISIG``). Nothing else: no ``1``, ``yes`` or empty string."""
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise SettingsError(f"{PREFIX}{name} must be true or false (any letter case)")
    return lowered == "true"


def _boolean(env: Mapping[str, str], name: str) -> bool:
    return _true_or_false(name, _required(env, name))


def _optional_boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _get(env, name)
    return default if value is None else _true_or_false(name, value)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = _required(env, name)
    if value not in choices:
        raise SettingsError(f"{PREFIX}{name} must be one of: {', '.join(choices)}")
    return value


def _address(env: Mapping[str, str], name: str) -> Address:
    try:
        return parse_address(_required(env, name))
    except TransportError as exc:
        raise SettingsError(f"{PREFIX}{name} is not a valid address ({exc})") from exc


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name ("localhost" included) could resolve anywhere: refused
        return False


def _file(env: Mapping[str, str], name: str) -> Path:
    path = Path(_required(env, name))
    if not path.is_absolute() or not path.is_file():
        raise SettingsError(f"{PREFIX}{name} must be an absolute path to an existing file")
    return path


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build the settings from ``env`` (``os.environ`` at start-up), or raise :class:`SettingsError`."""
    listen = _address(env, "LISTEN")
    if isinstance(listen, TcpAddress) and not _is_loopback(listen.host):
        # The protocol has no authentication: whoever reaches the listener is "the parent" (sign within the policy
        # without the proxy's agent checks). TCP is for tests on one machine only.
        raise SettingsError(f"{PREFIX}LISTEN: a tcp listener must be on a loopback address (127.0.0.1, ::1)")
    nsm = _choice(env, "NSM", ("device", "unsafe-development", "none"))
    allow_unsafe = _boolean(env, "ALLOW_UNSAFE_NSM")
    if allow_unsafe != (nsm == "unsafe-development"):
        raise SettingsError(f"{PREFIX}ALLOW_UNSAFE_NSM must be 'true' exactly when {PREFIX}NSM is unsafe-development")
    root = None
    if nsm == "device":
        root = _file(env, "ATTESTATION_ROOT")
    elif nsm == "none":
        _forbidden(env, "ATTESTATION_ROOT", "with NSM none (there is no attestation to verify)")
    else:
        _forbidden(env, "ATTESTATION_ROOT", "with the unsafe-development NSM (it has its own throw-away root)")
    sealer = _choice(env, "SEALER", ("kms", "local"))
    if sealer == "kms" and nsm == "none":
        raise SettingsError(
            f"{PREFIX}SEALER kms needs attestation (KMS releases keys only to an attested enclave): "
            f"it cannot be combined with {PREFIX}NSM none; use the local sealer"
        )
    key_id = region = proxy = secret = None
    if sealer == "kms":
        key_id, region = _required(env, "KMS_KEY_ID"), _required(env, "KMS_REGION")
        if not _REGION.match(region):
            raise SettingsError(f"{PREFIX}KMS_REGION is malformed")
        arn = _KEY_ARN.match(key_id)
        if arn is None:
            raise SettingsError(f"{PREFIX}KMS_KEY_ID must be a full KMS key ARN (no alias, no bare key id)")
        if arn.group(1) != region:
            raise SettingsError(f"{PREFIX}KMS_KEY_ID names a key outside {PREFIX}KMS_REGION")
        if _get(env, "KMS_PROXY") is not None:
            address = _address(env, "KMS_PROXY")
            if not isinstance(address, VsockAddress):
                raise SettingsError(f"{PREFIX}KMS_PROXY must be a vsock address")
            proxy = address
        _forbidden(env, "LOCAL_SECRET_FILE", "with the kms sealer")
    else:
        secret = _file(env, "LOCAL_SECRET_FILE")
        for name in ("KMS_KEY_ID", "KMS_REGION", "KMS_PROXY"):
            _forbidden(env, name, "with the local sealer")
    connections = _get(env, "MAX_CONNECTIONS")
    max_connections = MAX_CONNECTIONS
    if connections is not None:
        if not connections.isdigit() or not 1 <= int(connections) <= MAX_CONNECTIONS_LIMIT:
            raise SettingsError(f"{PREFIX}MAX_CONNECTIONS must be an integer in 1..{MAX_CONNECTIONS_LIMIT}")
        max_connections = int(connections)
    require_multisig = _optional_boolean(env, "REQUIRE_MULTISIG", default=True)
    return Settings(
        listen=listen,
        nsm=nsm,  # type: ignore[arg-type]
        sealer=sealer,  # type: ignore[arg-type]
        attestation_root=root,
        kms_key_id=key_id,
        kms_region=region,
        kms_proxy=proxy,
        local_secret_file=secret,
        max_connections=max_connections,
        require_multisig=require_multisig,
    )
