"""The ``lead-bridge`` command. Each subcommand lives in its own module with a
``register(subparsers)`` function; heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from bridge import __version__
from bridge.errors import ConfigError, LeadBridgeError

COMMAND_MODULES = [
    "bridge.cli.serve",  # serve, worker, dev-cert
    "bridge.cli.check",  # check-config
    "bridge.cli.mapcmd",  # map
    "bridge.cli.ops",  # status, deliveries, show, replay
    "bridge.cli.connectors_cmd",  # connectors
    "bridge.cli.privacy",  # erase
    # search, dead-letters, overview, drift, check-credentials, test-send, audit
    "bridge.cli.operator",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lead-bridge",
        description="Receive lead webhooks over HTTPS and forward every lead, exactly once "
        "in effect, to Salesforce, HubSpot, Slack, webhooks or custom connectors.",
    )
    parser.add_argument("--version", action="version", version=f"lead-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print("lead-bridge: configuration error", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}" if path else f"  {message}", file=sys.stderr)
        return 2
    except LeadBridgeError as exc:
        print(f"lead-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`lead-bridge deliveries --json | head`): stop
        # quietly, like other Unix tools, and keep Python from complaining again
        # when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
