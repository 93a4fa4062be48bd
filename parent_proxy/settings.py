"""The parent proxy's configuration: one frozen `Settings` built once at start-up from the environment.

Required values have no default and stop start-up with a message naming the variable; booleans are parsed
strictly (``true``/``false`` only, in any letter case, as the signer reads its own); numbers must parse and sit in a
range. Security settings (who may create wallets, where the enclave is, which deployment owner requests must be
signed for) have no defaults.

======================================= ========== =====================================================================
variable                                default    meaning
======================================= ========== =====================================================================
``WAIAAS_STATE``                        required   ``sqlite:/abs/path.db`` or ``dynamodb:<table>[@<region>]``
``WAIAAS_ENCLAVE``                      required   enclave address: ``vsock:<cid>:<port>``, ``unix:/path``, ``tcp:h:p``
``WAIAAS_OWNER_KEYS``                   required   comma-separated base58 owner public keys allowed to create wallets
``WAIAAS_CHAIN``                        required   ``litesvm`` (embedded, self-host demo) or ``rpc:<url>``: https, or
                                                   plain http to a loopback host only (`parent_proxy.rpc_urls`)
``WAIAAS_PUBLIC_ORIGINS``               required   comma-separated origins (``http(s)://host[:port]``) the owners' tools
                                                   reach this proxy at: an owner request is accepted only if signed
                                                   for one of them (`owner_auth`, audience); each is normalized
                                                   (`owner_auth.normalize_origin`), anything else stops start-up
``WAIAAS_HOST``                         127.0.0.1  HTTP bind address
``WAIAAS_PORT``                         8080       HTTP port
``WAIAAS_MAX_BODY_BYTES``               16384      largest accepted HTTP request body (413 above)
``WAIAAS_RATE_PER_SECOND``              20         sustained requests per agent token (429 above)
``WAIAAS_RATE_BURST``                   40         burst size per agent token
``WAIAAS_ATTESTATION_RATE_PER_SECOND``  2          sustained ``GET /v1/attestation`` calls per proxy process, all
                                                   callers together (each is one NSM attestation; 429 above); the
                                                   same again per owner key for the owner routes' ``?nonce=``
``WAIAAS_ATTESTATION_BURST``            10         burst size of ``GET /v1/attestation`` calls per proxy process
                                                   (and of each owner key's own bucket)
``WAIAAS_ENCLAVE_TIMEOUT_SECONDS``      5          longest wait for one enclave answer (then 503, never a retry)
``WAIAAS_OWNER_MAX_SKEW_SECONDS``       300        owner request timestamps further than this from now are refused
                                                   (at most `owner_auth.MAX_SKEW_SECONDS`, 450)
``WAIAAS_WORKERS``                      1          uvicorn worker processes (SQLite is shared safely between them)
``WAIAAS_WEBHOOK_ALLOW_PRIVATE``        false      ``true``: webhooks may also go to loopback and private-network
                                                   addresses (a receiver on this host or the LAN); cloud metadata,
                                                   link-local, multicast and reserved addresses stay refused
``WAIAAS_ENCLAVE_KMS_CREDENTIALS``      none       ``host``: lend the enclave this host's temporary AWS credentials (the
                                                   instance role) with each wallet creation and load, for its KMS
                                                   sealer (`parent_proxy.host_credentials`); ``none``: send none (the
                                                   self-host signer's local sealer needs none)
``WAIAAS_REQUIRE_MULTISIG``             true       ``true``: ``PUT /v1/wallets/{id}/policy`` refuses a policy whose
                                                   ``rules.squads_multisig`` is null (422), so every installed policy
                                                   declares a Squads multisig, checked on chain at install; ``false``
                                                   only on a chain without the Squads program (the self-host local
                                                   chain): wallets there have no on-chain limit.
                                                   ``WAIAAS_CHAIN=litesvm`` (no Squads program) with ``true`` stops
                                                   start-up
``WAIAAS_DATA_BUCKET``                  none       ``<bucket>[@<region>]``: the data bucket that keeps a copy of each
                                                   new sealed agent key under ``sealed/``
                                                   (`parent_proxy.sealed_copies`); a copy that cannot be written
                                                   refuses the creation (503). Unset: no copy is kept there
``WAIAAS_SEALED_KEYS_DIR``              none       an absolute path: the directory that keeps a copy of each new sealed
                                                   agent key, written once (`parent_proxy.sealed_directory`; the
                                                   self-host bundle's ``sealed-keys`` volume); a copy that cannot be
                                                   written refuses the creation (503). It must exist and be writable
                                                   by the proxy, or start-up stops naming it. At most one of this and
                                                   ``WAIAAS_DATA_BUCKET`` (one copy target per deployment). Unset: no
                                                   copy is kept there
``WAIAAS_METRICS``                      any        who is served ``GET /metrics``: ``any`` client that reaches the
                                                   port; ``loopback``: a client on this host only, connected from a
                                                   loopback address with no forwarding header (others: 404), what
                                                   the CDK hosts write (`parent_proxy.metrics.served_to`)
======================================= ========== =====================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from solders.pubkey import Pubkey

from enclave_app.errors import TransportError
from enclave_app.transport import Address, parse_address
from parent_proxy.data_bucket import BucketName, parse_bucket
from parent_proxy.metrics import ACCESS_CHOICES
from parent_proxy.owner_auth import MAX_SKEW_SECONDS, OriginError, normalize_origin
from parent_proxy.rpc_urls import rpc_url_refusal

_SQLITE = re.compile(r"sqlite:(/.+)")
_ALLOW_PRIVATE = "WAIAAS_WEBHOOK_ALLOW_PRIVATE"
_KMS_CREDENTIALS = "WAIAAS_ENCLAVE_KMS_CREDENTIALS"
_REQUIRE_MULTISIG = "WAIAAS_REQUIRE_MULTISIG"
_DATA_BUCKET = "WAIAAS_DATA_BUCKET"
_SEALED_KEYS_DIR = "WAIAAS_SEALED_KEYS_DIR"
_PUBLIC_ORIGINS = "WAIAAS_PUBLIC_ORIGINS"
_METRICS = "WAIAAS_METRICS"
KMS_CREDENTIAL_CHOICES = ("none", "host")
_DYNAMO = re.compile(r"dynamodb:([A-Za-z0-9_.-]{3,255})(?:@([a-z0-9-]{1,32}))?")


class SettingsError(Exception):
    """A configuration value is missing or invalid. The message names the variable, never a secret value."""


@dataclass(frozen=True, slots=True)
class SqliteState:
    path: str


@dataclass(frozen=True, slots=True)
class DynamoState:
    table: str
    region: str | None


@dataclass(frozen=True, slots=True)
class Settings:
    state: SqliteState | DynamoState
    enclave: Address
    owner_keys: frozenset[Pubkey]
    chain: str
    public_origins: frozenset[str]
    """``WAIAAS_PUBLIC_ORIGINS``, each in normal form: the audiences owner requests may be signed for."""
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 16 * 1024
    rate_per_second: float = 20.0
    rate_burst: int = 40
    attestation_rate_per_second: float = 2.0
    attestation_burst: int = 10
    enclave_timeout_seconds: float = 5.0
    owner_max_skew_seconds: int = 300
    workers: int = 1
    webhook_allow_private: bool = False
    enclave_kms_credentials: str = "none"
    require_multisig: bool = True
    data_bucket: BucketName | None = None
    sealed_keys_dir: str | None = None
    """``WAIAAS_SEALED_KEYS_DIR``, an absolute path; its existence is checked at start-up (`parent_proxy.__main__`)."""
    metrics_access: str = "any"
    """``WAIAAS_METRICS``: one of `parent_proxy.metrics.ACCESS_CHOICES`."""


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is required")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = env.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()) or not low <= int(text) <= high:
        raise SettingsError(f"{name} must be an integer in [{low}, {high}]")
    return int(text)


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    text = env.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise SettingsError(f"{name} must be a number in [{low}, {high}]")
    return value


def parse_bool(name: str, text: str) -> bool:
    """``true`` or ``false`` in any letter case, surrounding blanks ignored; anything else is an error, not a silent
    False. The signer reads its booleans the same way (``enclave_app.settings``): the self-host compose file hands
    one text to both (``WAIAAS_REQUIRE_MULTISIG``), and a value one took and the other refused started one service
    and stopped the other."""
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false (any letter case)")
    return lowered == "true"


def parse_state(text: str) -> SqliteState | DynamoState:
    """``WAIAAS_STATE``'s value (also ``waiaas audit verify/export --state``); `SettingsError` otherwise."""
    if match := _SQLITE.fullmatch(text):
        return SqliteState(match.group(1))
    if match := _DYNAMO.fullmatch(text):
        return DynamoState(match.group(1), match.group(2))
    raise SettingsError("WAIAAS_STATE must be sqlite:/absolute/path or dynamodb:<table>[@<region>]")


def _owner_keys(text: str) -> frozenset[Pubkey]:
    keys: set[Pubkey] = set()
    for part in text.split(","):
        try:
            keys.add(Pubkey.from_string(part.strip()))
        except ValueError as exc:
            raise SettingsError("WAIAAS_OWNER_KEYS must be comma-separated base58 public keys") from exc
    return frozenset(keys)


def _public_origins(text: str) -> frozenset[str]:
    """Each comma-separated entry in normal form (`owner_auth.normalize_origin`). The message names the entry by its
    position, not its text (an entry with a user:password in it is not echoed into the log)."""
    origins: set[str] = set()
    for number, part in enumerate(text.split(","), start=1):
        try:
            origins.add(normalize_origin(part.strip()))
        except OriginError as exc:
            raise SettingsError(f"{_PUBLIC_ORIGINS}: entry {number} {exc}; each entry is an origin such as "
                                "https://wallets.example.com or http://127.0.0.1:8080") from None  # fmt: skip
    return frozenset(origins)


def _chain(text: str) -> str:
    if text == "litesvm":
        return text
    if not re.fullmatch(r"rpc:https?://[^\s]{1,2000}", text):
        raise SettingsError("WAIAAS_CHAIN must be litesvm or rpc:<http(s) url>")
    refusal = rpc_url_refusal(text.removeprefix("rpc:"))
    if refusal is not None:
        raise SettingsError(f"WAIAAS_CHAIN's rpc url {refusal}")
    return text


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build the settings from ``env`` (pass ``os.environ``); raise `SettingsError` naming the bad variable."""
    try:
        enclave = parse_address(_required(env, "WAIAAS_ENCLAVE"))
    except TransportError as exc:
        raise SettingsError("WAIAAS_ENCLAVE must be vsock:<cid>:<port>, unix:/path or tcp:<host>:<port>") from exc
    chain = _chain(_required(env, "WAIAAS_CHAIN"))
    data_bucket = _data_bucket(env.get(_DATA_BUCKET))
    sealed_keys_dir = _sealed_keys_dir(env.get(_SEALED_KEYS_DIR))
    if data_bucket is not None and sealed_keys_dir is not None:
        raise SettingsError(f"{_DATA_BUCKET} and {_SEALED_KEYS_DIR} are both set: a deployment keeps its sealed-key "
                            "copies in one place (the data bucket in the cloud, the directory self-hosted); unset "
                            "one")  # fmt: skip
    require_multisig = parse_bool(_REQUIRE_MULTISIG, env.get(_REQUIRE_MULTISIG, "true"))
    if chain == "litesvm" and require_multisig:  # every policy install would be refused: say so at start-up
        raise SettingsError(f"WAIAAS_CHAIN=litesvm has no Squads program, so under {_REQUIRE_MULTISIG}=true every "
                            f"policy would be refused: use rpc:<url>, or set {_REQUIRE_MULTISIG}=false (wallets "
                            "then have no on-chain limit)")  # fmt: skip
    return Settings(
        state=parse_state(_required(env, "WAIAAS_STATE")),
        enclave=enclave,
        owner_keys=_owner_keys(_required(env, "WAIAAS_OWNER_KEYS")),
        chain=chain,
        public_origins=_public_origins(_required(env, _PUBLIC_ORIGINS)),
        host=env.get("WAIAAS_HOST", "127.0.0.1"),
        port=_int(env, "WAIAAS_PORT", 8080, 1, 65535),
        max_body_bytes=_int(env, "WAIAAS_MAX_BODY_BYTES", 16 * 1024, 1024, 1024 * 1024),
        rate_per_second=_float(env, "WAIAAS_RATE_PER_SECOND", 20.0, 0.1, 100_000.0),
        rate_burst=_int(env, "WAIAAS_RATE_BURST", 40, 1, 1_000_000),
        attestation_rate_per_second=_float(env, "WAIAAS_ATTESTATION_RATE_PER_SECOND", 2.0, 0.01, 10_000.0),
        attestation_burst=_int(env, "WAIAAS_ATTESTATION_BURST", 10, 1, 100_000),
        enclave_timeout_seconds=_float(env, "WAIAAS_ENCLAVE_TIMEOUT_SECONDS", 5.0, 0.01, 120.0),
        owner_max_skew_seconds=_int(env, "WAIAAS_OWNER_MAX_SKEW_SECONDS", 300, 1, MAX_SKEW_SECONDS),
        workers=_int(env, "WAIAAS_WORKERS", 1, 1, 64),
        webhook_allow_private=parse_bool(_ALLOW_PRIVATE, env.get(_ALLOW_PRIVATE, "false")),
        enclave_kms_credentials=_kms_credentials(env.get(_KMS_CREDENTIALS, "none")),
        require_multisig=require_multisig,
        data_bucket=data_bucket,
        sealed_keys_dir=sealed_keys_dir,
        metrics_access=_metrics_access(env.get(_METRICS, "any")),
    )


def _metrics_access(text: str) -> str:
    value = text.strip().lower()
    if value not in ACCESS_CHOICES:
        raise SettingsError(f"{_METRICS} must be any or loopback")
    return value


def _kms_credentials(text: str) -> str:
    value = text.strip().lower()
    if value not in KMS_CREDENTIAL_CHOICES:
        raise SettingsError(f"{_KMS_CREDENTIALS} must be none or host")
    return value


def _data_bucket(text: str | None) -> BucketName | None:
    if text is None:
        return None
    try:
        return parse_bucket(text)
    except ValueError as exc:
        raise SettingsError(f"{_DATA_BUCKET} {exc}") from None


def _sealed_keys_dir(text: str | None) -> str | None:
    if text is None:
        return None
    path = text.strip()
    if not path.startswith("/") or "\0" in path:
        raise SettingsError(f"{_SEALED_KEYS_DIR} must be an absolute path")
    return path
