"""Fake AWS credentials for the tests that run against moto, so that nothing can reach a real AWS account."""

from __future__ import annotations

import pytest

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TEST_CREDENTIALS` in the environment for the rest of the test."""
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
