"""A boto3 client whose named methods run hooks instead, for faults moto does not produce by itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Hook = Callable[..., Any]


@dataclass
class Hooked:
    """The boto3 client, with ``hooks[method](real_method, **kwargs)`` run instead of the named methods."""

    inner: Any
    hooks: dict[str, Hook] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        hook = self.hooks.get(name)
        return real if hook is None else (lambda **kwargs: hook(real, **kwargs))
