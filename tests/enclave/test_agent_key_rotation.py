"""Agent-key rotation in the enclave, end to end in process: real server, client, sealing with the attesting test
KMS, receipts; the rotation transaction is built by the independent IDL-driven Squads encoder. Every refusal signs
nothing and leaves the wallet's key as it was."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from solders.hash import Hash
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import AdvanceNonceAccountParams, TransferParams, advance_nonce_account, transfer
from solders.transaction import VersionedTransaction

from enclave_app import rotation
from enclave_app.client import EnclaveClient
from enclave_app.errors import ReceiptError
from enclave_app.ledger import Ledger
from enclave_app.protocol import AgentKeyResponse, SpentEntry
from enclave_app.receipts import AgentKeyReceipt, verify_agent_key_receipt, verify_provision_receipt, verify_receipt
from policies.model import FEES
from policies.signing import load_signed_policy
from tests.enclave.rotation_wallet import MULTISIG, WALLET, Rotation, held_agent, new_key, refused, run
from tests.support.enclave_world import Boot, EnclaveWorld
from tests.support.policies import EXAMPLE_MINT, MERCHANT
from tests.support.squads_rotation import rotation_instructions, rotation_transaction, unsigned

SOL = 1_000_000_000
NONCE = Pubkey.new_unique()
NOTHING_SPENT = (SpentEntry("SOL", 86400, 0), SpentEntry(str(EXAMPLE_MINT), 86400, 0), SpentEntry(FEES, 86400, 0))


def pay(source: Pubkey, lamports: int) -> bytes:
    return unsigned([transfer(TransferParams(from_pubkey=source, to_pubkey=MERCHANT, lamports=lamports))], source)


def session_key(boot: Boot) -> bytes:
    return boot.enclave.session.public_key


def test_rotation_end_to_end_keeps_policy_freeze_and_ledger(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        old = r.agent
        for _ in range(5):  # the daily automatic SOL limit (5 SOL), signed by the old key
            signed_pay = await client.sign_transaction(WALLET, pay(old, SOL), spent=NOTHING_SPENT)
            assert signed_pay.signature is not None, signed_pay.decision
        # 1. A candidate, sealed, with a receipt naming both keys and the owner.
        candidate = await r.candidate()
        new = Pubkey.from_bytes(candidate.new_agent_public_key)
        assert candidate.agent_public_key == bytes(old) and new != old and candidate.sealed_blob is not None
        receipt = verify_agent_key_receipt(candidate.receipt, candidate.receipt_signature, session_key(boot))
        assert (receipt.purpose, receipt.wallet_id, receipt.message_hash) == ("agent_key_candidate", WALLET, None)
        assert (receipt.agent_public_key, receipt.new_agent_public_key) == (bytes(old), bytes(new))
        assert receipt.owner_public_key == world.owner_public
        assert held_agent(boot.enclave) == old  # preparing changes nothing
        # 2. The old agent co-signs the membership change the owner ordered.
        raw = r.transaction(new)
        signed = await client.sign_agent_key_rotation(
            WALLET, transaction=raw, order=r.rotation_order(raw, new), candidate_sealed_blob=candidate.sealed_blob
        )
        tx = VersionedTransaction.from_bytes(signed.signed_transaction)
        message = to_bytes_versioned(tx.message)
        assert tx.message.account_keys[:2] == [r.owner, old]
        assert tx.signatures[1] == Signature.from_bytes(signed.signature)
        assert Signature.from_bytes(signed.signature).verify(old, message)
        assert tx.signatures[0] == Signature.default()  # the owner's slot is left for the owner
        receipt = verify_agent_key_receipt(signed.receipt, signed.receipt_signature, session_key(boot))
        assert receipt.purpose == "agent_key_rotation" and receipt.message_hash == hashlib.sha256(message).digest()
        assert held_agent(boot.enclave) == old  # still the old key until the owner's switch
        # The owner freezes before switching: the freeze must survive the switch.
        await client.freeze(WALLET, world.order("freeze", WALLET, 5))
        # 3. The switch.
        switched = await client.switch_agent_key(
            WALLET, order=r.switch_order(new), candidate_sealed_blob=candidate.sealed_blob
        )
        assert (switched.agent_public_key, switched.new_agent_public_key) == (bytes(old), bytes(new))
        assert switched.sealed_blob is None
        receipt = verify_agent_key_receipt(switched.receipt, switched.receipt_signature, session_key(boot))
        assert receipt.purpose == "agent_key_switch"
        wallet = boot.enclave.wallet(WALLET)
        assert wallet.agent == new and wallet.agent_keys == frozenset({new})
        assert wallet.frozen and wallet.order_sequence == 5 and wallet.policy is not None
        # A retry after a lost answer gets the same answer; nothing is opened again.
        again = await client.switch_agent_key(WALLET, order=r.switch_order(new, agent=old), candidate_sealed_blob=b"x")
        assert again.new_agent_public_key == bytes(new)
        # Unfrozen, the wallet signs with the new key under the same policy, and the ledger still counts what the
        # old key signed: the parent reports nothing spent, yet the daily automatic limit is reached.
        await client.unfreeze(WALLET, world.order("unfreeze", WALLET, 6))
        answer = await client.sign_transaction(WALLET, pay(new, 1000), spent=NOTHING_SPENT)
        assert answer.decision["verdict"] == "escalate" and answer.signature is None
        # Under the limit (a fresh enclave ledger, as after a restart) the new key signs.
        boot.enclave.wallet(WALLET).ledger = Ledger()
        answer = await client.sign_transaction(WALLET, pay(new, 1000), spent=NOTHING_SPENT)
        assert answer.signature is not None, answer.decision
        message = to_bytes_versioned(VersionedTransaction.from_bytes(pay(new, 1000)).message)
        assert Signature.from_bytes(answer.signature).verify(new, message)
        # The old key's transactions are no longer the wallet's.
        assert (await client.sign_transaction(WALLET, pay(old, 1000), spent=NOTHING_SPENT)).signature is None

    run(boot, body)


def test_after_a_restart_the_new_key_loads_from_the_candidate_blob(world: EnclaveWorld) -> None:
    async def first(client: EnclaveClient) -> tuple[bytes, bytes]:
        r = await Rotation(world, client).setup()
        new, blob = new_key(await r.candidate())
        await client.switch_agent_key(WALLET, order=r.switch_order(new), candidate_sealed_blob=blob)
        return bytes(new), blob

    new, blob = run(world.boot(), first)
    boot = world.boot()

    async def second(client: EnclaveClient) -> None:
        loaded = await client.load_wallet(
            WALLET, owner_public_key=world.owner_public, agent_public_key=new, sealed_blob=blob
        )
        assert loaded.agent_public_key == new

    run(boot, second)
    assert bytes(held_agent(boot.enclave)) == new


def test_frozen_wallet_can_rotate(world: EnclaveWorld) -> None:
    """Rotation is the owner's way out of a suspected compromise: a frozen wallet prepares, co-signs and switches."""
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        await client.freeze(WALLET, world.order("freeze", WALLET, 1))
        candidate = await r.candidate()
        new, blob = new_key(candidate)
        await client.sign_agent_key_rotation(WALLET, **r.cosign_request(candidate))
        await client.switch_agent_key(WALLET, order=r.switch_order(new), candidate_sealed_blob=blob)

    run(boot, body)
    assert boot.enclave.wallet(WALLET).frozen


# -- refusals of the co-signature ---------------------------------------------------------------------------


def _refuse_cosign(world: EnclaveWorld, code: str, build: Callable[[Rotation, AgentKeyResponse], dict[str, Any]],
                   **rules: Any) -> None:  # fmt: skip
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup(**rules)
        candidate = await r.candidate()
        await refused(code, client.sign_agent_key_rotation(WALLET, **build(r, candidate)))
        assert held_agent(boot.enclave) == r.agent

    run(boot, body)


def _good(r: Rotation, candidate: AgentKeyResponse, **changes: Any) -> dict[str, Any]:
    return {**r.cosign_request(candidate), **changes}


def test_cosign_refuses_an_order_signed_by_another_key(world: EnclaveWorld) -> None:
    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        new = Pubkey.from_bytes(c.new_agent_public_key)
        raw = r.transaction(new)
        return _good(r, c, order=r.rotation_order(raw, new, key=Ed25519PrivateKey.generate()))

    _refuse_cosign(world, "order_invalid", build)


def test_cosign_refuses_an_order_for_another_message(world: EnclaveWorld) -> None:
    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        new = Pubkey.from_bytes(c.new_agent_public_key)
        other = r.transaction(new, index=2)
        return _good(r, c, order=r.rotation_order(other, new))

    _refuse_cosign(world, "order_invalid", build)


def test_cosign_refuses_an_order_replacing_another_key(world: EnclaveWorld) -> None:
    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        new = Pubkey.from_bytes(c.new_agent_public_key)
        raw = r.transaction(new)
        return _good(r, c, order=r.rotation_order(raw, new, agent=Pubkey.new_unique()))

    _refuse_cosign(world, "order_invalid", build)


def test_cosign_refuses_an_expired_order(world: EnclaveWorld) -> None:
    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        good = _good(r, c)
        r.world.clock.advance(601)
        return good

    _refuse_cosign(world, "order_invalid", build)


def test_cosign_refuses_a_transaction_that_also_pays_someone(world: EnclaveWorld) -> None:
    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        new = Pubkey.from_bytes(c.new_agent_public_key)
        ixs = rotation_instructions(MULTISIG, owner=r.owner, agent=r.agent, new_agent=new)
        ixs.append(transfer(TransferParams(from_pubkey=r.agent, to_pubkey=MERCHANT, lamports=10**9)))
        return r.cosign_request(c, unsigned(ixs, r.owner))  # the owner even ordered it

    _refuse_cosign(world, "rotation_invalid", build)


def durable(r: Rotation, new: Pubkey, authority: Pubkey) -> bytes:
    """The rotation as a durable-nonce transaction: the nonce's advance first, its value as the blockhash."""
    advance = advance_nonce_account(AdvanceNonceAccountParams(nonce_pubkey=NONCE, authorized_pubkey=authority))
    return unsigned([advance, *rotation_instructions(MULTISIG, owner=r.owner, agent=r.agent, new_agent=new)],
                    r.owner, Hash.new_unique())  # fmt: skip


def test_cosign_signs_a_durable_nonce_rotation(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        candidate = await r.candidate()
        raw = durable(r, new_key(candidate)[0], r.owner)
        signed = await client.sign_agent_key_rotation(WALLET, **r.cosign_request(candidate, raw))
        tx = VersionedTransaction.from_bytes(signed.signed_transaction)
        assert bytes(tx.message) == bytes(VersionedTransaction.from_bytes(raw).message)
        assert Signature.from_bytes(signed.signature).verify(r.agent, to_bytes_versioned(tx.message))

    run(boot, body)


def test_cosign_refuses_the_agent_as_nonce_authority(world: EnclaveWorld) -> None:
    """Even ordered by the owner: the agent's signature would authorize the advance of a nonce it is authority of."""

    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        return r.cosign_request(c, durable(r, new_key(c)[0], r.agent))

    _refuse_cosign(world, "rotation_invalid", build)


def test_cosign_refuses_a_key_the_enclave_did_not_make(world: EnclaveWorld) -> None:
    """The owner's order names a key of the parent's choosing, with a blob that opens to something else."""

    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        stranger = Pubkey.new_unique()
        raw = r.transaction(stranger)
        return _good(r, c, transaction=raw, order=r.rotation_order(raw, stranger))

    _refuse_cosign(world, "unseal_failed", build)


def test_cosign_refuses_a_multisig_other_than_the_policys(world: EnclaveWorld) -> None:
    def build(r: Rotation, c: AgentKeyResponse) -> dict[str, Any]:
        raw = rotation_transaction(Pubkey.new_unique(), owner=r.owner, agent=r.agent, new_agent=new_key(c)[0])
        return r.cosign_request(c, raw)

    _refuse_cosign(world, "rotation_invalid", build)


def test_cosign_refuses_bytes_that_are_not_a_transaction(world: EnclaveWorld) -> None:
    _refuse_cosign(world, "rotation_invalid", lambda r, c: _good(r, c, transaction=b"\x01" + bytes(100)))


def test_no_rotation_step_without_a_declared_multisig(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        candidate = await r.candidate()
        new, blob = new_key(candidate)
        await client.install_policy(WALLET, world.policy(WALLET, sequence=2, squads_multisig=None))
        await refused("rotation_invalid", client.prepare_agent_key(WALLET))
        switch = client.switch_agent_key(WALLET, order=r.switch_order(new), candidate_sealed_blob=blob)
        await refused("rotation_invalid", switch)
        await refused("rotation_invalid", client.sign_agent_key_rotation(WALLET, **r.cosign_request(candidate)))
        assert held_agent(boot.enclave) == r.agent

    run(boot, body)


def test_cosign_refuses_without_a_policy(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        provisioned = await client.provision_wallet(WALLET, world.owner_public)
        r = Rotation(world, client)
        r.agent = Pubkey.from_bytes(provisioned.agent_public_key)
        await refused("no_policy", client.prepare_agent_key(WALLET))
        fake = AgentKeyResponse(WALLET, bytes(r.agent), bytes(Pubkey.new_unique()), b"blob", b"r", bytes(64))
        await refused("no_policy", client.sign_agent_key_rotation(WALLET, **r.cosign_request(fake)))

    run(boot, body)


# -- refusals of the switch ---------------------------------------------------------------------------------


def test_switch_refuses_a_blob_of_another_candidate_and_keeps_the_old_key(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        first, second = await r.candidate(), await r.candidate()
        assert second.sealed_blob is not None
        order = r.switch_order(Pubkey.from_bytes(first.new_agent_public_key))
        await refused(
            "unseal_failed", client.switch_agent_key(WALLET, order=order, candidate_sealed_blob=second.sealed_blob)
        )
        # Nor the wallet's own current blob under the candidate's name.
        await refused("unseal_failed", client.switch_agent_key(WALLET, order=order, candidate_sealed_blob=r.blob))
        assert held_agent(boot.enclave) == r.agent

    run(boot, body)


def test_switch_refuses_bad_orders(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        new, blob = new_key(await r.candidate())
        for order in (
            r.switch_order(new, key=Ed25519PrivateKey.generate()),  # not the owner
            r.switch_order(new, agent=Pubkey.new_unique()),  # replaces a key the wallet does not have
            r.rotation_order(r.transaction(new), new),  # a rotation order is not a switch order
            world.approval(WALLET, bytes(32)),  # nor is an approval
        ):
            await refused("order_invalid", client.switch_agent_key(WALLET, order=order, candidate_sealed_blob=blob))
        await refused(
            "unknown_wallet", client.switch_agent_key("other", order=r.switch_order(new), candidate_sealed_blob=blob)
        )
        assert held_agent(boot.enclave) == r.agent

    run(boot, body)


def test_candidate_receipts_do_not_verify_as_other_receipts(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> AgentKeyResponse:
        return await (await Rotation(world, client).setup()).candidate()

    candidate = run(boot, body)
    for verify, what in ((verify_receipt, "receipt"), (verify_provision_receipt, "provisioning receipt")):
        with pytest.raises(ReceiptError, match=rf"^{what} signature invalid$"):
            verify(candidate.receipt, candidate.receipt_signature, session_key(boot))
    with pytest.raises(ReceiptError, match=r"^agent-key receipt signature invalid$"):
        verify_agent_key_receipt(candidate.receipt + b"\0", candidate.receipt_signature, session_key(boot))


def test_failed_enclave_refuses_rotation(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        await Rotation(world, client).setup()
        boot.enclave.fail("test")
        await refused("failed", client.prepare_agent_key(WALLET))

    run(boot, body)


def test_no_key_material_in_answers_or_logs(world: EnclaveWorld, caplog: pytest.LogCaptureFixture) -> None:
    boot = world.boot()
    caplog.set_level("DEBUG")

    async def body(client: EnclaveClient) -> AgentKeyResponse:
        return await (await Rotation(world, client).setup()).candidate()

    candidate = run(boot, body)
    key = boot.enclave.wallet(WALLET).agent_key
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    for text in (caplog.text, repr(candidate), repr(boot.enclave.wallet(WALLET))):
        assert seed.hex() not in text and str(list(seed)) not in text and repr(seed) not in text


def test_agent_key_receipt_encoding_is_cbor2s() -> None:
    """The hand encoding is the deterministic CBOR the module documents (what cbor2 emits for the same map)."""
    for message_hash in (None, bytes(range(32))):
        purpose = "agent_key_candidate" if message_hash is None else "agent_key_rotation"
        receipt = AgentKeyReceipt(purpose, WALLET, bytes(32), bytes([1]) * 32, bytes([2]) * 32, message_hash, 2**40)
        assert receipt.encode() == cbor2.dumps({
            "v": 1, "purpose": purpose, "wallet_id": WALLET, "agent_public_key": bytes(32),
            "new_agent_public_key": bytes([1]) * 32, "owner_public_key": bytes([2]) * 32,
            "message_hash": message_hash, "time_ms": 2**40,
        })  # fmt: skip


def test_cosign_refuses_when_a_policy_naming_another_multisig_lands_while_the_candidate_opens(
    world: EnclaveWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multisig is read before the candidate's blob is opened (a KMS call, off the loop): an owner-signed policy
    installed meanwhile that names another multisig makes the request refuse (wrong_state), not co-sign a
    membership change of the multisig the wallet no longer declares."""
    boot = world.boot()
    real = rotation._open_candidate

    async def policy_lands_meanwhile(*args: Any) -> Any:
        wallet = boot.enclave.wallet(WALLET)
        envelope = world.policy(WALLET, sequence=2, squads_multisig=str(Pubkey.new_unique()))
        boot.enclave.install_policy(wallet, load_signed_policy(envelope, owner=wallet.owner, wallet_id=WALLET))
        return await real(*args)

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        candidate = await r.candidate()
        monkeypatch.setattr(rotation, "_open_candidate", policy_lands_meanwhile)
        await refused("wrong_state", client.sign_agent_key_rotation(WALLET, **_good(r, candidate)))
        assert held_agent(boot.enclave) == r.agent

    run(boot, body)
