"""Helpers that walk synthesized templates for IAM/KMS policy statements (test-only)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every policy statement anywhere under `node` (key, role, trust, bucket, topic policies...)."""
    if isinstance(node, dict):
        statement = node.get("Statement")
        if isinstance(statement, list) and "Version" in node:
            yield from (s for s in statement if isinstance(s, dict))
        for value in node.values():
            yield from statements(value)
    elif isinstance(node, list):
        for item in node:
            yield from statements(item)


def resources_of_type(template: Mapping[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template.get("Resources", {}).items() if r.get("Type") == cfn_type}


def find_one(template: dict[str, Any], cfn_type: str, **props: Any) -> tuple[str, dict[str, Any]]:
    """The single resource of `cfn_type` whose properties include `props` (found by property, not by id)."""
    found = [
        (lid, r)
        for lid, r in resources_of_type(template, cfn_type).items()
        if all(r.get("Properties", {}).get(k) == v for k, v in props.items())
    ]
    if len(found) != 1:
        raise LookupError(f"expected one {cfn_type} with {props}, found {len(found)}")
    return found[0]


def by_sid(policy: dict[str, Any], sid: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [s for s in policy["Statement"] if s.get("Sid") == sid]
    if len(matches) != 1:
        raise LookupError(f"expected one statement {sid}, found {len(matches)}")
    return matches[0]


def allows(policy_statements: Iterable[dict[str, Any]], *, action: str, resource: str, context: dict[str, str]) -> bool:
    """Whether these statements allow one request. Knows only what the policies here use (Allow statements for any
    principal or none, Action and Resource with `*` wildcards, StringEquals conditions) and refuses anything else
    in a statement that could decide the request, so a new construct must be taught here before it can pass."""
    for statement in policy_statements:
        assert statement["Effect"] == "Allow", "teach this evaluator about Deny before using it"
        assert statement.get("Principal", "*") in ("*", {"AWS": "*"}), statement["Principal"]
        assert set(statement) <= {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}, statement
        if not any(fnmatchcase(action, pattern) for pattern in as_list(statement["Action"])):
            continue
        assert set(statement.get("Condition", {})) <= {"StringEquals"}, statement["Condition"]
        if not any(fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"])):
            continue
        if all(
            context.get(key) == value for key, value in statement.get("Condition", {}).get("StringEquals", {}).items()
        ):
            return True
    return False


def role_statements(template: dict[str, Any], role_name: str) -> list[dict[str, Any]]:
    """Every statement of the IAM policies ``template`` attaches to the role named ``role_name``."""
    role_id, _ = find_one(template, "AWS::IAM::Role", RoleName=role_name)
    return [
        s
        for policy in resources_of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
