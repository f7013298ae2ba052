"""YAML -> ``${VAR}`` expansion -> typed models (:mod:`bridge.config`). Every
error names its key path.

Value syntax inside any string of the YAML file:

* ``${VAR}``            the environment variable VAR (an error when unset); when VAR is
                        unset but ``VAR_FILE`` is set, the content of that file
                        (the Docker/Kubernetes secrets convention);
* ``${VAR:-default}``   VAR, or ``default`` when VAR is unset or empty;
* ``${file:/path}``     the content of a file, trailing newline removed;
* ``$${``               a literal ``${``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from bridge.config import Config
from bridge.errors import ConfigError

ENV_CONFIG = "LEAD_BRIDGE_CONFIG"


_VAR_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("destinations", 0, "name")`` -> ``destinations[0].name``. A key that
    could not be read back from a dotted path (empty, or holding ``.``, ``[``,
    ``]``, quotes or surrounding space) is written quoted: ``mapping["a.b"]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = str(part)
        if not key or key != key.strip() or any(c in key for c in '.[]"') or not key.isprintable():
            out += f"[{json.dumps(key, ensure_ascii=False)}]"
        else:
            out += f".{key}" if out else key
    return out


class _Expander:
    def __init__(self, env: dict[str, str], lenient: bool) -> None:
        self.env = env
        self.lenient = lenient
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def _problem(self, path: str, message: str) -> str:
        (self.warnings if self.lenient else self.problems).append((path, message))
        return ""

    def _lookup(self, expr: str, path: str) -> str:
        if expr.startswith("file:"):
            return self._read_file(expr[5:], path)
        name, sep, default = expr.partition(":-")
        if not _NAME_RE.match(name):
            return self._problem(path, f"'${{{expr}}}' is not a valid variable reference")
        value = self.env.get(name)
        if value is None and f"{name}_FILE" in self.env:
            return self._read_file(self.env[f"{name}_FILE"], path)
        if sep:
            return value if value else default
        if value is None:
            return self._problem(path, f"environment variable {name} is not set")
        return value

    def _read_file(self, filename: str, path: str) -> str:
        try:
            return Path(filename).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            return self._problem(path, f"cannot read secret file {filename}: {exc.strerror}")

    def expand(self, node: Any, loc: tuple[Any, ...] = ()) -> Any:
        if isinstance(node, dict):
            return {k: self.expand(v, (*loc, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [self.expand(v, (*loc, i)) for i, v in enumerate(node)]
        if isinstance(node, str) and "$" in node:
            path = format_path(loc)

            def sub(match: re.Match[str]) -> str:
                if match.group(0) == "$${":
                    return "${"
                return self._lookup(match.group(1), path)

            return _VAR_RE.sub(sub, node)
        return node


def expand_env(
    tree: Any, env: dict[str, str] | None = None, *, lenient: bool = False
) -> tuple[Any, list[tuple[str, str]]]:
    """Expand ``${...}`` everywhere. Returns the tree and warnings (lenient mode)."""
    result, problems, warnings = _expand_collecting(tree, env, lenient)
    if problems:
        raise ConfigError(problems)
    return result, warnings


def _expand_collecting(
    tree: Any, env: dict[str, str] | None, lenient: bool
) -> tuple[Any, list[tuple[str, str]], list[tuple[str, str]]]:
    """Expand, returning (tree, problems, warnings); an unset variable becomes ''."""
    expander = _Expander(dict(os.environ) if env is None else env, lenient)
    result = expander.expand(tree)
    return result, expander.problems, expander.warnings


# --------------------------------------------------------------------------- errors


def _unwrap(annotation: Any) -> Iterator[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _unwrap(get_args(annotation)[0])
    elif origin in (Union, getattr(__import__("types"), "UnionType", Union)) or origin is list:
        for arg in get_args(annotation):
            yield from _unwrap(arg)
    else:
        yield annotation


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            # pydantic puts union member names in loc; skip them
            continue
        current = next(
            (
                a
                for a in _unwrap(field.annotation)
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return current


def describe_error(error: dict[str, Any], root: type[BaseModel]) -> tuple[str, str]:
    """One pydantic error as (key path, what is expected), with 'did you mean' hints."""
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        key = str(loc[-1])
        message = "unknown key"
        if parent is not None:
            known = list(parent.model_fields)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            message += (
                f"; did you mean '{close[0]}'?"
                if close
                else f"; expected one of: {', '.join(known)}"
            )
        return format_path(loc), message
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    if kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        message = message.replace("Input should be", "expected")
    else:
        message = message.replace("Input should be", "expected")
    return format_path(loc), message


def validate_config(tree: Any) -> Config:
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(
            "the configuration file must hold a mapping of keys (server:, auth:, ...)"
        )
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = [describe_error(dict(e), Config) for e in exc.errors()]
        raise ConfigError(problems) from None


def _parent(path: str) -> str:
    return re.sub(r"(\.[^.\[]+|\[\d+\])$", "", path)


def covered(path: str, by: list[str]) -> bool:
    """Is ``path`` the key of an unset variable (in ``by``), inside one, or the
    list/mapping holding one (whose validator saw the emptied value)?"""
    return any(path in (p, _parent(p)) or path.startswith((p + ".", p + "[")) for p in by)


def check_tree(
    tree: Any, env: dict[str, str] | None = None, *, lenient: bool = False
) -> tuple[Config | None, Any, list[tuple[str, str]], list[tuple[str, str]]]:
    """Expand and validate in one pass: every problem, not the first stage's only.

    Returns (config or None, the expanded tree, problems, warnings). A key whose
    variable is unset is reported once, as unset, not again as an invalid value.
    """
    expanded, problems, warnings = _expand_collecting(tree, env, lenient)
    if lenient and isinstance(expanded, dict):
        auth = expanded.get("auth")
        if isinstance(auth, dict):
            for key in ("header_secrets", "path_secrets"):
                if isinstance(auth.get(key), list):
                    auth[key] = [s for s in auth[key] if s != ""]
    unset = [path for path, _ in problems]
    try:
        config = validate_config(expanded)
    except ConfigError as exc:
        problems += [(p, m) for p, m in exc.problems if not covered(p, unset)]
        return None, expanded, problems, warnings
    return (None if problems else config), expanded, problems, warnings


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    check_shape(tree, path)
    return tree


MAX_DEPTH = 40


def check_shape(tree: Any, path: Path) -> None:
    """Refuse what the loader cannot walk: an alias that contains itself
    (``a: &x [*x]``) or nesting deeper than any real configuration."""
    stack: list[tuple[Any, tuple[Any, ...], frozenset[int]]] = [(tree, (), frozenset())]
    while stack:
        node, loc, ancestors = stack.pop()
        if not isinstance(node, dict | list):
            continue
        where = format_path(loc) or "the document"
        if id(node) in ancestors:
            raise ConfigError(f"{path}: {where}: a YAML alias refers to itself")
        if len(loc) > MAX_DEPTH:
            raise ConfigError(f"{path}: {where}: nested deeper than {MAX_DEPTH} levels")
        inner = ancestors | {id(node)}
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend((value, (*loc, key), inner) for key, value in items)


def resolve_config_path(path: str | Path | None) -> Path:
    if path is None:
        path = os.environ.get(ENV_CONFIG)
    if not path:
        raise ConfigError(
            f"no configuration file: pass --config PATH or set {ENV_CONFIG} "
            "(config.example.yaml documents every key)"
        )
    return Path(path)


def load_config(
    path: str | Path | None,
    *,
    env: dict[str, str] | None = None,
    lenient: bool = False,
) -> tuple[Config, list[tuple[str, str]]]:
    """Read, expand and validate. Returns the config and warnings (lenient mode only).

    ``lenient`` turns unset variables into warnings (used by `lead-bridge map`,
    which must work without the destinations' secrets).
    """
    config, _, problems, warnings = check_tree(
        read_yaml(resolve_config_path(path)), env, lenient=lenient
    )
    if problems or config is None:
        raise ConfigError(problems)
    return config, warnings
