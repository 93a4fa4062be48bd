"""A wallet the parent holds frozen is loaded frozen (`LoadWalletRequest.frozen_at_order`).

Before: the enclave kept the freeze and the last owner order's sequence in memory only, so after a restart every
wallet came back unfrozen and an older owner unfreeze was accepted again. The parent's word is taken only as a
restriction: it freezes and raises the sequence, never unfreezes or lowers it. Real server, local sealer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enclave_app.errors import EnclaveRequestError, ProtocolError
from enclave_app.protocol import EnclaveState, ErrorCode, LoadWalletRequest, decode_request
from policies.orders import MAX_SEQUENCE
from tests.support.policy_handler import owner_order
from tests.support.served_enclave import OWNER_PUBLIC, run_served, sealed


def order(sequence: int, *, freeze: bool) -> bytes:
    return owner_order("w1", sequence, freeze=freeze)


def test_a_wallet_loaded_frozen_refuses_older_orders_and_takes_a_newer_unfreeze(tmp_path: Path) -> None:
    public, blob = sealed("w1")

    async def steps(enclave: Any, client: Any) -> None:
        load = {"owner_public_key": OWNER_PUBLIC, "agent_public_key": public, "sealed_blob": blob}
        await client.load_wallet("w1", **load, frozen_at_order=4)
        held = enclave.wallet("w1")
        assert (held.frozen, held.order_sequence) == (True, 4)
        assert enclave.state is EnclaveState.FROZEN
        for stale in (3, 4):  # an unfreeze the owner signed before the freeze the parent holds
            with pytest.raises(EnclaveRequestError) as refused:
                await client.unfreeze("w1", order(stale, freeze=False))
            assert refused.value.code == ErrorCode.ORDER_STALE
        assert held.frozen
        await client.load_wallet("w1", **load)  # loading again without the parent's word unfreezes nothing
        assert held.frozen
        answer = await client.unfreeze("w1", order(5, freeze=False))
        assert (answer.frozen, held.frozen, held.order_sequence) == (False, False, 5)

    run_served(tmp_path, steps)


def test_the_parents_word_only_restricts_a_wallet_already_loaded(tmp_path: Path) -> None:
    public, blob = sealed("w1")

    async def steps(enclave: Any, client: Any) -> None:
        load = {"owner_public_key": OWNER_PUBLIC, "agent_public_key": public, "sealed_blob": blob}
        await client.load_wallet("w1", **load)
        await client.freeze("w1", order(7, freeze=True))
        await client.unfreeze("w1", order(8, freeze=False))
        held = enclave.wallet("w1")
        await client.load_wallet("w1", **load, frozen_at_order=2)  # a lower sequence: frozen, the sequence kept
        assert (held.frozen, held.order_sequence) == (True, 8)
        with pytest.raises(EnclaveRequestError) as refused:
            await client.unfreeze("w1", order(8, freeze=False))
        assert refused.value.code == ErrorCode.ORDER_STALE

    run_served(tmp_path, steps)


def wire(**changes: Any) -> dict[str, Any]:
    request = LoadWalletRequest(
        wallet_id="w1", owner_public_key=bytes(32), agent_public_key=bytes(32), sealed_blob=b"x", frozen_at_order=3
    )
    return {**request.to_wire(), **changes}


def test_every_shape_of_the_request_decodes() -> None:
    full = wire()
    assert decode_request(full).frozen_at_order == 3  # type: ignore[union-attr]
    without = {k: v for k, v in full.items() if k != "frozen_at_order"}  # a parent built before the field
    assert decode_request(without).frozen_at_order is None  # type: ignore[union-attr]
    oldest = {k: v for k, v in without.items() if k != "aws_credentials"}  # and before the credentials
    assert decode_request(oldest).frozen_at_order is None  # type: ignore[union-attr]
    not_frozen = LoadWalletRequest(
        wallet_id="w1", owner_public_key=bytes(32), agent_public_key=bytes(32), sealed_blob=b"x"
    )
    assert "frozen_at_order" not in not_frozen.to_wire()  # so an enclave built before the field reads it


@pytest.mark.parametrize(
    "value",
    [
        {"frozen_at_order": -1},
        {"frozen_at_order": True},
        {"frozen_at_order": 1.0},
        {"frozen_at_order": MAX_SEQUENCE + 1},
        {"frozen_at_order": "3"},
    ],
)
def test_a_malformed_sequence_is_a_protocol_error(value: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="integer field of wrong type or range"):
        decode_request(wire(**value))  # the same request with a good sequence decodes: above


def test_the_field_without_the_credentials_before_it_is_no_shape() -> None:
    """Fields come in generations: a map may leave out the latest ones, never an older one alone."""
    with pytest.raises(ProtocolError, match="missing or extra fields"):
        decode_request({k: v for k, v in wire().items() if k != "aws_credentials"})
