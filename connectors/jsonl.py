"""JSON lines: append each delivered record to a local file (audit, export, quickstart).

One line per delivery, UTF-8, written as an envelope so a consumer can tell
deliveries apart and drop the rare duplicate (delivery is at-least-once: a
crash between the fsync and the store's commit writes the lead again)::

    {"lead_id": "led_...", "destination": "audit", "delivered_at": "2024-05-01T12:00:00.123Z",
     "record": {...the mapped record...}}

Concurrent sends are group-committed (:mod:`bridge.groupcommit`): lines queued
while a write is in flight go out together in the next write and share one
fsync. ``send`` returns only after its line is on disk (``fsync: true``).

Rotation (optional): before a write that would take the file past
``rotate_bytes``, or on the first write of a new UTC day with ``rotate_daily``,
the file is renamed to ``<stem>.<UTC timestamp><suffix>`` and a new one begun.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from bridge.errors import DeliveryError, PermanentError, RetryableError
from bridge.groupcommit import GroupCommit
from connectors.base import (
    CheckResult,
    Connector,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)


class JsonlSettings(ConnectorSettings):
    path: Path
    fsync: bool = True
    rotate_bytes: int | None = Field(None, ge=1024)
    rotate_daily: bool = False


def _utc_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _classify(exc: OSError, path: Path) -> DeliveryError:
    """The one place that turns file-system errors into delivery errors.

    Every OSError is retryable: a full disk or a wrong permission is fixed by an
    operator, after which the queued records must still arrive.
    """
    return RetryableError(f"cannot write {path}: {exc.strerror or exc}")


class _Writer:
    """Blocking file operations; called from one worker thread at a time."""

    def __init__(self, settings: JsonlSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self.fd: int | None = None
        self.size = 0
        self.day = ""

    def open(self) -> None:
        if self.fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Leads are personal data: owner-only permissions on a new file.
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stat = os.fstat(self.fd)
        self.size = stat.st_size
        self.day = _utc_day(stat.st_mtime if self.size else time.time())

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def _rotate_if_due(self, incoming: int, now: float) -> None:
        due = self.size > 0 and (
            (
                self.settings.rotate_bytes is not None
                and self.size + incoming > self.settings.rotate_bytes
            )
            or (self.settings.rotate_daily and _utc_day(now) != self.day)
        )
        if not due:
            return
        self.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        counter = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.stem}.{stamp}-{counter}{self.path.suffix}")
            counter += 1
        os.replace(self.path, target)
        self.open()

    def write(self, lines: list[bytes]) -> list[int]:
        """Append the lines, fsync once; return each line's byte offset."""
        now = time.time()
        self.open()
        self._rotate_if_due(sum(len(line) for line in lines), now)
        assert self.fd is not None
        offsets = []
        end = self.size
        for line in lines:
            offsets.append(end)
            end += len(line)
        view = memoryview(b"".join(lines))
        try:
            while view:
                view = view[os.write(self.fd, view) :]
            if self.settings.fsync:
                os.fsync(self.fd)
        except OSError:
            # Never leave half a line behind: the whole batch is retried.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                self.close()
            raise
        self.size = end
        self.day = _utc_day(now)
        return offsets


def _check_writable(path: Path) -> CheckResult:
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A probe file next to the target: proves create + write permission
        # without touching the lead file (or its rotation).
        fd, probe = tempfile.mkstemp(prefix=".lead-bridge-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return CheckResult(False, f"cannot write in {directory}: {exc.strerror or exc}")
    if path.exists() and not os.access(path, os.W_OK):
        return CheckResult(False, f"{path} exists but is not writable")
    return CheckResult(True, f"{directory} is writable")


class JsonlConnector(Connector):
    type_name = "jsonl"
    Settings = JsonlSettings
    # High concurrency lets group commit share one fsync between many lines.
    flow_defaults = FlowDefaults(concurrency=32)
    settings: JsonlSettings

    def __init__(self, name: str, settings: ConnectorSettings) -> None:
        super().__init__(name, settings)
        self._writer = _Writer(self.settings)
        self._lines: GroupCommit[bytes, int] = GroupCommit(
            self._write,
            refuse=RetryableError,
            name=f"the JSON-lines writer of {self.settings.path}",
        )
        self._bug: Exception | None = None

    async def startup(self) -> None:
        try:
            await asyncio.to_thread(self._writer.open)
        except OSError as exc:
            raise _classify(exc, self.settings.path) from exc

    async def check(self) -> CheckResult:
        """The file's directory exists (or can be created) and a file can be
        created in it; nothing is written to the file itself."""
        return await asyncio.to_thread(_check_writable, self.settings.path)

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        envelope = {
            "lead_id": context.lead_id,
            "destination": context.destination,
            "delivered_at": _iso(time.time()),
            "record": record,
        }
        try:
            text = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"the record cannot be encoded as JSON: {exc}") from exc
        offset = await self._lines.submit(text.encode() + b"\n")
        return DeliveryResult(remote_id=f"{self.settings.path.name}:{offset}")

    async def _write(self, lines: list[bytes]) -> list[int]:
        """One write and one fsync for every line queued meanwhile; their offsets."""
        try:
            return await asyncio.to_thread(self._writer.write, lines)
        except OSError as exc:
            raise _classify(exc, self.settings.path) from exc
        except Exception as exc:
            # A bug: the senders hear of it as a retryable error (their records
            # must still arrive once it is fixed); close() raises the bug itself.
            self._bug = exc
            raise RetryableError(
                f"cannot write {self.settings.path}: {type(exc).__name__}"
            ) from exc

    async def close(self) -> None:
        await self._lines.close()
        await asyncio.to_thread(self._writer.close)
        bug, self._bug = self._bug, None
        if bug is not None:
            raise bug
