"""Agent-key rotation in the store (DESIGN.md section 3): a wallet's one candidate key, the switch, retired keys.

1. The enclave makes a candidate agent key for a wallet and hands back its public key and sealed blob; the proxy
   keeps it (`SetAgentKeyCandidate`) only if the wallet's agent key is the one the candidate will replace and the
   wallet has no candidate yet. A candidate is never replaced: its key may already be a member of the vault on
   chain, and a second candidate would leave that member without its blob.
2. An owner-signed switch (`SwitchAgentKey`) makes the candidate the wallet's agent key (key and blob), only if
   the wallet's agent key and its candidate's key are still the ones the owner signed for (compare-and-swap); the
   candidate is removed and the old key and blob are kept as a `RetiredAgentKey` (nothing is deleted, so a switch
   found premature later loses nothing).

Both are changes of `Store.apply_audited`: written with their audit record or not at all. An agent-key change is
the only change of its wallet's record in one call (`validation_changes.check_changes`): DynamoDB writes an item at most
once per transaction. The store keeps blobs opaque and never puts them in a repr or a message.

The refusals below are the same on both adapters (`NotFound` for an unknown wallet comes first).
"""

from __future__ import annotations

from parent_proxy.errors import Conflict


def not_the_agent_key(wallet_id: str) -> Conflict:
    """The wallet's agent key is not the one the change names."""
    return Conflict(f"wallet {wallet_id}: its agent key is not the one given")


def candidate_exists(wallet_id: str) -> Conflict:
    return Conflict(f"wallet {wallet_id} already has an agent key candidate")


def no_such_candidate(wallet_id: str) -> Conflict:
    """The wallet has no candidate, or one with another key."""
    return Conflict(f"wallet {wallet_id}: no agent key candidate with the key given")
