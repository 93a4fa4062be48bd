"""Attack corpus: bypass attempts against the policy engine, each with the verdict and rule it must produce.

Every case builds a real transaction (solders + SPL builders, or raw bytes where the attack is the encoding) for
a wallet under the example policy, and runs the real decoder and evaluator. A case passes only if the verdict is
exactly the expected one AND a reason names the expected rule, so a case cannot pass by failing elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import spl.token.instructions as tok
import spl.token.models as spl
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import (
    AdvanceNonceAccountParams,
    AllocateParams,
    AssignParams,
    AuthorizeNonceAccountParams,
    CreateAccountParams,
    TransferWithSeedParams,
    WithdrawNonceAccountParams,
    advance_nonce_account,
    allocate,
    assign,
    authorize_nonce_account,
    create_account,
    transfer_with_seed,
    withdraw_nonce_account,
)
from solders.transaction import Transaction

from policies.decision import Verdict
from policies.programs import MEMO_V1_PROGRAM, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, associated_token_address
from tests.support.policies import BLOCKED, EXAMPLE_MINT, MERCHANT
from tests.support.scenario import BLOCKHASH, Scenario

STRANGER = Pubkey.from_string("9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin")
NONCE = Pubkey.from_string("CbDLZMi2KvHiYz4BgLG4SRjuvH5AnHSRhjS2DcSRj16N")
OTHER_MINT = Pubkey.from_string("7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU")
SOL = 1_000_000_000


def ata(owner: Pubkey, mint: Pubkey = EXAMPLE_MINT, program: Pubkey = TOKEN_PROGRAM) -> Pubkey:
    return associated_token_address(owner, mint, program)


def checked(s: Scenario, amount: int, to_owner: Pubkey = MERCHANT, mint: Pubkey = EXAMPLE_MINT,
            program: Pubkey = TOKEN_PROGRAM) -> Instruction:  # fmt: skip
    return tok.transfer_checked(spl.TransferCheckedParams(
        program_id=program, source=ata(s.wallet, mint, program), mint=mint, dest=ata(to_owner, mint, program),
        owner=s.wallet, amount=amount, decimals=6))  # fmt: skip


def raw_ix(program: Pubkey, data: bytes, *metas: tuple[Pubkey, bool, bool]) -> Instruction:
    return Instruction(program, data, [AccountMeta(k, sig, w) for k, sig, w in metas])


@dataclass(frozen=True)
class Attack:
    name: str
    build: Callable[[Scenario], bytes | tuple[bytes, dict[Pubkey, list[Pubkey]]]]
    verdict: Verdict
    rule: str
    setup: Callable[[Scenario], None] | None = None


def _lookup_destination(s: Scenario) -> tuple[bytes, dict[Pubkey, list[Pubkey]]]:
    table = AddressLookupTableAccount(Keypair().pubkey(), [MERCHANT, STRANGER])
    raw = s.v0(s.pay(1_000, STRANGER), tables=[table])
    return raw, {table.key: list(table.addresses)}


def _lookup_unsupplied(s: Scenario) -> bytes:
    table = AddressLookupTableAccount(Keypair().pubkey(), [MERCHANT])
    return s.v0(s.pay(1_000), tables=[table])


def _lookup_lied_about(s: Scenario) -> tuple[bytes, dict[Pubkey, list[Pubkey]]]:
    """The agent claims a table with only one entry while the message indexes the second."""
    table = AddressLookupTableAccount(Keypair().pubkey(), [STRANGER, MERCHANT])
    raw = s.v0(s.pay(1_000), tables=[table])
    return raw, {table.key: [STRANGER]}


def _duplicate_account_keys(s: Scenario) -> bytes:
    raw = bytearray(s.legacy(s.pay(1_000)))
    message = Transaction.from_bytes(bytes(raw)).message
    keys = list(message.account_keys)
    position = bytes(raw).index(bytes(keys[1]))
    raw[position : position + 32] = bytes(keys[-1])  # second key becomes a copy of the last one
    return bytes(raw)


def _v1_message(s: Scenario) -> bytes:
    raw = bytearray(s.v0(s.pay(1_000)))
    raw[1 + 64] = 0x81  # message prefix: versioned, version 1
    return bytes(raw)


def _stranger_pays_and_signs(s: Scenario) -> bytes:
    stranger = Keypair().pubkey()
    ix = raw_ix(MEMO_V1_PROGRAM, b"hi", (stranger, True, False))
    return bytes(Transaction.new_unsigned(Message.new_with_blockhash([ix], stranger, BLOCKHASH)))


def _with_seed(s: Scenario) -> bytes:
    derived = Pubkey.create_with_seed(s.wallet, "vault", Pubkey.default())
    return s.legacy(transfer_with_seed(TransferWithSeedParams(
        from_pubkey=derived, from_base=s.wallet, from_seed="vault", from_owner=Pubkey.default(),
        to_pubkey=STRANGER, lamports=2 * SOL)))  # fmt: skip


def _allow_nonce(s: Scenario) -> None:
    s.doc["rules"]["durable_nonce"] = {"allowed": True, "nonce_accounts": [str(NONCE)]}


def _nonce_advance(s: Scenario) -> Instruction:
    return advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=NONCE, authorized_pubkey=s.wallet))


def _nonce_not_first(s: Scenario) -> bytes:
    return s.legacy(s.pay(1_000), _nonce_advance(s), budget=False)


def _tight_total_fee(s: Scenario) -> None:
    s.doc["rules"]["fees"]["max_total_fee_lamports"] = 100_000


def _burst(s: Scenario) -> None:
    s.denials = 4


def _busy(s: Scenario) -> None:
    s.requests = 60


def _office_hours(s: Scenario) -> None:
    s.doc["rules"]["time_windows"] = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "11:00"}]


def _missing_spent(s: Scenario) -> None:
    s.spent[("SOL", 86_400)] = -1  # the state store could not say what was spent


def _split(s: Scenario) -> bytes:
    return s.legacy(*(s.pay(3 * SOL) for _ in range(4)))  # 12 SOL in pieces of 3: per transaction counts the sum


def _token_2022_ext(tag: int, sub: bytes, n_accounts: int = 4) -> Callable[[Scenario], bytes]:
    def build(s: Scenario) -> bytes:
        keys = [ata(s.wallet, program=TOKEN_2022_PROGRAM), EXAMPLE_MINT, ata(MERCHANT, program=TOKEN_2022_PROGRAM),
                s.wallet][:n_accounts]  # fmt: skip
        metas = [(k, k == s.wallet, k not in (EXAMPLE_MINT, s.wallet)) for k in keys]
        return s.legacy(raw_ix(TOKEN_2022_PROGRAM, bytes([tag]) + sub, *metas))

    return build


def _hook_accounts(s: Scenario) -> bytes:
    ix = checked(s, 10, program=TOKEN_2022_PROGRAM)
    hook = [AccountMeta(Keypair().pubkey(), False, False), AccountMeta(Keypair().pubkey(), False, True)]
    return s.legacy(Instruction(ix.program_id, ix.data, [*ix.accounts, *hook]))


def _close(s: Scenario, to: Pubkey) -> bytes:
    return s.legacy(tok.close_account(spl.CloseAccountParams(
        program_id=TOKEN_PROGRAM, account=ata(s.wallet), dest=to, owner=s.wallet)))  # fmt: skip


def _set_authority(s: Scenario, kind: spl.AuthorityType, account: Pubkey) -> bytes:
    return s.legacy(tok.set_authority(spl.SetAuthorityParams(
        program_id=TOKEN_PROGRAM, account=account, authority=kind, current_authority=s.wallet,
        new_authority=STRANGER)))  # fmt: skip


ATTACKS = [
    Attack("hidden second transfer to a stranger", lambda s: s.legacy(s.pay(1_000), s.pay(1_000, STRANGER)),
           Verdict.DENY, "destinations.allow"),
    Attack("transfer to a denylisted address", lambda s: s.legacy(s.pay(1_000, BLOCKED)), Verdict.DENY,
           "destinations.deny"),
    Attack("token transfer to a denylisted owner's associated account", lambda s: s.legacy(checked(s, 5, BLOCKED)),
           Verdict.DENY, "destinations.deny"),
    Attack("Approve a delegate", lambda s: s.legacy(tok.approve(spl.ApproveParams(
        program_id=TOKEN_PROGRAM, source=ata(s.wallet), delegate=STRANGER, owner=s.wallet, amount=2**64 - 1))),
           Verdict.FREEZE, "freeze.delegate_approval"),
    Attack("ApproveChecked a delegate", lambda s: s.legacy(tok.approve_checked(spl.ApproveCheckedParams(
        program_id=TOKEN_PROGRAM, source=ata(s.wallet), mint=EXAMPLE_MINT, delegate=STRANGER, owner=s.wallet,
        amount=1, decimals=6))), Verdict.FREEZE, "freeze.delegate_approval"),
    Attack("SetAuthority: account owner to a stranger",
           lambda s: _set_authority(s, spl.AuthorityType.ACCOUNT_OWNER, ata(s.wallet)),
           Verdict.FREEZE, "freeze.authority_change"),
    Attack("SetAuthority: close authority to a stranger",
           lambda s: _set_authority(s, spl.AuthorityType.CLOSE_ACCOUNT, ata(s.wallet)),
           Verdict.FREEZE, "freeze.authority_change"),
    Attack("SetAuthority: mint authority to a stranger",
           lambda s: _set_authority(s, spl.AuthorityType.MINT_TOKENS, EXAMPLE_MINT),
           Verdict.FREEZE, "freeze.authority_change"),
    Attack("CloseAccount with rent to a stranger", lambda s: _close(s, STRANGER), Verdict.FREEZE,
           "freeze.close_to_stranger"),
    Attack("CloseAccount with rent to an allowlisted merchant", lambda s: _close(s, MERCHANT), Verdict.FREEZE,
           "freeze.close_to_stranger"),
    Attack("Assign the wallet account to another program", lambda s: s.legacy(assign(AssignParams(
        pubkey=s.wallet, owner=STRANGER))), Verdict.FREEZE, "freeze.authority_change"),
    Attack("Allocate data on the wallet account", lambda s: s.legacy(allocate(AllocateParams(
        pubkey=s.wallet, space=100))), Verdict.FREEZE, "freeze.authority_change"),
    Attack("CreateAccount funding a stranger's new account", lambda s: s.legacy(create_account(CreateAccountParams(
        from_pubkey=s.wallet, to_pubkey=Keypair().pubkey(), lamports=SOL // 2, space=0, owner=STRANGER))),
           Verdict.DENY, "destinations.allow"),
    Attack("TransferWithSeed from a wallet-derived account", _with_seed, Verdict.DENY, "destinations.allow"),
    Attack("WithdrawNonceAccount to a stranger", lambda s: s.legacy(withdraw_nonce_account(WithdrawNonceAccountParams(
        nonce_pubkey=NONCE, authorized_pubkey=s.wallet, to_pubkey=STRANGER, lamports=SOL))),
           Verdict.DENY, "destinations.allow"),
    Attack("AuthorizeNonceAccount hands the nonce to a stranger", lambda s: s.legacy(authorize_nonce_account(
        AuthorizeNonceAccountParams(nonce_pubkey=NONCE, authorized_pubkey=s.wallet, new_authority=STRANGER))),
           Verdict.FREEZE, "freeze.authority_change"),
    Attack("durable nonce when the policy forbids it", lambda s: s.legacy(_nonce_advance(s), s.pay(1_000),
           budget=False), Verdict.DENY, "durable_nonce"),
    Attack("durable nonce advance not in first position", _nonce_not_first, Verdict.DENY, "durable_nonce",
           setup=_allow_nonce),
    Attack("durable nonce on an account the policy does not list", lambda s: s.legacy(advance_nonce_account(
        AdvanceNonceAccountParams(nonce_pubkey=STRANGER, authorized_pubkey=s.wallet)), s.pay(1_000), budget=False),
           Verdict.DENY, "durable_nonce", setup=_allow_nonce),
    Attack("destination hidden in an address lookup table", _lookup_destination, Verdict.DENY, "destinations.allow"),
    Attack("lookup table whose contents nobody trusted supplied", _lookup_unsupplied, Verdict.DENY, "decode"),
    Attack("lookup table index past the supplied contents", _lookup_lied_about, Verdict.DENY, "decode"),
    Attack("priority-fee drain: huge compute-unit price", lambda s: s.legacy(
        set_compute_unit_price(10**12), set_compute_unit_limit(50_000), s.pay(1_000), budget=False),
           Verdict.DENY, "fees.compute_unit_price"),
    Attack("compute-unit limit above the cap", lambda s: s.legacy(
        set_compute_unit_price(1), set_compute_unit_limit(1_400_000), s.pay(1_000), budget=False),
           Verdict.DENY, "fees.compute_unit_limit"),
    Attack("price and limit each under their caps, total fee over", lambda s: s.legacy(
        set_compute_unit_price(1_000_000), set_compute_unit_limit(400_000), s.pay(1_000), budget=False),
           Verdict.DENY, "fees.total_fee", setup=_tight_total_fee),
    Attack("default compute-unit limit with a high price", lambda s: s.legacy(
        set_compute_unit_price(1_000_000), s.pay(1), s.pay(1), s.pay(1), budget=False),
           Verdict.DENY, "fees.total_fee"),
    Attack("compute-unit price set twice", lambda s: s.legacy(set_compute_unit_price(1), s.pay(1_000)),
           Verdict.DENY, "fees"),
    Attack("plain token Transfer without the mint", lambda s: s.legacy(tok.transfer(spl.TransferParams(
        program_id=TOKEN_PROGRAM, source=ata(s.wallet), dest=ata(MERCHANT), owner=s.wallet, amount=10))),
           Verdict.DENY, "token.transfer_checked_required"),
    Attack("TransferChecked of a mint the policy does not allow", lambda s: s.legacy(checked(s, 5, mint=OTHER_MINT)),
           Verdict.DENY, "mints.allow"),
    Attack("Token-2022 TransferCheckedWithFee", _token_2022_ext(26, bytes([1]) + (5).to_bytes(8, "little")
           + bytes([6]) + (1).to_bytes(8, "little")), Verdict.DENY, "decode.opaque"),
    Attack("Token-2022 confidential transfer", _token_2022_ext(27, bytes([7]) + bytes(64)), Verdict.DENY,
           "decode.opaque"),
    Attack("Token-2022 transfer hook extra accounts", _hook_accounts, Verdict.DENY, "decode.opaque"),
    Attack("p-token Batch", lambda s: s.legacy(raw_ix(TOKEN_PROGRAM, bytes([255, 4, 9]) + bytes([12])
           + (5).to_bytes(8, "little") + bytes([6]), (ata(s.wallet), False, True), (EXAMPLE_MINT, False, False),
           (ata(MERCHANT), False, True), (s.wallet, True, False))), Verdict.DENY, "decode.opaque"),
    Attack("MintTo by the wallet", lambda s: s.legacy(tok.mint_to(spl.MintToParams(
        program_id=TOKEN_PROGRAM, mint=EXAMPLE_MINT, dest=ata(STRANGER), mint_authority=s.wallet, amount=10**12))),
           Verdict.DENY, "restricted"),
    Attack("Burn the wallet's tokens", lambda s: s.legacy(tok.burn(spl.BurnParams(
        program_id=TOKEN_PROGRAM, account=ata(s.wallet), mint=EXAMPLE_MINT, owner=s.wallet, amount=10))),
           Verdict.DENY, "restricted"),
    Attack("program outside the allowlist (Memo v1)", lambda s: s.legacy(raw_ix(MEMO_V1_PROGRAM, b"x")),
           Verdict.DENY, "programs.allow"),
    Attack("program nobody can decode", lambda s: s.legacy(raw_ix(STRANGER, b"\x01", (s.wallet, True, True))),
           Verdict.DENY, "decode.opaque"),
    Attack("split transfers summing above the approval ceiling", _split, Verdict.DENY, "limits.sol.per_transaction"),
    Attack("duplicate account keys", _duplicate_account_keys, Verdict.DENY, "decode"),
    Attack("oversized transaction", lambda s: s.legacy(*(s.pay(1 + i) for i in range(80))), Verdict.DENY, "decode"),
    Attack("truncated transaction", lambda s: s.legacy(s.pay(1_000))[:-3], Verdict.DENY, "decode"),
    Attack("trailing byte", lambda s: s.legacy(s.pay(1_000)) + b"\x00", Verdict.DENY, "decode"),
    Attack("v1 message", _v1_message, Verdict.DENY, "decode"),
    Attack("empty bytes", lambda s: b"", Verdict.DENY, "decode"),
    Attack("wallet is not a signer of the transaction", _stranger_pays_and_signs, Verdict.DENY, "wallet.signer"),
    Attack("a burst of denials ends in a freeze", lambda s: s.legacy(s.pay(1_000, STRANGER)), Verdict.FREEZE,
           "freeze.denials", setup=_burst),
    Attack("request rate exceeded", lambda s: s.legacy(s.pay(1_000)), Verdict.DENY, "rate", setup=_busy),
    Attack("outside the time window", lambda s: s.legacy(s.pay(1_000)), Verdict.DENY, "time_windows",
           setup=_office_hours),
    Attack("spending state missing", lambda s: s.legacy(s.pay(1_000)), Verdict.DENY, "limits.sol.sol-daily",
           setup=_missing_spent),
    Attack("over the daily ceiling with earlier spending", lambda s: s.legacy(s.pay(SOL)), Verdict.DENY,
           "limits.sol.sol-daily", setup=lambda s: s.spent.update({("SOL", 86_400): 19_500_000_000})),
]  # fmt: skip


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_refused(attack: Attack) -> None:
    scenario = Scenario()
    if attack.setup:
        attack.setup(scenario)
    built = attack.build(scenario)
    raw, tables = built if isinstance(built, tuple) else (built, None)
    decision = scenario.decide(raw, tables)
    rules = [r.rule for r in decision.reasons]
    assert decision.verdict is attack.verdict, f"{attack.name}: got {decision.verdict.label} {rules}"
    assert attack.rule in rules, f"{attack.name}: expected rule {attack.rule}, got {rules}"
    assert decision.reservations == ()


def test_corpus_has_at_least_thirty_distinct_attacks() -> None:
    assert len({a.name for a in ATTACKS}) == len(ATTACKS) >= 30


def test_time_window_boundaries() -> None:
    scenario = Scenario()
    _office_hours(scenario)
    inside = datetime(2026, 11, 18, 10, 59, tzinfo=UTC)
    for now, verdict in [
        (inside, Verdict.ALLOW),
        (inside.replace(hour=11, minute=0), Verdict.DENY),
        (inside.replace(hour=9, minute=0), Verdict.ALLOW),
        (inside.replace(day=21), Verdict.DENY),
    ]:
        scenario.now = now
        assert scenario.decide(scenario.legacy(scenario.pay(1_000))).verdict is verdict, now


def test_create_account_allow_prefund_on_the_wallet_freezes() -> None:
    """CreateAccountAllowPrefund succeeds on an account that already holds lamports: on the wallet it would hand
    the wallet's account to another program."""
    from solders.system_program import CreateAccountAllowPrefundParams, create_account_allow_prefund

    s = Scenario()
    ix = create_account_allow_prefund(
        CreateAccountAllowPrefundParams(new_account=s.wallet, payer=None, lamports=0, space=0, owner=STRANGER)
    )
    decision = s.decide(s.legacy(ix))
    assert decision.verdict is Verdict.FREEZE
    assert [r.rule for r in decision.reasons] == ["freeze.authority_change"]
