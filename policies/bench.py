"""Benchmark: decode + evaluate against one Ed25519 signature, measured in the same run.

``python -m policies.bench`` times (1) a typical agent transaction: SetComputeUnitPrice, SetComputeUnitLimit and
one SOL transfer; (2) a 10-instruction one: the two compute-budget instructions, six SOL transfers, a memo and a
token TransferChecked; (3) as the baseline, one Ed25519 signature (cryptography) over the typical message.
Each sample times one call with ``perf_counter_ns``; the policy is parsed once, as the services do.
The last line is machine-readable; the goal is ratio <= 1.0.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction

from policies.document import Policy, parse_policy
from policies.evaluate import EvalContext, evaluate
from policies.examples import example_policy_json
from policies.programs import MEMO_V2_PROGRAM, TOKEN_PROGRAM, associated_token_address
from policies.transaction import decode_transaction

MERCHANT = Pubkey.from_string("FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J")
EXAMPLE_MINT = Pubkey.from_string("FJrj4SdzrJU6z5mV3ymwa9rouE9Wiicue9zoJHbaGxxY")


def _transfer_checked(wallet: Pubkey, amount: int) -> Instruction:
    # SPL Token TransferChecked: tag 12, amount u64 LE, decimals u8; accounts source, mint, destination, owner.
    data = bytes([12]) + amount.to_bytes(8, "little") + bytes([6])
    accounts = [
        AccountMeta(associated_token_address(wallet, EXAMPLE_MINT, TOKEN_PROGRAM), False, True),
        AccountMeta(EXAMPLE_MINT, False, False),
        AccountMeta(associated_token_address(MERCHANT, EXAMPLE_MINT, TOKEN_PROGRAM), False, True),
        AccountMeta(wallet, True, False),
    ]
    return Instruction(TOKEN_PROGRAM, data, accounts)


def build_transactions(wallet: Pubkey) -> tuple[bytes, bytes, bytes]:
    """(typical transaction, 10-instruction transaction, the typical one's message bytes)."""
    budget = [set_compute_unit_price(10_000), set_compute_unit_limit(50_000)]
    pay = transfer(TransferParams(from_pubkey=wallet, to_pubkey=MERCHANT, lamports=1_000_000))
    typical = Transaction.new_unsigned(Message.new_with_blockhash([*budget, pay], wallet, Hash.default()))
    ten = [
        *budget,
        *(transfer(TransferParams(from_pubkey=wallet, to_pubkey=MERCHANT, lamports=1_000 + i)) for i in range(6)),
        Instruction(MEMO_V2_PROGRAM, b"invoice 42", [AccountMeta(wallet, True, False)]),
        _transfer_checked(wallet, 5_000),
    ]
    ten_ix = Transaction.new_unsigned(Message.new_with_blockhash(ten, wallet, Hash.default()))
    return bytes(typical), bytes(ten_ix), bytes(typical.message)


def _samples(fn: Callable[[], object], count: int) -> list[float]:
    for _ in range(min(count, 200)):  # warm-up
        fn()
    out = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(count):
            start = clock()
            fn()
            out.append((clock() - start) / 1000)
    finally:
        gc.enable()
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def run(count: int) -> str:
    policy: Policy = parse_policy(example_policy_json())
    signer = Ed25519PrivateKey.generate()
    wallet = Pubkey.from_bytes(signer.public_key().public_bytes_raw())
    typical, ten_ix, message = build_transactions(wallet)
    ctx = EvalContext(
        now=datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        wallet_keys=frozenset({wallet}),
        spent=dict.fromkeys(policy.spend_windows(), 0),
        requests_in_window=0,
        denials_in_window=0,
    )
    for raw in (typical, ten_ix):
        verdict = evaluate(policy, decode_transaction(raw), ctx).verdict
        if verdict.label != "allow":
            raise SystemExit(f"benchmark transaction was not allowed ({verdict.label}): the benchmark is broken")

    typical_us = _samples(lambda: evaluate(policy, decode_transaction(typical), ctx), count)
    ten_us = _samples(lambda: evaluate(policy, decode_transaction(ten_ix), ctx), count)
    sign_us = _samples(lambda: signer.sign(message), count)

    med, p99 = statistics.median(typical_us), _p99(typical_us)
    ten_med, sign_med = statistics.median(ten_us), statistics.median(sign_us)
    print(f"samples per case: {count}")
    print(f"typical (3 ix):   median {med:8.1f} us   p99 {p99:8.1f} us")
    print(f"ten instructions: median {ten_med:8.1f} us   p99 {_p99(ten_us):8.1f} us")
    print(f"ed25519 sign:     median {sign_med:8.1f} us   p99 {_p99(sign_us):8.1f} us")
    return (
        f"policy-eval median_us={med:.1f} p99_us={p99:.1f} ten_ix_median_us={ten_med:.1f} "
        f"sign_median_us={sign_med:.1f} ratio={med / sign_med:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    print(run(args.samples))


if __name__ == "__main__":
    main()
