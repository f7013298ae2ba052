"""Connector type -> class.

Three ways to name a connector in ``type:``:

* a built-in or installed plugin name (``salesforce``, ``slack``, ...) from the
  ``lead_bridge.connectors`` entry-point group — built-ins register there too;
* ``"module:ClassName"`` — a file ``module.py`` (or a package directory
  ``module/``) in one of ``plugins.paths`` (a container user mounts one Python
  file), else any importable module;
* built-ins also resolve without installed metadata (running from a checkout).

Nothing is imported until a destination uses it, so a service configured with
only Slack never imports simple-salesforce or hubspot-api-client.

Plugin files are loaded by their path under a private module name; the
directories never go on ``sys.path``, so a plugin file named like a real module
(``json.py``, ``uvloop.py``) cannot replace or stand in for it anywhere else.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from bridge.errors import ConfigError
from connectors.base import Connector

GROUP = "lead_bridge.connectors"

BUILTINS: dict[str, str] = {
    "salesforce": "connectors.salesforce:SalesforceConnector",
    "hubspot": "connectors.hubspot:HubSpotConnector",
    "slack": "connectors.slack:SlackConnector",
    "webhook": "connectors.webhook:WebhookConnector",
    "jsonl": "connectors.jsonl:JsonlConnector",
}

# The SDK each built-in needs, for `lead-bridge connectors` and install hints.
BUILTIN_REQUIREMENTS: dict[str, str | None] = {
    "salesforce": "simple_salesforce",
    "hubspot": "hubspot",
    "slack": None,
    "webhook": None,
    "jsonl": None,
}


# Import name -> pip requirement, where they differ (`pip install hubspot` is
# another project).
PIP_NAMES: dict[str, str] = {
    "simple_salesforce": "simple-salesforce",
    "hubspot": "hubspot-api-client",
}


# Import name -> the lead-bridge extra that installs it: a user installs
# `lead-bridge[salesforce]`, not the SDK by hand, so the versions stay the tested ones.
EXTRAS: dict[str, str] = {
    "simple_salesforce": "salesforce",
    "jwt": "salesforce",
    "hubspot": "hubspot",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
}


def pip_name(module: str) -> str:
    return PIP_NAMES.get(module, module)


def install_hint(module: str) -> str:
    """``pip install 'lead-bridge[salesforce]'`` for an SDK of ours, else the package."""
    extra = EXTRAS.get(module.split(".")[0])
    if extra is not None:
        return f"pip install 'lead-bridge[{extra}]'"
    return f"pip install {pip_name(module.split('.')[0])}"


def missing_dependency(type_name: str) -> str | None:
    """The SDK module a built-in type needs when it is not installed, else None."""
    module = BUILTIN_REQUIREMENTS.get(type_name)
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a None in sys.modules: blocked
        found = False
    return None if found else module


@dataclass(frozen=True)
class ConnectorInfo:
    name: str
    target: str  # "module:Class"
    package: str
    dependency: str | None
    installed: bool


def available() -> dict[str, str]:
    """Known type names -> ``module:Class`` (built-ins, then installed plugins)."""
    known = dict(BUILTINS)
    for ep in entry_points(group=GROUP):
        known.setdefault(ep.name, ep.value)
    return known


def describe() -> list[ConnectorInfo]:
    out = []
    packages = {ep.name: (ep.dist.name if ep.dist else "?") for ep in entry_points(group=GROUP)}
    for name, target in sorted(available().items()):
        dep = BUILTIN_REQUIREMENTS.get(name)
        installed = missing_dependency(name) is None
        package = "lead-bridge" if name in BUILTINS else packages.get(name, "?")
        out.append(ConnectorInfo(name, target, package, dep, installed))
    return out


# Directories searched for plugin files, in order (``plugins.paths``).
plugin_paths: list[Path] = []


def add_plugin_paths(paths: list[Path]) -> None:
    for path in paths:
        resolved = path.resolve()
        if resolved not in plugin_paths:
            plugin_paths.append(resolved)


def _load_plugin(module_name: str) -> ModuleType | None:
    """``module_name`` from the first plugin directory holding it, or None.

    A file ``top.py`` or a package ``top/__init__.py`` is executed as module
    ``_lead_bridge_plugin_<digest>_top``; a dotted name imports the rest of it
    from that package (relative imports work inside a plugin package).
    """
    top, _, rest = module_name.partition(".")
    if not top.isidentifier():
        return None
    for directory in plugin_paths:
        package = directory / top / "__init__.py"
        single = directory / f"{top}.py"
        if package.is_file():
            location, search = package, [str(package.parent)]
        elif single.is_file() and not rest:
            location, search = single, None
        else:
            continue
        digest = hashlib.sha256(str(location).encode()).hexdigest()[:12]
        private = f"_lead_bridge_plugin_{digest}_{top}"
        module = sys.modules.get(private)
        if module is None:
            spec = importlib.util.spec_from_file_location(
                private, location, submodule_search_locations=search
            )
            if spec is None or spec.loader is None:  # pragma: no cover - .py files have one
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[private] = module  # dataclasses and relative imports look it up
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[private]
                raise
        if not rest:
            return module
        try:
            return importlib.import_module(f"{private}.{rest}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{private}.{rest}":
                missing = f"No module named {module_name!r}"
                raise ModuleNotFoundError(missing, name=module_name) from None
            raise
    return None


def _import(target: str, key_path: str) -> type[Connector]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected 'module:ClassName', got {target!r}", key_path)
    try:
        module = _load_plugin(module_name) or importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = ""
        if exc.name and exc.name != module_name:
            hint = f"; install the missing dependency: {install_hint(exc.name)}"
        raise ConfigError(
            f"cannot import connector module {module_name!r}: {exc}{hint}", key_path
        ) from None
    except Exception as exc:  # a plugin file with a bug must not crash with a traceback
        raise ConfigError(
            f"importing connector module {module_name!r} failed: {type(exc).__name__}: {exc}",
            key_path,
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}", key_path)
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(
            f"{target!r} is not a connector class (subclass connectors.base.Connector)", key_path
        )
    return cls


def resolve(type_name: str, key_path: str = "type") -> type[Connector]:
    """The connector class for a ``type:`` value; ConfigError names the known types."""
    if ":" in type_name:
        return _import(type_name, key_path)
    known = available()
    target = known.get(type_name)
    if target is None:
        raise ConfigError(
            f"unknown connector type {type_name!r}; known types: {', '.join(sorted(known))} "
            "(or 'module:ClassName' for a custom connector)",
            key_path,
        )
    return _import(target, key_path)
