"""The container files: Dockerfile invariants, and the compose examples' configs load
with exactly the environment each compose file passes (from a filled-in
compose/.env.example), nothing more.

The image is built and run for real by scripts/container-test.sh (CI's last
step), which also runs check-config inside it with those same variables.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from bridge.destinations import load_runtime

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"

spec = importlib.util.spec_from_file_location("compose_env", ROOT / "scripts" / "compose_env.py")
assert spec is not None and spec.loader is not None
compose_env = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compose_env)


def passed_env(compose_file: str) -> dict[str, str]:
    """What the compose file hands the lead-bridge service, .env filled in by a user."""
    env = compose_env.read_env_file(COMPOSE / ".env.example", fill=True)
    compose = yaml.safe_load((COMPOSE / compose_file).read_text())
    result: dict[str, str] = compose_env.service_environment(compose, "lead-bridge", env)
    return result


def mounted_config(compose_file: str) -> Path:
    """The host file the compose file mounts at /etc/lead-bridge/config.yaml."""
    for mount in compose_env.bind_mounts(COMPOSE / compose_file, "lead-bridge", {}):
        source, target = mount.split(":")[:2]
        if target == "/etc/lead-bridge/config.yaml":
            return Path(source)
    raise AssertionError(f"{compose_file} mounts no config")


def dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_base_image_is_a_build_argument_with_the_slim_default() -> None:
    lines = dockerfile()
    first_from = next(i for i, line in enumerate(lines) if line.startswith("FROM"))
    assert "ARG BASE_IMAGE=python:3.12-slim" in lines[:first_from]
    froms = [line for line in lines if line.startswith("FROM")]
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]  # multi-stage


def test_runtime_stage_contract() -> None:
    lines = dockerfile()
    runtime = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM")) :]
    user = next(line for line in runtime if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert "EXPOSE 8443" in runtime
    assert "VOLUME /var/lib/lead-bridge" in runtime
    assert 'ENTRYPOINT ["lead-bridge"]' in runtime
    assert 'CMD ["serve", "--config", "/etc/lead-bridge/config.yaml"]' in runtime
    health = next(line for line in runtime if line.startswith("HEALTHCHECK"))
    assert "LEAD_BRIDGE_HEALTHCHECK_URL" in health
    assert any(
        "LEAD_BRIDGE_HEALTHCHECK_URL=https://127.0.0.1:8443/healthz" in line for line in runtime
    )
    assert "COPY --from=build /opt/lead-bridge /opt/lead-bridge" in runtime


@pytest.mark.parametrize(
    ("extras", "expected", "left_out"),
    [
        ("all", {"simple-salesforce", "hubspot-api-client", "psycopg", "pyjwt"}, set()),
        ("postgres", {"psycopg"}, {"simple-salesforce", "hubspot-api-client"}),
        ("salesforce,hubspot", {"simple-salesforce", "hubspot-api-client"}, {"psycopg"}),
    ],
)
def test_dependency_layer_installs_the_base_and_the_chosen_extras(
    extras: str, expected: set[str], left_out: set[str]
) -> None:
    # Run the Dockerfile's own requirements one-liner against pyproject.toml.
    run = next(line for line in dockerfile() if "/tmp/requirements.txt" in line and "-c" in line)
    code = re.search(r'python3 -c "(.*?)" > /tmp/requirements.txt', run)
    assert code is not None
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=ROOT,
        env={**os.environ, "EXTRAS": extras},
        capture_output=True,
        text=True,
        check=True,
    )
    names = {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in result.stdout.split()}
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in base} <= names
    assert expected <= names and not (left_out & names)
    assert "pytest" not in names


def test_dockerignore_keeps_local_state_out() -> None:
    rules = (ROOT / ".dockerignore").read_text().split()
    assert rules[rules.index("*") :][:1] == ["*"]  # deny by default
    assert {"!bridge/", "!connectors/", "!pyproject.toml"} <= set(rules)


@pytest.mark.parametrize("compose_file", ["single.yaml", "caddy.yaml"])
def test_compose_configs_load_with_exactly_the_environment_passed(compose_file: str) -> None:
    runtime = load_runtime(mounted_config(compose_file), env=passed_env(compose_file))
    assert runtime.config.admin.tokens and runtime.config.retention.payload_days == 30
    assert [str(p) for p in runtime.config.plugins.paths] == ["/etc/lead-bridge/plugins"]


def test_every_variable_of_env_example_reaches_a_service_or_is_documented() -> None:
    example = (COMPOSE / ".env.example").read_text()
    passed = set(passed_env("single.yaml")) | set(passed_env("caddy.yaml"))
    for name in ("WEBHOOK_SECRET", "ADMIN_TOKEN", "SLACK_WEBHOOK_URL"):
        assert f"{name}=" in example and name in passed


def test_compose_interpolation_follows_compose_rules() -> None:
    env = {"A": "a", "EMPTY": "", "PW": "secret"}
    interpolate = compose_env.interpolate
    assert interpolate("${A}-$A-$$A", env) == "a-a-$A"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "d||d"
    assert (
        interpolate("x${NOPE:-postgresql://u:${PW:-pw}@db/x}", env) == "xpostgresql://u:secret@db/x"
    )
    with pytest.raises(compose_env.ComposeError, match="EMPTY: set it"):
        interpolate("${EMPTY:?set it}", env)
    assert interpolate("${EMPTY?set it}", env) == ""


def test_single_container_example() -> None:
    compose = yaml.safe_load((COMPOSE / "single.yaml").read_text())
    service = compose["services"]["lead-bridge"]
    assert service["ports"] == ["8443:8443"]
    assert "./config.single.yaml:/etc/lead-bridge/config.yaml:ro" in service["volumes"]
    config = load_runtime(COMPOSE / "config.single.yaml", env=passed_env("single.yaml")).config
    assert config.storage.url.startswith("sqlite:////var/lib/lead-bridge/")
    assert config.server.tls.certfile is not None and not config.server.behind_proxy


def test_caddy_example_runs_two_replicas_behind_the_proxy() -> None:
    compose = yaml.safe_load((COMPOSE / "caddy.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"caddy", "lead-bridge", "postgres"}
    assert services["postgres"]["profiles"] == ["postgres"]  # optional
    bridge = services["lead-bridge"]
    assert bridge["deploy"]["replicas"] == "${REPLICAS:-2}"
    assert "ports" not in bridge  # only Caddy is published
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in services["caddy"]["volumes"]
    config = load_runtime(COMPOSE / "config.caddy.yaml", env=passed_env("caddy.yaml")).config
    assert config.server.behind_proxy and config.storage.url.startswith("postgresql://")
    subnet = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert config.server.forwarded_allow_ips == [subnet]
    caddyfile = (COMPOSE / "Caddyfile").read_text()
    assert "dynamic a lead-bridge 8443" in caddyfile and "handle /admin/*" in caddyfile
