"""The owner CLI's assume-role chain against the trust policies and the owner key policy the CDK app synthesizes.

Every condition key is read from the synthesized templates, never copied here: the parameters the CLI sends to STS
are turned into the request context STS evaluates (MFA from SerialNumber/TokenCode, the source identity from
SourceIdentity on the first hop and carried over on later hops), and each hop must be allowed by its role's trust
policy; the final session must then be allowed to sign by the owner key's policy.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk import App

from cdk import naming
from cdk.identity_stack import IdentityStack
from cdk.keys_stack import OwnerKeyStack
from cdk.synth import example_config, owner_key_policy
from parent_proxy.owner_signers import OwnerKeyError, RoleChain, assume_role_chain
from tests.cdk.conftest import PCR0, PCR8
from tests.cdk.policy_walk import as_list, find_one
from tests.fakes.attesting_kms import evaluate_key_policy

MFA_SERIAL = "arn:aws:iam::111111111111:mfa/alice"
MFA = {"aws:MultiFactorAuthPresent": "true", "aws:MultiFactorAuthAge": "0"}
"""The request context of an AssumeRole that carried SerialNumber/TokenCode (`_check_chain_against_trust`)."""


@pytest.fixture(scope="module")
def config() -> Any:
    return example_config(pcr0=PCR0, pcr8=PCR8)


@pytest.fixture(scope="module")
def templates(config: Any) -> dict[str, dict[str, Any]]:
    app = App()
    IdentityStack(app, "WaiaasIdentity", config=config)
    OwnerKeyStack(app, "WaiaasOwnerKey", config=config)
    return {stack.stack_name: dict(stack.template) for stack in app.synth().stacks}


class RecordingSts:
    """STS at the cloud seam: records each AssumeRole's parameters and answers with dummy credentials."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls

    def assume_role(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        n = len(self.calls)
        return {"Credentials": {"AccessKeyId": f"AK{n}", "SecretAccessKey": f"S{n}", "SessionToken": f"T{n}"}}


def _sent(chain: RoleChain) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    assume_role_chain(lambda service, credentials: RecordingSts(calls), chain)
    return calls


def _condition_holds(operator: str, key: str, expected: Any, context: dict[str, str]) -> bool:
    actual = context.get(key)
    if operator == "Null":
        return (actual is None) == (str(expected).lower() == "true")
    if actual is None:
        return False
    if operator == "Bool":
        return actual == str(expected).lower()
    if operator == "NumericLessThan":
        return float(actual) < float(expected)
    raise AssertionError(f"operator {operator} unknown to this test: teach it before relying on it")


def _principal_arns(principal: Any, template: dict[str, Any], config: Any) -> set[str]:
    arns = set()
    for value in as_list(principal["AWS"]):
        if isinstance(value, dict):  # {"Fn::GetAtt": [role, "Arn"]}: a role of this template, named by RoleName
            role_id, attribute = value["Fn::GetAtt"]
            assert attribute == "Arn"
            arns.add(naming.role_arn(config, template["Resources"][role_id]["Properties"]["RoleName"]))
        else:
            arns.add(value)
    return arns


def _trust_allows(
    templates: dict[str, Any], config: Any, role_name: str, *, caller: str, action: str, context: dict[str, str]
) -> bool:
    template = templates["WaiaasIdentity"]
    _, role = find_one(template, "AWS::IAM::Role", RoleName=role_name)
    allowed = False
    for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
        if action not in as_list(statement["Action"]) or caller not in _principal_arns(
            statement["Principal"], template, config
        ):
            continue
        holds = all(
            _condition_holds(operator, key, expected, context)
            for operator, pairs in statement.get("Condition", {}).items()
            for key, expected in pairs.items()
        )
        if statement["Effect"] == "Deny" and holds:
            return False
        allowed = allowed or (statement["Effect"] == "Allow" and holds)
    return allowed


def _check_chain_against_trust(templates: dict[str, Any], config: Any, sent: list[dict[str, Any]]) -> str:
    """Walk the hops as STS would; return the source identity of the final session."""
    caller = config.owner_principals[0]
    source_identity: str | None = None
    for hop, params in enumerate(sent):
        if source_identity is not None:
            # STS keeps the first hop's value for the whole chain and refuses a different one.
            assert params.get("SourceIdentity", source_identity) == source_identity
        source_identity = source_identity or params.get("SourceIdentity")
        context = {}
        if source_identity is not None:
            context["sts:SourceIdentity"] = source_identity
        if "SerialNumber" in params and "TokenCode" in params:
            context |= MFA
        role_name = params["RoleArn"].rsplit("/", 1)[1]
        actions = ["sts:AssumeRole"] + (["sts:SetSourceIdentity"] if source_identity is not None else [])
        for action in actions:
            allowed = _trust_allows(templates, config, role_name, caller=caller, action=action, context=context)
            assert allowed, (hop, action, context)
        caller = params["RoleArn"]
    assert source_identity is not None
    return source_identity


def _refused_at(hop: int, context: dict[str, str]) -> str:
    """The pattern of `_check_chain_against_trust` refusing ``hop``'s AssumeRole in ``context`` (not another check)."""
    return "^" + re.escape(repr((hop, "sts:AssumeRole", context)))


def _owner_chain(config: Any, source_identity: str = "alice") -> RoleChain:
    roles = [naming.role_arn(config, naming.OWNER_ENTRY_ROLE), naming.role_arn(config, naming.OWNER_SIGNER_ROLE)]
    return RoleChain(roles, MFA_SERIAL, "123456", source_identity)


def test_parameters_sent_satisfy_the_synthesized_trust_and_key_policies(templates: dict[str, Any], config: Any) -> None:
    sent = _sent(_owner_chain(config))
    assert [p["RoleArn"].rsplit("/", 1)[1] for p in sent] == [naming.OWNER_ENTRY_ROLE, naming.OWNER_SIGNER_ROLE]
    source_identity = _check_chain_against_trust(templates, config, sent)
    assert source_identity == "alice"
    signer = naming.role_arn(config, naming.OWNER_SIGNER_ROLE)
    sign = {"aws:PrincipalArn": signer, "kms:SigningAlgorithm": "ED25519_SHA_512", "kms:MessageType": "RAW"}
    policy = owner_key_policy(templates)
    assert evaluate_key_policy(
        policy, action="kms:Sign", caller_arn=signer, context=sign | {"aws:SourceIdentity": source_identity}
    )
    assert not evaluate_key_policy(policy, action="kms:Sign", caller_arn=signer, context=sign)


def test_trust_check_refuses_a_chain_without_source_identity_or_mfa(templates: dict[str, Any], config: Any) -> None:
    """The check above can fail: the same parameters minus SourceIdentity, or minus MFA, are refused."""
    sent = _sent(_owner_chain(config))
    without_identity = [{k: v for k, v in p.items() if k != "SourceIdentity"} for p in sent]
    with pytest.raises(AssertionError, match=_refused_at(0, MFA)):
        _check_chain_against_trust(templates, config, without_identity)
    without_mfa = [{k: v for k, v in p.items() if k not in ("SerialNumber", "TokenCode")} for p in sent]
    with pytest.raises(AssertionError, match=_refused_at(0, {"sts:SourceIdentity": "alice"})):
        _check_chain_against_trust(templates, config, without_mfa)


def test_owner_reaches_the_break_glass_role_directly_and_may_then_replace_the_owner_key_policy(
    templates: dict[str, Any], config: Any
) -> None:
    """`aws sts assume-role` on waiaas-owner-key-admin with MFA and a source identity (docs/deploy.md): the trust
    policy admits it, and the session (whose own AssumeRole carried the MFA) may replace the owner key's policy."""
    break_glass = naming.role_arn(config, naming.OWNER_KEY_ADMIN_ROLE)
    sent = _sent(RoleChain([break_glass], MFA_SERIAL, "123456", "alice"))
    assert _check_chain_against_trust(templates, config, sent) == "alice"
    session = {"aws:PrincipalArn": break_glass, "aws:MultiFactorAuthPresent": "true", "aws:SourceIdentity": "alice"}
    policy = owner_key_policy(templates)
    assert evaluate_key_policy(policy, action="kms:PutKeyPolicy", caller_arn=break_glass, context=session)
    without_mfa = [{k: v for k, v in p.items() if k not in ("SerialNumber", "TokenCode")} for p in sent]
    with pytest.raises(AssertionError, match=_refused_at(0, {"sts:SourceIdentity": "alice"})):
        _check_chain_against_trust(templates, config, without_mfa)
    # Reached through the entry role instead, it is refused: only the owners themselves are trusted. The second hop
    # gets the MFA parameters too, so that its caller is all it lacks (the CLI's chain sends them on the first hop
    # only: without them here, the missing MFA alone would refuse the hop, whoever the role trusted).
    entry = naming.role_arn(config, naming.OWNER_ENTRY_ROLE)
    first, second = _sent(RoleChain([entry, break_glass], MFA_SERIAL, "123456", "alice"))
    through_entry = [first, {**second, "SerialNumber": MFA_SERIAL, "TokenCode": "123456"}]
    with pytest.raises(AssertionError, match=_refused_at(1, {"sts:SourceIdentity": "alice", **MFA})):
        _check_chain_against_trust(templates, config, through_entry)


@pytest.mark.parametrize("value", ["ab", "a" * 64, "alice.smith@example.com", "A_b+c=d,e.f@g-h"])
def test_valid_source_identities_are_sent(config: Any, value: str) -> None:
    assert _sent(_owner_chain(config, value))[0]["SourceIdentity"] == value


@pytest.mark.parametrize("value", ["", "a", "a" * 65, "alice smith", "aws:alice", "élise", "alice\n", "a/b", "a*"])
def test_invalid_source_identities_are_refused_before_any_sts_call(config: Any, value: str) -> None:
    def factory(service: str, credentials: Any) -> Any:
        raise AssertionError("STS reached with an invalid source identity")

    with pytest.raises(OwnerKeyError, match="source identity must be 2-64 characters"):
        assume_role_chain(factory, _owner_chain(config, value))
