"""A KMS call ends within a known time, whatever the parent does to the stream it relays (enclave_app.kms_sealers).

botocore limits each connect and each socket read, not a whole answer: an answer paced a byte at a time would
hold the call, and the enclave's worker thread, indefinitely. These tests run the production client configuration
(real boto3, real HTTP) through the real forwarder to a local server that paces its answer that way.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import boto3
import cbor2
import pytest

from enclave_app.constants import ENCLAVE_REQUEST_TIMEOUT_SECONDS
from enclave_app.errors import EnclaveRequestError
from enclave_app.forwarder import CONNECTION_LIFETIME_SECONDS, Forwarder
from enclave_app.kms_sealers import (
    KMS_CALL_LIMIT_SECONDS,
    KMS_MAX_ATTEMPTS,
    KMS_RETRY_WAIT_MAX_SECONDS,
    KmsSealers,
    kms_client_config,
)
from enclave_app.nsm import DeviceNsm
from enclave_app.protocol import AwsCredentials
from enclave_app.sealing import BLOB_FORMAT, BLOB_VERSION, SCHEME_KMS
from enclave_app.server import Handler, SerializedNsm
from enclave_app.state import Enclave
from enclave_app.transport import TcpAddress
from tests.fakes.fake_nsm_device import FakeNsmDevice
from tests.support.enclave_world import GOOD_PCRS, NOW, Boot, ManualClock, serving
from tests.support.nitro_test_pki import NitroTestPki

LIFETIME = 1.0
SEAL_KEY = "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555"
CREDENTIALS = AwsCredentials("ASIAEXAMPLE000000001", "s" * 40, "t" * 400)
OWNER = bytes(range(32))
AGENT = bytes(range(32, 64))
WALLET = "w-paced"


def _sealed_blob() -> bytes:
    """A well-formed KMS-sealed blob (it never opens: its data key goes to the paced KMS)."""
    return cbor2.dumps(
        {"format": BLOB_FORMAT, "version": BLOB_VERSION, "scheme": SCHEME_KMS, "wallet_id": WALLET,
         "nonce": bytes(12), "ciphertext": bytes(48), "key_id": SEAL_KEY, "data_key": b"\x01" * 184}
    )  # fmt: skip


def test_a_kms_call_is_bounded_well_within_the_enclaves_request_limit() -> None:
    assert KMS_CALL_LIMIT_SECONDS == KMS_MAX_ATTEMPTS * CONNECTION_LIFETIME_SECONDS + KMS_RETRY_WAIT_MAX_SECONDS
    # The rest of a wallet request (an RSA key, an attestation document, AES-GCM) takes well under 2 s.
    assert KMS_CALL_LIMIT_SECONDS + 2 < ENCLAVE_REQUEST_TIMEOUT_SECONDS
    # Each attempt's own limits are shorter than the lifetime that cuts it. (botocore sets each option on the
    # instance; its stubs declare none.)
    options = vars(kms_client_config())
    assert (
        options["connect_timeout"] < CONNECTION_LIFETIME_SECONDS
        and options["read_timeout"] < CONNECTION_LIFETIME_SECONDS
    )


class PacedKms:
    """An HTTP server that reads a request and answers 200 with a long body, one byte every 50 ms: every socket read
    gets data well within botocore's read timeout, and the whole answer would take over a minute."""

    def __init__(self) -> None:
        self.connections = 0
        self.bytes_sent = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2000\r\n\r\n")
            for _ in range(2000):
                if writer.is_closing():
                    break
                writer.write(b" ")
                await writer.drain()
                self.bytes_sent += 1
                await asyncio.sleep(0.05)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _boot(port: int) -> Boot:
    pki = NitroTestPki.create(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=3))
    device = FakeNsmDevice(pki=pki, now=NOW, pcrs=dict(GOOD_PCRS))
    nsm = SerializedNsm(DeviceNsm(-1, ioctl=device.ioctl))
    session = boto3.session.Session()

    def client(credentials: AwsCredentials) -> Any:  # the production configuration, pointed at the forwarder
        return session.client(
            "kms", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=credentials.access_key_id, aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token, config=kms_client_config(),
        )  # fmt: skip

    enclave = Enclave(nsm=nsm, clock=ManualClock(), require_multisig=True)
    handler = Handler(enclave, KmsSealers(client, nsm, key_id=SEAL_KEY))
    return Boot(enclave=enclave, handler=handler, device=device, aws_credentials=lambda: CREDENTIALS)


@pytest.mark.parametrize("load", [False, True], ids=["provision", "load"])
def test_a_paced_kms_answer_ends_the_wallet_request_within_the_attempts_lifetimes(load: bool) -> None:
    kms = PacedKms()

    async def run() -> tuple[str, float, str]:
        upstream = await asyncio.start_server(kms.handle, "127.0.0.1", 0)
        forwarder = Forwarder(
            listen_address=TcpAddress("127.0.0.1", 0),
            upstream=TcpAddress("127.0.0.1", upstream.sockets[0].getsockname()[1]),
            lifetime_seconds=LIFETIME,
        )
        listening = await forwarder.start()
        boot = _boot(listening.sockets[0].getsockname()[1])
        try:
            async with serving(boot) as (client, _):
                started = time.monotonic()
                with pytest.raises(EnclaveRequestError) as refused:
                    if load:
                        await client.load_wallet(
                            WALLET, owner_public_key=OWNER, agent_public_key=AGENT, sealed_blob=_sealed_blob()
                        )
                    else:
                        await client.provision_wallet(WALLET, OWNER)
                elapsed = time.monotonic() - started
                return refused.value.code, elapsed, (await client.ping()).state
        finally:
            await forwarder.close()
            upstream.close()
            await upstream.wait_closed()

    code, elapsed, state = asyncio.run(run())
    assert code == "kms_unavailable" and state == "booting"  # answered; nothing registered; not failed
    # Each attempt a new connection, each cut at its lifetime. (Over plain HTTP botocore takes the cut answer as a
    # short body and does not retry; the answer checks refuse it. Over TLS a cut is an error, retried once.)
    assert 1 <= kms.connections <= KMS_MAX_ATTEMPTS
    assert 0 < kms.bytes_sent < 2000
    # At most two lifetimes and the short wait between them (about 1.2 s here), under the client's 10 s (and the
    # answer's 100 s): a request that ran into the client's limit would have ended with another code.
    assert elapsed < KMS_MAX_ATTEMPTS * LIFETIME + 5
