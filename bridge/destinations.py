"""Destinations: a validated config entry + its connector class, settings,
compiled mapping and routing filter. Built once at load; every error names its
key path (``destinations[2].settings.webhook_url: ...``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from bridge import registry
from bridge.config import Config, DestinationConfig
from bridge.config_load import describe_error
from bridge.errors import ConfigError, MappingError
from bridge.mapping import (
    DEFAULT_MAPPINGS,
    CompiledMapping,
    LeadFilter,
    compile_filter,
    compile_mapping,
)
from connectors.base import Connector, ConnectorSettings

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class Destination:
    config: DestinationConfig
    connector_cls: type[Connector]
    # None only in lenient mode (`lead-bridge map`) when the settings are incomplete.
    settings: ConnectorSettings | None
    mapping: CompiledMapping
    when: LeadFilter | None
    concurrency: int
    rate_per_second: float | None
    burst: int

    @property
    def name(self) -> str:
        return self.config.name

    def create_connector(self) -> Connector:
        if self.settings is None:
            raise ConfigError(f"destination {self.name!r} has incomplete settings")
        return self.connector_cls(self.name, self.settings)


def _settings_problems(
    exc: ValidationError, settings: type[ConnectorSettings], prefix: str
) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        path, message = describe_error(dict(err), settings)
        problems.append((f"{prefix}.{path}" if path else prefix, message))
    return problems


def _validate_settings(
    cls: type[Connector], cfg: DestinationConfig, base: str
) -> tuple[ConnectorSettings | None, list[tuple[str, str]]]:
    try:
        return cls.Settings.model_validate(cfg.settings), []
    except ValidationError as exc:
        return None, _settings_problems(exc, cls.Settings, f"{base}.settings")


def _mapping(
    cls: type[Connector], cfg: DestinationConfig, base: str, problems: list[tuple[str, str]]
) -> CompiledMapping | None:
    try:
        return compile_mapping(
            cfg.mapping,
            unmapped=cfg.unmapped if isinstance(cfg.unmapped, str) else cfg.unmapped.model_dump(),
            path=f"{base}.mapping",
            default=cls.default_mapping
            if cls.default_mapping is not None
            else DEFAULT_MAPPINGS.get(cls.type_name),
        )
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _filter(
    cfg: DestinationConfig, base: str, problems: list[tuple[str, str]]
) -> LeadFilter | None:
    try:
        return compile_filter(cfg.when, path=f"{base}.when")
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _target_problems(
    cls: type[Connector],
    cfg: DestinationConfig,
    settings: ConnectorSettings | None,
    mapping: CompiledMapping,
    *,
    lenient: bool,
    base: str,
) -> list[tuple[str, str]]:
    """The connector's verdict on the mapping's target fields."""
    checked = settings
    if checked is None and lenient:
        # Lenient mode (`lead-bridge map` without secrets): still check the
        # target fields, against the settings as written plus defaults.
        try:
            checked = cls.Settings.model_construct(**cfg.settings)
        except Exception:  # pragma: no cover - a settings model that cannot even construct
            checked = None
    if checked is None:
        return []
    try:
        found = cls.check_fields(checked, list(mapping.targets))
    except Exception:
        if settings is not None:
            raise
        found = []  # unvalidated settings confused the check: skip it, leniently
    return [(f"{base}.mapping.{field}", problem) for field, problem in found]


def build_destination(
    index: int, cfg: DestinationConfig, *, lenient: bool = False
) -> tuple[Destination | None, list[tuple[str, str]], list[tuple[str, str]]]:
    """Returns (destination or None, problems, warnings)."""
    base = f"destinations[{index}]"
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    try:
        cls = registry.resolve(cfg.type, f"{base}.type")
    except ConfigError as exc:
        return None, exc.problems, warnings
    settings, found = _validate_settings(cls, cfg, base)
    (warnings if lenient else problems).extend(found)
    mapping = _mapping(cls, cfg, base, problems)
    when = _filter(cfg, base, problems)
    if mapping is not None and cfg.mapping is not None:
        problems += _target_problems(cls, cfg, settings, mapping, lenient=lenient, base=base)
    if problems or mapping is None:
        return None, problems, warnings
    flow = cls.flow_defaults
    concurrency = cfg.flow.concurrency or flow.concurrency
    rate = (
        cfg.flow.rate_per_second if cfg.flow.rate_per_second is not None else flow.rate_per_second
    )
    burst = cfg.flow.burst or flow.burst or max(1, int(rate or 1))
    return (
        Destination(cfg, cls, settings, mapping, when, concurrency, rate, burst),
        problems,
        warnings,
    )


def build_destinations(
    config: Config, *, lenient: bool = False
) -> tuple[list[Destination], list[tuple[str, str]]]:
    registry.add_plugin_paths(config.plugins.paths)
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    out: list[Destination] = []
    for index, cfg in enumerate(config.destinations):
        dest, p, w = build_destination(index, cfg, lenient=lenient)
        problems.extend(p)
        warnings.extend(w)
        if dest is not None:
            out.append(dest)
    if problems:
        raise ConfigError(problems)
    return out, warnings


@dataclass
class Runtime:
    """Everything loaded from one config file."""

    config: Config
    destinations: list[Destination]
    warnings: list[tuple[str, str]]

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    @property
    def active(self) -> list[Destination]:
        return [d for d in self.destinations if d.config.enabled]

    def preview(self, lead: Any) -> dict[str, dict[str, Any]]:
        """Per destination: does ``when`` match, and the mapped record or the mapping
        error, under the current config (what `show` and the admin API display)."""
        out: dict[str, dict[str, Any]] = {}
        if not isinstance(lead, dict):
            return out
        for dest in self.destinations:
            matched = dest.when.matches(lead) if dest.when is not None else True
            try:
                record = dest.mapping.apply(lead).record
            except MappingError as exc:
                out[dest.name] = {"when": matched, "error": f"mapping error: {exc}"}
                continue
            out[dest.name] = {"when": matched, "record": record}
        return out


def load_runtime(
    path: Any,
    *,
    lenient: bool = False,
    env: dict[str, str] | None = None,
    preflight: Literal["serve", "worker"] | None = None,
) -> Runtime:
    """Read, expand, validate and build, reporting every problem in one ConfigError.

    Unset variables, invalid keys and each destination's type, settings and
    mapping are all checked in the same pass, so a user fixes them in one go.
    ``preflight`` adds what `serve` (or `worker`) needs of the machine (files,
    plugin directories, SDKs, CA bundles: :mod:`bridge.preflight`), for every
    section that is valid.
    """
    from bridge import preflight as checks
    from bridge.config import PluginsConfig, ServerConfig, StorageConfig
    from bridge.config_load import check_tree, covered, read_yaml, resolve_config_path

    config, tree, problems, warnings = check_tree(
        read_yaml(resolve_config_path(path)), env, lenient=lenient
    )
    reported = [where for where, _ in problems]  # a key reported once is not reported again
    tree = tree if isinstance(tree, dict) else {}

    def section(model: type[ModelT], key: str) -> ModelT | None:
        if config is not None:
            return getattr(config, key)  # type: ignore[no-any-return]
        try:
            return model.model_validate(tree.get(key) or {})
        except ValidationError:
            return None  # already reported

    plugins = section(PluginsConfig, "plugins")
    if plugins is not None:
        registry.add_plugin_paths(plugins.paths)
    built: list[tuple[int, Destination]] = []
    entries = config.destinations if config is not None else tree.get("destinations")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, DestinationConfig):
            try:
                entry = DestinationConfig.model_validate(entry)
            except ValidationError:
                continue  # already reported
        dest, found, more = build_destination(index, entry, lenient=lenient)
        problems += [(where, what) for where, what in found if not covered(where, reported)]
        warnings += more
        if dest is not None:
            built.append((index, dest))
    if preflight is not None:
        server = section(ServerConfig, "server")
        if preflight == "serve" and server is not None:
            problems += checks.check_tls(server)
        storage = section(StorageConfig, "storage")
        if storage is not None:
            problems += checks.check_storage(storage)
        if plugins is not None:
            problems += checks.check_plugins(plugins)
        problems += checks.check_destinations(built)
    if problems or config is None:
        raise ConfigError(problems)
    return Runtime(config, [dest for _, dest in built], warnings)
