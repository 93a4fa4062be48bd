"""Enclave outcomes as API errors: `translate_enclave_error`, the one place they are translated.

====================================================== ===============================================
enclave outcome                                        API
====================================================== ===============================================
``wallet_frozen``                                      403 ``wallet_frozen``
``no_policy``                                          403 ``no_policy``
``policy_invalid`` / ``order_invalid`` / ``message_invalid`` / ``rotation_invalid`` 403 ``enclave_refused``
``policy_stale`` / ``order_stale``                     409 ``stale_policy`` / ``conflict``
``multisig_required`` (policy declares no multisig)    409 ``conflict``, naming WAIAAS_ENCLAVE_REQUIRE_MULTISIG
``wallet_exists``                                      409 ``conflict``
``attestation_refused`` (KMS refused the attestation)  503 ``attestation_refused``
the host's AWS credentials could not be read            503 ``enclave_unavailable`` (nothing sent)
any other code, timeout, connection or framing failure, an answer of the wrong shape: 503 ``enclave_unavailable``
====================================================== ===============================================

Every 503 is logged with its cause (the enclave's error code and fixed message, or the error type): the API
answer does not say more than "unavailable", the operator needs to.
"""

from __future__ import annotations

import logging

from enclave_app.errors import CredentialsUnavailableError, EnclaveError, EnclaveRequestError
from enclave_app.protocol import ErrorCode
from parent_proxy.api_errors import ApiError, Code

logger = logging.getLogger(__name__)

_REFUSALS = {
    ErrorCode.WALLET_FROZEN: (Code.WALLET_FROZEN, "the enclave refuses: the wallet is frozen"),
    ErrorCode.NO_POLICY: (Code.NO_POLICY, "the enclave has no policy for this wallet"),
    ErrorCode.POLICY_INVALID: (Code.ENCLAVE_REFUSED, "the enclave refused the policy"),
    ErrorCode.ORDER_INVALID: (Code.ENCLAVE_REFUSED, "the enclave refused the owner order"),
    ErrorCode.MESSAGE_INVALID: (Code.ENCLAVE_REFUSED, "the enclave refused the message"),
    ErrorCode.ROTATION_INVALID: (Code.ENCLAVE_REFUSED, "the enclave refused the agent-key rotation transaction"),
    ErrorCode.POLICY_STALE: (Code.STALE_POLICY, "the enclave holds a newer policy, or the policy has expired"),
    ErrorCode.ORDER_STALE: (Code.CONFLICT, "the enclave accepted a newer owner order"),
    ErrorCode.MULTISIG_REQUIRED: (
        Code.CONFLICT,
        "the enclave refuses the wallet's policy: it declares no Squads multisig (rules.squads_multisig is null) "
        "and the enclave requires one (WAIAAS_ENCLAVE_REQUIRE_MULTISIG=true); the owner must install a policy that "
        "declares the wallet's multisig. Nothing was signed",
    ),
    ErrorCode.WALLET_EXISTS: (Code.CONFLICT, "the wallet already exists"),
    ErrorCode.ATTESTATION_REFUSED: (
        Code.ATTESTATION_REFUSED,
        "KMS refused the enclave's attestation (PCRs not in the key policy); nothing was signed",
    ),
}


def translate_enclave_error(exc: EnclaveError) -> ApiError:
    """The API error for a failed enclave request (the table above); a 503 is logged with its cause."""
    if isinstance(exc, EnclaveRequestError) and exc.code in _REFUSALS:
        code, message = _REFUSALS[ErrorCode(exc.code)]
        return ApiError(code, message)
    if isinstance(exc, CredentialsUnavailableError):
        logger.error("no AWS credentials to lend the enclave: %s", exc)
        return ApiError(
            Code.ENCLAVE_UNAVAILABLE, "the host's AWS credentials for the enclave's KMS calls could not be read"
        )
    if isinstance(exc, EnclaveRequestError):
        logger.warning("the enclave answered %s: %s", exc.code, exc.detail)
    else:
        logger.warning("the enclave request failed: %s", type(exc).__name__)
    return ApiError(Code.ENCLAVE_UNAVAILABLE, "the enclave is unavailable; nothing was signed")
