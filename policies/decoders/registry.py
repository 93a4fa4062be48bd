"""The decoder registry: which decoder reads the instructions of which program.

`default_registry()` returns a fresh registry holding the built-in decoders (System, SPL Token, Token-2022,
Associated Token Account, ComputeBudget, Memo v1 and v2, Squads v4). The Squads v4 decoder decodes the instructions
of vault transaction messages through the registry it is registered in (its ``get``), so decoders registered later
into that registry apply inside vault messages too. Further decoders are added with
``registry.register(program_id, decoder)``. A program without a decoder is not an error here: the transaction
decoder reports it as an ``unknown`` instruction with an `Opaque` effect, so that the evaluator can name it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Protocol

from solders.pubkey import Pubkey

from policies import programs
from policies.decoders import ata, compute_budget, memo, squads, system, token
from policies.model import AccountView, DecodedInstruction, Opaque


class InstructionDecoder(Protocol):
    """Decode one compiled instruction whose program id is ``program_id``.

    ``accounts`` are the instruction's accounts in order, already resolved through lookup tables. The decoder
    must raise `policies.errors.DecodeError` (with ``instruction_index=index``) for anything it cannot decode
    completely; any other exception is a bug that the transaction decoder still turns into a `DecodeError`.
    """

    def __call__(
        self, index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
    ) -> DecodedInstruction: ...


class DecoderRegistry:
    """A mapping from program id to decoder. Registering a program twice is refused unless ``replace=True``."""

    __slots__ = ("_decoders",)

    def __init__(self) -> None:
        self._decoders: dict[Pubkey, InstructionDecoder] = {}

    def register(self, program_id: Pubkey, decoder: InstructionDecoder, *, replace: bool = False) -> None:
        """Make ``decoder`` the decoder of ``program_id``."""
        if not replace and program_id in self._decoders:
            raise ValueError(f"a decoder is already registered for program {program_id}")
        self._decoders[program_id] = decoder

    def get(self, program_id: Pubkey) -> InstructionDecoder | None:
        """The decoder of ``program_id``, or None when there is none."""
        return self._decoders.get(program_id)

    def __contains__(self, program_id: object) -> bool:
        return program_id in self._decoders

    def __iter__(self) -> Iterator[Pubkey]:
        return iter(self._decoders)

    def __len__(self) -> int:
        return len(self._decoders)

    def copy(self) -> DecoderRegistry:
        """An independent registry with the same decoders."""
        other = DecoderRegistry()
        other._decoders.update(self._decoders)
        return other


def decode_unknown(
    index: int, program_id: Pubkey, accounts: tuple[AccountView, ...], data: bytes
) -> DecodedInstruction:
    """The instruction of a program with no registered decoder: named, and always `Opaque`."""
    return DecodedInstruction(
        index=index,
        program_id=program_id,
        program="unknown",
        name="unknown",
        accounts=accounts,
        args=MappingProxyType({"data_len": len(data)}),
        effects=(Opaque(f"no decoder for program {program_id}"),),
    )


def _builtin_decoders() -> dict[Pubkey, InstructionDecoder]:
    return {
        programs.SYSTEM_PROGRAM: system.decode_system,
        programs.COMPUTE_BUDGET_PROGRAM: compute_budget.decode_compute_budget,
        programs.TOKEN_PROGRAM: token.decode_token,
        programs.TOKEN_2022_PROGRAM: token.decode_token,
        programs.ASSOCIATED_TOKEN_PROGRAM: ata.decode_associated_token_account,
        programs.MEMO_V1_PROGRAM: memo.decode_memo,
        programs.MEMO_V2_PROGRAM: memo.decode_memo,
    }


def default_registry() -> DecoderRegistry:
    """A new registry holding every built-in decoder; callers may register more decoders into it."""
    registry = DecoderRegistry()
    for program_id, decoder in _builtin_decoders().items():
        registry.register(program_id, decoder)
    registry.register(programs.SQUADS_V4_PROGRAM, squads.SquadsDecoder(registry.get))
    return registry


DecoderFunction = Callable[[int, Pubkey, tuple[AccountView, ...], bytes], DecodedInstruction]
"""The plain-callable spelling of `InstructionDecoder`, for annotations that prefer it."""
