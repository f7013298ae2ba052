"""The configuration models: defaults, checks and the key paths of their errors (bridge/config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import parse_duration
from bridge.config_load import (
    load_config,
    validate_config,
)
from bridge.errors import ConfigError


def problems(tree: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(tree)
    return info.value.problems


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


def test_a_plugin_path_with_a_nul_byte_is_a_config_error() -> None:
    # found by tests/fuzz/test_config_loader.py: Path.resolve() raised ValueError
    assert any(
        p == "plugins.paths" and "NUL" in m for p, m in problems({"plugins": {"paths": ["\0"]}})
    )
