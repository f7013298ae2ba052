from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge import registry
from bridge.errors import ConfigError
from connectors.jsonl import JsonlConnector
from connectors.slack import SlackConnector
from connectors.webhook import WebhookConnector


def test_builtins_resolve() -> None:
    assert registry.resolve("slack") is SlackConnector
    assert registry.resolve("webhook") is WebhookConnector
    assert registry.resolve("jsonl") is JsonlConnector
    assert registry.resolve("connectors.jsonl:JsonlConnector") is JsonlConnector


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        registry.resolve("slak", "destinations[0].type")
    ((path, message),) = info.value.problems
    assert path == "destinations[0].type"
    assert "unknown connector type 'slak'" in message
    for name in ("hubspot", "jsonl", "salesforce", "slack", "webhook"):
        assert name in message
    assert "module:ClassName" in message


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(registry, "plugin_paths", [])
    (tmp_path / "lb_test_plugin.py").write_text(
        textwrap.dedent(
            """
            from connectors.base import Connector

            class Echo(Connector):
                type_name = "echo"

            NotAConnector = dict
            """
        )
    )
    (tmp_path / "lb_test_broken.py").write_text("raise RuntimeError('plugin bug')\n")
    (tmp_path / "lb_test_needs.py").write_text("import lb_no_such_sdk\n")
    registry.add_plugin_paths([tmp_path])
    return tmp_path


def test_module_class_from_a_plugins_path(plugins: Path) -> None:
    cls = registry.resolve("lb_test_plugin:Echo")
    assert cls.type_name == "echo"


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("lb_test_plugin:Missing", "has no attribute 'Missing'"),
        ("lb_test_plugin:NotAConnector", "is not a connector class"),
        ("lb_test_plugin:", "expected 'module:ClassName'"),
        ("lb_test_nowhere:X", "cannot import connector module 'lb_test_nowhere'"),
        ("lb_test_broken:X", "RuntimeError: plugin bug"),
        ("lb_test_needs:X", "pip install lb_no_such_sdk"),
    ],
)
def test_plugin_errors_are_config_errors(plugins: Path, target: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        registry.resolve(target)


def test_plugin_files_do_not_shadow_real_modules(plugins: Path) -> None:
    import json

    sys_path = list(sys.path)
    (plugins / "json.py").write_text(
        textwrap.dedent(
            """
            from connectors.base import Connector

            def dumps(*args, **kwargs):
                return "shadowed"

            class Json(Connector):
                type_name = "json-plugin"
            """
        )
    )
    assert registry.resolve("json:Json").type_name == "json-plugin"
    assert sys.modules["json"] is json
    assert json.dumps([1]) == "[1]"
    # The directory is never put on sys.path: a fresh import finds the standard library.
    assert sys.path == sys_path
    assert str(plugins) not in sys.path


def test_plugin_packages_load_by_path_with_relative_imports(plugins: Path) -> None:
    package = plugins / "lb_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("TYPE = 'pkg'\n")
    (package / "conn.py").write_text(
        textwrap.dedent(
            """
            from connectors.base import Connector
            from .helpers import TYPE

            class Pkg(Connector):
                type_name = TYPE
            """
        )
    )
    cls = registry.resolve("lb_test_pkg.conn:Pkg")
    assert cls.type_name == "pkg"
    assert registry.resolve("lb_test_pkg.conn:Pkg") is cls  # loaded once
    assert "lb_test_pkg" not in sys.modules
    with pytest.raises(ConfigError, match=r"cannot import connector module 'lb_test_pkg\.nope'"):
        registry.resolve("lb_test_pkg.nope:X")


def test_install_hints_use_pip_names() -> None:
    assert registry.pip_name("hubspot") == "hubspot-api-client"
    assert registry.pip_name("simple_salesforce") == "simple-salesforce"


def test_install_hints_name_the_extra_for_our_sdks() -> None:
    assert registry.install_hint("simple_salesforce.api") == "pip install 'lead-bridge[salesforce]'"
    assert registry.install_hint("hubspot") == "pip install 'lead-bridge[hubspot]'"
    assert registry.install_hint("psycopg_pool") == "pip install 'lead-bridge[postgres]'"
    assert registry.install_hint("lb_no_such_sdk") == "pip install lb_no_such_sdk"


def test_connectors_command_names_the_extra_of_a_missing_sdk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    monkeypatch.setitem(sys.modules, "simple_salesforce", None)  # not installed
    assert main(["connectors"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "no: pip install 'lead-bridge[salesforce]'" in rows["salesforce"]
    assert registry.missing_dependency("salesforce") == "simple_salesforce"
    assert registry.missing_dependency("slack") is None


def test_describe_lists_builtins_with_their_dependency() -> None:
    infos = {info.name: info for info in registry.describe()}
    assert infos["slack"].dependency is None and infos["slack"].installed
    assert infos["salesforce"].dependency == "simple_salesforce"
    assert infos["webhook"].package == "lead-bridge"


def test_http_connectors_do_not_import_heavy_sdks() -> None:
    code = (
        "import sys\n"
        "from bridge import registry\n"
        "for name in ('slack', 'webhook', 'jsonl'):\n"
        "    registry.resolve(name)\n"
        "heavy = [m for m in ('simple_salesforce', 'hubspot', 'requests') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_connectors_command(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from bridge.cli import main

    assert main(["connectors"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["TYPE", "PACKAGE", "DEPENDENCY", "INSTALLED", "CLASS"]
    assert any(line.startswith("slack ") for line in out.splitlines())
    assert main(["connectors", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name", "target", "package", "dependency", "installed"} <= set(rows[0])
    assert "webhook" in {row["name"] for row in rows}
