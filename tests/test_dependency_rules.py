"""DESIGN.md section 2's dependency rules, checked on every production module's imports (function-level ones too):
``policies`` imports neither service; ``enclave_app`` never imports ``parent_proxy``; ``parent_proxy`` imports only
the client side of the enclave's protocol (the messages and their framing, the transports, the client, receipt
and attestation verification, the protocol's errors), never the enclave's signer, state, keys or server, except
its benchmark, which runs the enclave in process by definition; ``cdk`` imports only shared constants; nothing
imports ``tests``. And in ``tests`` itself, no test module imports another test module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policies", "enclave_app", "parent_proxy", "cdk", "selfhost")

ENCLAVE_CLIENT_SIDE = frozenset({
    "enclave_app.protocol", "enclave_app.protocol_wire", "enclave_app.framing", "enclave_app.transport",
    "enclave_app.client", "enclave_app.receipts", "enclave_app.order_receipts", "enclave_app.attestation",
    "enclave_app.errors",
    "enclave_app.safe_cbor", "enclave_app.constants",
})  # fmt: skip
"""What of the enclave a parent may import: its API as a client sees it."""


def imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) for every absolute import in ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((str(path.relative_to(ROOT)), node.lineno, node.module))
    return found


def top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def test_every_package_is_seen() -> None:
    for package in PACKAGES:
        assert imports(package), package  # an empty walk would make every rule below pass


@pytest.mark.parametrize("package", PACKAGES)
def test_no_production_module_imports_tests(package: str) -> None:
    assert [i for i in imports(package) if top(i[2]) == "tests"] == []


def test_policies_imports_neither_service() -> None:
    assert [i for i in imports("policies") if top(i[2]) in ("enclave_app", "parent_proxy", "cdk", "selfhost")] == []


def test_the_enclave_never_imports_the_parent() -> None:
    assert [i for i in imports("enclave_app") if top(i[2]) in ("parent_proxy", "cdk", "selfhost")] == []


def test_the_parent_imports_only_the_client_side_of_the_enclave() -> None:
    outside = [
        i for i in imports("parent_proxy")
        if top(i[2]) == "enclave_app" and i[2] not in ENCLAVE_CLIENT_SIDE and i[0] != "parent_proxy/bench.py"
    ]  # fmt: skip
    assert outside == []
    assert [i for i in imports("parent_proxy") if top(i[2]) in ("cdk", "selfhost")] == []


def test_cdk_imports_only_shared_constants() -> None:
    runtime = [i for i in imports("cdk") if top(i[2]) in ("enclave_app", "parent_proxy", "policies", "selfhost")]
    assert runtime and all(module == "enclave_app.constants" for _, _, module in runtime), runtime


def test_test_modules_import_no_other_test_module() -> None:
    """Shared test helpers live in support modules (tests/support/, or a package's non-``test_`` modules): importing
    a test module runs its collection-time code and re-exports its tests into the importer."""
    found = [i for i in imports("tests") if i[2].rpartition(".")[2].startswith("test_")]
    assert found == []
