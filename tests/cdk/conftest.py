"""One synthesized app shared by every CDK test (synthesis runs the jsii kernel and takes seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PCR0 = "62f8ec85d7b010a488983d35bbca77e7be2008be904d7f394a06873cb4537d27791d61e033450130ee8bfeb3a44d2651"
PCR8 = "17b1462f80fe2c528aab87acf58210ff0787879a4b8a7b430e94732d3bcb4ceef988e5b7bb400eca2e5d08439bac29c6"
"""The EXAMPLE measurements of cdk/example-pcrs.json (SHA-384 of fixed phrases, not of an image)."""


@pytest.fixture(scope="session")
def config() -> Any:
    from cdk.synth import example_config

    return example_config(pcr0=PCR0, pcr8=PCR8)


@pytest.fixture(scope="session")
def cdk_outdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="session")
def templates(config: Any, cdk_outdir: Path) -> dict[str, dict[str, Any]]:
    """Every stack's template, by stack name, from one synthesis with cdk-nag enabled."""
    from cdk.synth import synthesize

    return synthesize(config, cdk_outdir)


@pytest.fixture(scope="session")
def template_of(templates: dict[str, dict[str, Any]]) -> Any:
    from aws_cdk.assertions import Template

    cache: dict[str, Template] = {}

    def get(stack_name: str) -> Template:
        if stack_name not in cache:
            cache[stack_name] = Template.from_json(templates[stack_name])
        return cache[stack_name]

    return get
