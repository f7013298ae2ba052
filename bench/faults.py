"""The fault suite: does every acknowledged lead end delivered, or dead with a reason,
while everything around the service misbehaves and the service itself is killed?

    python bench/faults.py                                # long: 5,000 leads, 20 kills
    python bench/faults.py --leads 300 --kills 3          # short (tests/bench/test_faults.py)
    python bench/faults.py --storage-url postgresql://postgres@127.0.0.1:5432/test
    python bench/faults.py --storage-url postgresql://postgres@127.0.0.1:5432/test --replicas 3

What runs, all on 127.0.0.1:

* ``lead-bridge serve`` as a subprocess (plain HTTP, SQLite in a fresh directory, or
  PostgreSQL in a fresh schema) with two ``webhook`` destinations;
* bench/faulty_sink.py behind both destinations: 30 % 5xx, 5 % connection resets,
  5 % hangs, bursts of 429 with absurd ``Retry-After`` values, and 1 % of leads
  refused for good (422: the only dead letters expected);
* a provider simulator posting the leads in arrays of 1-10 at ``--rate`` leads/s,
  retrying every non-200 answer and connection error with growing delays (the
  provider's contract), and re-sending ``--resend`` of the arrays that were
  already acknowledged;
* one lead holding a lone surrogate (``"\\ud800"``, issue 12 item 7), posted alone:
  it must end delivered, dead with a reason, or quarantined at intake (``--no-surrogate``
  leaves it out);
* ``--kills`` SIGKILLs spread over the posting phase, then a restart; on SQLite
  every third one kills only the writer child (the service must start another).
  ``--replicas 3`` (PostgreSQL) runs three services on one database: the provider
  posts round robin (a retry goes to the next one, as behind a load balancer) and
  each kill hits one replica at random while the others keep taking leads.

Then it waits until no delivery is pending (or nothing has moved for
``--settle`` seconds), stops the service, reads the store and the sink's record
and prints: leads acknowledged, delivered, lost, dead (with reasons), stuck
pending, delivered more than once by raw count and by distinct idempotency key.
It exits 1 when a lead was lost, is stuck, was never acknowledged, went dead for
any other reason than the sink's 422, reached a destination under more than one
idempotency key, or was quoted in one of the service's own notices (``alerts.url``
points at the sink's fault-free ``/alerts``); 0 otherwise. ``--json PATH`` writes the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from faulty_sink import Faults, FaultySink, poisoned

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "faults-webhook-secret"
ADMIN = "faults-admin-token-0123456789"
DESTINATIONS = ("hook-a", "hook-b")
FINAL = ("delivered", "dead", "skipped")


@dataclass
class Options:
    leads: int = 5000
    kills: int = 20
    rate: float = 80.0  # leads per second posted
    resend: float = 0.05  # share of acknowledged arrays the provider sends again
    settle: float = 90.0  # give up waiting when nothing moved for this long
    storage_url: str | None = None
    seed: int = 12
    work: Path | None = None
    keep: bool = False
    json_path: Path | None = None
    # Retry-After values are clamped to this (retry.max_retry_after, issue 12 item 1).
    max_retry_after: float = 2.0
    burst_every: int = 400  # sink requests between two bursts of absurd 429s; 0: none
    surrogate: bool = True  # also post one lead holding a lone surrogate ("\ud800")
    # Services sharing the PostgreSQL database (replicas behind a load balancer):
    # the provider spreads its posts over them, each kill hits one at random.
    replicas: int = 1


# ---------------------------------------------------------------------- the service


class Service:
    """`lead-bridge serve` as a subprocess that can be killed and started again."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    async def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve", "--config", str(self.config)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"lead-bridge exited with {self.proc.returncode}: {self.log}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"lead-bridge not ready after {timeout}s: {self.log}")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)

    def writer_pid(self) -> int | None:
        """The SQLite writer child's pid (Linux /proc), or None."""
        assert self.proc is not None
        task_dir = Path(f"/proc/{self.proc.pid}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                for pid in (task / "children").read_text().split():
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"sqlite_writer" in cmdline:
                        return int(pid)
        return None

    async def kill_writer(self, timeout: float = 30) -> bool:
        """SIGKILL the writer child alone; wait until the service runs a new one."""
        old = self.writer_pid()
        if old is None:
            return False
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                # /readyz pings the store, which starts a new writer when the old one died.
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"{self.url}/readyz")
                new = self.writer_pid()
                if new is not None and new != old:
                    return True
                await asyncio.sleep(0.05)
        raise TimeoutError(f"no new SQLite writer {timeout}s after killing it: {self.log}")

    async def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        except TimeoutError:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)

    async def status(self) -> dict[str, dict[str, int]]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"{self.url}/admin/status", headers={"authorization": f"Bearer {ADMIN}"}
            )
            response.raise_for_status()
        return {d["name"]: d["counts"] for d in response.json()["destinations"]}


def write_config(
    work: Path,
    storage_url: str,
    sink_url: str,
    port: int,
    opts: Options,
    name: str = "config.yaml",
) -> Path:
    retry = {
        "schedule": ["200ms", "500ms", "1s", "2s"],
        "jitter": 0.2,
        "max_age": "2h",
        "timeout": "2s",
        "connect_retries": 1,
        "connect_retry_wait": "100ms",
    }
    if _has_retry_after_bound():
        retry["max_retry_after"] = f"{opts.max_retry_after}s"
    config = {
        "server": {"host": "127.0.0.1", "port": port, "behind_proxy": True},
        "auth": {"header_secrets": [SECRET]},
        "admin": {"tokens": [ADMIN]},
        "storage": {"url": storage_url},
        "worker": {"poll_interval": "50ms", "lease": "5s", "shutdown_timeout": "5s"},
        "logging": {"level": "WARNING"},
        # The built-in notifier posts to the sink's fault-free /alerts path.
        "alerts": {
            "url": f"{sink_url}/alerts",
            "format": "webhook",
            "check_interval": "1s",
            "allow_private": True,
        },
        "destinations": [
            {
                "name": name,
                "type": "webhook",
                "settings": {"url": f"{sink_url}/{name}", "allow_private": True, "timeout": "1s"},
                "retry": retry,
                "flow": {"concurrency": 16},
            }
            for name in DESTINATIONS
        ],
    }
    path = work / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _has_retry_after_bound() -> bool:
    sys.path.insert(0, str(ROOT))
    from bridge.config import RetryConfig

    return "max_retry_after" in RetryConfig.model_fields


# ---------------------------------------------------------------------- the provider


@dataclass
class Provider:
    """Posts arrays of leads like the provider does: every non-200 is retried."""

    url: str | list[str]  # several: a load balancer's round robin, a retry goes to the next
    ids: list[str]
    rate: float
    resend: float
    rng: random.Random
    acknowledged: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    poison: list[str] = field(default_factory=list)  # posted alone, each in its own array
    rejected: set[str] = field(default_factory=set)  # answered 200 with "rejected": 1
    resent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    turn: int = 0

    def next_url(self) -> str:
        if isinstance(self.url, str):
            return self.url
        self.turn += 1
        return self.url[self.turn % len(self.url)]

    async def run(self, concurrency: int = 8) -> None:
        batches: list[list[str]] = []
        i = 0
        while i < len(self.ids):
            size = self.rng.randint(1, 10)
            batches.append(self.ids[i : i + size])
            i += size
        for n, lead_id in enumerate(self.poison):
            batches.insert(len(batches) * (n + 1) // (len(self.poison) + 1), [lead_id])
        queue: asyncio.Queue[list[str]] = asyncio.Queue()
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=15, limits=limits) as client:
            workers = [
                asyncio.create_task(self._post_loop(client, queue)) for _ in range(concurrency)
            ]
            start = time.monotonic()
            sent = 0
            for batch in batches:
                # Paced: the kills land while leads are still arriving.
                due = start + sent / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await queue.put(batch)
                sent += len(batch)
            await queue.join()
            # Re-send some arrays that were already acknowledged: duplicates, never new work.
            again = [b for b in batches if self.rng.random() < self.resend]
            self.resent = sum(len(b) for b in again)
            for batch in again:
                await queue.put(batch)
            await queue.join()
            for w in workers:
                w.cancel()
        self.done.set()

    async def _post_loop(self, client: httpx.AsyncClient, queue: asyncio.Queue[list[str]]) -> None:
        while True:
            batch = await queue.get()
            try:
                await self._post(client, batch)
            finally:
                queue.task_done()

    async def _post(self, client: httpx.AsyncClient, batch: list[str]) -> None:
        # ensure_ascii: a lone surrogate travels as the JSON escape "\\ud800".
        body = json.dumps([_lead(lead_id) for lead_id in batch]).encode()
        headers = {"authorization": SECRET, "content-type": "application/json"}
        delay = 0.1
        while True:
            try:
                response = await client.post(self.next_url(), content=body, headers=headers)
                self.answers[str(response.status_code)] += 1
                if response.status_code == 200:
                    self.acknowledged.update(batch)
                    if len(batch) == 1 and response.json().get("rejected") == 1:
                        self.rejected.update(batch)  # quarantined at intake, with a reason
                    return
            except httpx.HTTPError as exc:
                self.answers[type(exc).__name__] += 1
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 3.0)


def _lead(lead_id: str) -> dict[str, Any]:
    n = lead_id.rsplit("_", 1)[-1]
    if n == "surrogate":
        # Issue 12 item 7: a lone surrogate, accepted, then undeliverable for 72 h.
        n = "\ud800"
    return {
        "id": lead_id,
        "url": "https://some-site.com/page-with-lead-form/",
        "created": "2018-07-12T16:29:42Z",
        "data": {
            "first_name": f"First{n}",
            "last_name": "Doe",
            "email": f"person{n}@example.com",
            "phone": "+123123123123123",
            "organization_name": "Org",
        },
    }


# ---------------------------------------------------------------------- chaos


@dataclass
class Chaos:
    services: list[Service]
    kills: int
    gap: float
    writer_kills: bool
    rng: random.Random
    service_kills: int = 0
    writer_kills_done: int = 0

    async def run(self) -> None:
        for n in range(self.kills):
            await asyncio.sleep(self.gap * (0.5 + self.rng.random()))
            service = self.rng.choice(self.services)
            if self.writer_kills and n % 3 == 2 and await service.kill_writer():
                self.writer_kills_done += 1
                continue
            await service.kill()
            self.service_kills += 1
            await service.start()


# ---------------------------------------------------------------------- the verdict


async def read_store(storage_url: str) -> list[tuple[str, str, str, str | None]]:
    """Every delivery as (destination, lead id, status, last error)."""
    sys.path.insert(0, str(ROOT))
    from bridge.config import StorageConfig
    from bridge.store import create_store

    store = create_store(StorageConfig(url=storage_url))
    await store.open()
    try:
        rows = await store.list_deliveries(limit=10_000_000)
    finally:
        await store.close()
    return [(r.destination, r.lead_id, r.status, r.last_error) for r in rows]


def verdict(
    opts: Options,
    ids: list[str],
    provider: Provider,
    sink: FaultySink,
    rows: list[tuple[str, str, str, str | None]],
    stuck_wait: float,
) -> dict[str, Any]:
    status = {(d, lead): (s, err) for d, lead, s, err in rows}
    accepted = sink.record.accepted
    # The sink's 422s, and a lead nobody can deliver may end dead too (with a reason).
    expected_dead = {i for i in ids if poisoned(i, sink.faults.poison_rate)}
    expected_dead.update(provider.poison)
    quarantined = 0
    lost: set[str] = set()
    stuck: set[str] = set()
    dead_reasons: Counter[str] = Counter()
    unexpected_dead: set[str] = set()
    delivered: set[tuple[str, str]] = set()
    raw_twice = 0
    keys_twice: set[tuple[str, str]] = set()
    for lead in provider.acknowledged:
        if lead in provider.rejected and not any((d, lead) in status for d in DESTINATIONS):
            quarantined += 1  # refused at intake with a reason: not lost
            continue
        for dest in DESTINATIONS:
            st, err = status.get((dest, lead), (None, None))
            seen = accepted.get((f"/{dest}", lead), [])
            if st is None or (st == "delivered" and not seen):
                lost.add(lead)  # not stored, or "delivered" without the sink ever saying 200
            elif st == "pending":
                stuck.add(lead)
            elif st == "dead":
                dead_reasons[_reason(err)] += 1
                if lead not in expected_dead:
                    unexpected_dead.add(lead)
            if st == "delivered":
                delivered.add((dest, lead))
            if len(seen) > 1:
                raw_twice += 1
            if len(set(seen)) > 1:
                keys_twice.add((dest, lead))
    unacknowledged = len(ids) + len(provider.poison) - len(provider.acknowledged)
    notices = [json.loads(body) for body in sink.record.notices]
    # A notice holds names, counts and reason classes: never a lead id or lead data.
    leaky = sum(
        1
        for body in sink.record.notices
        if b"led_fault_" in body or b"@example.com" in body or b"First" in body
    )
    noticed: Counter[str] = Counter()
    for notice in notices:
        for item in notice.get("destinations", []):
            if item.get("new_dead_letters"):
                noticed["dead letters"] += 1
            if item.get("stalled_seconds") is not None:
                noticed["stalled"] += 1
            if item.get("worker_down"):
                noticed["delivery loop down"] += 1
    poison = {
        lead: [status.get((d, lead), ("quarantined",))[0] for d in DESTINATIONS]
        for lead in provider.poison
    }
    ok = not (lost or stuck or keys_twice or unexpected_dead or unacknowledged or leaky)
    return {
        "ok": ok,
        "leads": len(ids) + len(provider.poison),
        "destinations": len(DESTINATIONS),
        "acknowledged": len(provider.acknowledged),
        "unacknowledged": unacknowledged,
        "resent_after_ack": provider.resent,
        "quarantined_at_intake": quarantined,
        "poison_outcomes": poison,
        "delivered": len(delivered),
        "delivered_leads": len({lead for _, lead in delivered}),
        "lost": len(lost),
        "lost_ids": sorted(lost)[:20],
        "dead": sum(dead_reasons.values()),
        "dead_expected": sum((d, lead) in status for lead in expected_dead for d in DESTINATIONS),
        "dead_unexpected": len(unexpected_dead),
        "dead_reasons": dict(dead_reasons.most_common()),
        "stuck_pending": len(stuck),
        "stuck_ids": sorted(stuck)[:20],
        "settle_waited_s": round(stuck_wait, 1),
        "delivered_more_than_once_raw": raw_twice,
        "more_than_one_idempotency_key": len(keys_twice),
        "notices": len(notices),
        "notices_by_kind": dict(noticed),
        "notices_with_lead_data": leaky,
        "provider_answers": dict(provider.answers),
        "sink_requests": sink.record.requests,
        "sink_answers": dict(sink.record.answers),
    }


def _reason(error: str | None) -> str:
    """A dead letter's error with its figures (attempts, ages) blanked, to group by."""
    return re.sub(r"(?<![\w-])(?<!HTTP )\d+(?:\.\d+)?", "N", error or "no reason recorded")[:120]


# ---------------------------------------------------------------------- the run


async def settle(service: Service, opts: Options) -> float:
    """Wait until nothing is pending, or nothing has moved for ``opts.settle`` seconds."""
    start = last_move = time.monotonic()
    last: tuple[int, ...] = ()
    while True:
        try:
            counts = await service.status()
        except httpx.HTTPError:
            counts = {}
        now = time.monotonic()
        if counts:
            if all(c.get("pending", 0) == 0 for c in counts.values()):
                return now - start
            moved = tuple(c.get(s, 0) for c in counts.values() for s in FINAL)
            if moved != last:
                last, last_move = moved, now
        if now - last_move > opts.settle:
            return now - start
        await asyncio.sleep(0.2)


def _postgres_schema(url: str) -> tuple[str, str]:
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


async def run(opts: Options) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    work = opts.work or Path(tempfile.mkdtemp(prefix="lead-bridge-faults-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    schema = None
    if opts.storage_url:
        storage_url, schema = _postgres_schema(opts.storage_url)
    else:
        storage_url = f"sqlite:///{work / 'faults.db'}"
    sink = FaultySink(Faults(seed=opts.seed, burst_every=opts.burst_every))
    await sink.start()
    ports = [_free_port() for _ in range(opts.replicas)]
    tails = [f"-{n}" if opts.replicas > 1 else "" for n in range(opts.replicas)]
    services = [
        Service(
            write_config(work, storage_url, sink.url, port, opts, f"config{tail}.yaml"),
            port,
            work / f"service{tail}.log",
        )
        for port, tail in zip(ports, tails, strict=True)
    ]
    service = services[0]
    tag = uuid.uuid4().hex[:6]
    ids = [f"led_fault_{tag}_{i}" for i in range(opts.leads)]
    urls = [f"{s.url}/lead/webhook" for s in services]
    provider = Provider(urls if len(urls) > 1 else urls[0], ids, opts.rate, opts.resend, rng)
    if opts.surrogate:
        provider.poison.append(f"led_fault_{tag}_surrogate")
    posting = opts.leads / opts.rate
    chaos = Chaos(
        services,
        opts.kills,
        gap=max(0.5, posting / max(1, opts.kills)),
        writer_kills=not opts.storage_url,
        rng=rng,
    )
    started = time.monotonic()
    try:
        await asyncio.gather(*(s.start() for s in services))
        print(
            f"work dir {work}; posting {opts.leads} leads at {opts.rate:g}/s to "
            f"{opts.replicas} replica(s), {opts.kills} kills"
        )
        await asyncio.gather(provider.run(), chaos.run())
        print(f"posted in {time.monotonic() - started:.1f}s; waiting for deliveries to settle")
        waited = await settle(service, opts)
        await asyncio.gather(*(s.stop() for s in services))
        rows = await read_store(storage_url)
    finally:
        await asyncio.gather(*(s.stop() for s in services))
        await sink.close()
    result = verdict(opts, ids, provider, sink, rows, waited)
    result["service_kills"] = chaos.service_kills
    result["writer_kills"] = chaos.writer_kills_done
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["work"] = str(work)
    result["storage"] = "postgresql" if schema else "sqlite"
    result["replicas"] = opts.replicas
    if schema is not None and opts.storage_url:
        _drop_schema(opts.storage_url, schema)
    if result["ok"] and not opts.keep and opts.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(r: dict[str, Any]) -> str:
    lines = [
        f"storage              {r['storage']}, {r.get('replicas', 1)} replica(s), "
        f"{r['destinations']} destinations, {r['duration_s']} s",
        f"kills                {r['service_kills']} service (SIGKILL + restart), "
        f"{r['writer_kills']} SQLite writer child",
        f"leads posted         {r['leads']} (+{r['resent_after_ack']} re-sent after their 200)",
        f"acknowledged         {r['acknowledged']}   never acknowledged: {r['unacknowledged']}",
        f"poison leads         {r['poison_outcomes']} (quarantined at intake: "
        f"{r['quarantined_at_intake']})",
        f"delivered            {r['delivered']} deliveries ({r['delivered_leads']} leads)",
        f"lost                 {r['lost']}   {' '.join(r['lost_ids'])}",
        f"dead                 {r['dead']} (expected: sink's 422 and poison, "
        f"{r['dead_expected']}; "
        f"for another reason: {r['dead_unexpected']})",
    ]
    lines += [f"  {count:6d}  {reason}" for reason, count in r["dead_reasons"].items()]
    lines += [
        f"stuck pending        {r['stuck_pending']} after settling {r['settle_waited_s']} s   "
        f"{' '.join(r['stuck_ids'])}",
        f"delivered > once     {r['delivered_more_than_once_raw']} by raw count, "
        f"{r['more_than_one_idempotency_key']} under more than one idempotency key",
        f"notices (alerts.url) {r['notices']} {r['notices_by_kind']}, "
        f"with lead data: {r['notices_with_lead_data']}",
        f"provider answers     {r['provider_answers']}",
        f"sink                 {r['sink_requests']} requests {r['sink_answers']}",
        f"verdict              {'OK' if r['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=Options.leads)
    parser.add_argument("--kills", type=int, default=Options.kills)
    parser.add_argument("--rate", type=float, default=Options.rate, help="leads/s posted")
    parser.add_argument("--resend", type=float, default=Options.resend)
    parser.add_argument("--settle", type=float, default=Options.settle, help="seconds")
    parser.add_argument("--storage-url", default=None, help="postgresql://... (default SQLite)")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--max-retry-after", type=float, default=Options.max_retry_after)
    parser.add_argument(
        "--burst-every", type=int, default=Options.burst_every, help="0: no 429 bursts"
    )
    parser.add_argument(
        "--no-surrogate", action="store_false", dest="surrogate", help="no lone-surrogate lead"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--json", type=Path, default=None, dest="json_path")
    parser.add_argument(
        "--replicas", type=int, default=1, help="services on one PostgreSQL (needs --storage-url)"
    )
    args = parser.parse_args()
    if args.replicas > 1 and not args.storage_url:
        parser.error("--replicas above 1 needs --storage-url postgresql://... (one shared queue)")
    opts = Options(**vars(args))
    result = asyncio.run(run(opts))
    print(report(result))
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
