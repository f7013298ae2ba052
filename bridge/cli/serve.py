"""``serve`` (HTTPS receiver + delivery workers), ``worker`` (workers only), ``dev-cert``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.cli.common import add_config_option
from bridge.errors import ConfigError, LeadBridgeError

if TYPE_CHECKING:
    import uvicorn

    from bridge.config import Config

log = logging.getLogger("lead_bridge.cli")


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="key=value lines or JSON lines (default: logging.format, text)",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="the least severe level written (default: logging.level, INFO)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTPS webhook receiver and the delivery workers",
        description="Check the configuration (as check-config does), bind the port, then "
        "receive webhooks and deliver leads until SIGTERM or Ctrl-C.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  lead-bridge serve --config /etc/lead-bridge/config.yaml\n"
        "  lead-bridge serve -c config.yaml --port 9443 --log-format json\n"
        "  lead-bridge serve -c config.yaml --no-workers   # and `lead-bridge worker` elsewhere",
    )
    add_config_option(p)
    _add_log_options(p)
    p.add_argument("--host", default=None, help="override server.host")
    p.add_argument("--port", type=int, default=None, help="override server.port")
    p.add_argument(
        "--no-workers", action="store_true", help="receive only; run `lead-bridge worker` elsewhere"
    )
    p.set_defaults(func=cmd_serve)

    w = sub.add_parser(
        "worker",
        help="run the delivery workers without the HTTP receiver",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  lead-bridge worker --config /etc/lead-bridge/config.yaml "
        "--log-level WARNING",
    )
    add_config_option(w)
    _add_log_options(w)
    w.set_defaults(func=cmd_worker)

    c = sub.add_parser(
        "dev-cert",
        help="create a self-signed certificate for local HTTPS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  lead-bridge dev-cert                       # data/tls/cert.pem + key.pem\n"
        "  lead-bridge dev-cert --hostname leads.local --cert tls/c.pem --key tls/k.pem",
    )
    c.add_argument(
        "--cert",
        type=Path,
        default=Path("data/tls/cert.pem"),
        metavar="PATH",
        help="where to write the certificate (default: data/tls/cert.pem)",
    )
    c.add_argument(
        "--key",
        type=Path,
        default=Path("data/tls/key.pem"),
        metavar="PATH",
        help="where to write the private key, mode 0600 (default: data/tls/key.pem)",
    )
    c.add_argument("--hostname", action="append", default=None, help="DNS name (repeatable)")
    c.add_argument("--force", action="store_true", help="overwrite existing files")
    c.set_defaults(func=cmd_dev_cert)


def _configure_logging(args: argparse.Namespace, level: str, fmt: str) -> None:
    from bridge.logs import configure

    configure(args.log_level or level, args.log_format or fmt)


def prepare_tls(runtime_config: object) -> tuple[str | None, str | None]:
    """Validate TLS settings (and create a self-signed cert if asked). Plain HTTP is
    refused unless ``server.behind_proxy`` says a TLS proxy is in front."""
    from bridge.config import Config
    from bridge.tls import make_self_signed

    assert isinstance(runtime_config, Config)
    server = runtime_config.server
    tls = server.tls
    if tls.certfile is None and tls.keyfile is None:
        if server.behind_proxy:
            return None, None
        raise ConfigError(
            "HTTPS is required: set server.tls.certfile and server.tls.keyfile "
            "(or server.tls.self_signed: true for local use, or server.behind_proxy: true "
            "when a TLS proxy is in front)",
            "server.tls",
        )
    if tls.certfile is None or tls.keyfile is None:
        raise ConfigError("set both certfile and keyfile", "server.tls")
    if not tls.certfile.exists() or not tls.keyfile.exists():
        if not tls.self_signed:
            missing = tls.certfile if not tls.certfile.exists() else tls.keyfile
            raise ConfigError(f"file {missing} does not exist", "server.tls")
        make_self_signed(tls.certfile, tls.keyfile)
        log.warning(
            "event=dev_cert_created certfile=%s (self-signed: local use only)", tls.certfile
        )
    return str(tls.certfile), str(tls.keyfile)


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.destinations import load_runtime
    from bridge.tls import harden

    # exits 2 on a bad config or a missing file, before binding: what check-config checks
    runtime = load_runtime(args.config, preflight="serve")
    config = runtime.config
    _configure_logging(args, config.logging.level, config.logging.format)
    _tune_gil()
    certfile, keyfile = prepare_tls(config)
    host, port = args.host or config.server.host, args.port or config.server.port
    # Bind before anything starts: a second `serve` on a used port must fail
    # here, not after its workers began claiming deliveries.
    sock = bind_socket(host, port)
    app = create_app(runtime, start_workers=False if args.no_workers else None)
    uv_config = uvicorn_config(
        config, app, host=host, port=port, certfile=certfile, keyfile=keyfile
    )
    uv_config.load()
    if uv_config.ssl is not None:
        harden(uv_config.ssl, config.server.tls.min_version)
    server = _server_class()(uv_config)
    _freeze_startup_objects()
    server.run(sockets=[sock])
    return 0 if server.started else 1


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound socket for ``host:port`` (uvicorn listens on it), or a clear error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (another process, perhaps another lead-bridge serve, is listening there)"
        elif exc.errno == errno.EACCES:
            hint = " (ports below 1024 need privileges; use server.port 8443)"
        raise LeadBridgeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None
    return sock


def uvicorn_config(
    config: Config,
    app: object,
    *,
    host: str,
    port: int,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> uvicorn.Config:
    """The server's settings, including the slow-client limits of ``server.*``
    (see :mod:`bridge.server_protocol`)."""
    import uvicorn

    from bridge.server_protocol import protocol

    server = config.server
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        http=protocol(server.read_timeout, server.max_connections),
        timeout_keep_alive=server.keep_alive_timeout,  # type: ignore[arg-type]
        proxy_headers=True,
        forwarded_allow_ips=server.forwarded_allow_ips,
        access_log=False,  # intake logs one line per request, without path secrets
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(config.worker.shutdown_timeout) + 5,
        lifespan="on",
    )


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                # The shutdown was graceful: exit 0 instead of re-raising SIGTERM.
                self._captured_signals.clear()

    return Server


def cmd_worker(args: argparse.Namespace) -> int:
    from bridge.destinations import load_runtime

    runtime = load_runtime(args.config, preflight="worker")
    _configure_logging(args, runtime.config.logging.level, runtime.config.logging.format)
    _tune_gil()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop  # the same loop `serve` gets through uvicorn
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        loop_factory = None
    _freeze_startup_objects()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_run_worker(runtime))


async def _run_worker(runtime: object) -> int:
    from bridge.app import register_secrets
    from bridge.destinations import Runtime
    from bridge.engine import Engine
    from bridge.logs import event
    from bridge.metrics import Metrics
    from bridge.store import create_store

    assert isinstance(runtime, Runtime)
    register_secrets(runtime)
    store = create_store(runtime.config.storage)
    await store.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    metrics_cfg = runtime.config.metrics
    metrics_server = None
    if metrics_cfg.enabled and metrics_cfg.port is not None:
        from bridge.metrics_server import start_metrics_server

        metrics_server = await start_metrics_server(
            metrics,
            metrics_cfg.host,
            metrics_cfg.port,
            store=store,
            finished_interval=metrics_cfg.finished_counts_interval,
        )
    engine = Engine(store, runtime.active, metrics, runtime.config.worker)
    await engine.start()
    notifier = None
    if runtime.config.alerts.url is not None:
        from bridge.notify import Notifier

        notifier = asyncio.create_task(
            Notifier(
                store,
                runtime.config.alerts,
                metrics=metrics,
                finished_interval=runtime.config.metrics.finished_counts_interval,
            ).run()
        )
    from bridge.operations.drift import drift_task

    drift = asyncio.create_task(drift_task(store, runtime, metrics), name="drift")
    event(log, "worker_started", destinations=len(runtime.active))
    try:
        await stop.wait()
    finally:
        if notifier is not None:
            notifier.cancel()
        await engine.stop(runtime.config.worker.shutdown_timeout)
        drift.cancel()  # flushes what the engine counted last
        with contextlib.suppress(asyncio.CancelledError):
            await drift
        if metrics_server is not None:
            await metrics_server.close()
        await store.close()
        event(log, "worker_stopped")
    return 0


def _tune_gil() -> None:
    # Threads beside the event loop (the SQLite store's reads, run with
    # asyncio.to_thread) hand their results back to it; with the default 5 ms
    # switch interval each hand-over could wait that long for the GIL.
    sys.setswitchinterval(0.0005)


def _freeze_startup_objects() -> None:
    """Move everything built at startup (modules, config, pydantic models: a few
    hundred thousand objects) out of the garbage collector's sight. Otherwise
    every full collection walks them all and pauses the event loop
    (bench/README.md, "Figures behind comments")."""
    gc.collect()
    gc.freeze()


def cmd_dev_cert(args: argparse.Namespace) -> int:
    from bridge.tls import make_self_signed

    if (args.cert.exists() or args.key.exists()) and not args.force:
        print(f"{args.cert} or {args.key} exists; use --force to overwrite", file=sys.stderr)
        return 1
    make_self_signed(args.cert, args.key, hostnames=args.hostname)
    print(f"wrote {args.cert} and {args.key} (self-signed, for local use only)")
    return 0
