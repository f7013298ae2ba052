"""Structured logs: key=value lines (default) or JSON lines (``--log-format json``).

Log events as ``log.info("event=... lead_id=%s", ...)`` or better with
``event(log, "intake", lead_ids=..., outcome=...)``. Never log a payload, a secret,
an email or a phone number; ``RedactingFilter`` is the safety net that masks any
email address or phone-like number that slips into a message anyway.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# 7+ digits, optionally with +, spaces, dashes, dots or parentheses between them
_PHONE_RE = re.compile(r"(?<![\w.])\+?\d(?:[\s().\-]?\d){6,}(?![\w.])")

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
    text = _EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
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
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


def kv(**fields: Any) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, "%s", kv(event=name, **fields))


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
        pairs = _KV_RE.findall(message)
        if pairs and message.startswith(pairs[0][0] + "="):
            for key, raw in pairs:
                out[key] = json.loads(raw) if raw.startswith('"') else raw
        else:
            out["message"] = message
        if record.exc_text:
            out["traceback"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # Libraries that log request URLs or bodies at DEBUG stay quiet.
    for name in ("httpx", "httpcore", "urllib3", "simple_salesforce", "hubspot"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
