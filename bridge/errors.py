"""The one error tree of Lead Bridge.

Every exception the service raises on purpose is drawn here, and every piece of
code that talks to the outside world translates foreign exceptions into these
(``raise ... from exc``) in exactly one place per library.

    LeadBridgeError
    ├── ConfigError                 bad configuration; startup stops with exit status 2
    ├── StoreError                  the durable store failed
    │   └── StoreUnavailable        cannot reach the database (intake answers 503)
    ├── MappingError                a lead cannot be mapped for one destination
    │                               (permanent for that lead and destination only)
    └── DeliveryError               one attempt to hand a record to a destination failed
        ├── RetryableError          try again later (timeouts, connection errors, 5xx, 408)
        │   └── RateLimited         429 and friends; slows the whole destination
        ├── PermanentError          the destination refused the record (other 4xx, validation)
        └── AuthError               401/403: re-authenticate once, then dead with a
                                    "check the credentials of destination X" message

An exception that no connector classified goes through ``classify_unexpected``:
encoding errors (text that is not valid Unicode, e.g. a lone surrogate) are
permanent; anything else is treated as retryable by the delivery engine and
logged with its traceback.

``error_for_status`` is the single place that decides which HTTP statuses are
retryable, rate limits, authentication failures or permanent.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Sequence


class LeadBridgeError(Exception):
    """Root of every error Lead Bridge raises on purpose."""


class ConfigError(LeadBridgeError):
    """One or more configuration problems, each naming its key path."""

    def __init__(self, problems: Sequence[tuple[str, str]] | str, path: str = "") -> None:
        if isinstance(problems, str):
            problems = [(path, problems)]
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{p}: {m}" if p else m for p, m in self.problems]
        return "\n".join(lines)


class StoreError(LeadBridgeError):
    """The durable store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (or a commit failed); callers answer 503."""


class MappingError(LeadBridgeError):
    """A lead cannot be turned into a record for one destination."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class DeliveryError(LeadBridgeError):
    """One attempt to deliver a record failed.

    ``status_code`` is the remote HTTP status when there was one; ``message`` is
    safe to store and show (it never holds the payload or a secret).
    """

    retryable: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.message = message
        self.status_code = status_code
        super().__init__(message)


class RetryableError(DeliveryError):
    """Try again later. ``retry_after`` (seconds), when known, is honoured."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The destination asked us to slow down; the whole destination pauses."""


class PermanentError(DeliveryError):
    """The destination refused this record; retrying cannot help."""


class AuthError(DeliveryError):
    """Credentials were refused. The engine re-authenticates once, then gives up."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    ``None`` for what cannot be a wait: no header, garbage, a negative, infinite or
    NaN number. A finite but absurd value (``1e12``, a date in 2099) is returned as
    is; the delivery engine bounds every wait by ``retry.max_retry_after``.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when - current)


def classify_unexpected(exc: BaseException) -> DeliveryError | None:
    """An exception no connector classified, when retrying it cannot help; else None.

    Text that cannot be encoded (``UnicodeEncodeError``, e.g. a lone surrogate
    such as "\\ud800" in a lead stored before intake refused them) fails the
    same way on every attempt: a dead letter with a readable reason at once.
    """
    if isinstance(exc, UnicodeError):
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return PermanentError(
            f"the record holds text that cannot be encoded ({type(exc).__name__}: {reason}; "
            "e.g. a lone surrogate such as \\ud800): retrying cannot help"
        )
    return None


def error_for_status(
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
) -> DeliveryError | None:
    """Classify an HTTP status. ``None`` means success (2xx)."""
    if 200 <= status < 300:
        return None
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status == 429:
        return RateLimited(text, status_code=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(text, status_code=status)
    if status == 408 or status >= 500:
        return RetryableError(text, status_code=status, retry_after=retry_after)
    if status == 410:
        return PermanentError(f"{text} (the endpoint is gone)", status_code=status)
    return PermanentError(text, status_code=status)
