"""Root of the test tree: pytest rewrites the asserts of the helper modules too (not only of test modules), so a
failing assert inside a shared helper shows its values."""

import pytest
from hypothesis import settings

# Hypothesis fails an example that runs past its deadline (200 ms by default): on a busy 2-core CI machine a
# correct example can (a webhook URL check took 284 ms). Speed is measured by the benchmark scripts, never here.
settings.register_profile("waiaas", deadline=None)
settings.load_profile("waiaas")

pytest.register_assert_rewrite(
    "tests.support", "tests.fakes", "tests.policies", "tests.enclave", "tests.proxy", "tests.selfhost", "tests.cdk"
)


import tests.fakes.moto_serial  # noqa: E402, F401  (moto answers one request at a time, see the module)
