"""The policy's decision on an off-chain message (docs/policies.md, `offchain_messages`;
`policies.message_decision.judge_message`, which both checks share): allowed only when the policy allows messages
and the message decodes and names the agent key among its signers; otherwise a DENY (rule ``offchain_messages``
when the policy allows none, ``decode`` when it does), with the request rules and the denial burst applied as to a
transaction."""

from __future__ import annotations

from solders.keypair import Keypair

from policies.decision import Verdict
from policies.errors import DecodeError
from policies.message_decision import NotASigner, judge_message
from policies.offchain import OffchainMessage
from tests.support.offchain_messages import offchain_message
from tests.support.scenario import Scenario


def _judge(s: Scenario, raw: bytes) -> tuple[Verdict, list[str], object]:
    decision, decoded = judge_message(s.policy, raw, bytes(s.wallet), s.context())
    assert decision.reservations == ()  # a message moves nothing
    return decision.verdict, [r.rule for r in decision.reasons], decoded


def _no_messages(s: Scenario) -> Scenario:
    s.doc["rules"]["offchain_messages"] = {"allowed": False}
    return s


def test_a_message_the_agent_key_signs_is_allowed_and_returned_decoded() -> None:
    s = Scenario()
    verdict, rules, decoded = _judge(s, offchain_message(s.wallet, "log in"))
    assert (verdict, rules) == (Verdict.ALLOW, [])
    assert isinstance(decoded, OffchainMessage)
    assert (decoded.signers, decoded.text) == ((s.wallet,), "log in")


def test_the_agent_key_may_be_any_of_several_signers() -> None:
    s = Scenario()
    others = [Keypair().pubkey(), Keypair().pubkey()]
    assert _judge(s, offchain_message(others[0], "co-signed", [s.wallet, others[1]]))[:2] == (Verdict.ALLOW, [])
    assert _judge(s, offchain_message(others[0], "co-signed", others[1:]))[:2] == (Verdict.DENY, ["decode"])


def test_a_message_that_does_not_name_the_agent_key_is_denied_as_a_decode_failure() -> None:
    s = Scenario()
    verdict, rules, decoded = _judge(s, offchain_message(Keypair().pubkey(), "log in"))
    assert (verdict, rules) == (Verdict.DENY, ["decode"])
    assert isinstance(decoded, NotASigner)


def test_bytes_that_are_no_message_are_denied_as_a_decode_failure() -> None:
    s = Scenario()
    verdict, rules, decoded = _judge(s, b"\xffsolana offchain" + bytes(3))
    assert (verdict, rules) == (Verdict.DENY, ["decode"])
    assert isinstance(decoded, DecodeError) and not isinstance(decoded, NotASigner)


def test_when_the_policy_allows_no_messages_that_is_the_reason_whatever_the_message() -> None:
    s = _no_messages(Scenario())
    for message in (offchain_message(s.wallet, "log in"), offchain_message(Keypair().pubkey(), "x"), b"garbage"):
        assert _judge(s, message)[:2] == (Verdict.DENY, ["offchain_messages"]), message


def test_the_request_rules_apply_to_a_message_that_decodes_and_to_one_that_does_not() -> None:
    s = Scenario(requests=60)  # the example's rate is full
    assert _judge(s, offchain_message(s.wallet, "log in"))[:2] == (Verdict.DENY, ["rate"])
    assert _judge(s, b"garbage")[:2] == (Verdict.DENY, ["rate", "decode"])


def test_the_denial_that_completes_the_burst_freezes_in_every_case() -> None:
    stranger = Keypair().pubkey()
    s = Scenario(denials=4)  # the example freezes on the fifth denial
    assert _judge(s, offchain_message(stranger, "log in"))[:2] == (Verdict.FREEZE, ["decode", "freeze.denials"])
    assert _judge(s, b"garbage")[:2] == (Verdict.FREEZE, ["decode", "freeze.denials"])
    assert _judge(s, offchain_message(s.wallet, "log in"))[:2] == (Verdict.ALLOW, [])  # no denial, no freeze
    s = _no_messages(Scenario(denials=4))
    verdict, rules, _ = _judge(s, offchain_message(s.wallet, "log in"))
    assert (verdict, rules) == (Verdict.FREEZE, ["offchain_messages", "freeze.denials"])
