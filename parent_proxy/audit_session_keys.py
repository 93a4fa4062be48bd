"""The session keys an audit log records, and which of them signed a receipt (for `parent_proxy.audit_receipts`).

Several enclave boots can be in force over one log at once: a fleet (several hosts, each a proxy and its own
enclave, over one store: cdk ``waiaas:hostCount``), or several proxy processes on one host across an enclave
restart. Their ``enclave.session`` records and receipts interleave, so the key that signed a receipt is not
necessarily the one of the latest session record before it, only the one of *some* session record before it.
:meth:`SessionKeys.signer` finds it.

A receipt does not name its session, so the recorded keys are tried in turn (one Ed25519 verification each), the
most recently used first: a key is used when a session record names it or a receipt verifies under it. In an
honest log of H hosts, the keys in force are the H most recently used, so a receipt costs at most H verifications
however many boots the log holds (the key of a boot that ended sinks to the back once its receipts stop); only a
receipt that no recorded key signed tries them all, and that fails the check. In practice at most one key verifies
a receipt (Ed25519 signatures, under keys each enclave draws at random at boot).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from solders.pubkey import Pubkey

from enclave_app.errors import ReceiptError
from parent_proxy.enclave_sessions import ENCLAVE_SESSION_EVENT
from parent_proxy.errors import AuditChainError
from parent_proxy.store.model import AuditRecord

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RecordedKey:
    key: bytes
    seq: int
    """The seq of the first ``enclave.session`` record naming the key (a later one may name it again)."""


class SessionKeys:
    """The keys of the ``enclave.session`` records read so far in a walk over ``records``, most recently used
    last."""

    def __init__(self, records: Sequence[AuditRecord]) -> None:
        self._records = records
        self._keys: OrderedDict[bytes, RecordedKey] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self._keys)

    def record(self, seq: int, key: bytes) -> None:
        """The session record at ``seq`` names ``key`` (already checked by the caller): a key in force from now."""
        if key not in self._keys:
            self._keys[key] = RecordedKey(key, seq)
        self._keys.move_to_end(key)

    def first_seq(self, key: bytes) -> int:
        return self._keys[key].seq

    def signer(self, record: AuditRecord, verify: Callable[[bytes], R], *, kind: str) -> tuple[RecordedKey, R]:
        """The recorded key under which ``verify`` (a receipt's verification: `ReceiptError` under any other key)
        passes, and what it returns; else `AuditChainError` at ``record``, naming the ``kind`` of receipt (``""``,
        ``"order "``, ``"agent-key "``) and, when the key of a later session record signed it, that record."""
        for recorded in reversed(self._keys.values()):
            try:
                stated = verify(recorded.key)
            except ReceiptError:
                continue
            self._keys.move_to_end(recorded.key)
            return recorded, stated
        later = self._later_signer(record, verify)
        if later is not None:
            reason = (f"{kind}receipt signed by the session key of seq {later}, which is recorded after it (a receipt "
                      "comes after the record of its session)")  # fmt: skip
        elif len(self._keys) == 1:
            reason = f"{kind}receipt not signed by the session key of seq {next(iter(self._keys.values())).seq}"
        else:
            reason = f"{kind}receipt not signed by any of the {len(self._keys)} session keys recorded before it"
        raise AuditChainError(record.seq, reason)

    def _later_signer(self, record: AuditRecord, verify: Callable[[bytes], object]) -> int | None:
        """The seq of the first session record after ``record`` whose key ``verify`` accepts (only to say why a
        receipt failed: the walk reaches that record later, and checks it then)."""
        for later in self._records:
            if later.seq <= record.seq or later.event_type != ENCLAVE_SESSION_EVENT:
                continue
            try:
                verify(bytes(Pubkey.from_string(json.loads(later.payload)["session_public_key"])))
            except (ReceiptError, KeyError, TypeError, ValueError):
                continue
            return later.seq
        return None
