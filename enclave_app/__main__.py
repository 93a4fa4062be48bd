"""``python -m enclave_app``: start the enclave server from environment settings (see :mod:`enclave_app.settings`).

Start-up order: settings (a missing or malformed one stops here with exit status 2 and a one-line message); no
core dumps from here on (:mod:`enclave_app.core_dumps`: core-file limit 0 and, on Linux, not dumpable; a step
that fails exits 1); the NSM (with ``device``, a self-check: one of our own attestation documents must verify
under the configured root, with a fresh nonce, in non-debug mode; with ``none``, no NSM at all: randomness from
the kernel and attestation answers that say there is none); the sealer (the local one refuses a secret file that
is not a regular file or is open to group or others: :mod:`enclave_app.secret_file`); the session key; the
optional KMS forwarder; then the listener. Any failure before the listener is up exits with status 1; nothing is
served half-configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from enclave_app.attestation import verify_attestation_document
from enclave_app.clock import utc_now
from enclave_app.core_dumps import forbid_core_dumps
from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import EnclaveError, SealingError, SecretFileError, SettingsError
from enclave_app.forwarder import Forwarder
from enclave_app.kms_sealers import KmsSealers, boto3_kms_clients
from enclave_app.no_attestation import NO_ATTESTATION_REASON, NoAttestationNsm
from enclave_app.nsm import DeviceNsm, Nsm
from enclave_app.protocol import AttestationMode
from enclave_app.sealing import LocalSealer, Sealers
from enclave_app.secret_file import read_operator_secret
from enclave_app.server import EnclaveServer, Handler, SerializedNsm
from enclave_app.settings import Settings, load_settings
from enclave_app.state import Enclave
from enclave_app.transport import TcpAddress

_LOG = logging.getLogger("enclave_app")

KMS_FORWARDER_PORT = 443
SELF_CHECK_NONCE_BYTES = 32
DEV_PCR0 = hashlib.sha384(b"waiaas unsafe-development NSM: not a measurement").digest()


def build_nsm(settings: Settings) -> Nsm:
    if settings.nsm == "none":
        _LOG.warning("attestation mode none: %s", NO_ATTESTATION_REASON)
        return SerializedNsm(NoAttestationNsm())
    if settings.nsm == "unsafe-development":
        return SerializedNsm(UnsafeDevelopmentNsm(pcrs={0: DEV_PCR0}))
    nsm = SerializedNsm(DeviceNsm.open())
    if settings.attestation_root is None:  # load_settings guarantees it; refuse rather than skip the check
        raise SettingsError("attestation root missing for the device NSM")
    # Self-check: the device answers with a document that chains to the pinned root and carries our nonce.
    nonce = os.urandom(SELF_CHECK_NONCE_BYTES)
    document = nsm.attestation(public_key=None, user_data=None, nonce=nonce)
    verify_attestation_document(
        document, root_certificate_pem=settings.attestation_root.read_bytes(), at=utc_now(), expected_nonce=nonce
    )
    return nsm


def build_sealers(settings: Settings, nsm: Nsm) -> Sealers:
    """The local sealer, or KMS sealers made per request with the credentials the parent sends (the enclave has
    none of its own)."""
    if settings.sealer == "local":
        if settings.local_secret_file is None:
            raise SettingsError("local secret file missing")
        try:
            return LocalSealer(read_operator_secret(settings.local_secret_file))
        except SecretFileError as exc:  # "<path>: <reason>"
            raise SecretFileError(f"WAIAAS_ENCLAVE_LOCAL_SECRET_FILE {exc}") from None
        except SealingError as exc:  # a secret the sealer cannot use (too short): name the setting and the file
            raise SealingError(f"WAIAAS_ENCLAVE_LOCAL_SECRET_FILE {settings.local_secret_file}: {exc}") from None
    if settings.kms_key_id is None or settings.kms_region is None:
        raise SettingsError("KMS key id or region missing")
    if settings.nsm == "none":  # load_settings refuses this already; refuse rather than build a sealer that cannot work
        raise SettingsError("the KMS sealer needs attestation, which NSM none does not have")
    return KmsSealers(boto3_kms_clients(settings.kms_region), nsm, key_id=settings.kms_key_id)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is not given)."""
    nsm = build_nsm(settings)
    sealers = build_sealers(settings, nsm)
    mode = AttestationMode.NONE if settings.nsm == "none" else AttestationMode.NITRO
    enclave = Enclave(nsm=nsm, clock=utc_now, require_multisig=settings.require_multisig, attestation_mode=mode)
    if not settings.require_multisig:
        _LOG.warning(
            "WAIAAS_ENCLAVE_REQUIRE_MULTISIG=false: policies that declare no Squads multisig are installed; nothing "
            "on chain bounds such a wallet's agent key (meant only for a chain without the Squads program)"
        )
    forwarder = None
    if settings.kms_proxy is not None:
        forwarder = Forwarder(listen_address=TcpAddress("127.0.0.1", KMS_FORWARDER_PORT), upstream=settings.kms_proxy)
        await forwarder.start()
    server = EnclaveServer(Handler(enclave, sealers), max_connections=settings.max_connections)
    listener = await server.start(settings.listen)
    _LOG.info("enclave listening; session key %s", enclave.session.public_key.hex())
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await listener.wait_closed()
        if forwarder is not None:
            await forwarder.close()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    del argv  # no arguments: everything comes from the environment
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(os.environ if env is None else env)
    except SettingsError as exc:
        print(f"waiaas-enclave: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if not forbid_core_dumps():
            _LOG.warning("no prctl on this platform: core dumps are off by the core-file limit alone")
        asyncio.run(serve(settings))
    except EnclaveError as exc:
        print(f"waiaas-enclave: start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
