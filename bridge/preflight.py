"""What `serve` needs from the machine, checked before it binds a port.

The configuration can be valid and still unusable here: a certificate file that
does not exist, a plugin directory that is not mounted, a CA bundle that is not
PEM, a destination whose SDK is not installed, a database directory that cannot
be created. `check-config` and `serve` (and `worker`, without TLS) run these
same checks, so "configuration OK" means `serve` will start.

Each check takes the section it needs and returns ``(key path, problem)``
pairs; none of them changes anything (a self-signed certificate is only
created by `serve`).
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bridge import registry

if TYPE_CHECKING:
    from bridge.config import DestinationConfig, PluginsConfig, ServerConfig, StorageConfig

Problems = list[tuple[str, str]]


class Built(Protocol):
    """What the checks read of a built destination (:class:`bridge.destinations.
    Destination`, which runs these checks: named here, not imported)."""

    @property
    def config(self) -> DestinationConfig: ...

    @property
    def settings(self) -> Any: ...


def _creatable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (made if missing), or None."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"directory {probe} is not writable by this user"
    return None


def check_tls(server: ServerConfig) -> Problems:
    tls = server.tls
    if tls.certfile is None and tls.keyfile is None:
        if server.behind_proxy:
            return []
        return [
            (
                "server.tls",
                "HTTPS is required: set server.tls.certfile and server.tls.keyfile "
                "(or server.tls.self_signed: true for local use, or server.behind_proxy: true "
                "when a TLS proxy is in front)",
            )
        ]
    if tls.certfile is None or tls.keyfile is None:
        missing = "certfile" if tls.certfile is None else "keyfile"
        return [(f"server.tls.{missing}", "set both certfile and keyfile")]
    problems: Problems = []
    files = (("certfile", tls.certfile), ("keyfile", tls.keyfile))
    absent = [(key, file) for key, file in files if not file.exists()]
    if absent:
        if tls.self_signed:
            # serve creates the pair; it must be able to write both files
            for key, file in absent:
                why = _creatable(file.parent)
                if why is not None:
                    problems.append((f"server.tls.{key}", f"cannot create {file}: {why}"))
            return problems
        return [
            (
                f"server.tls.{key}",
                f"file {file} does not exist (set self_signed: true to create one)",
            )
            for key, file in absent
        ]
    for key, file in files:
        if not os.access(file, os.R_OK):
            problems.append((f"server.tls.{key}", f"file {file} is not readable by this user"))
    if problems:
        return problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        return [
            (
                "server.tls",
                f"cannot use {tls.certfile} with {tls.keyfile}: {reason} "
                "(expected a PEM certificate and its private key)",
            )
        ]
    return []


def check_plugins(plugins: PluginsConfig) -> Problems:
    problems: Problems = []
    for index, path in enumerate(plugins.paths):
        if not path.exists():
            problems.append((f"plugins.paths[{index}]", f"directory {path} does not exist"))
        elif not path.is_dir():
            problems.append((f"plugins.paths[{index}]", f"{path} is not a directory"))
    return problems


def check_storage(storage: StorageConfig) -> Problems:
    url = storage.url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        if database.exists():
            if database.is_dir():
                return [("storage.url", f"{database} is a directory, not a database file")]
            if not os.access(database, os.R_OK | os.W_OK):
                return [("storage.url", f"database {database} is not writable by this user")]
            return []
        why = _creatable(database.parent)
        return [] if why is None else [("storage.url", f"cannot create {database}: {why}")]
    postgres = url.startswith(("postgresql://", "postgres://"))
    if postgres and (_missing("psycopg") or _missing("psycopg_pool")):
        return [
            (
                "storage.url",
                "PostgreSQL needs psycopg, which is not installed: "
                + registry.install_hint("psycopg"),
            )
        ]
    return []


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def check_destinations(destinations: Sequence[tuple[int, Built]]) -> Problems:
    """``(index in destinations:, destination)`` pairs: SDKs and CA bundles."""
    problems: Problems = []
    for index, dest in destinations:
        base = f"destinations[{index}]"
        module = registry.missing_dependency(dest.config.type)
        if module is not None:
            problems.append(
                (
                    f"{base}.type",
                    f"type {dest.config.type!r} needs {registry.pip_name(module)}, which is "
                    f"not installed: {registry.install_hint(module)}",
                )
            )
        bundle = getattr(dest.settings, "ca_bundle", None)
        if isinstance(bundle, Path):
            try:
                ssl.create_default_context(cafile=str(bundle))
            except (ssl.SSLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
                problems.append(
                    (
                        f"{base}.settings.ca_bundle",
                        f"cannot load CA certificates from {bundle}: {reason} "
                        "(expected PEM certificates)",
                    )
                )
    return problems
