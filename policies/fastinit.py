"""A faster ``__init__`` for the frozen, slotted dataclasses built on every signing request.

A frozen dataclass stores each field through ``object.__setattr__(self, name, value)`` (its own ``__setattr__``
refuses), which costs about 60 ns per field: some 5 us per request over the decoded transaction, the decision and
the protocol messages. :func:`fast_init` replaces that generated ``__init__`` by one with the same parameters
(names, order, defaults) that stores through the slot descriptors instead, about half the cost. The class stays
a frozen dataclass: assignment after construction is still refused, and ``eq``, ``hash``, ``repr`` and
``dataclasses.replace`` are unchanged.

Only the plain case is accepted (frozen, slots, every field an ``__init__`` parameter with at most a plain
default, no ``__post_init__``, no keyword-only fields); anything else is refused at import with ``TypeError``.
"""

from __future__ import annotations

import dataclasses
from types import MemberDescriptorType
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give ``cls`` (a frozen, slotted dataclass) an equivalent ``__init__`` that sets its slots directly."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init needs a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: fast_init does not run __post_init__")
    namespace: dict[str, Any] = {}
    parameters, body = [], []
    for position, spec in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not spec.init or spec.kw_only or spec.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{spec.name}: fast_init takes plain fields only")
        slot = cls.__dict__.get(spec.name)
        if not isinstance(slot, MemberDescriptorType):
            raise TypeError(f"{cls.__name__}.{spec.name}: fast_init needs the field's slot on the class itself")
        setter = f"_set_{position}"
        namespace[setter] = slot.__set__
        if spec.default is dataclasses.MISSING:
            parameters.append(spec.name)
        else:
            namespace[f"_default_{position}"] = spec.default
            parameters.append(f"{spec.name}=_default_{position}")
        body.append(f"    {setter}(self, {spec.name})")
    source = f"def __init__(self, {', '.join(parameters)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # noqa: S102 - generated from the class's own field names, as dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
