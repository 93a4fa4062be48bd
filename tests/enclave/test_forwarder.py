"""The TCP -> vsock forwarder, with loopback TCP standing in for vsock and a real TLS handshake through it."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from enclave_app.forwarder import Forwarder
from enclave_app.transport import TcpAddress

KMS_HOST = "kms.us-east-1.amazonaws.com"


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, dns: str | None = None) -> x509.Certificate:  # fmt: skip
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _tls_material(tmp_path: Path, server_name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test ca", ca_key, None, ca_key, ca=True)
    server = _cert(server_name, server_key, ca, ca_key, ca=False, dns=server_name)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(Encoding.PEM))
    (tmp_path / "server.key").write_bytes(server_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))  # verifies chain and hostname
    return server_context, client_context


async def _through_forwarder(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> tuple[bytes, int]:
    relayed = 0

    async def kms_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(5)
        writer.write(b"ACK:" + data.upper() + b"x" * 100_000)
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(kms_like, "127.0.0.1", 0, ssl=server_context)
    upstream_port = upstream.sockets[0].getsockname()[1]
    forwarder = Forwarder(listen_address=TcpAddress("127.0.0.1", 0), upstream=TcpAddress("127.0.0.1", upstream_port))
    server = await forwarder.start()
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context, server_hostname=KMS_HOST)
        writer.write(b"hello")
        await writer.drain()
        reply = await reader.read(-1)
        relayed = len(reply)
        writer.close()
        return reply[:9], relayed
    finally:
        await forwarder.close()
        upstream.close()
        await upstream.wait_closed()


def test_tls_end_to_end_through_forwarder(tmp_path: Path) -> None:
    server_context, client_context = _tls_material(tmp_path, KMS_HOST)
    head, size = asyncio.run(_through_forwarder(server_context, client_context))
    assert head == b"ACK:HELLO"
    assert size == 9 + 100_000


def test_forwarder_does_not_terminate_tls(tmp_path: Path) -> None:
    # The upstream presents a certificate for another name: the client's own check fails through the relay.
    server_context, client_context = _tls_material(tmp_path, "evil.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_through_forwarder(server_context, client_context))


def test_unreachable_upstream_closes_client() -> None:
    async def run() -> bytes:
        forwarder = Forwarder(listen_address=TcpAddress("127.0.0.1", 0), upstream=TcpAddress("127.0.0.1", 1))
        server = await forwarder.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        data = await reader.read(-1)
        writer.close()
        await forwarder.close()
        return data

    assert asyncio.run(run()) == b""
