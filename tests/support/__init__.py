"""Shared test support (test-only: production code never imports it). Each module says what it provides; e.g.
`builders` serializes legacy/v0 transactions or hand-crafts malformed ones, and `chain` runs an embedded LiteSVM
chain with SOL, SPL Token and Token-2022 helpers."""
