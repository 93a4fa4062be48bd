"""The wallet's Squads v4 multisig as the chain shows it, compared with its policy
(`parent_proxy.multisig_conformance`): the read that the owner's report and the policy install share.

    read_report(chain, keys, policy, multisig)   the declared multisig and its spending limits, read and compared
    wallet_keys(store, wallet)                   the keys a stored wallet is compared with (its vault: below)
    shown_vault(store, wallet, policy)           the vault address the wallet view shows
    wallet_report(services, wallet, ...)         `read_report` for a stored wallet; 503 ``chain_unavailable``
    check_install(services, wallet, policy)      the check before a policy is installed (422 / 409 / 503)
    nonconforming(report, refused)               the 409 ``multisig_nonconforming`` of a failed report

What a read means. "There is no account at the declared address" is an answer about the chain, not a failure to
read it: when the adapter raises `AccountNotFound` for the multisig, `read_report` answers `missing_multisig` (one
failed ``multisig.exists`` check). Anything else the adapter cannot read (the RPC failing, an account not owned by
the Squads program, malformed data, a malformed or surplus spending limit) is its `ChainError`, which propagates:
`wallet_report` and `check_install` answer 503 ``chain_unavailable``, the owner CLI exits 1 saying so. Nothing is
reported as a pass that was not read. The agent-key switch (`parent_proxy.api_agent_key`) reads the multisig too and
answers a missing one as the install does (409 ``multisig_nonconforming``, the failed ``multisig.exists`` check).

The vault a wallet names. A wallet created without ``vault_address`` has the agent key it was created with stored
as its vault (the column is required; for a wallet without a multisig, that key's own account holds the funds). No
Squads vault is ever an agent key (a vault is a PDA, off the Ed25519 curve; an agent key is made in the enclave at
creation, so an owner cannot have named it), so such a wallet names no vault (`recorded_vault` answers None) and its
multisig's vault 0 is its vault (`DEFAULT_VAULT_INDEX`), as the owner CLI assumes without ``--vault``. After an
agent-key rotation the key stored is a retired one, so every agent key the wallet has had is compared.

The install check (`check_install`; DESIGN.md section 10, docs/api.md). A policy that declares a multisig
(``rules.squads_multisig``) is installed only if that multisig and its spending limits on chain conform to it and
to the wallet's keys: otherwise 409 ``multisig_nonconforming`` naming each failed check (in ``reasons``), or 503
``chain_unavailable`` when the chain cannot be read; either way before anything is stored or sent to the enclave.
A policy that declares no multisig is refused while the proxy requires one (``WAIAAS_REQUIRE_MULTISIG``, the
default: 422 ``invalid_request`` naming the rule and the setting; DESIGN.md sections 1 and 10, every wallet a Squads
multisig and the chain the last line), or while the enclave does (its ``WAIAAS_ENCLAVE_REQUIRE_MULTISIG``, which its
``status`` answer reports; asked only then: 422 ``invalid_request`` naming the enclave's setting, 503
``enclave_unavailable`` if it cannot be asked, since the enclave would refuse such a policy once stored), and is
otherwise installed without reading the chain (there is no on-chain limit to compare it with: the agent key's own
account holds the funds). The check holds at install time: a later change on chain is for the owner's report
(``GET /v1/wallets/{id}/multisig``) to show.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from solders.pubkey import Pubkey

from parent_proxy.api_errors import ApiError, Code, translate
from parent_proxy.chain import AccountNotFound, Chain, ChainError
from parent_proxy.errors import ProxyError
from parent_proxy.multisig_conformance import (
    DEFAULT_VAULT_INDEX,
    ConformanceReport,
    WalletKeys,
    missing_multisig,
    multisig_conformance,
)
from parent_proxy.store.model import Wallet
from policies.decoders.squads_vault import squads_vault_address
from policies.document import Policy

NO_MULTISIG_REFUSED = (
    "policy refused: rules.squads_multisig is null, and this proxy requires every policy to declare the wallet's "
    "Squads v4 multisig (WAIAAS_REQUIRE_MULTISIG=true; DESIGN.md sections 1 and 10): without one nothing on chain "
    "bounds the agent key. Set the multisig up on chain, then sign a policy that declares it"
)

ENCLAVE_REQUIRES_MULTISIG = (
    "policy refused: rules.squads_multisig is null, and the enclave requires every policy to declare the wallet's "
    "Squads v4 multisig (its WAIAAS_ENCLAVE_REQUIRE_MULTISIG=true, fixed in the enclave image; this proxy's "
    "WAIAAS_REQUIRE_MULTISIG=false does not lift it): it would refuse this policy. Set the multisig up on chain, "
    "then sign a policy that declares it"
)

if TYPE_CHECKING:  # types only: the owner CLI imports this module and needs none of the proxy's services
    from parent_proxy.services import Services
    from parent_proxy.store.protocol import Store


async def read_report(chain: Chain, keys: WalletKeys, policy: Policy, multisig: Pubkey) -> ConformanceReport:
    """The multisig at ``multisig`` (the one ``policy`` declares) and its spending limits, read through ``chain``
    and compared (`multisig_conformance`); `missing_multisig` when the chain has no account there. Raises the
    adapter's `ChainError` for anything that cannot be read."""
    try:
        account = await chain.multisig_account(multisig)
    except AccountNotFound:
        return missing_multisig(multisig)
    limits = await chain.spending_limits(multisig)
    return multisig_conformance(keys, policy, account, limits)


def recorded_vault(wallet: Wallet, agent_keys: Iterable[bytes]) -> Pubkey | None:
    """The vault the wallet was created with; None when it was created without one (its stored vault is one of
    ``agent_keys``: the wallet's agent key and every retired one)."""
    if wallet.vault_address == wallet.agent_pubkey or wallet.vault_address in set(agent_keys):
        return None
    return Pubkey.from_bytes(wallet.vault_address)


def _recorded_vault(store: Store, wallet: Wallet) -> Pubkey | None:
    retired = store.retired_agent_keys(wallet.wallet_id)
    return recorded_vault(wallet, (key.agent_pubkey for key in retired))


def wallet_keys(store: Store, wallet: Wallet) -> WalletKeys:
    """Owner key, agent key and recorded vault of a stored wallet (a store read: call it in a worker thread)."""
    owner, agent = Pubkey.from_bytes(wallet.owner_pubkey), Pubkey.from_bytes(wallet.agent_pubkey)
    return WalletKeys(owner, agent, _recorded_vault(store, wallet))


def shown_vault(store: Store, wallet: Wallet, policy: Policy | None) -> Pubkey:
    """The wallet's vault address as the wallet view shows it: the recorded one; for a wallet created without one
    whose policy declares a multisig, that multisig's vault `DEFAULT_VAULT_INDEX` (the vault its conformance is
    checked with); otherwise the address stored at creation (the agent key's own account)."""
    multisig = None if policy is None else policy.rules.squads_multisig
    if multisig is not None and _recorded_vault(store, wallet) is None:
        return squads_vault_address(multisig, DEFAULT_VAULT_INDEX)
    return Pubkey.from_bytes(wallet.vault_address)


async def wallet_report(services: Services, wallet: Wallet, policy: Policy, multisig: Pubkey) -> ConformanceReport:
    """`read_report` for a stored wallet and its verified policy; 503 ``chain_unavailable`` if the chain cannot be
    read, 503 ``store_unavailable`` if the store cannot."""
    try:
        keys = await services.run(wallet_keys, services.store, wallet)
    except ProxyError as exc:
        raise translate(exc) from exc
    try:
        return await read_report(services.chain, keys, policy, multisig)
    except ChainError as exc:
        raise ApiError(Code.CHAIN_UNAVAILABLE, f"the multisig or its spending limits could not be read: {exc}") from exc


def nonconforming(report: ConformanceReport, refused: str) -> ApiError:
    """409 ``multisig_nonconforming`` for ``report`` (one that does not conform): the message ``refused`` (what is
    refused and why) followed by the failed checks' ids; ``reasons``: each failed check. Not retryable: the owner
    changes the multisig on chain or the policy first."""
    failed = [{"id": c.id, "subject": c.subject, "seen": c.seen, "expected": c.expected}
              for c in report.checks if not c.ok]  # fmt: skip
    ids = ", ".join(dict.fromkeys(check["id"] for check in failed))
    return ApiError(Code.MULTISIG_NONCONFORMING, f"{refused}; failed checks: {ids}", reasons=failed)


async def check_install(services: Services, wallet: Wallet, policy: Policy) -> None:
    """Before ``policy`` is installed on ``wallet``: nothing when the multisig it declares conforms, or it declares
    none and neither the proxy nor the enclave requires one; 422 ``invalid_request`` when it declares none and the
    proxy requires one (`Services.require_multisig`) or the enclave does (its ``status``: ``requires_multisig``;
    503 ``enclave_unavailable`` when it cannot be asked); 409 ``multisig_nonconforming`` (``reasons``: each failed
    check) when the multisig does not conform, or does not exist; 503 ``chain_unavailable`` when the chain cannot
    be read. The caller stores nothing before this returns."""
    multisig = policy.rules.squads_multisig
    if multisig is None:
        if services.require_multisig:
            raise ApiError(Code.INVALID_REQUEST, NO_MULTISIG_REFUSED)
        # The enclave decides (DESIGN.md section 1): a policy it would refuse is not stored. An enclave built
        # before it reported the setting answers None, and does not refuse such a policy.
        status = await services.relay.ping()
        if status.requires_multisig:
            raise ApiError(Code.INVALID_REQUEST, ENCLAVE_REQUIRES_MULTISIG)
        return
    # 1. The keys the wallet holds and the accounts the chain shows; unreadable is 503, never a pass.
    report = await wallet_report(services, wallet, policy, multisig)
    # 2. Every check must hold (a report always has at least one).
    if report.conforms:
        return
    raise nonconforming(report, f"policy refused: the multisig {multisig} on chain does not conform to DESIGN.md "
                                "section 10 and this policy")  # fmt: skip
