"""The enclave end to end, in process: real server, client, framing, signer, sealing, attestation and KMS
cryptography; test doubles only at the NSM ioctl and the KMS (moto) seams. Transactions it signs are verified
with solders and executed on LiteSVM."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from botocore.exceptions import ClientError
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from enclave_app.attestation import verify_attestation_document
from enclave_app.errors import EnclaveRequestError, ReceiptError
from enclave_app.protocol import SESSION_USER_DATA, AttestationMode, EnclaveState, TransactionDecisionResponse
from enclave_app.receipts import verify_receipt
from policies.model import FEES
from tests.enclave.sign_requests import DAY, WALLET, ready_wallet, spent, transfer_tx, verdict
from tests.support.chain import LAMPORTS_PER_SOL, airdrop, execute, fresh_chain
from tests.support.enclave_world import GOOD_PCRS, NOW, Boot, EnclaveWorld, serving
from tests.support.policies import BLOCKED, MERCHANT


@pytest.mark.litesvm
def test_provision_restart_unseal_sign_and_execute_on_chain(world: EnclaveWorld) -> None:
    svm = fresh_chain()

    async def first_boot() -> tuple[bytes, bytes]:
        async with serving(world.boot()) as (client, _):
            assert (await client.ping()).state is EnclaveState.BOOTING
            wallet = await client.provision_wallet(WALLET, world.owner_public)
            assert wallet.sealed_blob is not None
            assert (await client.ping()).state is EnclaveState.PROVISIONED
            return wallet.agent_public_key, wallet.sealed_blob

    agent_bytes, blob = asyncio.run(first_boot())
    agent = Pubkey.from_bytes(agent_bytes)
    airdrop(svm, agent, 5 * LAMPORTS_PER_SOL)
    raw = transfer_tx(agent, LAMPORTS_PER_SOL // 2, blockhash=svm.latest_blockhash())

    async def second_boot() -> tuple[TransactionDecisionResponse, bytes, bytes, bytes | None]:
        boot = world.boot()  # a restart: new registry, new session key, same KMS
        async with serving(boot) as (client, _):
            loaded = await client.load_wallet(
                WALLET, owner_public_key=world.owner_public, agent_public_key=agent_bytes, sealed_blob=blob
            )
            assert loaded.agent_public_key == agent_bytes and loaded.sealed_blob is None
            installed = await client.install_policy(WALLET, world.policy(WALLET))
            assert installed.sequence == 1
            assert (await client.ping()).state is EnclaveState.READY
            answer = await client.sign_transaction(WALLET, raw, spent=spent())
            nonce = b"caller-nonce-0123456789"
            attestation = await client.attestation(nonce)
            assert attestation.mode is AttestationMode.NITRO and attestation.reason is None
            assert attestation.document is not None
            return answer, attestation.document, nonce, attestation.session_public_key

    answer, document, nonce, session_public_key = asyncio.run(second_boot())
    assert verdict(answer) == "allow" and answer.signature is not None and answer.signed_transaction is not None
    signed = VersionedTransaction.from_bytes(answer.signed_transaction)
    assert signed.signatures[0] == Signature.from_bytes(answer.signature)
    assert Signature.from_bytes(answer.signature).verify(agent, to_bytes_versioned(signed.message))
    assert signed.verify_with_results() == [True]
    execute(svm, answer.signed_transaction)
    assert svm.get_balance(MERCHANT) == LAMPORTS_PER_SOL // 2
    # The receipt verifies under the session key that the attestation document vouches for.
    attested = verify_attestation_document(
        document, root_certificate_pem=world.pki.root_pem, at=NOW, expected_pcrs=GOOD_PCRS, expected_nonce=nonce
    )
    assert attested.user_data == SESSION_USER_DATA and attested.public_key is not None
    assert attested.public_key == session_public_key  # the answer's copy is the attested key
    receipt = verify_receipt(answer.receipt, answer.receipt_signature, attested.public_key)
    assert receipt.verdict == "allow" and receipt.wallet_id == WALLET and receipt.policy_sequence == 1
    assert receipt.message_hash == hashlib.sha256(to_bytes_versioned(signed.message)).digest()
    with pytest.raises(ReceiptError, match="receipt signature invalid"):
        verify_receipt(answer.receipt + b"\x00", answer.receipt_signature, attested.public_key)


def _provision_blob(world: EnclaveWorld) -> tuple[bytes, bytes]:
    async def run() -> tuple[bytes, bytes]:
        async with serving(world.boot()) as (client, _):
            wallet = await client.provision_wallet(WALLET, world.owner_public)
            assert wallet.sealed_blob is not None
            return wallet.agent_public_key, wallet.sealed_blob

    return asyncio.run(run())


def _load(world: EnclaveWorld, boot: Boot, agent: bytes, blob: bytes) -> Any:
    async def run() -> Any:
        async with serving(boot) as (client, _):
            await client.load_wallet(
                WALLET, owner_public_key=world.owner_public, agent_public_key=agent, sealed_blob=blob
            )

    return asyncio.run(run())


def test_unseal_refused_with_wrong_pcr0(world: EnclaveWorld) -> None:
    agent, blob = _provision_blob(world)
    boot = world.boot(pcrs={**GOOD_PCRS, 0: b"\x66" * 48})
    with pytest.raises(EnclaveRequestError, match="attestation_refused") as caught:
        _load(world, boot, agent, blob)
    assert caught.value.code == "attestation_refused"  # KMS AccessDenied: the key policy refused this image
    assert boot.enclave.wallet_count == 0 and boot.enclave.state is EnclaveState.BOOTING


class _FailingKms:
    """A KMS client (the cloud seam) whose every call fails with one botocore error."""

    def __init__(self, code: str) -> None:
        self.code = code

    def _fail(self, **_kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "Decrypt")

    generate_data_key = decrypt = generate_random = _fail


@pytest.mark.parametrize(
    ("kms_code", "answer_code"),
    [
        ("AccessDeniedException", "attestation_refused"),
        ("ThrottlingException", "kms_unavailable"),
        ("KMSInternalException", "kms_unavailable"),
    ],
)
def test_kms_failures_are_told_apart(world: EnclaveWorld, kms_code: str, answer_code: str) -> None:
    agent, blob = _provision_blob(world)
    boot = world.boot(kms=_FailingKms(kms_code))  # type: ignore[arg-type]
    with pytest.raises(EnclaveRequestError) as caught:
        _load(world, boot, agent, blob)
    assert caught.value.code == answer_code and boot.enclave.state is EnclaveState.BOOTING


def test_forged_kms_answer_carrying_another_key_refused(world: EnclaveWorld) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from enclave_app.sealing import KmsSealer, SealBinding
    from tests.enclave.forged_kms import FixedDataKey, ForgingParent, raw_seed

    agent, _ = _provision_blob(world)
    # The parent swaps in a blob holding ITS key under ITS data key, and forges KMS's answer to match.
    attacker_key, attacker_data_key = Ed25519PrivateKey.generate(), b"\x42" * 32
    binding = SealBinding(WALLET, agent, world.owner_public)
    forged = KmsSealer(FixedDataKey(attacker_data_key), key_id=world.seal_key).seal(raw_seed(attacker_key), binding)
    boot = world.boot(kms=ForgingParent(world.kms, attacker_data_key))
    with pytest.raises(EnclaveRequestError, match="unseal_failed: sealed key could not be opened"):
        _load(world, boot, agent, forged)
    assert boot.enclave.wallet_count == 0


def test_blob_for_another_agent_key_refused(world: EnclaveWorld) -> None:
    _, blob = _provision_blob(world)
    with pytest.raises(EnclaveRequestError, match="unseal_failed"):
        _load(world, world.boot(), b"\x09" * 32, blob)


def test_deny_escalate_and_owner_approval(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            agent = await ready_wallet(world, client)
            # DENY: a destination on the denylist; receipt still issued, nothing signed.
            denied = await client.sign_transaction(WALLET, transfer_tx(agent, 1000, to=BLOCKED), spent=spent())
            assert verdict(denied) == "deny" and denied.signature is None and denied.signed_transaction is None
            status = await client.ping()
            assert verify_receipt(denied.receipt, denied.receipt_signature, status.session_public_key).verdict == "deny"
            # ESCALATE: 2 SOL is over the automatic 1 SOL per transaction, under the 10 SOL ceiling.
            raw = transfer_tx(agent, 2 * LAMPORTS_PER_SOL)
            escalated = await client.sign_transaction(WALLET, raw, spent=spent())
            assert verdict(escalated) == "escalate" and escalated.signature is None
            message_hash = hashlib.sha256(to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)).digest()
            # An approval of another message, by another key, or expired: refused.
            with pytest.raises(
                EnclaveRequestError,
                match="order_invalid: approval order refused: message_hash: the approval is for another message",
            ):
                await client.sign_transaction(WALLET, raw, spent=spent(), approval=world.approval(WALLET, b"\x00" * 32))
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            stranger = world.signed(
                "approval",
                {"wallet_id": WALLET, "message_hash": message_hash.hex(), "expires_at": int(NOW.timestamp()) + 60},
                Ed25519PrivateKey.generate(),
            )
            with pytest.raises(EnclaveRequestError, match="order_invalid: approval order signature"):
                await client.sign_transaction(WALLET, raw, spent=spent(), approval=stranger)
            with pytest.raises(
                EnclaveRequestError, match="order_invalid: approval order refused: expires_at: the order has expired"
            ):
                await client.sign_transaction(
                    WALLET, raw, spent=spent(), approval=world.approval(WALLET, message_hash, lifetime=-1)
                )
            with pytest.raises(
                EnclaveRequestError, match="order_invalid: approval order refused: expires_at: lifetime over"
            ):
                await client.sign_transaction(
                    WALLET, raw, spent=spent(), approval=world.approval(WALLET, message_hash, lifetime=10**6)
                )
            # The owner's approval of exactly this message: signed.
            approved = await client.sign_transaction(
                WALLET, raw, spent=spent(), approval=world.approval(WALLET, message_hash)
            )
            assert verdict(approved) == "escalate" and approved.signature is not None
            assert Signature.from_bytes(approved.signature).verify(
                agent, to_bytes_versioned(VersionedTransaction.from_bytes(raw).message)
            )
            # An approval never lifts a DENY: 11 SOL is over the approval ceiling.
            over = transfer_tx(agent, 11 * LAMPORTS_PER_SOL)
            over_hash = hashlib.sha256(to_bytes_versioned(VersionedTransaction.from_bytes(over).message)).digest()
            refused = await client.sign_transaction(
                WALLET, over, spent=spent(), approval=world.approval(WALLET, over_hash)
            )
            assert verdict(refused) == "deny" and refused.signature is None

    asyncio.run(run())


def test_enclave_counts_fees_against_a_parent_that_reports_none(world: EnclaveWorld) -> None:
    """The fee window is capped by the enclave's own ledger too: each signed transaction's fee (5 050 lamports
    here) is recorded, so a parent reporting no fees cannot lift ``fees.periods``."""
    fee = 5_050
    fees = {"max_compute_unit_price": 1_000_000, "max_compute_unit_limit": 400_000, "max_total_fee_lamports": 500_000,
            "periods": [{"id": "fees-daily", "window_seconds": DAY, "automatic": str(2 * fee),
                         "approval": str(3 * fee)}]}  # fmt: skip

    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            provisioned = await client.provision_wallet(WALLET, world.owner_public)
            await client.install_policy(WALLET, world.policy(WALLET, fees=fees))
            agent = Pubkey.from_bytes(provisioned.agent_public_key)
            for i in range(2):
                answer = await client.sign_transaction(WALLET, transfer_tx(agent, 1_000 + i), spent=spent())
                assert verdict(answer) == "allow"
                assert {"asset": FEES, "amount": str(fee)} in answer.decision["reservations"]
            third = await client.sign_transaction(WALLET, transfer_tx(agent, 1_002), spent=spent(fees=0))
            assert verdict(third) == "escalate" and third.signature is None
            assert [reason["rule"] for reason in third.decision["reasons"]] == ["fees.periods.fees-daily"]
            over = await client.sign_transaction(WALLET, transfer_tx(agent, 1_003), spent=spent(fees=2 * fee))
            assert verdict(over) == "escalate"  # a parent's higher figure is a floor, never summed with the ledger
            denied = await client.sign_transaction(WALLET, transfer_tx(agent, 1_004), spent=spent(fees=3 * fee))
            assert verdict(denied) == "deny" and denied.signature is None

    asyncio.run(run())


def test_enclave_counters_cap_a_lying_parent(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            agent = await ready_wallet(world, client)
            amount = 9 * LAMPORTS_PER_SOL // 10  # 0.9 SOL: under the 1 SOL automatic per-transaction threshold
            for i in range(5):  # 4.5 SOL in all, each time the parent claims nothing was spent
                answer = await client.sign_transaction(WALLET, transfer_tx(agent, amount + i), spent=spent(0))
                assert verdict(answer) == "allow"
            # Daily automatic threshold is 5 SOL: the enclave's own ledger (4.5 SOL) makes this one escalate.
            answer = await client.sign_transaction(WALLET, transfer_tx(agent, amount + 9), spent=spent(0))
            assert verdict(answer) == "escalate" and answer.signature is None
            reasons = {reason["rule"] for reason in answer.decision["reasons"]}
            assert reasons == {"limits.sol.sol-daily"}
            # A parent that reports MORE than the enclave knows is believed (it is a floor).
            higher = await client.sign_transaction(WALLET, transfer_tx(agent, 10), spent=spent(20 * LAMPORTS_PER_SOL))
            assert verdict(higher) == "deny"
            # A window the parent omits stays missing: DENY, never a guess.
            omitted = await client.sign_transaction(WALLET, transfer_tx(agent, 11), spent=())
            assert verdict(omitted) == "deny"
            # A lie about the request count cannot lift the rate limit either (60 per minute).
            lied = await client.sign_transaction(WALLET, transfer_tx(agent, 12), spent=spent(), requests_in_window=60)
            assert "rate" in {reason["rule"] for reason in lied.decision["reasons"]}

    asyncio.run(run())


def test_freeze_verdict_freezes_and_only_the_owner_unfreezes(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            agent = await ready_wallet(world, client)
            # A denial completing a burst (parent reports 4 earlier denials; 5 freeze the wallet).
            frozen = await client.sign_transaction(
                WALLET, transfer_tx(agent, 1000, to=BLOCKED), spent=spent(), denials_in_window=4
            )
            assert verdict(frozen) == "freeze"
            assert (await client.ping()).state is EnclaveState.FROZEN
            with pytest.raises(EnclaveRequestError, match="wallet_frozen"):
                await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            forged = world.signed(
                "unfreeze",
                {"wallet_id": WALLET, "sequence": 1, "expires_at": int(NOW.timestamp()) + 60},
                Ed25519PrivateKey.generate(),
            )
            with pytest.raises(EnclaveRequestError, match="order_invalid: unfreeze order signature"):
                await client.unfreeze(WALLET, forged)
            # A freeze order signed for "freeze" cannot be used as an unfreeze order.
            with pytest.raises(EnclaveRequestError, match="order_invalid"):
                await client.unfreeze(WALLET, world.order("freeze", WALLET, 1))
            with pytest.raises(
                EnclaveRequestError,
                match="order_invalid: unfreeze order refused: wallet_id: the order is for another wallet",
            ):
                await client.unfreeze(WALLET, world.order("unfreeze", "other", 1))
            unfreeze = world.order("unfreeze", WALLET, 1)
            answer = await client.unfreeze(WALLET, unfreeze)
            assert answer.frozen is False and answer.order_sequence == 1
            assert (await client.ping()).state is EnclaveState.READY
            with pytest.raises(EnclaveRequestError, match="order_stale"):
                await client.unfreeze(WALLET, unfreeze)  # replay
            assert (await client.freeze(WALLET, world.order("freeze", WALLET, 2))).frozen is True
            with pytest.raises(EnclaveRequestError, match="wallet_frozen"):
                await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())
            with pytest.raises(EnclaveRequestError, match="wallet_frozen"):
                await client.sign_message(WALLET, b"anything")

    asyncio.run(run())


def test_policy_installation_rules(world: EnclaveWorld) -> None:
    async def run() -> None:
        async with serving(world.boot()) as (client, _):
            with pytest.raises(EnclaveRequestError, match="unknown_wallet"):
                await client.install_policy(WALLET, world.policy(WALLET))
            agent = Pubkey.from_bytes((await client.provision_wallet(WALLET, world.owner_public)).agent_public_key)
            with pytest.raises(EnclaveRequestError, match="wallet_exists"):
                await client.provision_wallet(WALLET, world.owner_public)
            with pytest.raises(EnclaveRequestError, match="no_policy"):
                await client.sign_transaction(WALLET, transfer_tx(agent, 1000), spent=spent())
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            world_owner = world.owner
            world.owner = Ed25519PrivateKey.generate()
            not_owner = world.policy(WALLET)
            world.owner = world_owner
            with pytest.raises(EnclaveRequestError, match="policy_invalid"):
                await client.install_policy(WALLET, not_owner)
            with pytest.raises(EnclaveRequestError, match="policy_invalid"):
                await client.install_policy(WALLET, world.policy("another-wallet"))
            with pytest.raises(EnclaveRequestError, match="policy_invalid"):
                await client.install_policy(WALLET, world.signed("approval", {"wallet_id": WALLET}))
            assert (await client.install_policy(WALLET, world.policy(WALLET, sequence=5))).sequence == 5
            with pytest.raises(EnclaveRequestError, match="policy_stale"):
                await client.install_policy(WALLET, world.policy(WALLET, sequence=5))
            with pytest.raises(EnclaveRequestError, match="policy_stale"):
                await client.install_policy(WALLET, world.policy(WALLET, sequence=4))
            assert (await client.install_policy(WALLET, world.policy(WALLET, sequence=6))).sequence == 6

    asyncio.run(run())
