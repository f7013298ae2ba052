"""Routing filters (``when:``): does this lead go to this destination?

A condition is either a test of one field::

    {field: data.organization_country, in: [United States, Canada]}

with one or more of ``equals``, ``not_equals``, ``in``, ``not_in``, ``regex``,
``exists``, ``empty`` (several tests in one condition must all hold), or a
combination: ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``. A list at the
top is ``all``. Text compares ignoring case and surrounding blanks, and a number
equals its text (``5`` equals ``"5"``). When the field holds a list, a test
matches if any item matches.

``matches`` never raises: odd data simply does not match, and the engine then
reports the lead as unrouted for that destination instead of dropping it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from bridge.errors import ConfigError
from bridge.mapping.paths import Path, is_empty, parse_path

Test = Callable[[Mapping[str, Any]], bool]

OPERATORS = ("equals", "not_equals", "in", "not_in", "regex", "exists", "empty")
COMBINATORS = ("all", "any", "not")


class LeadFilter:
    def __init__(self, test: Test) -> None:
        self._test = test

    def matches(self, lead: Mapping[str, Any]) -> bool:
        try:
            return self._test(lead)
        except Exception:  # the safety net: a filter decides, it never crashes delivery
            return False


def _norm(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value).strip().casefold()
    return None


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _operator(
    op: str, arg: Any, path: Path, where: str, problems: list[tuple[str, str]]
) -> Test | None:
    if op in ("equals", "not_equals"):
        wanted = _norm(arg)
        if wanted is None:
            problems.append((where, "expected text, a number or a boolean"))
            return None

        def equals(lead: Mapping[str, Any]) -> bool:
            return any(_norm(v) == wanted for v in _items(path.get(lead)))

        return equals if op == "equals" else (lambda lead: not equals(lead))
    if op in ("in", "not_in"):
        choices = [_norm(a) for a in arg] if isinstance(arg, list) and arg else [None]
        if None in choices:
            problems.append((where, "expected a non-empty list of texts or numbers"))
            return None
        allowed = set(choices)

        def contained(lead: Mapping[str, Any]) -> bool:
            return any(_norm(v) in allowed for v in _items(path.get(lead)))

        return contained if op == "in" else (lambda lead: not contained(lead))
    if op == "regex":
        if not isinstance(arg, str):
            problems.append((where, "expected a regular expression as text"))
            return None
        try:
            pattern = re.compile(arg)
        except re.error as exc:
            problems.append((where, f"invalid regular expression: {exc}"))
            return None

        def search(lead: Mapping[str, Any]) -> bool:
            return any(
                pattern.search(str(v)) is not None
                for v in _items(path.get(lead))
                if isinstance(v, str | int | float) and not isinstance(v, bool)
            )

        return search
    if not isinstance(arg, bool):
        problems.append((where, "expected true or false"))
        return None
    if op == "exists":
        return lambda lead: (path.get(lead) is not None) is arg
    return lambda lead: is_empty(path.get(lead)) is arg


def _compile(node: Any, where: str, problems: list[tuple[str, str]]) -> Test | None:
    if isinstance(node, list):
        node = {"all": node}
    if not isinstance(node, Mapping):
        problems.append((where, "expected a condition such as {field: data.email, exists: true}"))
        return None
    combinators = [k for k in node if k in COMBINATORS]
    if combinators:
        if len(node) != 1:
            problems.append((where, f"{combinators[0]!r} must be the only key of its condition"))
            return None
        key, inner = next(iter(node.items()))
        return _combination(key, inner, where, problems)
    return _field_condition(node, where, problems)


def _combination(key: str, inner: Any, where: str, problems: list[tuple[str, str]]) -> Test | None:
    """``all:`` / ``any:`` a list of conditions, or ``not:`` one."""
    if key == "not":
        test = _compile(inner, f"{where}.not", problems)
        return None if test is None else (lambda lead: not test(lead))
    if not isinstance(inner, list) or not inner:
        problems.append((f"{where}.{key}", "expected a non-empty list of conditions"))
        return None
    tests = [_compile(c, f"{where}.{key}[{i}]", problems) for i, c in enumerate(inner)]
    if any(t is None for t in tests):
        return None
    compiled = [t for t in tests if t is not None]
    if key == "all":
        return lambda lead: all(t(lead) for t in compiled)
    return lambda lead: any(t(lead) for t in compiled)


def _field_condition(
    node: Mapping[str, Any], where: str, problems: list[tuple[str, str]]
) -> Test | None:
    """``{field: ..., <test>: ...}``: every test of the condition must hold."""
    count = len(problems)
    path = _field(node, where, problems)
    ops = [k for k in node if k != "field"]
    if not ops and path is not None:
        problems.append((where, "a condition needs a test: one of " + ", ".join(OPERATORS)))
    tests = []
    for op in ops:
        if op not in OPERATORS:
            close = difflib.get_close_matches(str(op), OPERATORS + COMBINATORS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "expected: " + ", ".join(OPERATORS)
            problems.append((f"{where}.{op}", f"unknown test; {hint}"))
        elif path is not None:
            tests.append(_operator(op, node[op], path, f"{where}.{op}", problems))
    if len(problems) > count:
        return None
    compiled_tests = [t for t in tests if t is not None]
    return lambda lead: all(t(lead) for t in compiled_tests)


def _field(node: Mapping[str, Any], where: str, problems: list[tuple[str, str]]) -> Path | None:
    if "field" not in node:
        problems.append((where, "a condition needs 'field' (or all:, any:, not:)"))
        return None
    try:
        return parse_path(node["field"])
    except ValueError as exc:
        problems.append((f"{where}.field", str(exc)))
        return None


def compile_filter(when: Any, *, path: str) -> LeadFilter | None:
    """``when:`` -> a filter (None when there is none); ConfigError lists every problem."""
    if when is None:
        return None
    problems: list[tuple[str, str]] = []
    test = _compile(when, path, problems)
    if problems or test is None:
        raise ConfigError(problems or [(path, "invalid condition")])
    return LeadFilter(test)
