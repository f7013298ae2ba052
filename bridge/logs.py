"""Structured logs: key=value lines (default) or JSON lines (``--log-format json``).

Log events as ``log.info("event=... lead_id=%s", ...)`` or better with
``event(log, "intake", lead_ids=..., outcome=...)``. Never log a payload, a secret,
an email or a phone number; ``RedactingFilter`` is the safety net that masks any
email address or phone-like number that slips into a message anyway.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import logging
import re
import sys
import threading
import time
from typing import Any

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 7+ digits, optionally with +, spaces, dashes, dots or parentheses between them
_PHONE_RE = re.compile(r"(?<![\w.])\+?\d(?:[\s().\-]?\d){6,}(?![\w.])")

# Seven phone-ish characters in a row: only then is the full phone pattern worth running.
_PHONE_HINT_RE = re.compile(r"[\d+][\d\s().\-]{6,}")

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make a secret value redacted wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _secrets.add(value)


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    return f"***{digits[-2:]}" if len(digits) > 2 else "***"


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    if "@" in text:  # cheap guard: the email pattern is the costly part otherwise
        text = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    if _PHONE_HINT_RE.search(text):
        text = _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            record.msg == "%s"
            and isinstance(args, tuple)
            and len(args) == 1
            and isinstance(args[0], _KV)
        ):
            # An event(): its text values were redacted one by one as it rendered, so
            # timestamps, counts and durations are never run through the patterns.
            record.msg = str(args[0])
            record.lb_event = args[0]  # JsonFormatter types its fields (only if used)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not kill logging
                message = str(record.msg)
            record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks can quote payloads in exception messages.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _value(value: Any) -> str:
    kind = type(value)
    if kind is int or kind is float or kind is bool:
        return str(value)
    if kind is list or kind is tuple:
        value = ",".join(str(v) for v in value)
    text = redact(str(value))
    if not text or " " in text or '"' in text or "=" in text:
        return json.dumps(text)
    return text


def kv(**fields: Any) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)


class _KV:
    """A key=value message rendered only when a handler formats it (off the hot path)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return kv(**self.fields)

    def typed(self) -> dict[str, Any]:
        """The fields for a JSON line: numbers and booleans as they are, text redacted."""
        return {k: _typed(v) for k, v in self.fields.items() if v is not None}


def _typed(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is float or kind is bool:
        return value
    if kind is list or kind is tuple:
        value = ",".join(str(v) for v in value)
    return redact(str(value))


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s", _KV({"event": name, **fields}))


_second = [0, ""]  # the formatted timestamp of the current second, shared by access lines


def _timestamp(now: float) -> str:
    second = int(now)
    if second != _second[0]:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


# (handler, JSON?) installed by configure(): the target of access lines.
_access_target: tuple[logging.Handler, bool] | None = None


def access(logger: logging.Logger, name: str, **fields: Any) -> None:
    """An access line (one per webhook request: intake's hot path).

    The same line as ``event()`` would write, in the same stream and format, but
    built and written directly instead of through the logging module's records,
    filters and formatters (a third of a request's CPU otherwise). Text values
    are redacted like every event's. Falls back to ``event()`` whenever logging
    is not exactly as ``configure()`` set it up (tests capturing logs, embedding).
    """
    target = _access_target
    handlers = logging.root.handlers
    if (
        target is None
        or len(handlers) != 1
        or handlers[0] is not target[0]
        or not logger.isEnabledFor(logging.INFO)
    ):
        event(logger, name, **fields)
        return
    handler, as_json = target
    ts = _timestamp(time.time())
    if as_json:
        out = {"ts": ts, "level": "info", "logger": logger.name, "event": name}
        for key, value in fields.items():
            if value is not None:
                out[key] = _typed(value)
        line = json.dumps(out, ensure_ascii=False)
    else:
        parts = [f"{ts} level=info logger={logger.name} event={_value(name)}"]
        for key, value in fields.items():
            kind = type(value)
            if kind is int or kind is float:  # counts and durations: nothing to redact
                parts.append(f"{key}={value}")
            elif value is not None:
                parts.append(f"{key}={_value(value)}")
        line = " ".join(parts)
    stream = handler.stream  # type: ignore[attr-defined]
    with handler.lock:  # type: ignore[union-attr]
        stream.write(line + "\n")
    handler.flush()  # a no-op for the buffered stderr handler


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        message = record.getMessage()
        line = f"{ts}.{int(record.msecs):03d}Z level={level} logger={record.name} {message}"
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


_KV_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        kv_event = getattr(record, "lb_event", None)
        fields = kv_event.typed() if isinstance(kv_event, _KV) else None
        pairs = [] if fields is not None else _KV_RE.findall(message)
        if fields is not None:
            out.update(fields)
        elif pairs and message.startswith(pairs[0][0] + "="):
            for key, raw in pairs:
                out[key] = json.loads(raw) if raw.startswith('"') else raw
        else:
            out["message"] = message
        if record.exc_text:
            out["traceback"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


# Log lines reach stderr at most this late (and at exit).
FLUSH_INTERVAL = 0.2


class _BufferedStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr through a 64 KiB buffer flushed by a daemon thread every
    FLUSH_INTERVAL and at exit: one write per batch of lines instead of a
    syscall per line, since a line per request is on intake's hot path.
    (A formatting thread fed by a queue measured slower: the GIL serialises it.)"""

    def __init__(self) -> None:
        raw = io.FileIO(sys.stderr.fileno(), "w", closefd=False)
        stream = io.TextIOWrapper(
            io.BufferedWriter(raw, 65536), encoding="utf-8", errors="backslashreplace"
        )
        super().__init__(stream)
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="log-flusher", daemon=True).start()
        atexit.register(self.close)

    def flush(self) -> None:
        """Called after every record: left to the flusher thread."""

    def _flush_now(self) -> None:
        with self.lock, contextlib.suppress(OSError, ValueError):  # type: ignore[union-attr]
            self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self._flush_now()

    def close(self) -> None:
        self._stop.set()
        self._flush_now()
        super().close()


def configure(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    """Log to ``stream``, or to stderr through a small buffer (see above)."""
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _BufferedStderrHandler()
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, _BufferedStderrHandler):
            old.close()
    # Documented logging optimisations: we never print the caller's frame,
    # thread or process, so do not collect them for every record.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root.addHandler(handler)
    root.setLevel(level)
    global _access_target
    _access_target = (handler, fmt == "json")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # Libraries that log request URLs or bodies at DEBUG stay quiet.
    for name in ("httpx", "httpcore", "urllib3", "simple_salesforce", "hubspot"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
