"""Argument readers for the Squads v4 instructions that configure a multisig: `ConfigAction` lists (config
transactions), ``MultisigCreateArgsV2``, the direct config-authority instructions and spending-limit arguments.

Layouts are the Anchor IDL's (``squads_multisig_program.json``, Borsh): enums are a u8 variant index followed by the
variant's fields. Every reader returns the decoded values for ``args`` and leaves the reader after the last field;
the caller checks that nothing trails.
"""

from __future__ import annotations

from typing import Final

from solders.pubkey import Pubkey

from policies.decoders.squads_message import BorshReader

PERIODS: Final = ("one_time", "day", "week", "month")
"""``Period`` variants, by index."""

CONFIG_ACTIONS: Final = (
    "add_member", "remove_member", "change_threshold", "set_time_lock", "add_spending_limit",
    "remove_spending_limit", "set_rent_collector",
)  # fmt: skip
"""``ConfigAction`` variants, by index."""

_PUBKEY = 32


def read_member(reader: BorshReader) -> dict[str, object]:
    """``Member { key, permissions: Permissions { mask u8 } }``."""
    return {"key": reader.pubkey("member key"), "permissions": reader.u8("member permissions")}


def read_keys(reader: BorshReader, what: str) -> tuple[Pubkey, ...]:
    """Borsh ``Vec<Pubkey>``."""
    return tuple(reader.pubkey(what) for _ in range(reader.count(what, _PUBKEY)))


def read_spending_limit(reader: BorshReader) -> dict[str, object]:
    """The fields shared by ``MultisigAddSpendingLimitArgs`` and ``ConfigAction::AddSpendingLimit``."""
    out: dict[str, object] = {
        "create_key": reader.pubkey("create_key"),
        "vault_index": reader.u8("vault_index"),
        "mint": reader.pubkey("mint"),
        "amount": reader.u64("amount"),
    }
    period = reader.u8("period")
    if period >= len(PERIODS):
        reader.fail(f"unknown period {period}")
    out["period"] = PERIODS[period]
    out["members"] = read_keys(reader, "spending limit member")
    out["destinations"] = read_keys(reader, "spending limit destination")
    return out


def read_config_action(reader: BorshReader) -> tuple[str, dict[str, object], Pubkey | None]:
    """One ``ConfigAction``: (name, fields, the key it hands power to, if any)."""
    variant = reader.u8("config action")
    if variant >= len(CONFIG_ACTIONS):
        reader.fail(f"unknown config action {variant}")
    name = CONFIG_ACTIONS[variant]
    fields: dict[str, object]
    new_key: Pubkey | None = None
    if name == "add_member":
        fields = read_member(reader)
        key = fields["key"]
        new_key = key if isinstance(key, Pubkey) else None
    elif name == "remove_member":
        fields = {"old_member": reader.pubkey("old_member")}
    elif name == "change_threshold":
        fields = {"new_threshold": reader.u16("new_threshold")}
    elif name == "set_time_lock":
        fields = {"new_time_lock": reader.u32("new_time_lock")}
    elif name == "add_spending_limit":
        fields = read_spending_limit(reader)
    elif name == "remove_spending_limit":
        fields = {"spending_limit": reader.pubkey("spending_limit")}
    else:
        new_key = reader.option_pubkey("new_rent_collector")
        fields = {"new_rent_collector": new_key}
    return name, fields, new_key


def read_config_actions(reader: BorshReader) -> tuple[tuple[str, dict[str, object], Pubkey | None], ...]:
    """Borsh ``Vec<ConfigAction>`` (each action takes at least its one-byte variant index)."""
    return tuple(read_config_action(reader) for _ in range(reader.count("actions", 1)))


def read_multisig_create_v2(reader: BorshReader) -> dict[str, object]:
    """``MultisigCreateArgsV2``."""
    config_authority = reader.option_pubkey("config_authority")
    threshold = reader.u16("threshold")
    members = tuple(read_member(reader) for _ in range(reader.count("members", _PUBKEY + 1)))
    return {
        "config_authority": config_authority,
        "threshold": threshold,
        "members": members,
        "time_lock": reader.u32("time_lock"),
        "rent_collector": reader.option_pubkey("rent_collector"),
        "memo": reader.option_string("memo"),
    }


def read_multisig_config_args(reader: BorshReader, name: str) -> tuple[dict[str, object], Pubkey | None]:
    """Arguments of the config-authority instructions (``multisig_add_member`` ... ``multisig_set_rent_collector``):
    (fields, the key the change hands power to, if any). Each ends with ``memo: Option<String>``."""
    new_key: Pubkey | None = None
    fields: dict[str, object]
    if name == "multisig_add_member":
        member = read_member(reader)
        key = member["key"]
        new_key = key if isinstance(key, Pubkey) else None
        fields = {"new_member": member}
    elif name == "multisig_remove_member":
        fields = {"old_member": reader.pubkey("old_member")}
    elif name == "multisig_change_threshold":
        fields = {"new_threshold": reader.u16("new_threshold")}
    elif name == "multisig_set_time_lock":
        fields = {"time_lock": reader.u32("time_lock")}
    elif name == "multisig_set_config_authority":
        new_key = reader.pubkey("config_authority")
        fields = {"config_authority": new_key}
    elif name == "multisig_set_rent_collector":
        new_key = reader.option_pubkey("rent_collector")
        fields = {"rent_collector": new_key}
    elif name == "multisig_add_spending_limit":
        fields = read_spending_limit(reader)
    else:  # multisig_remove_spending_limit: only the memo
        fields = {}
    fields["memo"] = reader.option_string("memo")
    return fields, new_key
