"""Root of the test tree: pytest rewrites the asserts of the helper modules too (not only of test modules), so a
failing assert inside a shared helper shows its values."""

import pytest

pytest.register_assert_rewrite(
    "tests.support", "tests.fakes", "tests.policies", "tests.enclave", "tests.proxy", "tests.selfhost", "tests.cdk"
)


import tests.fakes.moto_serial  # noqa: E402, F401  (moto answers one request at a time, see the module)
