"""Evaluator for the subset of the CloudWatch Logs JSON filter-pattern syntax that the monitoring stack writes
(test-only). Anything outside the subset is refused with `PatternError`, never guessed:

    pattern    := "{" expression "}"
    expression := term ( "&&" term )*  |  term ( "||" term )*     (mixing && and || needs parentheses)
    term       := "(" expression ")"  |  selector "=" string
    selector   := "$" ( "." name | "[" index "]" )+
    string     := '"' characters '"'    (no escapes; one trailing "*" means "starts with")

A comparison holds when the selected field exists, is a string, and equals the value (or starts with it, for a
trailing "*"). A missing field, an index past the end of an array or a non-string value does not match.

For unstructured log lines, one quoted term (`matches_text`):

    pattern    := '"' characters '"'    (no double quote or backslash inside)

which matches a log event that contains the characters between the quotes, exactly (case-sensitively).
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>&&|\|\|)
      | (?P<paren>[()])
      | (?P<selector>\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])+)
      | (?P<eq>=)
      | "(?P<string>[^"\\]*)"
    )""",
    re.VERBOSE,
)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")


class PatternError(ValueError):
    """The pattern is outside the supported subset (or malformed)."""


def _tokens(body: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(body.rstrip()):
        match = _TOKEN.match(body, position)
        if match is None:
            raise PatternError(f"unsupported syntax at {body[position : position + 20]!r}")
        kind = match.lastgroup
        if kind is None:  # pragma: no cover - every alternative is a named group
            raise PatternError("empty token")
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _select(event: Any, selector: str) -> Any:
    node = event
    for name, index in _STEP.findall(selector[1:]):
        if name:
            if not isinstance(node, dict) or name not in node:
                return None
            node = node[name]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                return None
            node = node[int(index)]
    return node


def _compare(actual: Any, expected: str) -> bool:
    if not isinstance(actual, str):
        return False
    if "*" in expected[:-1]:
        raise PatternError(f"wildcard other than a trailing * in {expected!r}")
    if expected.endswith("*"):
        return actual.startswith(expected[:-1])
    return actual == expected


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], event: Any) -> None:
        self.tokens = tokens
        self.position = 0
        self.event = event

    def _next(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise PatternError("unexpected end of pattern")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def expression(self) -> bool:
        values = [self.term()]
        operator = None
        while (token := self._peek()) is not None and token[0] == "op":
            self.position += 1
            if operator is not None and token[1] != operator:
                raise PatternError("&& and || mixed without parentheses")
            operator = token[1]
            values.append(self.term())
        return all(values) if operator in (None, "&&") else any(values)

    def term(self) -> bool:
        kind, value = self._next()
        if (kind, value) == ("paren", "("):
            result = self.expression()
            if self._next() != ("paren", ")"):
                raise PatternError("unbalanced parentheses")
            return result
        if kind != "selector":
            raise PatternError(f"expected a selector or '(', got {value!r}")
        if self._next()[0] != "eq":
            raise PatternError("only '=' comparisons are supported")
        string_kind, expected = self._next()
        if string_kind != "string":
            raise PatternError("only quoted string values are supported")
        return _compare(_select(self.event, value), expected)


def matches(pattern: str, event: dict[str, Any]) -> bool:
    """Whether a CloudWatch Logs JSON filter pattern (of the subset above) matches a JSON log event."""
    text = pattern.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise PatternError("not a JSON filter pattern")
    parser = _Parser(_tokens(text[1:-1]), event)
    result = parser.expression()
    if parser.position != len(parser.tokens):
        raise PatternError("trailing tokens")
    return result


_QUOTED_TERM = re.compile(r'"([^"\\]+)"')


def matches_text(pattern: str, message: str) -> bool:
    """Whether a CloudWatch Logs quoted-term filter pattern (above) matches an unstructured log event."""
    match = _QUOTED_TERM.fullmatch(pattern)
    if match is None:
        raise PatternError(f"not a single quoted term: {pattern!r}")
    return match.group(1) in message
