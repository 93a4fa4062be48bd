"""Agent-key rotation for `DynamoStore` (`parent_proxy.store.agent_keys`): items in the wallet's partition.

    pk            sk                        item
    W#<wallet>    AGENT_KEY_CANDIDATE       the one candidate: agent_pubkey, candidate_pubkey, sealed_key, created_at
    W#<wallet>    AKR#<seq, 20 digits>      a retired key: agent_pubkey, sealed_key, retired_at; ``seq`` counts the
                                            wallet's switches (1, 2, ...), so a query lists them oldest first
    W#<wallet>    WALLET                    + ``agent_key_switches``: how many switches (absent: none)

Both changes are parts of `DynamoAudited.apply_audited`'s one ``TransactWriteItems``, with one refusal per action:

- `SetAgentKeyCandidate`: a ``ConditionCheck`` of the wallet item (its agent key is the candidate's
  ``agent_pubkey``), and the ``Put`` of the candidate only if the wallet has none.
- `SwitchAgentKey`: the wallet item and the candidate are read first (the blob to install is the candidate's), and
  refused as on SQLite when they do not match the switch. The transaction then writes what was read only if it is
  still so: the wallet's ``Update`` (agent key, blob and switch count still the ones read), the candidate's
  ``Delete`` (still the key and blob read) and the retired key's ``Put`` (a new ``seq``). Only a concurrent write
  between the read and the transaction fails those conditions: `Conflict`, nothing written. The wallet's condition
  alone catches every such write the store makes (only a switch removes a candidate, and it moves the count; the
  count also rules out a key switched away and back); the candidate's and the retired key's are a second guard.

A transaction that botocore resends after a lost answer is not refused by its own first send: botocore fills in
``ClientRequestToken`` once per call (an ``idempotencyToken`` of the API) and resends it, and DynamoDB answers a
token it has applied (within ten minutes) with success, writing nothing again (moto keeps no tokens; the contract
test ``test_dynamodb_a_resent_switch_is_this_switch`` plays DynamoDB's part at the botocore seam).
"""

from __future__ import annotations

from typing import Any

from parent_proxy.errors import Conflict
from parent_proxy.store import agent_keys
from parent_proxy.store import validation as v
from parent_proxy.store.dynamodb_attributes import b, get_b, get_f, get_i, n, s
from parent_proxy.store.dynamodb_audited import DynamoAudited, Part
from parent_proxy.store.dynamodb_base import Item
from parent_proxy.store.model import AgentKeyCandidate, RetiredAgentKey
from parent_proxy.store.state_changes import SetAgentKeyCandidate, StateChange, SwitchAgentKey

CANDIDATE_SK = "AGENT_KEY_CANDIDATE"
RETIRED_PREFIX = "AKR#"
SWITCHES = "agent_key_switches"


def _retired_sk(seq: int) -> str:
    return f"{RETIRED_PREFIX}{seq:020d}"


def _changed_meanwhile(wallet_id: str) -> Conflict:
    return Conflict(f"wallet {wallet_id}: its agent key, sealed key or candidate changed while the switch was written")


class DynamoAgentKeys(DynamoAudited):
    """The agent-key reads, and the transaction parts of the agent-key changes."""

    # -- reads ----------------------------------------------------------------------------------------------
    def get_agent_key_candidate(self, wallet_id: str) -> AgentKeyCandidate | None:
        v.check_id("wallet_id", wallet_id)
        self._require_wallet(wallet_id)
        item = self._get(f"W#{wallet_id}", CANDIDATE_SK)
        return None if item is None else self._candidate(wallet_id, item)

    def retired_agent_keys(self, wallet_id: str) -> list[RetiredAgentKey]:
        v.check_id("wallet_id", wallet_id)
        self._require_wallet(wallet_id)
        return [
            RetiredAgentKey(wallet_id, get_b(i, "agent_pubkey"), get_b(i, "sealed_key"), get_f(i, "retired_at"))
            for i in self._query(f"W#{wallet_id}", prefix=RETIRED_PREFIX)
        ]

    @staticmethod
    def _candidate(wallet_id: str, i: Item) -> AgentKeyCandidate:
        return AgentKeyCandidate(
            wallet_id,
            get_b(i, "agent_pubkey"),
            get_b(i, "candidate_pubkey"),
            get_b(i, "sealed_key"),
            get_f(i, "created_at"),
        )

    # -- the changes ----------------------------------------------------------------------------------------
    def _change_parts(self, change: StateChange) -> list[Part]:
        match change:
            case SetAgentKeyCandidate(candidate=candidate):
                return self._candidate_parts(candidate)
            case SwitchAgentKey():
                return self._switch_parts(change)
        return super()._change_parts(change)

    def _key(self, wallet_id: str, sk: str) -> dict[str, Any]:
        return {"pk": s(f"W#{wallet_id}"), "sk": s(sk)}

    def _candidate_parts(self, c: AgentKeyCandidate) -> list[Part]:
        self._require_wallet(c.wallet_id)  # wallets are never deleted, so a prior read suffices for `NotFound`
        check = {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": self._key(c.wallet_id, "WALLET"),
                "ConditionExpression": "agent_pubkey = :a",
                "ExpressionAttributeValues": {":a": b(c.agent_pubkey)},
            }
        }
        item = {
            **self._key(c.wallet_id, CANDIDATE_SK),
            "agent_pubkey": b(c.agent_pubkey),
            "candidate_pubkey": b(c.candidate_pubkey),
            "sealed_key": b(c.sealed_key),
            "created_at": n(c.created_at),
        }
        put = {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}
        return [
            ([check], lambda: agent_keys.not_the_agent_key(c.wallet_id)),
            ([put], lambda: agent_keys.candidate_exists(c.wallet_id)),
        ]

    def _switch_parts(self, sw: SwitchAgentKey) -> list[Part]:
        # 1. Read the wallet and its candidate; refuse as SQLite does (agent key first, then the candidate).
        wallet = self._require_wallet(sw.wallet_id)
        if get_b(wallet, "agent_pubkey") != sw.agent_pubkey:
            raise agent_keys.not_the_agent_key(sw.wallet_id)
        candidate = self._get(f"W#{sw.wallet_id}", CANDIDATE_SK)
        if candidate is None or get_b(candidate, "candidate_pubkey") != sw.candidate_pubkey:
            raise agent_keys.no_such_candidate(sw.wallet_id)
        old_blob, new_blob = get_b(wallet, "sealed_key"), get_b(candidate, "sealed_key")
        switches = get_i(wallet, SWITCHES) if SWITCHES in wallet else 0
        # 2. Write what was read, only if it still is: the wallet's key, blob and switch count (a switch in between
        #    moves the count, a re-seal the blob), and the candidate's key and blob.
        values = {
            ":old": b(sw.agent_pubkey),
            ":old_blob": b(old_blob),
            ":new": b(sw.candidate_pubkey),
            ":new_blob": b(new_blob),
            ":next": n(switches + 1),
        }
        counted = "attribute_not_exists(#n)"
        if switches:
            counted, values[":n"] = "#n = :n", n(switches)
        update = {
            "Update": {
                "TableName": self._table,
                "Key": self._key(sw.wallet_id, "WALLET"),
                "UpdateExpression": "SET agent_pubkey = :new, sealed_key = :new_blob, #n = :next",
                "ConditionExpression": f"agent_pubkey = :old AND sealed_key = :old_blob AND {counted}",
                "ExpressionAttributeNames": {"#n": SWITCHES},
                "ExpressionAttributeValues": values,
            }
        }
        delete = {
            "Delete": {
                "TableName": self._table,
                "Key": self._key(sw.wallet_id, CANDIDATE_SK),
                "ConditionExpression": "candidate_pubkey = :c AND sealed_key = :k",
                "ExpressionAttributeValues": {":c": b(sw.candidate_pubkey), ":k": b(new_blob)},
            }
        }
        retired = {
            **self._key(sw.wallet_id, _retired_sk(switches + 1)),
            "agent_pubkey": b(sw.agent_pubkey),
            "sealed_key": b(old_blob),
            "retired_at": n(sw.now),
        }
        put = {"Put": {"TableName": self._table, "Item": retired, "ConditionExpression": "attribute_not_exists(pk)"}}
        return [([update, delete, put], lambda: _changed_meanwhile(sw.wallet_id))]
