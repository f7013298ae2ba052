"""The configuration's typed models: every key, its type, default and checks.

Loading a file (YAML, ``${VAR}`` expansion, one error listing every problem by
its key path) is :mod:`bridge.config_load`; connector settings, mappings and
filters are checked by :mod:`bridge.destinations`, which builds on these models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

# parse_duration: re-exported for callers of bridge.config (the CLI, the admin API).
from bridge.durations import Duration as Duration
from bridge.durations import parse_duration as parse_duration

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_size(value: Any) -> Any:
    """``1048576``, ``"100MB"``, ``"64MiB"``, ``"512kb"`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            unit = match.group(2).lower() if match.group(2) else None
            return int(match.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("expected a size in bytes such as 1048576, '100MB' or '64MiB'")


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=1)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSConfig(Model):
    certfile: Path | None = None
    keyfile: Path | None = None
    # Create a self-signed certificate at certfile/keyfile when they do not exist
    # (local development only: the provider will not trust it).
    self_signed: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"


class ServerConfig(Model):
    host: str = "0.0.0.0"  # noqa: S104 - a webhook receiver listens on all interfaces
    port: int = Field(8443, ge=1, le=65535)
    path: str = "/lead/webhook"
    tls: TLSConfig = TLSConfig()
    behind_proxy: bool = False
    forwarded_allow_ips: list[str] = ["127.0.0.1"]
    max_body_bytes: int = Field(1_048_576, ge=1024)
    access_log: bool = True
    # Slow clients: one request (headers and body together) must arrive within
    # read_timeout, or the connection is closed (408); an idle kept-alive
    # connection is closed after keep_alive_timeout; connections beyond
    # max_connections are answered 503 and closed at once.
    read_timeout: Duration = Field(30.0, gt=0, le=3600)
    keep_alive_timeout: Duration = Field(5.0, gt=0, le=3600)
    max_connections: int = Field(500, ge=1, le=100_000)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a URL path starting with '/', e.g. /lead/webhook")
        if any(ch in value for ch in "?#{} "):
            raise ValueError("expected a plain URL path without '?', '#', '{', '}' or spaces")
        return value.rstrip("/") or "/"


class AuthConfig(Model):
    header_secrets: list[SecretStr] = []
    path_secrets: list[SecretStr] = []

    @field_validator("header_secrets", "path_secrets")
    @classmethod
    def _non_empty(cls, values: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(values):
            if not secret.get_secret_value():
                raise ValueError(f"item {index} is empty; a secret must not be empty")
        return values

    @field_validator("path_secrets")
    @classmethod
    def _path_safe(cls, values: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(values):
            if "/" in secret.get_secret_value():
                raise ValueError(f"item {index} contains '/'; a path secret is one path segment")
        return values


class StorageConfig(Model):
    url: str = "sqlite:///./data/lead-bridge.db"
    # SQLite only: FULL fsyncs every commit (the durability promise), NORMAL may
    # lose the last commits on power loss (never on a process crash).
    synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
    # PostgreSQL only.
    pool_size: int = Field(10, ge=1, le=200)
    # PostgreSQL only: connecting through PgBouncer in transaction mode (no
    # server-side prepared statements, no schema in the URL; docs/scaling.md).
    pgbouncer: bool = False
    # Webhook bodies received and not yet committed, in bytes at most; beyond it
    # intake answers 503 with Retry-After at once (a stalled store holds bounded memory).
    max_inflight_bytes: int = Field(32 << 20, ge=1 << 16)
    # Key of the email/phone search index (bridge/store/search.py); unset: a
    # random key generated once and kept in the database.
    search_key: SecretStr | None = None

    @field_validator("search_key")
    @classmethod
    def _search_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("expected at least 16 characters (e.g. openssl rand -hex 32)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                "expected sqlite:///relative/path.db, sqlite:////absolute/path.db "
                "or postgresql://user@host:port/database"
            )
        return value


class RetryConfig(Model):
    # Delays between attempts; the last one repeats until max_age.
    schedule: list[Duration] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0], min_length=1
    )
    jitter: float = Field(0.2, ge=0, le=1)
    max_age: Duration = 72 * 3600.0
    # Short retry of connection errors inside one attempt (tenacity).
    connect_retries: int = Field(2, ge=0, le=10)
    connect_retry_wait: Duration = 0.5
    # Upper bound on one attempt, connector call included.
    timeout: Duration = 30.0
    # The longest pause a Retry-After (or a rate limit) may impose; never past max_age.
    max_retry_after: Duration = Field(3600.0, gt=0)


class ApiBudgetConfig(Model):
    """The API budget guard: the share of the CRM's API allowance (as it reports
    it) above which the destination slows down, and above which it pauses."""

    soft_share: float = Field(0.8, gt=0, le=1)
    hard_share: float = Field(0.95, gt=0, le=1)
    # Above soft_share: at most one API call per slow_interval.
    slow_interval: Duration = Field(2.0, gt=0)
    # Above hard_share: paused this long, then one call looks whether the window freed.
    recheck: Duration = Field(900.0, gt=0)

    @field_validator("hard_share")
    @classmethod
    def _above_soft(cls, value: float, info: ValidationInfo) -> float:
        soft = info.data.get("soft_share")
        if soft is not None and value <= soft:
            raise ValueError(f"expected a share above soft_share ({soft:g}), at most 1")
        return value


class FlowConfig(Model):
    # None: the connector type's default.
    concurrency: int | None = Field(None, ge=1, le=1000)
    rate_per_second: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    # Leads per API call for connectors that batch (HubSpot, Salesforce); None: the
    # connector's maximum, 1: one lead per call.
    batch_size: int | None = Field(None, ge=1, le=1000)
    # How long a batch may wait to fill up before it is sent; 0: send at once.
    batch_wait: Duration = Field(0.0, ge=0, le=60)
    api_budget: ApiBudgetConfig = ApiBudgetConfig()


class CollectInto(Model):
    collect_into: str = Field(min_length=1)


_DEST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DestinationConfig(Model):
    name: str
    type: str = Field(min_length=1)
    enabled: bool = True
    settings: dict[str, Any] = {}
    when: Any = None
    mapping: dict[str, Any] | None = None
    unmapped: Literal["ignore"] | CollectInto = "ignore"
    retry: RetryConfig = RetryConfig()
    flow: FlowConfig = FlowConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _DEST_NAME_RE.match(value):
            raise ValueError(
                "expected 1-64 letters, digits, '_', '-' or '.', starting with a letter or "
                "digit (it appears in logs, metrics and CLI output)"
            )
        return value

    @field_validator("unmapped", mode="before")
    @classmethod
    def _unmapped(cls, value: Any) -> Any:
        if value == "ignore":
            return value
        if (
            isinstance(value, dict)
            and set(value) == {"collect_into"}
            and isinstance(value["collect_into"], str)
            and value["collect_into"]
        ):
            return value
        raise ValueError("expected 'ignore' or a mapping {collect_into: <target field>}")


class WorkerConfig(Model):
    # Run delivery workers inside `lead-bridge serve` (false: run `lead-bridge worker`).
    enabled: bool = True
    lease: Duration = 60.0
    batch_size: int = Field(256, ge=1, le=5000)
    poll_interval: Duration = 0.5
    shutdown_timeout: Duration = 20.0


class LoggingConfig(Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class RetentionConfig(Model):
    # Purge the payload of fully delivered leads older than N days (the id stays).
    payload_days: int | None = Field(None, ge=1)
    # Quarantined bodies and elements: dropped after N days, and the oldest
    # dropped first beyond either cap (None: no limit of that kind).
    quarantine_days: int | None = Field(30, ge=1)
    quarantine_max_rows: int | None = Field(10_000, ge=1)
    quarantine_max_bytes: ByteSize | None = 100 * 10**6
    interval: Duration = Field(3600.0, gt=0)

    @property
    def enabled(self) -> bool:
        """Is there anything for the retention job to do?"""
        quarantine = (self.quarantine_days, self.quarantine_max_rows, self.quarantine_max_bytes)
        return self.payload_days is not None or any(v is not None for v in quarantine)


class MetricsConfig(Model):
    enabled: bool = True
    # A separate plain-HTTP port for /metrics; None serves it on the main port
    # behind the admin token.
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "127.0.0.1"
    # How often a scrape recounts delivered and skipped deliveries (a count over
    # the whole history); pending and dead ones are counted at every scrape.
    finished_counts_interval: Duration = Field(300.0, gt=0)


class AlertsConfig(Model):
    # The built-in notifier (bridge/notify.py): one summary, never lead data, to a
    # Slack incoming webhook or any HTTP endpoint when a destination gets dead
    # letters or stops making progress. No url: off.
    url: SecretStr | None = None
    format: Literal["slack", "webhook"] = "slack"
    check_interval: Duration = 60.0
    dead_letters: int = Field(1, ge=1)  # this many new dead letters trigger a notice
    stalled_after: Duration = 900.0  # pending, and no delivery for this long
    min_interval: Duration = 900.0  # at most one notice per destination per this
    timeout: Duration = 10.0
    # true: the url may resolve to a loopback/private address (an intranet chat
    # server, tests); by default only globally routable addresses, as for connectors.
    allow_private: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("expected an http:// or https:// URL (a Slack incoming webhook, say)")
        return value

    @field_validator("check_interval", "stalled_after", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("expected a duration above 0, such as '60s' or '15m'")
        return value


class AdminConfig(Model):
    tokens: list[SecretStr] = []
    # A read-only token for the console (/admin/ui/): it can look, not act.
    viewer_token: SecretStr | None = None
    # How long a console login lasts.
    session_ttl: Duration = Field(8 * 3600.0, gt=0, le=7 * 86400)

    @field_validator("tokens")
    @classmethod
    def _tokens_set(cls, values: list[SecretStr]) -> list[SecretStr]:
        # An empty entry (an unset ${VAR:-}) is no token: one config can leave the
        # admin API and the console off until the variable is set.
        return [token for token in values if token.get_secret_value()]

    @field_validator("viewer_token")
    @classmethod
    def _viewer_distinct(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            return None
        viewer = value.get_secret_value()
        if not viewer:
            raise ValueError("empty; set a token or leave the key out")
        tokens: list[SecretStr] = info.data.get("tokens", [])
        if not tokens:
            raise ValueError("needs admin.tokens too (the console is off without an admin token)")
        if any(viewer == t.get_secret_value() for t in tokens):
            raise ValueError("equals one of admin.tokens; a viewer needs its own token")
        return value


class PluginsConfig(Model):
    # Directories searched for `type: "my_module:MyConnector"` (my_module.py is loaded
    # by its path; the directories are never put on sys.path).
    paths: list[Path] = []

    @field_validator("paths")
    @classmethod
    def _usable(cls, values: list[Path]) -> list[Path]:
        for index, path in enumerate(values):
            if "\x00" in str(path):
                raise ValueError(f"item {index} contains a NUL character; expected a directory")
        return values


class Config(Model):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    storage: StorageConfig = StorageConfig()
    destinations: list[DestinationConfig] = []
    worker: WorkerConfig = WorkerConfig()
    logging: LoggingConfig = LoggingConfig()
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig = MetricsConfig()
    admin: AdminConfig = AdminConfig()
    plugins: PluginsConfig = PluginsConfig()
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("destinations")
    @classmethod
    def _unique_names(cls, values: list[DestinationConfig]) -> list[DestinationConfig]:
        seen: dict[str, int] = {}
        for index, dest in enumerate(values):
            if dest.name in seen:
                raise ValueError(
                    f"destination name {dest.name!r} is used by items {seen[dest.name]} "
                    f"and {index}; names must be unique"
                )
            seen[dest.name] = index
        return values
