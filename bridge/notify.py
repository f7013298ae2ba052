"""The built-in notifier: tell someone when a destination stops delivering.

Every ``alerts.check_interval`` it reads the queue's cheap counts (pending, dead,
the oldest pending: ``Store.queue_depths``, through indexes, like a metrics
scrape) and, per destination, decides whether something needs a human.
Delivered and skipped deliveries, whose count grows with the history, are
counted at most every ``metrics.finished_counts_interval`` and before a stall is
reported (a progress seen only in those counts is noticed up to that interval
late, so a stall notice may come that much later, never early):

* **dead letters**: at least ``alerts.dead_letters`` new ones since the last
  notice, summarised by reason class (``HTTP 422``, ``credentials refused``,
  ``retries exhausted`` ...);
* **stalled**: deliveries are pending and none has finished (delivered, dead or
  skipped) for ``alerts.stalled_after``, whatever the cause: the destination
  failing, a long rate-limit pause, a delivery loop that is not running;
* **delivery loop down**: this process reports (``lead_bridge_worker_up``) that
  the destination's loop is not running, at once.

Everything that needs a human in one check goes out as ONE message, to a Slack
incoming webhook (``{"text": ...}``) or any HTTP endpoint (the same text plus the
figures as JSON). Each destination is mentioned at most once per
``alerts.min_interval``; what happens meanwhile is counted into its next notice.
A message carries destination names, counts, ages and reason classes only, never
a lead id, a payload or an error text (those can quote personal data). A failed
post is logged and tried again at the next check.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from bridge.config import AlertsConfig
from bridge.errors import StoreError
from bridge.logs import event, register_secret
from bridge.metrics import Metrics
from bridge.metrics_server import FINISHED_COUNTS_INTERVAL
from bridge.retry import human_duration
from bridge.store.base import DeliveryRecord, DestinationStatus, Store

log = logging.getLogger("lead_bridge.notify")

# Dead deliveries read per destination and notice to count reason classes.
REASON_SAMPLE = 500
_STATUS = re.compile(r"\bHTTP (\d{3})\b")

Post = Callable[[bytes], Awaitable[None]]


class NotifyError(Exception):
    """The notice could not be posted (network error or a non-2xx answer)."""


def reason_class(record: DeliveryRecord) -> str:
    """A dead letter's reason as a class that cannot carry personal data."""
    error = record.last_error or ""
    if error.startswith("check the credentials"):
        return "credentials refused"
    if error.startswith("mapping error"):
        return "mapping error"
    if error.startswith("gave up after"):
        return "retries exhausted (retry.max_age)"
    if "no longer stored" in error:
        return "payload purged or erased"
    if error.startswith("connector cannot start"):
        return "connector cannot start"
    code = record.last_status_code
    if code is None and (match := _STATUS.search(error)):
        code = int(match.group(1))
    return f"HTTP {code}" if code is not None else "other permanent error"


@dataclass
class Trouble:
    """What one destination's notice says."""

    destination: str
    new_dead_letters: int
    reasons: dict[str, int]
    pending: int
    oldest_pending_seconds: float | None
    stalled_seconds: float | None  # no delivery finished for this long, with some pending
    worker_down: bool = False  # its delivery loop is not running in this process

    def line(self) -> str:
        parts = []
        if self.worker_down:
            parts.append("delivery loop not running")
        if self.new_dead_letters:
            reasons = ", ".join(f"{name}: {n}" for name, n in self.reasons.items())
            parts.append(f"{self.new_dead_letters} new dead letter(s) ({reasons})")
        if self.stalled_seconds is not None:
            parts.append(
                f"no delivery finished for {human_duration(self.stalled_seconds, spelled=True)}"
            )
        if self.pending:
            oldest = self.oldest_pending_seconds
            age = f", oldest {human_duration(oldest, spelled=True)}" if oldest is not None else ""
            parts.append(f"{self.pending} pending{age}")
        return f"{self.destination}: " + "; ".join(parts)


@dataclass
class _Watch:
    dead_seen: int  # dead count at the last notice (or when watching began)
    since: float  # when that was: dead letters after it are the new ones
    finished: int  # delivered + skipped at the last count of them
    progress_at: float  # when a delivery was last seen finishing, or nothing was pending
    pending: int = 0  # at the last check
    oldest_pending_at: float | None = None  # at the last check
    dead: int = 0  # at the last check
    noticed_at: float = -math.inf

    def moved(self, pending: int, dead: int, oldest: float | None) -> bool:
        """Seen in the cheap counts alone: a dead letter more or fewer, the oldest
        pending delivery gone, or fewer pending (a delivery finished)."""
        moved = dead != self.dead or oldest != self.oldest_pending_at or pending < self.pending
        self.pending, self.dead, self.oldest_pending_at = pending, dead, oldest
        return moved


@dataclass
class Notifier:
    store: Store
    config: AlertsConfig
    clock: Callable[[], float] = time.time
    post: Post | None = None
    metrics: Metrics | None = None  # where delivery loops report whether they run
    host: str = field(default_factory=socket.gethostname)
    # Delivered and skipped deliveries are counted at most this often (their count
    # grows with the history) and when a stall is about to be reported.
    finished_interval: float = FINISHED_COUNTS_INTERVAL
    _watch: dict[str, _Watch] = field(default_factory=dict)
    _primed_at: float | None = None  # when the first look was taken
    _finished: dict[str, int] = field(default_factory=dict)  # delivered + skipped
    _counted_at: float = -math.inf

    def __post_init__(self) -> None:
        if self.config.url is not None:
            register_secret(self.config.url.get_secret_value())  # a Slack URL is a credential
        if self.post is None:
            self.post = self._http_post

    async def run(self) -> None:
        """Check every ``check_interval`` until cancelled."""
        while True:
            try:
                await self.check()
            except StoreError as exc:
                event(log, "alerts_check_failed", logging.WARNING, error=type(exc).__name__)
            await asyncio.sleep(self.config.check_interval)

    async def check(self) -> list[Trouble]:
        """One look at the queue; posts a notice when one is due. Returns what it sent."""
        now = self.clock()
        # The backlog and the dead letters through the store's indexes (what
        # metrics scrapes read), never the whole history at every check.
        depths = await self.store.queue_depths(now)
        if now - self._counted_at >= self.finished_interval:
            await self._count_finished(now)
        down = set(self.metrics.workers_down()) if self.metrics is not None else set()
        destinations = list(depths)
        known = {d.destination for d in destinations}
        destinations += [DestinationStatus(name, {}, 0, None) for name in sorted(down - known)]
        due: list[tuple[Trouble, int]] = []
        for dest in destinations:
            found = await self._assess(dest, now, worker_down=dest.destination in down)
            if found is not None:
                due.append(found)
        if self._primed_at is None:
            self._primed_at = now
        if not due:
            return []
        return await self._notify(due, now)

    def _watch_of(self, dest: DestinationStatus, now: float, worker_down: bool) -> _Watch | None:
        """The destination's watch, made at its first look; None when nothing
        about it can be news yet."""
        watch = self._watch.get(dest.destination)
        if watch is not None:
            return watch
        if self._primed_at is not None:
            # A destination with no rows at the first look: all of it is new.
            watch = self._watch[dest.destination] = _Watch(0, self._primed_at, 0, now)
            return watch
        # Dead letters that existed before we started watching are not news.
        dead, pending = dest.counts.get("dead", 0), dest.counts.get("pending", 0)
        finished = self._finished.get(dest.destination, 0)
        watch = self._watch[dest.destination] = _Watch(
            dead, now, finished, now, pending, dest.oldest_pending_at, dead
        )
        return watch if worker_down else None

    async def _track_progress(self, watch: _Watch, dest: DestinationStatus, now: float) -> None:
        """Move the watch's last progress to ``now`` if the destination moved."""
        pending, dead = dest.counts.get("pending", 0), dest.counts.get("dead", 0)
        finished = self._finished.get(dest.destination, 0)
        moved = watch.moved(pending, dead, dest.oldest_pending_at)
        if moved or finished != watch.finished or pending == 0:
            watch.finished, watch.progress_at = finished, now
        if pending and now - watch.progress_at >= self.config.stalled_after:
            if self._counted_at < now:  # a stall is reported on a fresh count only
                await self._count_finished(now)
                finished = self._finished.get(dest.destination, 0)
            if finished != watch.finished:
                watch.finished, watch.progress_at = finished, now

    async def _assess(
        self, dest: DestinationStatus, now: float, *, worker_down: bool
    ) -> tuple[Trouble, int] | None:
        """The trouble to report about one destination now (with its dead count), if any."""
        watch = self._watch_of(dest, now, worker_down)
        if watch is None:
            return None
        await self._track_progress(watch, dest, now)
        dead, pending = dest.counts.get("dead", 0), dest.counts.get("pending", 0)
        watch.dead_seen = min(watch.dead_seen, dead)  # a replay took some back
        new_dead = dead - watch.dead_seen
        idle = now - watch.progress_at
        stalled = idle if pending and idle >= self.config.stalled_after else None
        if new_dead < self.config.dead_letters and stalled is None and not worker_down:
            return None
        if now - watch.noticed_at < self.config.min_interval:
            return None
        oldest = dest.oldest_pending_at
        trouble = Trouble(
            destination=dest.destination,
            new_dead_letters=new_dead,
            reasons=await self._reasons(dest.destination, watch.since) if new_dead else {},
            pending=pending,
            oldest_pending_seconds=round(now - oldest, 1) if oldest is not None else None,
            stalled_seconds=round(stalled, 1) if stalled is not None else None,
            worker_down=worker_down,
        )
        return trouble, dead

    async def _notify(self, due: list[tuple[Trouble, int]], now: float) -> list[Trouble]:
        """Post one notice for every trouble due; the watches remember it was sent."""
        troubles = [trouble for trouble, _ in due]
        try:
            assert self.post is not None
            await self.post(self._message(troubles))
        except NotifyError as exc:
            event(log, "alert_failed", logging.WARNING, error=str(exc))
            return []
        for trouble, dead in due:
            watch = self._watch[trouble.destination]
            watch.noticed_at, watch.dead_seen, watch.since = now, dead, now
            event(
                log,
                "alert_sent",
                logging.WARNING,
                destination=trouble.destination,
                new_dead_letters=trouble.new_dead_letters,
                stalled_seconds=trouble.stalled_seconds,
                pending=trouble.pending,
            )
        return troubles

    async def _count_finished(self, now: float) -> None:
        counts = await self.store.finished_counts()
        self._finished = {d: c.get("delivered", 0) + c.get("skipped", 0) for d, c in counts.items()}
        self._counted_at = now

    async def _reasons(self, destination: str, since: float) -> dict[str, int]:
        records = await self.store.list_deliveries(
            status="dead", destination=destination, since=since, limit=REASON_SAMPLE
        )
        counted = Counter(reason_class(r) for r in records)
        return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))

    def _message(self, troubles: list[Trouble]) -> bytes:
        text = f"Lead Bridge on {self.host} needs attention:\n" + "\n".join(
            f"• {t.line()}" for t in troubles
        )
        body: dict[str, Any] = {"text": text}
        if self.config.format == "webhook":
            body = {
                "source": "lead-bridge",
                "host": self.host,
                "text": text,
                "destinations": [asdict(t) for t in troubles],
            }
        return orjson.dumps(body)

    async def _http_post(self, body: bytes) -> None:
        assert self.config.url is not None
        from connectors import _http

        # The connectors' client and address guard: alerts.url comes from the config too.
        client = _http.make_client(
            timeout=self.config.timeout,
            max_connections=1,
            allow_private=self.config.allow_private,
        )
        try:
            async with client:
                response = await client.post(
                    self.config.url.get_secret_value(),
                    content=body,
                    headers={"content-type": "application/json"},
                )
            if not 200 <= response.status_code < 300:
                raise NotifyError(f"HTTP {response.status_code}")
        except _http.TRANSPORT_ERRORS as exc:
            refused = _http.address_refused(exc)
            if refused is not None:
                raise NotifyError(f"alerts.url refused: {refused}") from exc
            raise NotifyError(type(exc).__name__) from exc
