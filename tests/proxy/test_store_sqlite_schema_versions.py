"""The SQLite schema cannot change without its version: `sqlite_schema.SCHEMA`'s text is pinned, per version, by a
checked-in SHA-256. Commit efb3e9c changed the outbox heads (``paused``, ``ready``, the index on ``ready``) after
version 10 had been merged (1a7850b) without a new number, so a database of the first version 10 opened without a
migration and every webhook claim then failed ("no such column: ready"); this test would have refused that commit.

Changing ``SCHEMA``: bump ``SCHEMA_VERSION``, migrate the older versions (`SqliteBase.__init__`), and add the new
version's hash here. Never edit an entry: a database of that version exists somewhere with that text's tables.
"""

from __future__ import annotations

import hashlib

from parent_proxy.store.sqlite_schema import SCHEMA, SCHEMA_VERSION

SCHEMA_SHA256 = {
    # Versions 1 to 9: the text at the commit that set each one (1 5f58f86, 2 053e7c1, 3 7dcd4d1, 4 b9add20,
    # 5 563a684, 6 b5e8962, 7 bd6c6e9, 8 bf451ee, 9 7d59f00).
    1: "b279781e63050cc3d91c0bc5d57d06afdf504418637f7e414a9b855c4d33b192",
    2: "a3e27e5bc2e974371441963fcdbaaba920f310dc3fdf52c315c8c15eac506246",
    3: "574b0a33413e3b723f314fd6a8810a762e12e54691ea8af5244069c32ae61675",
    4: "6d146873dde3d97bfc02c6b9f14952393289dbca9d7b28395352409b6eaacec4",
    5: "e4c29fa917595b08f83d844d92941fb8a74da12ee4274b53a90658e80c38f37a",
    6: "dc79ffa16c1e0f80ae85f34194c62827d21d0026010db4e58d15bf973b820898",
    7: "146ed638eb60199a6cffdf92f48dd50882db52ed5cd5fa21682014f6361b30bd",
    8: "1724c806696688fe13e098f503619f04531d0d28991521f6aa8c0a3fd6010448",
    9: "9a185e4d63ac914c818a4be3abb0309e0cc957db7f324dd76020600bc21b1e3d",
    # 10 as of efb3e9c, with the wallets' pause (`FIRST_VERSION_10_SHA256`: the text merged first as 10).
    10: "893db28142debce5fd756b575012ef7f62a3de44b559e5fc5b7169cdcf43d62b",
    11: "9b4d0bd0dcd3d2087d0972265e2e36b6fbd1e1ed22ef665ca38ab27e7729ae7d",  # + approvals.signing
    12: "3a212f3e7bd3705495a20c938eb54adeaff472a72cbd14b94d94c232c0b7b110",  # + approvals.message_hash
    13: "4c649d5cbd7ead512360ad1ada307684ef1db5b57861f3806ea8cf1ea9d88e85",  # + approvals.signed_answer
}
FIRST_VERSION_10_SHA256 = "b6a83561e4951803e418cad603f648232b0a8a4ee289cb8548976f0b1a0f6dc6"
"""Version 10 as merged in 1a7850b (heads without the pause); `sqlite_outbox_heads.add_pause` brings it up."""


def schema_sha256() -> str:
    return hashlib.sha256("\n".join(SCHEMA).encode()).hexdigest()


def test_the_schema_text_is_the_one_of_its_version() -> None:
    assert schema_sha256() == SCHEMA_SHA256[SCHEMA_VERSION], (
        "sqlite_schema.SCHEMA changed: bump SCHEMA_VERSION, migrate older databases and add the new hash here"
    )


def test_every_version_has_its_own_text() -> None:
    assert sorted(SCHEMA_SHA256) == list(range(1, SCHEMA_VERSION + 1))
    texts = [*SCHEMA_SHA256.values(), FIRST_VERSION_10_SHA256]
    assert len(set(texts)) == len(texts)
