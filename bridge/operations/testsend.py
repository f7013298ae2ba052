"""Send a test lead: a synthetic lead, clearly marked (id ``lb-test-…``,
``"test": true``, "Lead Bridge test" in its fields), mapped and sent to one
destination straight away with the exact answer shown. It is never stored, so
it is not counted as a lead nor retried; the action is audited."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.destinations import Destination
from bridge.engine import idempotency_key
from bridge.errors import ConfigError, DeliveryError, MappingError
from bridge.logs import redact
from bridge.operations.audit import record as audit
from bridge.operations.search import TEST_PREFIX
from bridge.store.base import Store
from connectors.base import DeliveryContext

SEND_TIMEOUT = 30.0


@dataclass(frozen=True)
class SendTestResult:
    ok: bool
    destination: str
    lead_id: str
    matched: bool  # False: the destination's `when:` would skip it (sent anyway)
    record: dict[str, Any] | None  # what was sent
    status_code: int | None
    remote_id: str | None
    error: str | None
    duration_ms: float


def synthetic_lead(now: float | None = None) -> dict[str, Any]:
    """A new synthetic lead in the provider's shape, marked as a test everywhere."""
    ts = time.time() if now is None else now
    return {
        "id": f"{TEST_PREFIX}{secrets.token_hex(6)}",
        "test": True,
        "url": "https://lead-bridge.invalid/test-lead",
        "created": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {
            "first_name": "Test",
            "last_name": "Lead (Lead Bridge test)",
            "email": "lead-bridge-test@example.com",
            "phone": "+10000000000",
            "position": "Test",
            "organization_name": "Lead Bridge test",
            "interested_in": "A test lead sent by Lead Bridge to check this destination. "
            "Delete it.",
        },
    }


async def send_test_lead(
    store: Store, dest: Destination, *, actor: str, timeout: float = SEND_TIMEOUT
) -> SendTestResult:
    """Map a fresh test lead for ``dest`` and send it once (no retry); audited."""
    lead = synthetic_lead()
    lead_id = lead["id"]
    matched = dest.when is None or dest.when.matches(lead)
    t0 = time.perf_counter()
    record: dict[str, Any] | None = None
    status_code = remote_id = error = None
    try:
        record = dest.mapping.apply(lead).record
        connector = dest.create_connector()
        try:
            async with asyncio.timeout(timeout):
                await connector.startup()
                result = await connector.send(
                    record,
                    DeliveryContext(
                        lead_id=lead_id,
                        destination=dest.name,
                        attempt=1,
                        idempotency_key=idempotency_key(lead_id, dest.name),
                        lead=lead,
                        received_at=time.time(),
                    ),
                )
            status_code, remote_id = result.status_code, result.remote_id
        finally:
            await connector.close()
    except MappingError as exc:
        error = f"mapping error: {exc}"
    except DeliveryError as exc:
        error, status_code = exc.message, exc.status_code
    except TimeoutError:
        error = f"no answer within {timeout:g}s"
    except ConfigError as exc:
        error = str(exc)
    except Exception as exc:  # a connector bug: the operator sees what, not a 500
        error = f"unexpected error: {type(exc).__name__}: {redact(str(exc))}"
    outcome = SendTestResult(
        ok=error is None,
        destination=dest.name,
        lead_id=lead_id,
        matched=matched,
        record=record,
        status_code=status_code,
        remote_id=remote_id,
        error=error,
        duration_ms=round((time.perf_counter() - t0) * 1000, 1),
    )
    await audit(
        store,
        actor,
        "test_send",
        dest.name,
        {"lead_id": lead_id, "ok": outcome.ok, "status_code": status_code},
    )
    return outcome
