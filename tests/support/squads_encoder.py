"""An independent Squads v4 instruction encoder for tests, driven by the program's Anchor IDL.

The IDL is ``../shared/squads/squads_multisig_program.json`` (from ``@sqds/multisig`` 2.1.4; its sha256 is pinned
here and in the README beside it). Instruction discriminators are computed from the IDL's instruction names
(``sha256("global:<snake_case>")[:8]``), arguments are Borsh-encoded by walking the IDL's type definitions, and
account metas follow the IDL's account lists (composite account groups flattened, an absent optional account passed
as the program id). Nothing here imports the decoder under test.

The vault transaction message (``TransactionMessage``) is not an IDL type: `encode_transaction_message` writes its
compact layout (u8-length vectors, u16-length instruction data), and `compile_vault_message` orders the keys the
way Squads clients do (writable signers, readonly signers, writable non-signers, readonly non-signers).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

IDL_PATH = Path(__file__).resolve().parents[2] / ".." / "shared" / "squads" / "squads_multisig_program.json"
IDL_SHA256 = "cb9a0a29040ec3853a5105c547ffc608bb0e3175d78dacf30d463aff939f9b9b"
PROGRAM_ID = Pubkey.from_string("SQDS4ep65T869zMMBKyuUq6aD6EgTu8psMjkvj52pCf")

_INTS = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i", "u64": "<Q", "i64": "<q"}


def snake(name: str) -> str:
    """camelCase (IDL) -> snake_case (Rust): ``multisigCreateV2`` -> ``multisig_create_v2``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def anchor_discriminator(kind: str, name: str) -> bytes:
    return hashlib.sha256(f"{kind}:{name}".encode()).digest()[:8]


def load_idl() -> dict[str, Any]:
    raw = IDL_PATH.read_bytes()
    if hashlib.sha256(raw).hexdigest() != IDL_SHA256:
        raise RuntimeError(f"{IDL_PATH} is not the pinned Squads v4 IDL")
    idl: dict[str, Any] = json.loads(raw)
    return idl


class SquadsEncoder:
    """Encode Squads v4 instructions from the IDL. Argument values use snake_case field names; enums are a variant
    name (unit variants) or ``(variant, {fields})``; ``Option`` is ``None`` or the value."""

    def __init__(self, idl: Mapping[str, Any] | None = None) -> None:
        self.idl = dict(idl or load_idl())
        self.instructions = {snake(ix["name"]): ix for ix in self.idl["instructions"]}
        self.types = {t["name"]: t["type"] for t in self.idl["types"]}
        self.types.update({a["name"]: a["type"] for a in self.idl.get("accounts", [])})  # account layouts too

    def discriminator(self, name: str) -> bytes:
        if name not in self.instructions:
            raise KeyError(name)
        return anchor_discriminator("global", name)

    # -- Borsh ---------------------------------------------------------------------------------------------------

    def value(self, ty: Any, value: Any) -> bytes:
        if isinstance(ty, str):
            if ty in _INTS:
                return struct.pack(_INTS[ty], value)
            if ty == "bool":
                return bytes([1 if value else 0])
            if ty == "publicKey":
                return bytes(value)
            if ty == "bytes":
                return struct.pack("<I", len(value)) + bytes(value)
            if ty == "string":
                raw: bytes = value.encode()
                return struct.pack("<I", len(raw)) + raw
            raise ValueError(f"unsupported IDL type {ty}")
        if "option" in ty:
            return b"\x00" if value is None else b"\x01" + self.value(ty["option"], value)
        if "vec" in ty:
            return struct.pack("<I", len(value)) + b"".join(self.value(ty["vec"], item) for item in value)
        if "array" in ty:
            item, length = ty["array"]
            if len(value) != length:
                raise ValueError("array length")
            return b"".join(self.value(item, v) for v in value)
        if "defined" in ty:
            return self.defined(ty["defined"], value)
        raise ValueError(f"unsupported IDL type {ty}")

    def defined(self, name: str, value: Any) -> bytes:
        definition = self.types[name]
        if definition["kind"] == "struct":
            return b"".join(self.value(f["type"], value[snake(f["name"])]) for f in definition["fields"])
        variant, fields = (value, {}) if isinstance(value, str) else value
        names = [snake(v["name"]) for v in definition["variants"]]
        position = names.index(variant)
        spec = definition["variants"][position].get("fields", [])
        return bytes([position]) + b"".join(self.value(f["type"], fields[snake(f["name"])]) for f in spec)

    def data(self, name: str, args: Mapping[str, Any] | None = None) -> bytes:
        """Discriminator + the Borsh encoding of the instruction's arguments (``args`` for its ``args`` struct)."""
        out = self.discriminator(name)
        for arg in self.instructions[name]["args"]:
            out += self.value(arg["type"], (args or {}) if arg["name"] == "args" else (args or {})[snake(arg["name"])])
        return out

    # -- accounts ------------------------------------------------------------------------------------------------

    def _flat(self, accounts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        for account in accounts:
            out.extend(self._flat(account["accounts"]) if "accounts" in account else [account])
        return out

    def account_names(self, name: str) -> list[str]:
        return [snake(a["name"]) for a in self._flat(self.instructions[name]["accounts"])]

    def metas(self, name: str, accounts: Mapping[str, Pubkey | None]) -> list[AccountMeta]:
        """Account metas in IDL order; an optional account given as None becomes the program id."""
        out = []
        for spec in self._flat(self.instructions[name]["accounts"]):
            key = accounts[snake(spec["name"])]
            if key is None:
                if not spec.get("isOptional"):
                    raise ValueError(f"{spec['name']} is not optional")
                out.append(AccountMeta(PROGRAM_ID, False, False))
            else:
                out.append(AccountMeta(key, bool(spec["isSigner"]), bool(spec["isMut"])))
        return out

    def instruction(
        self,
        name: str,
        accounts: Mapping[str, Pubkey | None],
        args: Mapping[str, Any] | None = None,
        *,
        remaining: Sequence[AccountMeta] = (),
    ) -> Instruction:
        return Instruction(PROGRAM_ID, self.data(name, args), [*self.metas(name, accounts), *remaining])


# ---------------------------------------------------------------------------------------------------------------
# The vault transaction message (Squads' compact TransactionMessage).


def encode_transaction_message(
    header: tuple[int, int, int],
    keys: Sequence[Pubkey],
    instructions: Sequence[tuple[int, bytes, bytes]],
    lookups: Sequence[tuple[Pubkey, bytes, bytes]] = (),
) -> bytes:
    """``header`` is (signers, writable signers, writable non-signers); instructions are (program id index,
    account indexes, data); lookups are (table, writable indexes, readonly indexes). No validation, on purpose."""
    out = bytes(header) + bytes([len(keys)]) + b"".join(bytes(k) for k in keys)
    out += bytes([len(instructions)])
    for program_index, account_indexes, data in instructions:
        out += bytes([program_index, len(account_indexes)]) + account_indexes + struct.pack("<H", len(data)) + data
    out += bytes([len(lookups)])
    for table, writable, readonly in lookups:
        out += bytes(table) + bytes([len(writable)]) + writable + bytes([len(readonly)]) + readonly
    return out


def compile_vault_message(vault: Pubkey, instructions: Sequence[Instruction]) -> bytes:
    """Compile ``instructions`` into a vault transaction message whose first key is the vault (a writable signer)."""
    flags: dict[Pubkey, list[bool]] = {vault: [True, True]}
    for ix in instructions:
        for meta in ix.accounts:
            signer, writable = flags.setdefault(meta.pubkey, [False, False])
            flags[meta.pubkey] = [signer or meta.is_signer, writable or meta.is_writable]
        flags.setdefault(ix.program_id, [False, False])
    groups: list[list[Pubkey]] = [[], [], [], []]
    for key, (signer, writable) in flags.items():
        groups[(0 if writable else 1) if signer else (2 if writable else 3)].append(key)
    keys = [key for group in groups for key in group]
    position = {key: i for i, key in enumerate(keys)}
    compiled = [
        (position[ix.program_id], bytes(position[m.pubkey] for m in ix.accounts), bytes(ix.data)) for ix in instructions
    ]
    header = (len(groups[0]) + len(groups[1]), len(groups[0]), len(groups[2]))
    return encode_transaction_message(header, keys, compiled)


def _parse_compact_message(raw: bytes) -> dict[str, Any]:
    """The compact ``TransactionMessage`` (see `encode_transaction_message`) as the IDL's ``VaultTransactionMessage``
    value: what the program stores. A plain reading of our own encoding, independent of the decoder under test."""
    at = 0

    def take(count: int) -> bytes:
        nonlocal at
        at += count
        return raw[at - count : at]

    def small(wide: bool = False) -> bytes:
        length = struct.unpack("<H", take(2))[0] if wide else take(1)[0]
        return take(length)

    header = take(3)
    keys = [Pubkey.from_bytes(take(32)) for _ in range(take(1)[0])]
    instructions = [
        {"program_id_index": take(1)[0], "account_indexes": small(), "data": small(wide=True)}
        for _ in range(take(1)[0])
    ]
    lookups = [
        {"account_key": Pubkey.from_bytes(take(32)), "writable_indexes": small(), "readonly_indexes": small()}
        for _ in range(take(1)[0])
    ]
    return {"num_signers": header[0], "num_writable_signers": header[1], "num_writable_non_signers": header[2],
            "account_keys": keys, "instructions": instructions, "address_table_lookups": lookups}  # fmt: skip


def rent_exempt(data_len: int) -> int:
    """solana-rent defaults: (128 + data length) bytes at 3480 lamports per byte-year, two years."""
    return (128 + data_len) * 3480 * 2


def vault_transaction_rent(message: bytes, ephemeral_signers: int = 0) -> int:
    """Rent of the ``VaultTransaction`` account a ``vault_transaction_create`` carrying ``message`` makes: the 8-byte
    Anchor discriminator and the IDL account layout, Borsh-encoded."""
    account = {"multisig": PROGRAM_ID, "creator": PROGRAM_ID, "index": 1, "bump": 255, "vault_index": 0,
               "vault_bump": 255, "ephemeral_signer_bumps": bytes(ephemeral_signers),
               "message": _parse_compact_message(message)}  # fmt: skip
    return rent_exempt(8 + len(SquadsEncoder().defined("VaultTransaction", account)))


def proposal_rent(members: int) -> int:
    """Rent of a ``Proposal`` account of a multisig with ``members`` members (every vote list full)."""
    votes = [PROGRAM_ID] * members
    account = {"multisig": PROGRAM_ID, "transaction_index": 1, "status": ("active", {"timestamp": 0}), "bump": 255,
               "approved": votes, "rejected": votes, "cancelled": votes}  # fmt: skip
    return rent_exempt(8 + len(SquadsEncoder().defined("Proposal", account)))
