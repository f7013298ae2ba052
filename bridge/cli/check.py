"""``check-config``: everything `serve` checks before it binds, without starting.

Every problem of the file is reported in one run (unset variables, unknown
keys, connector types, settings, mappings), then what the machine must provide
(TLS files, plugin directories, SDKs, CA bundles, the database directory).
``--connect`` also proves each destination's credentials and reachability
(Salesforce token, HubSpot token info, the webhook URL) without sending a lead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from bridge.cli.common import add_config_option, add_json_option, print_json

if TYPE_CHECKING:
    from bridge.destinations import Destination, Runtime

EXAMPLES = """\
examples:
  lead-bridge check-config --config /etc/lead-bridge/config.yaml
  lead-bridge check-config --connect                     # also try every destination's credentials
  lead-bridge check-config --connect --destination crm   # one destination only
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a configuration file as `serve` would, without starting",
        description="Validate the configuration and what `serve` needs of this machine "
        "(certificate files, plugin directories, SDKs, CA bundles, the database directory), "
        "reporting every problem at once. Exit status 2 on a problem, 1 when a "
        "--connect check fails, 0 otherwise.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(p)
    p.add_argument(
        "--connect",
        action="store_true",
        help="also check each destination's credentials and reachability (a token request, "
        "HubSpot's token info, a request to the webhook URL); no lead is sent",
    )
    p.add_argument(
        "--destination",
        "-d",
        metavar="NAME",
        action="append",
        default=None,
        help="with --connect: check only this destination (repeatable), e.g. -d crm",
    )
    add_json_option(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.destinations import load_runtime

    runtime = load_runtime(args.config, preflight="serve")
    selected = _selected(runtime, args.destination)
    results = asyncio.run(_connect(runtime, selected)) if args.connect else {}
    failed = [name for name, (ok, _) in results.items() if ok is False]
    if args.json:
        print_json(
            {
                "ok": not failed,
                "destinations": [_describe(d, results) for d in runtime.destinations],
                "warnings": _warnings(runtime),
            }
        )
        return 1 if failed else 0
    _print_text(runtime, results)
    if failed:
        print(f"lead-bridge: connection check failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _selected(runtime: Runtime, names: list[str] | None) -> list[Destination]:
    """The destinations ``--destination`` names (all without it); an unknown name is an error."""
    from bridge.errors import ConfigError

    if not names:
        return runtime.destinations
    known = {d.name for d in runtime.destinations}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"no destination named {', '.join(map(repr, unknown))}; "
            f"configured: {', '.join(sorted(known)) or '(none)'}",
            "--destination",
        )
    return [d for d in runtime.destinations if d.name in names]


def _print_text(runtime: Runtime, results: dict[str, tuple[bool | None, str]]) -> None:
    print(f"configuration OK: {len(runtime.destinations)} destination(s)")
    print(f"  webhook: POST {_base_url(runtime)}{runtime.config.server.path}")
    for dest in runtime.destinations:
        state = "" if dest.config.enabled else " (disabled)"
        rate = f", {dest.rate_per_second:g}/s" if dest.rate_per_second else ""
        line = f"  - {dest.name}: {dest.config.type}, concurrency {dest.concurrency}{rate}{state}"
        if dest.name in results:
            ok, detail = results[dest.name]
            mark = {True: "OK", False: "FAILED", None: "not checked"}[ok]
            line += f"\n      connect: {mark}: {detail}"
        print(line)
    for warning in _warnings(runtime):
        print(f"warning: {warning}", file=sys.stderr)


def _base_url(runtime: Runtime) -> str:
    server = runtime.config.server
    scheme = "https" if server.tls.certfile is not None else "http"
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host  # noqa: S104
    return f"{scheme}://{host}:{server.port}"


def _warnings(runtime: Runtime) -> list[str]:
    config = runtime.config
    out = [f"{path}: {message}" for path, message in runtime.warnings]
    if not config.auth.header_secrets and not config.auth.path_secrets:
        out.append("auth: no secrets configured; the endpoint is open")
    return out


def _describe(dest: Destination, results: dict[str, tuple[bool | None, str]]) -> dict[str, object]:
    out: dict[str, object] = {
        "name": dest.name,
        "type": dest.config.type,
        "enabled": dest.config.enabled,
        "concurrency": dest.concurrency,
        "rate_per_second": dest.rate_per_second,
    }
    if dest.name in results:
        ok, detail = results[dest.name]
        out["connect"] = {"ok": ok, "detail": detail}
    return out


async def _connect(
    runtime: Runtime, destinations: list[Destination]
) -> dict[str, tuple[bool | None, str]]:
    from bridge.app import register_secrets
    from bridge.operations.credentials import check_destination

    register_secrets(runtime)  # keep them out of any log line
    results = await asyncio.gather(*(check_destination(d) for d in destinations))
    return {d.name: (r.ok, r.detail) for d, r in zip(destinations, results, strict=True)}
