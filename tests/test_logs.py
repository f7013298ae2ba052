"""Structured logs: key=value text or JSON lines, with emails, phones and secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge import logs
from bridge.logs import JsonFormatter, RedactingFilter, TextFormatter, event, kv, redact


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger configured as `lead-bridge serve` does; restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    yield out
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_kv_quotes_only_what_needs_it() -> None:
    line = kv(
        event="deliver", lead_id="led_1", destination="crm", attempt=2, error="HTTP 503: busy"
    )
    assert line == 'event=deliver lead_id=led_1 destination=crm attempt=2 error="HTTP 503: busy"'
    assert kv(ids=["a", "b"], empty="", skipped=None) == 'ids=a,b empty=""'


def test_text_format_is_key_value(stream: io.StringIO) -> None:
    logs.configure("INFO", "text", stream)
    event(logging.getLogger("lead_bridge.engine"), "delivered", lead_id="led_1", duration_ms=12.5)

    line = stream.getvalue().strip()
    assert line.endswith(
        "level=info logger=lead_bridge.engine event=delivered lead_id=led_1 duration_ms=12.5"
    )
    assert line[:4].isdigit() and "Z level=" in line


def test_json_format_turns_pairs_into_fields(stream: io.StringIO) -> None:
    logs.configure("INFO", "json", stream)
    log = logging.getLogger("lead_bridge.engine")
    event(
        log,
        "retry",
        logging.WARNING,
        lead_id="led_1",
        destination="crm",
        attempt=3,
        outcome="retry",
        error="HTTP 503: busy",
    )
    log.info("plain message without pairs")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning" and first["logger"] == "lead_bridge.engine"
    assert {
        k: first[k] for k in ("event", "lead_id", "destination", "attempt", "outcome", "error")
    } == {
        "event": "retry",
        "lead_id": "led_1",
        "destination": "crm",
        "attempt": 3,  # typed, not "3"
        "outcome": "retry",
        "error": "HTTP 503: busy",
    }
    assert second["message"] == "plain message without pairs"


def test_json_lines_keep_numbers_and_booleans_typed(stream: io.StringIO) -> None:
    logs.configure("INFO", "json", stream)
    log = logging.getLogger("lead_bridge.app")
    event(log, "startup", port=9465, path_auth=False, ratio=0.5, ids=["led_1"], who="a@b.example")
    logs.access(log, "webhook", leads=2, duration_ms=1.5, ok=True)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["port"], first["path_auth"], first["ratio"]) == (9465, False, 0.5)
    assert first["ids"] == "led_1" and first["who"] == "a***@b.example"
    assert (second["leads"], second["duration_ms"], second["ok"]) == (2, 1.5, True)


def test_level_filters_debug(stream: io.StringIO) -> None:
    logs.configure("INFO", "text", stream)
    logging.getLogger("lead_bridge.x").debug("event=noisy")
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contact sergunich@gmail.com failed", "contact s***@gmail.com failed"),
        ("phone +123123123123123 rejected", "phone ***23 rejected"),
        ("call 555-123-4567 now", "call ***67 now"),
        ("at 2024-05-01T12:00:00Z", "at 2024-05-01T12:00:00Z"),
        ("lead led_slp3mt0qxvIXYUIK ok", "lead led_slp3mt0qxvIXYUIK ok"),
        ("took 1234 ms, status 503", "took 1234 ms, status 503"),
    ],
)
def test_redact_masks_emails_and_phones(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_registered_secrets_are_redacted(stream: io.StringIO) -> None:
    logs.register_secret("sk-live-canary-secret-987")
    logs.register_secret("abc")  # too short to redact safely: ignored
    logs.configure("DEBUG", "json", stream)
    logging.getLogger("lead_bridge.x").info("token=%s abc", "sk-live-canary-secret-987")

    record = json.loads(stream.getvalue())
    assert record["token"] == "[REDACTED]"
    assert "sk-live-canary-secret-987" not in stream.getvalue()


def test_tracebacks_are_redacted(stream: io.StringIO) -> None:
    logs.configure("INFO", "text", stream)
    try:
        raise ValueError("bad lead from jane.doe@example.org +44 20 7946 0958")
    except ValueError:
        logging.getLogger("lead_bridge.x").exception("event=crash")

    out = stream.getvalue()
    assert "ValueError" in out and "Traceback" in out
    assert "jane.doe@example.org" not in out and "7946 0958" not in out


def test_filter_survives_a_bad_format_string() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value=%d", ("nan",), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "value=%d"


def test_formatters_render_a_record() -> None:
    record = logging.LogRecord(
        "lead_bridge.t", logging.ERROR, __file__, 1, "event=x a=1", None, None
    )
    assert TextFormatter().format(record).endswith("level=error logger=lead_bridge.t event=x a=1")
    assert json.loads(JsonFormatter().format(record))["a"] == "1"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_line_is_the_line_event_would_write(stream: io.StringIO, fmt: str) -> None:
    logs.configure("INFO", fmt, stream)
    log = logging.getLogger("lead_bridge.intake")
    fields = {"outcome": "accepted", "leads": 2, "lead_ids": ["led_1", "ann@example.com"]}
    logs.access(log, "webhook", **fields)
    logs.event(log, "webhook", **fields)
    fast, slow = stream.getvalue().splitlines()
    strip_ts = (
        (lambda line: json.loads(line) | {"ts": ""}) if fmt == "json" else (lambda line: line[24:])
    )
    assert strip_ts(fast) == strip_ts(slow)
    assert "ann@example.com" not in fast and "a***@example.com" in fast


def test_access_line_falls_back_to_logging_when_others_listen(stream: io.StringIO) -> None:
    logs.configure("INFO", "text", stream)
    seen: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(listener)  # e.g. a test harness capturing records
    logs.access(logging.getLogger("lead_bridge.intake"), "webhook", outcome="accepted")
    assert [r.getMessage() for r in seen] == ["event=webhook outcome=accepted"]
    assert "event=webhook outcome=accepted" in stream.getvalue()


def test_access_line_respects_the_level(stream: io.StringIO) -> None:
    logs.configure("WARNING", "text", stream)
    logs.access(logging.getLogger("lead_bridge.intake"), "webhook", outcome="accepted")
    assert stream.getvalue() == ""
