"""Check a destination's credentials and reachability without sending a lead."""

from __future__ import annotations

import asyncio
import logging

from bridge.destinations import Destination
from bridge.errors import ConfigError, DeliveryError
from bridge.logs import event, redact
from connectors.base import CheckResult

log = logging.getLogger("lead_bridge.operations")

CHECK_TIMEOUT = 20.0


async def check_destination(dest: Destination, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """Run ``Connector.check()`` on a fresh connector of ``dest`` and close it.

    Never raises for a failed check: a classified error, a timeout or a
    connector bug becomes ``CheckResult(ok=False, detail=...)`` with a message
    fit to show (no secrets).
    """
    try:
        connector = dest.create_connector()
    except ConfigError as exc:
        return CheckResult(False, str(exc))
    try:
        async with asyncio.timeout(timeout):
            result = await connector.check()
    except DeliveryError as exc:
        result = CheckResult(False, exc.message, exc.status_code)
    except TimeoutError:
        result = CheckResult(False, f"no answer within {timeout:g}s")
    except Exception as exc:  # a connector bug: say what, keep the traceback in the log
        log.error("event=check_failed destination=%s", dest.name, exc_info=True)
        result = CheckResult(False, f"unexpected error: {type(exc).__name__}: {redact(str(exc))}")
    finally:
        try:
            await connector.close()
        except Exception as exc:
            event(log, "check_close_failed", logging.WARNING, destination=dest.name, error=str(exc))
    event(log, "credentials_checked", destination=dest.name, ok=result.ok)
    return result
