"""The test STS (`tests.fakes.sts_sessions`) keeps a session's source identity as STS does, which the owner key
policy tests (tests/proxy/test_owner_kms_policy.py) rely on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.fakes.sts_sessions import Session, StsSessions

ENTRY = "arn:aws:iam::111111111111:role/entry"
SIGNER = "arn:aws:iam::111111111111:role/signer"


@pytest.fixture
def sts(monkeypatch: pytest.MonkeyPatch) -> Iterator[StsSessions]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "eu-west-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    from moto import mock_aws

    with mock_aws():
        yield StsSessions(region="eu-west-1")


def test_the_first_hops_source_identity_is_the_chained_sessions_and_cannot_change(sts: StsSessions) -> None:
    first = sts.client(None).assume_role(RoleArn=ENTRY, RoleSessionName="hop1", SourceIdentity="alice")
    assert first["SourceIdentity"] == "alice"
    second = sts.client(first["Credentials"]).assume_role(RoleArn=SIGNER, RoleSessionName="hop2")
    assert sts.session(second["Credentials"]) == Session(SIGNER, "alice")
    again = sts.client(first["Credentials"]).assume_role(RoleArn=SIGNER, RoleSessionName="hop2", SourceIdentity="alice")
    assert sts.session(again["Credentials"]) == Session(SIGNER, "alice")
    with pytest.raises(ClientError, match="AccessDenied"):
        sts.client(first["Credentials"]).assume_role(RoleArn=SIGNER, RoleSessionName="hop2", SourceIdentity="mallory")


def test_a_session_without_one_has_none_and_unknown_credentials_are_no_session(sts: StsSessions) -> None:
    plain = sts.client(None).assume_role(RoleArn=SIGNER, RoleSessionName="plain")["Credentials"]
    assert sts.session(plain) == Session(SIGNER, None)
    assert sts.session({**plain, "SecretAccessKey": plain["SecretAccessKey"] + "x"}) is None
    assert sts.session({**plain, "AccessKeyId": "ASIANEVERISSUED0000"}) is None
    with pytest.raises(ClientError, match="InvalidClientTokenId"):
        sts.client({**plain, "SessionToken": "forged"}).assume_role(RoleArn=SIGNER, RoleSessionName="next")
