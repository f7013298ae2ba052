"""``check-config``: the same validation as startup, offline."""

from __future__ import annotations

import argparse
import sys

from bridge.cli.common import add_config_option


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file without starting")
    add_config_option(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.destinations import load_runtime

    runtime = load_runtime(args.config)
    config = runtime.config
    print(f"configuration OK: {len(runtime.destinations)} destination(s)")
    for dest in runtime.destinations:
        state = "" if dest.config.enabled else " (disabled)"
        rate = f", {dest.rate_per_second:g}/s" if dest.rate_per_second else ""
        print(f"  - {dest.name}: {dest.config.type}, concurrency {dest.concurrency}{rate}{state}")
    if not config.auth.header_secrets and not config.auth.path_secrets:
        print("warning: auth: no secrets configured; the endpoint is open", file=sys.stderr)
    if config.server.tls.certfile is None and not config.server.behind_proxy:
        print("warning: server.tls: no certificate; `serve` will refuse to start", file=sys.stderr)
    return 0
