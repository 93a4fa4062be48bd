"""A test STS: moto's (``mock_aws``) behind the boto3 client seam, plus the one thing of an assumed-role session that
moto drops and the owner key's policy tests: its ``SourceIdentity``.

As STS does (and the owner CLI relies on), the source identity given on a hop is kept for the session it makes and
for every session assumed from that one; a later hop may repeat it but not change it. `StsSessions.session` tells
who holds a set of temporary credentials: the IAM role ARN of the session moto made (what a key policy sees as
``aws:PrincipalArn``) and its source identity; unknown or altered credentials are no session. Trust policies are not
evaluated here (tests/proxy/test_owner_role_chain.py checks the CLI's parameters against the synthesized ones).

Tests only: production code cannot import this (it lives under tests/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError
from moto.iam.models import get_account_id_from
from moto.sts.models import sts_backends


@dataclass(frozen=True)
class Session:
    """Who made a request: the role of the assumed-role session and the session's source identity."""

    role_arn: str
    source_identity: str | None


@dataclass
class StsSessions:
    """The STS every client of one test talks to. Start ``moto.mock_aws()`` before using it."""

    region: str = "us-east-1"
    calls: list[dict[str, Any]] = field(default_factory=list)
    """Each AssumeRole's parameters, in order."""
    _source_identities: dict[str, str | None] = field(default_factory=dict)

    def client(self, credentials: Mapping[str, str] | None) -> StsClient:
        """The STS client of whoever holds ``credentials`` (None: the caller's own long-term credentials)."""
        return StsClient(self, None if credentials is None else dict(credentials))

    def session(self, credentials: Mapping[str, str]) -> Session | None:
        """The assumed-role session ``credentials`` belong to, or None if moto's STS never issued them as they are."""
        access_key_id = credentials["AccessKeyId"]
        assumed = sts_backends[get_account_id_from(access_key_id)]["aws"].get_assumed_role_from_access_key(
            access_key_id
        )
        if assumed is None or (assumed.secret_access_key, assumed.session_token) != (
            credentials["SecretAccessKey"],
            credentials["SessionToken"],
        ):
            return None
        return Session(assumed.role_arn, self._source_identities.get(access_key_id))


@dataclass
class StsClient:
    """boto3-shaped: ``assume_role`` only."""

    sts: StsSessions
    credentials: dict[str, str] | None

    def assume_role(self, **params: Any) -> dict[str, Any]:
        self.sts.calls.append(params)
        inherited = None
        if self.credentials is not None:
            caller = self.sts.session(self.credentials)
            if caller is None:
                raise ClientError(
                    {"Error": {"Code": "InvalidClientTokenId", "Message": "The security token included is invalid."}},
                    "AssumeRole",
                )
            inherited = caller.source_identity
        requested = params.get("SourceIdentity")
        if inherited is not None and requested not in (None, inherited):
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "the source identity of a session cannot change"}},
                "AssumeRole",
            )
        moto = boto3.client("sts", region_name=self.sts.region)
        answer: dict[str, Any] = dict(moto.assume_role(**params))
        answer.pop("ResponseMetadata", None)
        source_identity = inherited or requested
        self.sts._source_identities[answer["Credentials"]["AccessKeyId"]] = source_identity
        if source_identity is not None:
            answer["SourceIdentity"] = source_identity
        return answer
