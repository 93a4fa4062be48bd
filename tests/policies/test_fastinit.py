"""`policies.fastinit.fast_init`: the replaced ``__init__`` takes exactly the dataclass's parameters and builds an
equal, still frozen, object; anything but the plain case is refused."""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any

import pytest

from enclave_app import protocol_requests, protocol_responses, protocol_wire
from policies import decision, evaluate, fees, model
from policies.fastinit import fast_init

MODULES = (model, decision, fees, evaluate, protocol_requests, protocol_responses, protocol_wire)
FAST = [
    cls
    for module in MODULES
    for cls in vars(module).values()
    if isinstance(cls, type) and cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls)
    and "_set_0" in getattr(cls.__init__, "__globals__", {})  # the namespace fast_init builds
]  # fmt: skip


def _reference(cls: type[Any]) -> type[Any]:
    """The same fields as a dataclass with the generated ``__init__``."""
    specs = [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(f"Reference{cls.__name__}", specs, frozen=True, slots=True)


def test_the_sign_path_records_use_it() -> None:
    names = {cls.__name__ for cls in FAST}
    assert {"DecodedInstruction", "DecodedTransaction", "Outflow", "Decision", "Reason", "EvalContext",
            "SignTransactionRequest", "TransactionDecisionResponse", "SpentEntry"} <= names  # fmt: skip


@pytest.mark.parametrize("cls", FAST, ids=lambda cls: cls.__name__)
def test_same_parameters_as_the_dataclass(cls: type[Any]) -> None:
    expected = inspect.signature(_reference(cls).__init__)
    actual = inspect.signature(cls.__init__)
    assert [(p.name, p.kind, p.default) for p in actual.parameters.values()] == [
        (p.name, p.kind, p.default) for p in expected.parameters.values()
    ]


@pytest.mark.parametrize("cls", FAST, ids=lambda cls: cls.__name__)
def test_builds_the_same_frozen_object(cls: type) -> None:
    fields = dataclasses.fields(cls)
    values = [object() for _ in fields]
    positional = cls(*values)
    keywords = cls(**{f.name: v for f, v in zip(fields, values, strict=True)})
    for f, value in zip(fields, values, strict=True):
        assert getattr(positional, f.name) is value
        assert getattr(keywords, f.name) is value
    assert positional == keywords
    with pytest.raises(dataclasses.FrozenInstanceError, match=re.escape(f"cannot assign to field {fields[0].name!r}")):
        setattr(positional, fields[0].name, None)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    with pytest.raises(TypeError, match="missing"):
        cls(*values[: len(required) - 1])
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(*values, not_a_field=1)


def test_defaults_apply() -> None:
    program = model.Opaque("x")
    ix = model.DecodedInstruction(0, program, "p", "n", (), {}, ())  # type: ignore[arg-type]
    assert ix.inner == ()
    reason = decision.Reason(decision.Verdict.DENY, "rule", "message", seen=3)
    reference = _reference(decision.Reason)(decision.Verdict.DENY, "rule", "message", seen=3)
    assert dataclasses.astuple(reason) == dataclasses.astuple(reference)
    assert dataclasses.replace(reason, seen=4).seen == 4


def _plain(**kwargs: Any) -> type:
    return dataclasses.make_dataclass("Plain", [("a", int)], **kwargs)


def test_refuses_what_it_cannot_reproduce() -> None:
    with pytest.raises(TypeError, match="frozen dataclass with slots"):
        fast_init(_plain(frozen=True))
    with pytest.raises(TypeError, match="frozen dataclass with slots"):
        fast_init(_plain(slots=True))
    with pytest.raises(TypeError, match="frozen dataclass with slots"):
        fast_init(int)
    factory = dataclasses.make_dataclass(
        "Factory", [("a", list, dataclasses.field(default_factory=list))], frozen=True, slots=True
    )
    with pytest.raises(TypeError, match="plain fields only"):
        fast_init(factory)
    keyword = dataclasses.make_dataclass("Keyword", [("a", int)], frozen=True, slots=True, kw_only=True)
    with pytest.raises(TypeError, match="plain fields only"):
        fast_init(keyword)
    post = dataclasses.make_dataclass(
        "Post", [("a", int)], frozen=True, slots=True, namespace={"__post_init__": lambda self: None}
    )
    with pytest.raises(TypeError, match="__post_init__"):
        fast_init(post)
