"""Sizes and rent of the accounts that Squads v4 instructions create, counted as the rent payer's outflows.

``vault_transaction_create``, ``proposal_create`` and ``config_transaction_create`` fund new accounts from their
``rent_payer``; the decoders (`policies.decoders.squads`, `policies.decoders.squads_instructions`) turn each into
``Outflow(SOL, rent, authority = source = rent_payer, destination = the new account, kind "squads_rent")``, which
counts against the SOL limits (the evaluator applies no destination rule to it: the account belongs to the policy's
multisig, and its rent goes to the multisig's rent collector when it is closed). Before, this rent was not counted,
and an agent could lock up about 0.009 SOL per vault transaction, as often as the rate rule allowed.

Sizes are the program's (``VaultTransaction::size``, ``Proposal::size``, ``ConfigTransaction::size``). The vault
and config transactions' sizes are exact; the proposal's depends on the multisig's member count, which is on chain:
`PROPOSAL_MEMBERS_BOUND` members are assumed (the product's wallets have two).
"""

from __future__ import annotations

from typing import Final

from policies.decoders.squads_message import VaultMessage
from policies.rent import rent_exempt_minimum

PROPOSAL_MEMBERS_BOUND: Final = 10
"""Members assumed when sizing a proposal account (its vote lists are sized by the multisig's member count, which
the transaction does not show): an upper bound for multisigs of up to ten members."""


def vault_transaction_rent(ephemeral_signers: int, message: VaultMessage) -> int:
    """Rent of the vault transaction account (the program's ``VaultTransaction::size``): discriminator, multisig,
    creator, index, bump, vault index, vault bump, the ephemeral signer bumps and the stored message."""
    size = 8 + 32 + 32 + 8 + 1 + 1 + 1 + (4 + ephemeral_signers) + message.stored_size()
    return rent_exempt_minimum(size)


def proposal_rent(members: int = PROPOSAL_MEMBERS_BOUND) -> int:
    """Rent of a proposal account (``Proposal::size``): discriminator, multisig, transaction index, status (enum
    tag and timestamp), bump, and the approved / rejected / cancelled key lists, each sized for every member."""
    return rent_exempt_minimum(8 + 32 + 8 + 1 + 8 + 1 + 3 * (4 + 32 * members))


def config_transaction_rent(actions_size: int) -> int:
    """Rent of a config transaction account (the program's ``ConfigTransaction::size``): discriminator, multisig,
    creator, index, bump and the actions vector, ``actions_size`` being their Borsh length (as in the instruction)."""
    return rent_exempt_minimum(8 + 32 + 32 + 8 + 1 + 4 + actions_size)
