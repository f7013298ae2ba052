"""What a compose file hands the lead-bridge service: its environment and bind mounts.

    python scripts/compose_env.py compose/caddy.yaml --env-file compose/.env.example --fill
    python scripts/compose_env.py compose/single.yaml --env-file compose/.env --podman

Interpolates the service's ``environment:`` the way Docker Compose does
(``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?message}``,
``${VAR?message}``, ``$VAR``, ``$$``, defaults that nest) from the env file
only, so a variable the compose file does not pass is not there: a config that
needs it fails in the test exactly as in production. ``--fill`` gives the env
file's empty values a stand-in (a random secret, or an example URL for
``*_URL``), as a user filling in ``.env`` would. ``--podman`` prints
``podman run`` arguments (``-e`` per variable, ``-v`` per bind mount, made
absolute) instead of ``KEY=VALUE`` lines; ``--print-env-file`` prints the (filled) env file for
``podman-compose --env-file``.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class ComposeError(Exception):
    pass


def read_env_file(path: Path, *, fill: bool = False) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if not value and fill:
            if key.endswith("_URL"):
                value = f"https://hooks.example.com/{key.lower()}/{secrets.token_hex(8)}"
            else:
                value = secrets.token_hex(24)
        env[key.strip()] = value
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("${", i):
            end = _closing(text, i + 2)
            out.append(_expression(text[i + 2 : end], env))
            i = end + 1
            continue
        match = re.match(_NAME, text[i + 1 :])
        if match:
            out.append(env.get(match.group(0), ""))
            i += 1 + len(match.group(0))
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _closing(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text.startswith("${", index):
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ComposeError(f"unclosed '${{' in {text!r}")


def _expression(expr: str, env: dict[str, str]) -> str:
    match = re.match(rf"({_NAME})(:?[-?])?(.*)$", expr, re.DOTALL)
    if match is None:
        raise ComposeError(f"invalid interpolation '${{{expr}}}'")
    name, op, rest = match.groups()
    value = env.get(name)
    empty_counts = bool(op) and op.startswith(":")
    missing = value is None or (empty_counts and value == "")
    if op in (":-", "-"):
        return interpolate(rest, env) if missing else str(value)
    if op in (":?", "?"):
        if missing:
            raise ComposeError(
                f"{name}: {interpolate(rest, env) or 'required variable is missing'}"
            )
        return str(value)
    return value or ""


def service_environment(
    compose: dict[str, Any], service: str, env: dict[str, str]
) -> dict[str, str]:
    raw = compose["services"][service].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, env.get(item, "")) for item in raw)
    return {str(key): interpolate(str(value), env) for key, value in raw.items()}


def bind_mounts(compose_file: Path, service: str, env: dict[str, str]) -> list[str]:
    compose = yaml.safe_load(compose_file.read_text())
    mounts = []
    for volume in compose["services"][service].get("volumes") or []:
        source, _, target = interpolate(str(volume), env).partition(":")
        if source.startswith((".", "/")):
            mounts.append(f"{(compose_file.parent / source).resolve()}:{target}")
    return mounts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compose_file", type=Path)
    parser.add_argument("--env-file", type=Path, help="default: .env beside the compose file")
    parser.add_argument("--service", default="lead-bridge")
    parser.add_argument("--fill", action="store_true", help="stand-ins for empty values")
    parser.add_argument("--podman", action="store_true", help="print podman run arguments")
    parser.add_argument(
        "--print-env-file", action="store_true", help="print the (filled) env file itself"
    )
    args = parser.parse_args(argv)
    env_file = args.env_file or args.compose_file.parent / ".env"
    env = read_env_file(env_file, fill=args.fill)
    if args.print_env_file:
        for key, value in env.items():
            print(f"{key}={value}")
        return 0
    compose = yaml.safe_load(args.compose_file.read_text())
    try:
        environment = service_environment(compose, args.service, env)
        mounts = bind_mounts(args.compose_file, args.service, env)
    except ComposeError as exc:
        print(f"{args.compose_file}: {exc}", file=sys.stderr)
        return 1
    if args.podman:
        for key, value in environment.items():
            print(f"-e\n{key}={value}")
        for mount in mounts:
            print(f"-v\n{mount}")
    else:
        for key, value in environment.items():
            print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
