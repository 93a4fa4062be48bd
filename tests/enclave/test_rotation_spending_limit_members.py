"""The enclave co-signs a rotation's spending-limit replacement only when the new limit's members are exactly the
new agent key (DESIGN.md section 10). Squads v4 ``spending_limit_use`` checks only the limit's own member list, so
a replacement naming another key too would let that key spend from the vault alone; the owner's order naming the
message (a lying RPC fed the owner's builder, or the owner signed what someone handed them) does not make it
acceptable. Real server, client, sealing and checks; the transactions are built with the independent IDL-driven
Squads encoder."""

from __future__ import annotations

from solders.instruction import AccountMeta
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from enclave_app.client import EnclaveClient
from policies import programs
from policies.decoders.squads_vault import squads_proposal_address, squads_transaction_address
from tests.enclave.rotation_wallet import MULTISIG, WALLET, Rotation, held_agent, new_key, refused, run
from tests.support.enclave_world import EnclaveWorld
from tests.support.squads_encoder import SquadsEncoder
from tests.support.squads_rotation import (
    add_member,
    config_create,
    proposal_approve,
    proposal_create,
    remove_member,
    spending_limit_address,
    unsigned,
)

ENC = SquadsEncoder()
ATTACKER = Pubkey.new_unique()
U64_MAX = 2**64 - 1


def with_limit(r: Rotation, new: Pubkey, members: list[Pubkey]) -> bytes:
    """The rotation replacing one spending limit of the agent by one whose members are ``members`` (amount u64::MAX,
    OneTime, any destination: what the review's lying RPC answered), executed with both limits' accounts."""
    old = spending_limit_address(MULTISIG, Pubkey.new_unique())[0]
    create_key = Pubkey.new_unique()
    added = {"create_key": create_key, "vault_index": 0, "mint": Pubkey.default(), "amount": U64_MAX,
             "period": "one_time", "members": sorted(members, key=bytes), "destinations": []}  # fmt: skip
    actions = [add_member(new), remove_member(r.agent), ("remove_spending_limit", {"spending_limit": old}),
               ("add_spending_limit", added)]  # fmt: skip
    execute = ENC.instruction(
        "config_transaction_execute",
        {"multisig": MULTISIG, "member": r.owner, "proposal": squads_proposal_address(MULTISIG, 1),
         "transaction": squads_transaction_address(MULTISIG, 1), "rent_payer": r.owner,
         "system_program": programs.SYSTEM_PROGRAM},
        remaining=[AccountMeta(old, False, True), AccountMeta(spending_limit_address(MULTISIG, create_key)[0], False,
                                                          True)],
    )  # fmt: skip
    ixs = [config_create(MULTISIG, 1, r.owner, actions), proposal_create(MULTISIG, 1, r.owner),
           proposal_approve(MULTISIG, 1, r.owner), proposal_approve(MULTISIG, 1, r.agent), execute]  # fmt: skip
    return unsigned(ixs, r.owner)


def test_the_enclave_refuses_a_replacement_limit_naming_another_key_even_ordered(world: EnclaveWorld) -> None:
    boot = world.boot()

    async def body(client: EnclaveClient) -> None:
        r = await Rotation(world, client).setup()
        candidate = await r.candidate()
        new, _ = new_key(candidate)
        for members in ([new, ATTACKER], [new, r.owner], [ATTACKER]):
            request = r.cosign_request(candidate, with_limit(r, new, members))
            await refused("rotation_invalid", client.sign_agent_key_rotation(WALLET, **request))
            assert held_agent(boot.enclave) == r.agent
        # The replacement naming the new key alone is co-signed (its terms are the owner's: the order names them).
        signed = await client.sign_agent_key_rotation(WALLET, **r.cosign_request(candidate, with_limit(r, new, [new])))
        tx = VersionedTransaction.from_bytes(signed.signed_transaction)
        assert Signature.from_bytes(signed.signature).verify(r.agent, to_bytes_versioned(tx.message))

    run(boot, body)
