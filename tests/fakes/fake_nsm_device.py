"""A fake ``/dev/nsm`` at the ioctl seam: it reads the request through the iovec pointers, answers with real
CBOR and real ES384-signed attestation documents from a test PKI, and writes back through the response iovec,
as the driver does. Fault switches let tests exercise every error path of the client."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cbor2

from enclave_app.nsm import NSM_IOCTL_REQUEST, NsmMessage
from tests.support.nitro_test_pki import NitroTestPki


@dataclass
class FakeNsmDevice:
    pki: NitroTestPki
    now: datetime
    pcrs: dict[int, bytes]
    requests: list[Any] = field(default_factory=list)
    # Fault injection: a raw response to write instead of the real one, a status, an errno, a length override.
    raw_response: bytes | None = None
    status: int = 0
    errno: int | None = None
    response_length: int | None = None

    def ioctl(self, fd: int, request: int, message: NsmMessage) -> int:
        if request != NSM_IOCTL_REQUEST:
            raise OSError(25, "Inappropriate ioctl for device")
        if self.errno is not None:
            raise OSError(self.errno, os.strerror(self.errno))
        decoded = cbor2.loads(ctypes.string_at(message.request.iov_base, message.request.iov_len))
        self.requests.append(decoded)
        response = self.raw_response if self.raw_response is not None else cbor2.dumps(self._answer(decoded))
        if len(response) > message.response.iov_len:
            raise OSError(90, "Message too long")
        ctypes.memmove(message.response.iov_base, response, len(response))
        message.response.iov_len = self.response_length if self.response_length is not None else len(response)
        return self.status

    def _answer(self, request: Any) -> Any:
        if request == "GetRandom":
            return {"GetRandom": {"random": os.urandom(256)}}
        if isinstance(request, dict) and "Attestation" in request:
            fields = self.pki.fields(timestamp=self.now, pcrs=self.pcrs, **request["Attestation"])
            return {"Attestation": {"document": self.pki.sign(fields)}}
        if isinstance(request, dict) and "DescribePCR" in request:
            index = request["DescribePCR"]["index"]
            if index not in self.pcrs:
                return {"Error": "InvalidIndex"}
            return {"DescribePCR": {"lock": True, "data": self.pcrs[index]}}
        return {"Error": "InvalidOperation"}
