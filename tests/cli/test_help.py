"""Every subcommand says what it does and shows an example; every option has help."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bridge.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_and_option_is_explained_with_an_example(name: str) -> None:
    parser = subcommands()[name]
    undocumented = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert not undocumented, f"{name}: options without help: {undocumented}"
    assert "example" in (parser.epilog or ""), f"{name}: no example in its help"
    usage = parser.format_help()
    examples = usage[usage.index("example") :]
    assert f"lead-bridge {name}" in examples or (name == "map" and "lead-bridge map" in examples), (
        f"{name}: the example does not show the command"
    )


def test_help_runs_for_every_subcommand_without_importing_sdks() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from bridge.cli import main\n"
        "for name in sys.argv[1:]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "heavy = [m for m in ('simple_salesforce', 'hubspot', 'psycopg') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code, *sorted(subcommands())], check=True, timeout=120)
