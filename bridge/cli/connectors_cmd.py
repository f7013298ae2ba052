"""``lead-bridge connectors``: the connector types this installation can use."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from bridge.cli.common import add_json_option, print_json, table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "connectors",
        help="list the available connector types",
        description="List connector types (built-ins and plugins of the "
        "'lead_bridge.connectors' entry-point group), their package, and whether "
        "the SDK each one needs is installed. A file in plugins.paths is used as "
        "type: 'module:ClassName' and is not listed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lead-bridge connectors\n  lead-bridge connectors --json",
    )
    add_json_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `lead-bridge --help` must not pay for importing the registry.
    from bridge import registry

    infos = registry.describe()
    if args.json:
        print_json([asdict(info) for info in infos])
        return 0
    rows = [
        (
            info.name,
            info.package,
            info.dependency or "-",
            "yes" if info.installed else f"no: {registry.install_hint(info.dependency or '')}",
            info.target,
        )
        for info in infos
    ]
    print(table(["TYPE", "PACKAGE", "DEPENDENCY", "INSTALLED", "CLASS"], rows))
    return 0
