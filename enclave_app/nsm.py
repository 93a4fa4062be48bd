"""Client of the Nitro Secure Module (``/dev/nsm``): attestation documents, randomness, PCR reads.

Wire format (learned from aws-nitro-enclaves-nsm-api, ``src/api/mod.rs`` and ``src/driver/mod.rs``): one
``ioctl`` per call, request code ``_IOWR(0x0A, 0, struct nsm_message)``, where ``struct nsm_message`` is two
``struct iovec`` (request, response). The request is CBOR of a serde externally tagged enum (``"GetRandom"``,
``{"Attestation": {...}}``, ``{"DescribePCR": {"index": n}}``); the driver writes the CBOR response into the
response buffer and shrinks its ``iov_len`` to the bytes written. Errors come back as ``{"Error": "<code>"}``.

The :class:`Nsm` protocol is the seam; :class:`DeviceNsm` is the production adapter, with the ioctl function
injectable so tests can stand a fake device at exactly that seam.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cbor2

from enclave_app.attestation import MAX_USER_FIELD_BYTES, PCR_COUNT
from enclave_app.errors import CborDecodeError, NsmError
from enclave_app.safe_cbor import loads_untrusted

NSM_DEVICE_PATH = "/dev/nsm"
NSM_IOCTL_MAGIC = 0x0A
"""ioctl type byte of the NSM driver (nsm-api ``src/driver/mod.rs``)."""

NSM_REQUEST_MAX_BYTES = 0x1000
"""Largest request the driver accepts (nsm-api ``NSM_REQUEST_MAX_SIZE``)."""

NSM_RESPONSE_MAX_BYTES = 0x3000
"""Response buffer the driver may fill (nsm-api ``NSM_RESPONSE_MAX_SIZE``)."""


class IoVec(ctypes.Structure):
    """``struct iovec`` (POSIX ``<sys/uio.h>``)."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class NsmMessage(ctypes.Structure):
    """``struct nsm_message``: request iovec then response iovec."""

    _fields_ = [("request", IoVec), ("response", IoVec)]


_IOC_READ_WRITE = 3
_IOC_DIRSHIFT, _IOC_SIZESHIFT, _IOC_TYPESHIFT = 30, 16, 8


def _iowr(magic: int, number: int, size: int) -> int:
    """Linux ``_IOWR(type, nr, size)`` (``include/uapi/asm-generic/ioctl.h``)."""
    return (_IOC_READ_WRITE << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT) | (magic << _IOC_TYPESHIFT) | number


NSM_IOCTL_REQUEST = _iowr(NSM_IOCTL_MAGIC, 0, ctypes.sizeof(NsmMessage))
"""0xC0200A00 on 64-bit Linux."""

IoctlFunction = Callable[[int, int, NsmMessage], int]
"""``(fd, request_code, message) -> status``; the function may write through the message's response iovec."""


def _fcntl_ioctl(fd: int, request: int, message: NsmMessage) -> int:
    # mutate_flag=True: the driver's update of response.iov_len is copied back into `message`.
    status: int = fcntl.ioctl(fd, request, message, True)
    return status


@dataclass(frozen=True, slots=True)
class PcrDescription:
    """A PCR as the NSM reports it."""

    locked: bool
    data: bytes


class Nsm(Protocol):
    """The NSM seam: what the enclave needs from the hardware."""

    def attestation(self, *, public_key: bytes | None, user_data: bytes | None, nonce: bytes | None) -> bytes:
        """A signed COSE_Sign1 attestation document carrying the given optional fields."""
        ...

    def get_random(self) -> bytes:
        """Entropy from the NSM."""
        ...

    def describe_pcr(self, index: int) -> PcrDescription:
        """The current value of PCR ``index`` and whether it is locked."""
        ...


class DeviceNsm:
    """Production adapter over an open ``/dev/nsm`` descriptor. Not thread-safe: one call at a time."""

    def __init__(self, fd: int, *, ioctl: IoctlFunction = _fcntl_ioctl) -> None:
        self._fd = fd
        self._ioctl = ioctl

    @classmethod
    def open(cls, path: str = NSM_DEVICE_PATH) -> DeviceNsm:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise NsmError(f"cannot open {path}") from exc
        return cls(fd)

    def close(self) -> None:
        os.close(self._fd)

    def attestation(self, *, public_key: bytes | None, user_data: bytes | None, nonce: bytes | None) -> bytes:
        for value in (public_key, user_data, nonce):
            if value is not None and len(value) > MAX_USER_FIELD_BYTES:
                raise NsmError("attestation field too large")
        body = self._call({"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}})
        return _bytes_member(body, "Attestation", "document")

    def get_random(self) -> bytes:
        random = _bytes_member(self._call("GetRandom"), "GetRandom", "random")
        if not random:
            raise NsmError("NSM returned no randomness")
        return random

    def describe_pcr(self, index: int) -> PcrDescription:
        if not 0 <= index < PCR_COUNT:
            raise NsmError("PCR index out of range")
        body = _variant(self._call({"DescribePCR": {"index": index}}), "DescribePCR")
        lock, data = body.get("lock"), body.get("data")
        if not isinstance(lock, bool) or not isinstance(data, bytes):
            raise NsmError("malformed NSM response")
        return PcrDescription(locked=lock, data=data)

    def _call(self, request: object) -> Any:
        encoded = cbor2.dumps(request)
        if len(encoded) > NSM_REQUEST_MAX_BYTES:
            raise NsmError("NSM request too large")
        request_buffer = ctypes.create_string_buffer(encoded, len(encoded))
        response_buffer = ctypes.create_string_buffer(NSM_RESPONSE_MAX_BYTES)
        message = NsmMessage(
            IoVec(ctypes.addressof(request_buffer), len(encoded)),
            IoVec(ctypes.addressof(response_buffer), NSM_RESPONSE_MAX_BYTES),
        )
        try:
            status = self._ioctl(self._fd, NSM_IOCTL_REQUEST, message)
        except OSError as exc:
            raise NsmError("NSM ioctl failed") from exc
        if status != 0:
            raise NsmError("NSM ioctl failed")
        length = message.response.iov_len
        if not 0 < length <= NSM_RESPONSE_MAX_BYTES:
            raise NsmError("NSM response length invalid")
        try:
            return loads_untrusted(response_buffer.raw[:length])
        except CborDecodeError as exc:
            raise NsmError("malformed NSM response") from exc


def _variant(response: Any, name: str) -> dict[str, Any]:
    if isinstance(response, dict) and set(response) == {"Error"}:
        code = response["Error"]
        raise NsmError(f"NSM error {code}" if isinstance(code, str) and code.isalnum() else "NSM error")
    if not isinstance(response, dict) or set(response) != {name} or not isinstance(response[name], dict):
        raise NsmError("unexpected NSM response")
    body: dict[str, Any] = response[name]
    return body


def _bytes_member(response: Any, name: str, member: str) -> bytes:
    value = _variant(response, name).get(member)
    if not isinstance(value, bytes):
        raise NsmError("malformed NSM response")
    return value
