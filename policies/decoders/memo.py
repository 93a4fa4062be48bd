"""Decoder of the Memo programs (v1 and v2): the whole instruction data is a UTF-8 text.

A memo moves nothing: it is benign (no effects). ``args`` holds the text and the signer keys the memo names
(Memo v2 requires every listed account to sign). Data that is not valid UTF-8 is a `DecodeError`, as it is for
the program itself.
"""

from __future__ import annotations

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders._common import instruction
from policies.errors import DecodeError
from policies.model import AccountView, DecodedInstruction


def decode_memo(index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes) -> DecodedInstruction:
    """Decode a Memo v1 or v2 instruction."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("memo: text is not valid UTF-8", instruction_index=index) from exc
    version = 1 if program_id == programs.MEMO_V1_PROGRAM else 2
    return instruction(
        index, program_id, "memo", "memo", accounts,
        {"text": text, "version": version, "signers": tuple(a.pubkey for a in accounts)},
    )  # fmt: skip
