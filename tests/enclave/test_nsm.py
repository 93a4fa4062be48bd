"""NSM client against a fake device at the ioctl seam, and the unsafe development NSM."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import cbor2
import pytest

from enclave_app.attestation import MAX_USER_FIELD_BYTES, verify_attestation_document
from enclave_app.dev_nsm import UnsafeDevelopmentNsm
from enclave_app.errors import AttestationError, NsmError
from enclave_app.nsm import NSM_IOCTL_REQUEST, NSM_RESPONSE_MAX_BYTES, DeviceNsm, Nsm
from tests.fakes.fake_nsm_device import FakeNsmDevice
from tests.support.nitro_test_pki import NITRO_FIXTURES, NitroTestPki

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
PCRS = {i: bytes([0xA0 + i]) * 48 for i in range(16)}


@pytest.fixture
def device() -> FakeNsmDevice:
    pki = NitroTestPki.create(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(hours=3))
    return FakeNsmDevice(pki=pki, now=NOW, pcrs=dict(PCRS))


def test_ioctl_request_code_matches_linux_iowr() -> None:
    # _IOWR(0x0A, 0, 32): direction read|write (3) << 30, size 32 << 16, type 0x0A << 8, number 0.
    assert NSM_IOCTL_REQUEST == 0xC0200A00


def test_attestation_round_trip_verifies(device: FakeNsmDevice) -> None:
    nsm: Nsm = DeviceNsm(-1, ioctl=device.ioctl)
    document = nsm.attestation(public_key=b"\x30" * 294, user_data=b"hello", nonce=b"n" * 32)
    assert device.requests == [
        {"Attestation": {"user_data": b"hello", "nonce": b"n" * 32, "public_key": b"\x30" * 294}}
    ]
    doc = verify_attestation_document(
        document, root_certificate_pem=device.pki.root_pem, at=NOW, expected_pcrs={0: PCRS[0]}, expected_nonce=b"n" * 32
    )
    assert doc.public_key == b"\x30" * 294
    assert doc.user_data == b"hello"


def test_get_random_and_describe_pcr(device: FakeNsmDevice) -> None:
    nsm = DeviceNsm(-1, ioctl=device.ioctl)
    first, second = nsm.get_random(), nsm.get_random()
    assert len(first) == 256 and first != second
    assert device.requests[0] == "GetRandom"
    description = nsm.describe_pcr(3)
    assert description.locked and description.data == PCRS[3]
    assert device.requests[-1] == {"DescribePCR": {"index": 3}}


def test_nsm_error_code_raised(device: FakeNsmDevice) -> None:
    with pytest.raises(NsmError, match="NSM error InvalidIndex"):
        DeviceNsm(-1, ioctl=device.ioctl).describe_pcr(20)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"raw_response": b"\xff\xff"}, "malformed NSM response"),
        ({"raw_response": cbor2.dumps({"Attestation": {"document": b"d"}})}, "unexpected NSM response"),
        ({"raw_response": cbor2.dumps({"GetRandom": {"random": "text"}})}, "malformed NSM response"),
        ({"raw_response": cbor2.dumps({"GetRandom": {"random": b""}})}, "no randomness"),
        ({"raw_response": cbor2.dumps({"Error": "<script>"})}, "NSM error$"),
        ({"status": -1}, "ioctl failed"),
        ({"errno": 90}, "ioctl failed"),
        ({"response_length": NSM_RESPONSE_MAX_BYTES + 1}, "length invalid"),
        ({"response_length": 0}, "length invalid"),
    ],
)
def test_device_faults_raise_nsm_error(device: FakeNsmDevice, fault: dict[str, object], message: str) -> None:
    for name, value in fault.items():
        setattr(device, name, value)
    with pytest.raises(NsmError, match=message):
        DeviceNsm(-1, ioctl=device.ioctl).get_random()


def test_oversized_fields_refused_before_ioctl(device: FakeNsmDevice) -> None:
    with pytest.raises(NsmError, match="too large"):
        DeviceNsm(-1, ioctl=device.ioctl).attestation(
            public_key=None, user_data=b"u" * (MAX_USER_FIELD_BYTES + 1), nonce=None
        )
    assert device.requests == []


def test_open_missing_device_raises(tmp_path: object) -> None:
    with pytest.raises(NsmError, match="cannot open"):
        DeviceNsm.open(f"{tmp_path}/no-nsm-here")


# --- the unsafe development NSM ---------------------------------------------------------------------------


def test_development_nsm_warns_and_verifies_under_its_own_root(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="enclave_app.dev_nsm"):
        dev: Nsm = UnsafeDevelopmentNsm(pcrs=PCRS, clock=lambda: NOW)
    assert any("UnsafeDevelopmentNsm" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert isinstance(dev, UnsafeDevelopmentNsm)
    document = dev.attestation(public_key=b"pk", user_data=None, nonce=b"fresh")
    doc = verify_attestation_document(
        document, root_certificate_pem=dev.root_certificate_pem, at=NOW, expected_pcrs=PCRS, expected_nonce=b"fresh"
    )
    assert doc.module_id == "unsafe-development-nsm" and doc.public_key == b"pk"
    assert dev.describe_pcr(0).data == PCRS[0]
    assert len(dev.get_random()) == 256


def test_development_nsm_documents_refused_under_aws_root() -> None:
    dev = UnsafeDevelopmentNsm(pcrs=PCRS, clock=lambda: NOW)
    with pytest.raises(AttestationError, match="pinned root"):
        verify_attestation_document(
            dev.attestation(public_key=None, user_data=None, nonce=None),
            root_certificate_pem=(NITRO_FIXTURES / "aws-nitro-root-g1.pem").read_bytes(),
            at=NOW,
        )


def test_development_nsm_debug_pcrs_need_allow_debug() -> None:
    dev = UnsafeDevelopmentNsm(pcrs={0: bytes(48)}, clock=lambda: NOW)
    document = dev.attestation(public_key=None, user_data=None, nonce=None)
    with pytest.raises(AttestationError, match="debug-mode"):
        verify_attestation_document(document, root_certificate_pem=dev.root_certificate_pem, at=NOW)
    verify_attestation_document(document, root_certificate_pem=dev.root_certificate_pem, at=NOW, allow_debug=True)


def test_development_nsm_requires_pcrs() -> None:
    with pytest.raises(NsmError, match="PCR0"):
        UnsafeDevelopmentNsm(pcrs={}, clock=lambda: NOW)
    with pytest.raises(NsmError, match="size invalid"):
        UnsafeDevelopmentNsm(pcrs={0: b"short"}, clock=lambda: NOW)
