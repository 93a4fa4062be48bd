"""The AWS credentials the proxy lends the enclave (``WAIAAS_ENCLAVE_KMS_CREDENTIALS=host``; DESIGN section 7).

The enclave's KMS sealer has no credentials of its own; with each wallet creation and load the proxy sends this
host's: boto3's default chain, which on the EC2 host is the instance role (from the instance metadata service,
refreshed by botocore before they expire). The seal key's policy names that role and requires an attestation
document with the deployed image's PCRs, so the credentials are useless to anyone but the attested enclave.

Only temporary credentials (with a session token) are lent: long-term access keys found in the environment or a
credentials file are refused, because an enclave image or a log line should never have a key that does not expire.
Errors name the cause, never a credential.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import boto3

from enclave_app.errors import CredentialsUnavailableError
from enclave_app.protocol import AwsCredentials


class HostAwsCredentials:
    """Callable: the host's current temporary AWS credentials, or :class:`CredentialsUnavailableError`. One boto3
    session for the process (its credential object caches and refreshes them)."""

    def __init__(self, session_factory: Callable[[], boto3.session.Session] = boto3.session.Session) -> None:
        self._session_factory = session_factory
        self._session: boto3.session.Session | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "HostAwsCredentials()"

    def __call__(self) -> AwsCredentials:
        try:
            with self._lock:  # one lookup at a time: two first calls would each ask the metadata service
                if self._session is None:
                    self._session = self._session_factory()
                found = self._session.get_credentials()
            frozen = None if found is None else found.get_frozen_credentials()
        except Exception as exc:  # botocore's provider errors (metadata service down, a malformed file, ...)
            raise CredentialsUnavailableError(
                f"the host's AWS credentials could not be read ({type(exc).__name__})"
            ) from None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise CredentialsUnavailableError("no AWS credentials found on this host (on EC2: the instance role)")
        if not frozen.token:
            raise CredentialsUnavailableError(
                "the host's AWS credentials are long-term access keys; only temporary role credentials are lent"
            )
        return AwsCredentials(
            access_key_id=frozen.access_key, secret_access_key=frozen.secret_key, session_token=frozen.token
        )
