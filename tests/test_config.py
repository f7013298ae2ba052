"""Config loading: ${VAR} expansion, secrets from files, typed validation, key paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_duration
from bridge.config_load import (
    expand_env,
    load_config,
    resolve_config_path,
    validate_config,
)
from bridge.errors import ConfigError


def problems(tree: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(tree)
    return info.value.problems


# --------------------------------------------------------------------------- expansion


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


# --------------------------------------------------------------------------- validation


def test_defaults() -> None:
    config = validate_config({})
    assert config.server.port == 8443 and config.server.path == "/lead/webhook"
    assert config.server.max_body_bytes == 1_048_576
    assert config.storage.url == "sqlite:///./data/lead-bridge.db"
    assert config.storage.synchronous == "FULL"
    assert config.auth.header_secrets == [] and config.destinations == []


def test_unknown_key_suggests_the_nearest_one() -> None:
    assert problems({"server": {"prot": 1}}) == [
        ("server.prot", "unknown key; did you mean 'port'?")
    ]


def test_unknown_key_without_a_near_one_lists_the_valid_ones() -> None:
    [(path, message)] = problems({"storage": {"zzz": 1}})
    assert path == "storage.zzz"
    assert (
        message
        == "unknown key; expected one of: url, synchronous, pool_size, pgbouncer, max_inflight_bytes, search_key"
    )


def test_unknown_key_inside_a_destination() -> None:
    [(path, message)] = problems({"destinations": [{"name": "a", "type": "jsonl", "mappings": {}}]})
    assert path == "destinations[0].mappings" and "did you mean 'mapping'?" in message


@pytest.mark.parametrize(
    ("tree", "path", "fragment"),
    [
        ({"server": {"port": 70000}}, "server.port", "less than or equal to 65535"),
        ({"server": {"path": "lead"}}, "server.path", "starting with '/'"),
        (
            {"server": {"tls": {"min_version": "1.1"}}},
            "server.tls.min_version",
            "expected '1.2' or '1.3'",
        ),
        ({"storage": {"url": "mysql://x"}}, "storage.url", "expected sqlite:///"),
        ({"auth": {"header_secrets": [""]}}, "auth.header_secrets", "must not be empty"),
        ({"auth": {"path_secrets": ["a/b"]}}, "auth.path_secrets", "one path segment"),
        ({"destinations": [{"type": "x"}]}, "destinations[0].name", "required key is missing"),
        ({"destinations": [{"name": "bad name", "type": "x"}]}, "destinations[0].name", "expected"),
        (
            {"destinations": [{"name": "a", "type": "x", "unmapped": "drop"}]},
            "destinations[0].unmapped",
            "expected 'ignore' or a mapping {collect_into: <target field>}",
        ),
        (
            {"destinations": [{"name": "a", "type": "x", "retry": {"schedule": ["soon"]}}]},
            "destinations[0].retry.schedule[0]",
            "expected a duration",
        ),
        (
            {"destinations": [{"name": "a", "type": "x"}, {"name": "a", "type": "y"}]},
            "destinations",
            "destination name 'a' is used by items 0 and 1",
        ),
    ],
)
def test_errors_name_the_key_path(tree: dict[str, Any], path: str, fragment: str) -> None:
    found = problems(tree)
    assert any(p == path and fragment in m for p, m in found), found


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must hold a mapping"):
        validate_config(["a"])


def test_trailing_slash_of_the_path_is_dropped() -> None:
    assert validate_config({"server": {"path": "/hooks/lead/"}}).server.path == "/hooks/lead"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (2.5, 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("3d", 259200.0),
        ("250ms", 0.25),
    ],
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5x", "", True, None, [1]])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


def test_secrets_never_appear_in_the_model_repr() -> None:
    config = validate_config({"auth": {"header_secrets": ["topsecret"]}})
    assert "topsecret" not in repr(config)
    assert config.auth.header_secrets[0].get_secret_value() == "topsecret"


# --------------------------------------------------------------------------- files


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


def test_the_reference_config_is_valid() -> None:
    from bridge.destinations import load_runtime

    env = {
        "LEAD_WEBHOOK_SECRET": "s",
        "SALESFORCE_CLIENT_ID": "id",
        "SALESFORCE_CLIENT_SECRET": "secret",
        "HUBSPOT_ACCESS_TOKEN": "pat-x",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
    }
    runtime = load_runtime(Path(__file__).parent.parent / "config.example.yaml", env=env)
    assert {d.config.type for d in runtime.destinations} == {
        "jsonl",
        "salesforce",
        "hubspot",
        "slack",
        "webhook",
    }


# --------------------------------------------------------------------------- admin


@pytest.mark.parametrize(
    ("admin", "expected"),
    [
        ({"viewer_token": "v-token"}, "needs admin.tokens too"),
        ({"tokens": ["a-token"], "viewer_token": "a-token"}, "equals one of admin.tokens"),
        ({"tokens": ["a-token"], "viewer_token": ""}, "empty"),
        ({"tokens": ["a-token"], "session_ttl": "0s"}, "greater than 0"),
    ],
)
def test_admin_tokens_are_checked(admin: dict[str, Any], expected: str) -> None:
    (found,) = problems({"admin": admin})
    assert found[0].startswith("admin.")
    assert expected in found[1]


def test_viewer_token_and_session_ttl() -> None:
    config = validate_config(
        {"admin": {"tokens": ["a-token"], "viewer_token": "v-token", "session_ttl": "2h"}}
    )
    assert config.admin.viewer_token is not None
    assert config.admin.viewer_token.get_secret_value() == "v-token"
    assert config.admin.session_ttl == 7200


def test_empty_admin_tokens_are_skipped() -> None:
    # The quickstart's ["${LEAD_BRIDGE_ADMIN_TOKEN:-}"]: off until the variable is set.
    assert (
        validate_config({"admin": {"tokens": ["", "a-token"]}}).admin.tokens[0].get_secret_value()
        == "a-token"
    )
    assert validate_config({"admin": {"tokens": [""]}}).admin.tokens == []


def test_quickstart_console_follows_its_environment_variable() -> None:
    quickstart = Path(__file__).parents[1] / "examples" / "quickstart.yaml"
    off, _ = load_config(quickstart, env={})
    on, _ = load_config(quickstart, env={"LEAD_BRIDGE_ADMIN_TOKEN": "console-token-123"})
    assert off.admin.tokens == []
    assert [t.get_secret_value() for t in on.admin.tokens] == ["console-token-123"]


# Found by tests/fuzz/test_config_loader.py: each was a traceback or an anonymous message.


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


def test_a_plugin_path_with_a_nul_byte_is_a_config_error() -> None:
    # found by tests/fuzz/test_config_loader.py: Path.resolve() raised ValueError
    assert any(
        p == "plugins.paths" and "NUL" in m for p, m in problems({"plugins": {"paths": ["\0"]}})
    )
