"""Loading a configuration file: ${VAR} expansion, secrets from files, YAML,
and errors that name their key path (bridge/config_load.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config_load import expand_env, load_config, resolve_config_path, validate_config
from bridge.errors import ConfigError


def problems(tree: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(tree)
    return info.value.problems


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("$${A}", {"A": "x"}, "${A}"),
        ("no dollars", {}, "no dollars"),
        ("$5 and $HOME", {}, "$5 and $HOME"),
    ],
)
def test_expansion(value: str, env: dict[str, str], expected: str) -> None:
    tree, warnings = expand_env({"k": value}, env)
    assert tree == {"k": expected} and warnings == []


def test_expansion_reaches_nested_lists_and_keeps_other_types() -> None:
    tree, _ = expand_env({"a": [{"b": "${X}"}, 5, True, None]}, {"X": "y"})
    assert tree == {"a": [{"b": "y"}, 5, True, None]}


def test_unset_variable_names_its_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env({"auth": {"header_secrets": ["${LEAD_WEBHOOK_SECRET}"]}}, {})
    assert str(info.value) == (
        "auth.header_secrets[0]: environment variable LEAD_WEBHOOK_SECRET is not set"
    )


def test_all_unset_variables_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env({"a": "${ONE}", "b": ["${TWO}"]}, {})
    assert [p for p, _ in info.value.problems] == ["a", "b[0]"]


def test_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    tree, _ = expand_env({"a": f"${{file:{secret}}}", "b": "${TOKEN}"}, {"TOKEN_FILE": str(secret)})
    assert tree == {"a": "s3cr3t", "b": "s3cr3t"}


def test_missing_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        expand_env({"auth": {"k": f"${{file:{tmp_path / 'nope'}}}"}}, {})
    [(path, message)] = info.value.problems
    assert path == "auth.k" and message.startswith("cannot read secret file")


def test_bad_reference_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env({"a": "${not a name}"}, {})
    assert "is not a valid variable reference" in str(info.value)


def test_lenient_mode_turns_unset_variables_into_warnings() -> None:
    tree, warnings = expand_env({"a": "${NOPE}"}, {}, lenient=True)
    assert tree == {"a": ""}
    assert warnings == [("a", "environment variable NOPE is not set")]


def test_load_from_file_with_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('auth:\n  header_secrets: ["${S}"]\nserver:\n  port: ${PORT:-9443}\n')
    config, warnings = load_config(path, env={"S": "abc"})
    assert config.auth.header_secrets[0].get_secret_value() == "abc"
    assert config.server.port == 9443 and warnings == []


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 1\n bad: [\n")
    with pytest.raises(ConfigError, match=r"at line \d+, column \d+: invalid YAML"):
        load_config(path, env={})


def test_missing_file_and_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})
    monkeypatch.delenv("LEAD_BRIDGE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="pass --config PATH or set LEAD_BRIDGE_CONFIG"):
        resolve_config_path(None)
    monkeypatch.setenv("LEAD_BRIDGE_CONFIG", str(tmp_path / "x.yaml"))
    assert resolve_config_path(None) == tmp_path / "x.yaml"


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path, env={})


def test_odd_keys_are_quoted_in_key_paths() -> None:
    found = problems({"": 1, "server": {"a.b": 1}})
    assert any(p == '[""]' for p, _ in found), found
    assert any(p == 'server["a.b"]' for p, _ in found), found


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &x [*x]", r"a\[0\]: a YAML alias refers to itself"),
        ("server: " + "[" * 60 + "]" * 60, "nested deeper than 40 levels"),
    ],
)
def test_documents_the_loader_cannot_walk_are_refused(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path, env={})


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"server:\n  host: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path, env={})
