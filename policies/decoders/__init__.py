"""Instruction decoders: one module per program, plugged into a `DecoderRegistry` (see ``registry.py``).

A decoder is a pure function ``(index, program_id, accounts, data) -> DecodedInstruction``. It reads the exact
byte layout of its program's instructions, checks data length and account count, and describes what the
instruction does as `policies.model` effects. Anything it cannot describe completely raises `DecodeError` or is
reported as an `Opaque` effect; it never guesses.
"""
