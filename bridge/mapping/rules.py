"""Mapping rules: ``target field -> rule`` compiled at config load, applied per lead.

A rule takes one source (``source`` path, ``value``, ``template``, ``first_of`` or
``join``; a plain string is a source path), then runs, in this order::

    source -> transform steps -> map lookup -> default (when empty) -> required check

Empty results (None, blank text, [] or {}) are left out of the record, so a
connector never receives empty fields. ``apply`` raises only MappingError: a
lead that cannot be mapped is a permanent failure for that destination alone,
and replaying it after the mapping is fixed repairs it.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ConfigError, MappingError
from bridge.mapping.paths import Path, is_empty, parse_path
from bridge.mapping.transforms import Step, compile_step, text

SOURCES = ("source", "value", "template", "first_of", "join")
MODIFIERS = ("transform", "map", "default", "required", "separator")
TEMPLATE_MAX_CHARS = 10_000

_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_UNSET: Any = object()


@dataclass
class MappedRecord:
    record: dict[str, Any]
    # `data` keys no rule read, in lead order (schema drift metrics, collect_into).
    unmapped_keys: list[str] = field(default_factory=list)


def render(value: Any) -> str:
    """A value as text inside a template or a collected ``key: value`` line."""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text(value, "template")


@dataclass
class _Template:
    parts: list[str | Path]

    def __call__(self, lead: Mapping[str, Any]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part.get(lead)
                out.append("" if is_empty(value) else render(value))
        return "".join(out).strip()


def _compile_template(raw: Any) -> tuple[_Template, list[Path]]:
    if not isinstance(raw, str):
        raise ValueError("expected text with {data.field} placeholders")
    if len(raw) > TEMPLATE_MAX_CHARS:
        raise ValueError(f"template is longer than {TEMPLATE_MAX_CHARS} characters")
    parts: list[str | Path] = []
    paths: list[Path] = []
    pos = 0
    for match in _PLACEHOLDER_RE.finditer(raw):
        parts.append(raw[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif match.group(1) is None:
            raise ValueError(
                f"unmatched {token!r} at character {match.start()}; write {token * 2} "
                "for a literal brace"
            )
        else:
            try:
                path = parse_path(match.group(1).strip())
            except ValueError as exc:
                raise ValueError(f"placeholder {token}: {exc}") from None
            parts.append(path)
            paths.append(path)
    parts.append(raw[pos:])
    return _Template([p for p in parts if p != ""]), paths


def _lookup_key(value: Any) -> str | None:
    """Map keys match case-insensitively, ignoring surrounding blanks; 5 matches "5"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value).strip().casefold()
    return None


@dataclass
class _Rule:
    target: str
    origin: str  # what the rule reads, for error messages
    source: Callable[[Mapping[str, Any]], Any]
    paths: list[Path]
    steps: list[tuple[str, Step]] = field(default_factory=list)
    lookup: dict[str, Any] | None = None
    default: Any = _UNSET
    required: bool = False

    def evaluate(self, lead: Mapping[str, Any]) -> Any:
        value = self.source(lead)
        for name, step in self.steps:
            if is_empty(value):
                break
            try:
                value = step(value)
            except ValueError as exc:
                raise MappingError(
                    f"{exc} (transform {name} of {self.origin})", self.target
                ) from None
        if self.lookup is not None and not is_empty(value):
            key = _lookup_key(value)
            value = None if key is None else self.lookup.get(key)
        if is_empty(value) and self.default is not _UNSET:
            value = copy.deepcopy(self.default)
        if is_empty(value) and self.required:
            raise MappingError(
                f"required, but the lead has no value for it ({self.origin})", self.target
            )
        return value


class CompiledMapping:
    """A destination's compiled rules; ``apply`` maps one stored lead."""

    def __init__(self, rules: list[_Rule] | None, collect_into: str | None) -> None:
        self._rules = rules
        self._collect_into = collect_into if rules is not None else None
        self._reads_all = rules is None or any(p.reads_all_data for r in rules for p in r.paths)
        self._read_keys = {k for r in rules or [] for p in r.paths if (k := p.data_key)}
        targets = [r.target for r in rules or []]
        if self._collect_into and self._collect_into not in targets:
            targets.append(self._collect_into)
        self.targets: tuple[str, ...] = tuple(targets)

    @property
    def passthrough(self) -> bool:
        return self._rules is None

    def reads(self, key: str) -> bool:
        """Does this mapping read the provider's ``data.<key>`` (schema drift)?"""
        return self._reads_all or key in self._read_keys

    def apply(self, lead: Mapping[str, Any]) -> MappedRecord:
        if self._rules is None:
            return MappedRecord(copy.deepcopy(dict(lead)), [])
        record: dict[str, Any] = {}
        for rule in self._rules:
            try:
                value = rule.evaluate(lead)
            except MappingError:
                raise
            except Exception as exc:  # the safety net: odd data must never crash delivery
                raise MappingError(
                    f"unexpected {type(exc).__name__} while mapping {rule.origin}", rule.target
                ) from exc
            if not is_empty(value):
                record[rule.target] = value
        unmapped = self._unmapped_keys(lead)
        if self._collect_into:
            self._collect(lead, unmapped, record)
        return MappedRecord(record, unmapped)

    def _unmapped_keys(self, lead: Mapping[str, Any]) -> list[str]:
        data = lead.get("data") if isinstance(lead, Mapping) else None
        if self._reads_all or not isinstance(data, Mapping):
            return []
        return [str(k) for k in data if k not in self._read_keys]

    def _collect(self, lead: Mapping[str, Any], keys: list[str], record: dict[str, Any]) -> None:
        data = lead["data"] if keys else {}
        lines = [f"{k}: {render(data[k])}" for k in keys if not is_empty(data[k])]
        if not lines:
            return
        assert self._collect_into is not None
        existing = record.get(self._collect_into)
        block = "\n".join(lines)
        record[self._collect_into] = f"{render(existing)}\n\n{block}" if existing else block


# --------------------------------------------------------------------------- compile


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


def _compile_paths(raw: Any, where: str, problems: _Problems, kind: str) -> list[Path]:
    if not isinstance(raw, list) or not raw:
        problems.add(
            where, f"{kind} needs a non-empty list of source paths, e.g. [data.phone, data.mobile]"
        )
        return []
    paths = []
    for i, item in enumerate(raw):
        try:
            paths.append(parse_path(item))
        except ValueError as exc:
            problems.add(f"{where}[{i}]", str(exc))
    return paths


def _source(
    kind: str, raw: Any, spec: Mapping[str, Any], where: str, problems: _Problems
) -> tuple[Callable[[Mapping[str, Any]], Any], list[Path], str] | None:
    if kind == "source":
        try:
            path = parse_path(raw)
        except ValueError as exc:
            problems.add(where, str(exc))
            return None
        return path.get, [path], path.text
    if kind == "value":
        constant = raw
        return (lambda _lead: copy.deepcopy(constant)), [], "a constant value"
    if kind == "template":
        try:
            template, paths = _compile_template(raw)
        except ValueError as exc:
            problems.add(where, str(exc))
            return None
        return template, paths, "its template"
    paths = _compile_paths(raw, where, problems, kind)
    if not paths:
        return None
    names = ", ".join(p.text for p in paths)
    if kind == "first_of":

        def first_of(lead: Mapping[str, Any]) -> Any:
            return next((v for p in paths if not is_empty(v := p.get(lead))), None)

        return first_of, paths, f"first of {names}"
    separator = spec.get("separator", ", ")
    if not isinstance(separator, str):
        problems.add(where.rsplit(".", 1)[0] + ".separator", "expected text, e.g. ', '")
        separator = ", "

    def joined(lead: Mapping[str, Any]) -> str:
        values = (p.get(lead) for p in paths)
        return separator.join(render(v).strip() for v in values if not is_empty(v))

    return joined, paths, f"join of {names}"


def _compile_rule(target: str, spec: Any, where: str, problems: _Problems) -> _Rule | None:
    shorthand = isinstance(spec, str)
    if shorthand:
        spec = {"source": spec}
    if not isinstance(spec, Mapping):
        problems.add(
            where,
            "expected a source path (data.email) or a rule mapping with one of: "
            + ", ".join(SOURCES),
        )
        return None
    count = len(problems.items)
    _check_keys(spec, where, problems)
    kinds = [k for k in SOURCES if k in spec]
    if len(kinds) != 1:
        problems.add(
            where,
            ("a rule has exactly one source, found " + " and ".join(kinds))
            if kinds
            else "a rule needs a source: one of " + ", ".join(SOURCES),
        )
        return None
    if "separator" in spec and kinds[0] != "join":
        problems.add(f"{where}.separator", "separator only applies to join")
    source_where = where if shorthand else f"{where}.{kinds[0]}"
    found = _source(kinds[0], spec[kinds[0]], spec, source_where, problems)
    rule = _Rule(target, source=found[0], paths=found[1], origin=found[2]) if found else None
    steps = _steps(spec.get("transform", []), where, problems)
    lookup = _lookup(spec["map"], f"{where}.map", problems) if "map" in spec else None
    required = spec.get("required", False)
    if not isinstance(required, bool):
        problems.add(f"{where}.required", "expected true or false")
    if rule is None or len(problems.items) > count:
        return None
    rule.steps = steps
    rule.lookup = lookup
    rule.default = spec.get("default", _UNSET)
    rule.required = required is True
    return rule


def _check_keys(spec: Mapping[str, Any], where: str, problems: _Problems) -> None:
    for key in spec:
        if key not in SOURCES and key not in MODIFIERS:
            close = difflib.get_close_matches(str(key), SOURCES + MODIFIERS, n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "expected: " + ", ".join(SOURCES + MODIFIERS)
            )
            problems.add(f"{where}.{key}", f"unknown rule key; {hint}")


def _steps(raw: Any, where: str, problems: _Problems) -> list[tuple[str, Step]]:
    """``transform:``, one step or a list of them."""
    steps = []
    for i, step_spec in enumerate(raw if isinstance(raw, list) else [raw]):
        try:
            steps.append(compile_step(step_spec))
        except ValueError as exc:
            problems.add(f"{where}.transform[{i}]", str(exc))
    return steps


def _lookup(table: Any, where: str, problems: _Problems) -> dict[str, Any] | None:
    """``map: {from: to}``, its keys as :func:`_lookup_key` matches them."""
    if not isinstance(table, Mapping) or not table:
        problems.add(where, "expected a non-empty mapping {from: to}")
        return None
    lookup: dict[str, Any] = {}
    for key, mapped in table.items():
        norm = _lookup_key(key)
        if norm is None:
            problems.add(where, f"map keys are text or numbers, got {key!r}")
        elif norm in lookup:
            problems.add(f"{where}.{key}", "duplicate key (keys match ignoring case)")
        else:
            lookup[norm] = mapped
    return lookup


def compile_mapping(
    rules: Mapping[str, Any] | None,
    *,
    unmapped: str | Mapping[str, Any],
    path: str,
    default: Mapping[str, Any] | None = None,
) -> CompiledMapping:
    """Compile ``mapping:`` (or the connector's default); ConfigError lists every problem."""
    problems = _Problems()
    collect_into: str | None = None
    if isinstance(unmapped, Mapping) and isinstance(unmapped.get("collect_into"), str):
        collect_into = unmapped["collect_into"] or None
    elif unmapped != "ignore":
        base = path.rsplit(".", 1)[0] if "." in path else path
        problems.add(f"{base}.unmapped", "expected 'ignore' or {collect_into: <target field>}")

    where = path
    if rules is None:
        rules = default
        where = f"{path} (the connector's default mapping)"
    if rules is None:
        if problems.items:
            raise ConfigError(problems.items)
        return CompiledMapping(None, None)
    if not isinstance(rules, Mapping):
        raise ConfigError([(where, "expected a mapping of target field -> rule")])
    if not rules:
        problems.add(where, "empty mapping; remove it to use the connector's default mapping")
    compiled: list[_Rule] = []
    for target, spec in rules.items():
        if not isinstance(target, str) or not target.strip():
            problems.add(where, f"target field names are non-empty text, got {target!r}")
            continue
        rule = _compile_rule(target, spec, f"{where}.{target}", problems)
        if rule is not None:
            compiled.append(rule)
    if problems.items:
        raise ConfigError(problems.items)
    return CompiledMapping(compiled, collect_into)
