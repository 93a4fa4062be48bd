"""The smallest environment the proxy's settings accept: SQLite state, a Unix socket, one owner, LiteSVM (which has
no Squads program, so the multisig requirement is off: the settings refuse the pair otherwise), one public origin."""

from __future__ import annotations

OWNER = "FHEqRxoKaHqjfmpq5sDHwcTRetKh7uJny2UVN4pcd24J"
BASE = {
    "WAIAAS_STATE": "sqlite:/var/lib/waiaas/state.db",
    "WAIAAS_ENCLAVE": "unix:/run/waiaas/enclave.sock",
    "WAIAAS_OWNER_KEYS": OWNER,
    "WAIAAS_CHAIN": "litesvm",
    "WAIAAS_REQUIRE_MULTISIG": "false",
    "WAIAAS_PUBLIC_ORIGINS": "https://wallets.example.com",
}
