"""The agent-key routes answer a stored policy that no longer verifies as the sign path does: 403 ``no_policy``
(`parent_proxy.api_agent_key._multisig` through `sign_parts.verified_policy`), and nothing is changed.

Before (found in review): `_multisig` called `load_signed_policy` without catching its errors, so
``agent-key/candidate``, ``agent-key/rotation`` and ``agent-key/switch`` answered 500 ``internal_error``.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from solders.pubkey import Pubkey

from policies.signing import POLICY_PURPOSE, sign_document
from tests.proxy.api_harness import Harness
from tests.proxy.rotation_requests import agent_key_path, multisig_wallet, rotation_body, switch_body
from tests.support.policies import MERCHANT
from tests.support.squads_rotation import rotation_transaction


def _store_unverifiable_policy(h: Harness) -> None:
    """Replace the stored policy with the same document signed by a key that is not the owner's."""
    document = json.loads(h.store.get_wallet(h.wallet_id).policy_document)["document"]
    forged = sign_document(POLICY_PURPOSE, document, Ed25519PrivateKey.generate())
    stored = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    h.store.inner._conn().execute("UPDATE wallets SET policy_document = ? WHERE wallet_id = ?", (stored, h.wallet_id))


def _assert_no_policy(answer: Any) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "no_policy"


def test_agent_key_routes_refuse_a_policy_that_no_longer_verifies(h: Harness) -> None:
    multisig = multisig_wallet(h)
    made = h.owner_call("POST", agent_key_path(h, "/candidate"))  # a candidate while the policy still verifies
    assert made.status_code == 201, made.text
    new = Pubkey.from_string(made.json()["candidate_public_key"])
    _store_unverifiable_policy(h)
    _assert_no_policy(h.sign(h.transfer(1000, MERCHANT)))  # the sign path's answer, for comparison
    raw = rotation_transaction(multisig, owner=h.owner_pub, agent=h.agent, new_agent=new)
    _assert_no_policy(h.owner_call("POST", agent_key_path(h, "/rotation"), rotation_body(h, raw, new)))
    _assert_no_policy(h.owner_call("POST", agent_key_path(h, "/switch"), switch_body(h, new)))
    status = h.owner_call("GET", agent_key_path(h)).json()
    assert status["agent_public_key"] == str(h.agent) and status["candidate_public_key"] == str(new)


def test_no_candidate_is_made_under_a_policy_that_no_longer_verifies(h: Harness) -> None:
    multisig_wallet(h)
    _store_unverifiable_policy(h)
    _assert_no_policy(h.owner_call("POST", agent_key_path(h, "/candidate")))
    assert h.owner_call("GET", agent_key_path(h)).json()["candidate_public_key"] is None
    assert "agent_key.candidate" not in h.audit_events()
