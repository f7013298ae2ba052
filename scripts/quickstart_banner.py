"""Print where the service listens once it answers /readyz (used by scripts/run).

    python scripts/quickstart_banner.py CONFIG [serve options...]

Runs beside ``lead-bridge serve``: it waits until ``GET /readyz`` answers 200,
prints the webhook URL, where the secret comes from, the admin API URL when
admin tokens are set, and the next commands to try, then exits. It gives up
quietly when the server process goes away or does not become ready in time.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SEED = Path("tests/fixtures/seed_curl_body.json")
DEFAULT_SECRET = "local-dev-secret"  # noqa: S105 - the README publishes it


def _serve_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    options, _ = parser.parse_known_args(argv)
    return options


def _ready(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_ready(url: str, deadline: float, server_pid: int) -> bool:
    # The certificate is self-signed and local: readiness is all we ask of it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    while time.monotonic() < deadline:
        if os.getppid() != server_pid:  # serve exited: it has said why
            return False
        if _ready(url, context if url.startswith("https") else None):
            return True
        time.sleep(0.2)
    return False


def banner(config: Any, config_path: str, base: str, secret_source: str) -> str:
    server = config.server
    webhook = base + server.path
    secret = os.environ.get("LEAD_WEBHOOK_SECRET", "")
    shown = secret if secret == DEFAULT_SECRET else "$LEAD_WEBHOOK_SECRET"
    cacert = f"--cacert {server.tls.certfile} " if server.tls.certfile else ""
    lines = [
        "",
        f"Lead Bridge is ready ({config_path})",
        f"  webhook  POST {webhook}",
    ]
    if config.auth.header_secrets:
        lines.append(f"  secret   Authorization: {shown}, from {secret_source}")
    elif config.auth.path_secrets:
        lines.append(f"  secret   the last path segment: POST {webhook}/<secret>")
    else:
        lines.append("  secret   none: the endpoint is open (set auth.header_secrets)")
    if config.admin.tokens:
        lines.append(f"  admin    {base}/admin/ (Authorization: Bearer <a token in admin.tokens>)")
        lines.append(f"  console  {base}/admin/ui/ (log in with a token in admin.tokens)")
    else:
        lines.append(
            "  admin    off (set admin.tokens to enable the admin API and the console; "
            "for the quickstart: LEAD_BRIDGE_ADMIN_TOKEN=<a long random token> scripts/run)"
        )
    auth = f"-H 'Authorization: {shown}' " if config.auth.header_secrets else ""
    body = f"@{SEED}" if SEED.exists() else '\'[{"id": "led_1", "data": {}}]\''
    lines += [
        "  try it   in another terminal:",
        f"    curl {cacert}-X POST '{webhook}' -H 'Content-Type: application/json' {auth}-d {body}",
        f"    .venv/bin/lead-bridge status --config {config_path}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    config_path, rest = argv[0], argv[1:]
    server_pid = os.getppid()
    try:
        from bridge.config_load import load_config

        config, _ = load_config(config_path)
    except Exception:
        return 0  # serve reports configuration errors itself
    options = _serve_options(rest)
    host = options.host or config.server.host
    connect = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
    scheme = "http" if config.server.tls.certfile is None else "https"
    port = options.port or config.server.port
    base = f"{scheme}://{connect}:{port}"
    if not wait_ready(base + "/readyz", time.monotonic() + 300, server_pid):
        return 0
    source = os.environ.get("LEAD_BRIDGE_SECRET_SOURCE", "the configuration")
    print(banner(config, config_path, base, source), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
