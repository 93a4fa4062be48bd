"""The KMS sealer of each request, with the AWS credentials that request carried (DESIGN section 7).

The enclave has no AWS credentials of its own (no instance metadata, no network but the KMS forwarder), so the
parent lends it the host role's temporary credentials with each ``provision_wallet`` and ``load_wallet``. They
are used for that request's KMS calls only and never kept: :class:`KmsSealers` makes a new KMS client per request.
The credentials alone open nothing: the seal key's policy also requires an attestation document with the deployed
image's PCRs, which only this enclave can produce.

A request without credentials is refused before any KMS call (:class:`~enclave_app.errors.KmsCredentialsMissingError`,
answered as ``kms_unavailable`` with a message naming the parent's setting).

:func:`boto3_kms_clients` is the production client maker: one boto3 session (clients from it are made one at a
time: a boto3 session is not thread-safe) and short time limits, so that a KMS call ends, answered or not, within
the enclave's request time limit (`enclave_app.constants.ENCLAVE_REQUEST_TIMEOUT_SECONDS`) and the worker thread
making it is free again: botocore's limits are per connect and per socket read, so a KMS that does not answer ends
an attempt after ``KMS_CONNECT_TIMEOUT_SECONDS`` or ``KMS_READ_TIMEOUT_SECONDS``; an answer trickling in a byte at
a time (the parent relays the stream) is cut by the in-enclave forwarder at its connection lifetime
(`enclave_app.forwarder.CONNECTION_LIFETIME_SECONDS`). A whole call takes at most :data:`KMS_CALL_LIMIT_SECONDS`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

import boto3
from botocore.config import Config

from enclave_app.errors import KmsCredentialsMissingError, KmsError
from enclave_app.forwarder import CONNECTION_LIFETIME_SECONDS
from enclave_app.kms import AttestedKms, KmsApi
from enclave_app.nsm import Nsm
from enclave_app.protocol_wire import AwsCredentials
from enclave_app.sealing import KmsSealer

KMS_CONNECT_TIMEOUT_SECONDS = 3.0
KMS_READ_TIMEOUT_SECONDS = 8.0
KMS_MAX_ATTEMPTS = 2
"""Attempts per KMS call, the first included (botocore's ``standard`` retry mode, ``total_max_attempts``: throttling
and transient errors are retried once; its ``max_attempts`` would count retries only)."""

KMS_RETRY_WAIT_MAX_SECONDS = 6.0
"""Longest wait before the second attempt: botocore's ``standard`` mode waits at most 1 s (throttling; 50 ms
otherwise), raised to at most 5 s more by an ``x-amz-retry-after`` header from KMS (botocore.retries.standard)."""

KMS_CALL_LIMIT_SECONDS = KMS_MAX_ATTEMPTS * CONNECTION_LIFETIME_SECONDS + KMS_RETRY_WAIT_MAX_SECONDS
"""Longest a KMS call through the forwarder takes, answered or not (each attempt is a new connection)."""

KmsClients = Callable[[AwsCredentials], KmsApi]
"""Makes a KMS client that signs its calls with the given credentials."""


class KmsSealers:
    """:class:`~enclave_app.sealing.Sealers` for the cloud: a :class:`KmsSealer` per request, with a KMS client made
    from the request's credentials."""

    def __init__(self, clients: KmsClients, nsm: Nsm, *, key_id: str) -> None:
        self._clients = clients
        self._nsm = nsm
        self._key_id = key_id

    def for_request(self, credentials: AwsCredentials | None) -> KmsSealer:
        if credentials is None:
            raise KmsCredentialsMissingError("the request carries no AWS credentials for KMS")
        try:
            client = self._clients(credentials)
        except Exception as exc:  # botocore's, translated here like every KMS failure (named by type only)
            raise KmsError(f"KMS client could not be made ({type(exc).__name__})") from None
        return KmsSealer(AttestedKms(client, self._nsm), key_id=self._key_id)


def kms_client_config() -> Config:
    """Time limits and retries of every KMS client the enclave makes."""
    return Config(
        connect_timeout=KMS_CONNECT_TIMEOUT_SECONDS,
        read_timeout=KMS_READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": KMS_MAX_ATTEMPTS},
    )


def boto3_kms_clients(region: str) -> KmsClients:
    """KMS clients for ``region`` (whose endpoint the image resolves to the in-enclave forwarder), each signing with
    the credentials it is made with and never looking for others (environment, files, instance metadata)."""
    session = boto3.session.Session()  # the region is the client's (given once: each client is made for ``region``)
    config = kms_client_config()
    lock = threading.Lock()

    def client(credentials: AwsCredentials) -> KmsApi:
        with lock:
            made = session.client(
                "kms",
                region_name=region,
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
                config=config,
            )
        return cast("KmsApi", made)

    return client
