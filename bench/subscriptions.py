"""Benchmark of the webhook deliveries (`/v1/subscriptions`, the worker's dispatcher and `deliver`
jobs) on PostgreSQL.

One run, with a real API process (`uvicorn app.main:app`) and ONE real worker process (`arq
app.worker.WorkerSettings`) on a fresh migrated database and a private Redis (`redis-server`
started by the script on a free port, stopped at the end):

- 5 receivers in the bench process (plain HTTP/1.1 servers on 127.0.0.1, each on a port of its
  own, answering 200 at once), each subscribed through `POST /v1/subscriptions`;
- a writer process (bench.changes' own) applies status changes through the service's own code
  (`apply_snapshot`, one transaction each, which writes the deliveries: the outbox) at a steady
  200 changes/s, and pokes a `Sequencer` after each commit, as the worker does; the worker's
  dispatcher wakes on the Redis signal of the numbering, leases the deliveries and enqueues one
  `deliver` job each;
- latency per delivery = the receiver's time once the request is read minus the writer's commit
  time of its change (one clock: CLOCK_MONOTONIC is machine-wide on Linux); target p99 <= 500 ms
  over every delivery of every receiver. Checked: each receiver gets every change exactly once (by
  `seq`), as written, in order per registration, signed (a sample verified with
  `standardwebhooks`).

Run from the repository root: `.venv/bin/python -m bench.subscriptions` (about 1 minute; see
bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis
from redis.asyncio import Redis as AsyncRedis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.changes import (
    CYCLE,
    REDIS_INSTALL_HINT,
    T0,
    WriterPlan,
    change_document,
    change_index,
    helper_process,
    private_redis,
    receive,
    run_async,
    wait_until,
    writer_main,
)
from bench.support import (
    RESULTS,
    CpuMeter,
    create_database,
    database_url,
    describe_machine,
    drop_database,
    latency_summary,
    log_tail,
    running,
    start_profiler,
    stop_process,
    table,
    timestamp,
    uvicorn_server,
    warn_if_busy,
    write_results,
)

DATABASE = "bench_subscriptions"
TOKEN = "bench-subscriptions-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TARGET_DELIVERY_P99_MS = 500.0
ARQ = str(Path(sys.executable).parent / "arq")
HEALTH_CHECK_KEY = "arq:queue:health-check"
"""arq writes it at its first poll (after the worker's start-up hook): the worker is running."""
SAMPLE_EVERY = 100
"""Every receiver keeps its first 10 requests and every SAMPLE_EVERY-th for signature checks."""
FILTERS: Sequence[dict[str, Any]] = (
    {},
    {"statuses": list(CYCLE)},
    {"registrationTypes": ["ALPHANUMERIC_SENDER_ID"]},
    {},
    {},
)
"""Each receiver's subscription filters: every change of the run matches all of them (two go
through the outbox's LIKE matching)."""
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


# ----------------------------------------------------------------------------- receivers


@dataclass
class Receiver:
    """One subscriber: what it received, (monotonic time the request was read, seq,
    registrationId, change index, webhook-id), in arrival order."""

    name: str
    port: int = 0
    subscription_id: str = ""
    secret: str = ""
    received: list[tuple[float, int, str, int, str]] = field(default_factory=list)
    seqs: set[int] = field(default_factory=set)
    samples: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    requests: int = 0
    malformed: list[str] = field(default_factory=list)
    connections: int = 0

    def record(self, at: float, request_line: str, headers: dict[str, str], body: bytes) -> None:
        self.requests += 1
        try:
            if not request_line.startswith("POST "):
                raise ValueError(f"not a POST: {request_line!r}")
            data = json.loads(body)["data"]
            self.received.append(
                (
                    at,
                    int(data["seq"]),
                    str(data["registrationId"]),
                    change_index(data),
                    headers.get("webhook-id", ""),
                )
            )
            self.seqs.add(int(data["seq"]))
        except (ValueError, KeyError, TypeError) as exc:
            self.malformed.append(repr(exc))
        if self.requests <= 10 or self.requests % SAMPLE_EVERY == 0:
            self.samples.append((headers, body))


class ReceiverProtocol(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection (keep-alive, Content-Length bodies): answers 200 as
    soon as a request's body is in, then records it."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._receiver.connections += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self._buffer[:end].decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            now = time.monotonic()
            assert self._transport is not None
            self._transport.write(OK)
            self._receiver.record(now, lines[0], headers, body)


async def start_receivers(count: int) -> tuple[list[Receiver], list[asyncio.Server]]:
    """`count` receivers, each listening on a free port of 127.0.0.1 in this process."""
    loop = asyncio.get_running_loop()
    receivers = [Receiver(f"receiver-{n + 1}") for n in range(count)]
    servers = []
    for receiver in receivers:
        server = await loop.create_server(partial(ReceiverProtocol, receiver), "127.0.0.1", 0)
        receiver.port = server.sockets[0].getsockname()[1]
        servers.append(server)
    return receivers, servers


async def subscribe(client: httpx.AsyncClient, receiver: Receiver, filters: dict[str, Any]) -> None:
    """`POST /v1/subscriptions` for `receiver`; keeps the subscription's id and secret."""
    body = {"url": f"http://127.0.0.1:{receiver.port}/hooks/{receiver.name}", **filters}
    body["description"] = f"bench {receiver.name}"
    response = await client.post("/v1/subscriptions", json=body)
    if response.status_code != 201:
        raise RuntimeError(
            f"POST /v1/subscriptions answered {response.status_code}: {response.text}"
        )
    answer = response.json()
    receiver.subscription_id, receiver.secret = answer["id"], answer["secret"]


def verify_samples(receiver: Receiver) -> dict[str, Any]:
    """Check the kept requests' signatures with `standardwebhooks` (and that a body changed by one
    byte is refused); answers how many were checked and failed."""
    webhook = Webhook(receiver.secret)
    failed: list[str] = []
    tampered_refused = 0
    for headers, body in receiver.samples:
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            failed.append(f"{headers.get('webhook-id')}: {exc}")
        try:
            webhook.verify(body.replace(b'"seq":', b'"seq": ', 1), headers)
        except WebhookVerificationError:
            tampered_refused += 1
    return {
        "checked": len(receiver.samples),
        "failed": failed,
        "tampered_refused": tampered_refused,
    }


# ----------------------------------------------------------------------------- the worker


@contextmanager
def arq_worker(env: dict[str, str], log_path: Path, timeout: float = 30) -> Iterator[Any]:
    """ONE `arq app.worker.WorkerSettings` process (served from bench/results/, so no .env is
    read); entered once arq polls (its health-check key is in Redis), stopped with SIGINT."""
    command = [ARQ, "app.worker.WorkerSettings"]
    with running(command, cwd=RESULTS, env=env, log_path=log_path) as process:
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            deadline = time.monotonic() + timeout
            while not client.exists(HEALTH_CHECK_KEY):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start:\n{log_tail(log_path)}")
                time.sleep(0.05)
        finally:
            client.close()
        yield process


# ----------------------------------------------------------------------------- the run


@dataclass
class Backlog:
    """Deliveries waiting, sampled every 0.5 s: pending and due (to send now, or being sent),
    pending and waiting for a retry, and arq's queue."""

    samples: list[dict[str, float]] = field(default_factory=list)

    def peak(self) -> dict[str, int]:
        names = ("pending_due", "pending_retry", "arq_queued")
        return {name: int(max((s[name] for s in self.samples), default=0)) for name in names}


async def sample_backlog(plain_url: str, redis_url: str, backlog: Backlog, began: float) -> None:
    connection = await asyncpg.connect(plain_url)
    client = AsyncRedis.from_url(redis_url)
    try:
        while True:
            row = await connection.fetchrow(
                "SELECT count(*) FILTER (WHERE next_attempt_at <= now()) AS due,"
                " count(*) FILTER (WHERE next_attempt_at > now()) AS retry"
                " FROM deliveries WHERE state = 'pending'"
            )
            queued = await client.zcard("arq:queue")
            backlog.samples.append(
                {
                    "t": round(time.monotonic() - began, 2),
                    "pending_due": row["due"],
                    "pending_retry": row["retry"],
                    "arq_queued": queued,
                }
            )
            await asyncio.sleep(0.5)
    finally:
        await connection.close()
        await client.aclose()


async def sample_statements(plain_url: str, seen: dict[tuple[int, str], tuple[float, str]]) -> None:
    """Where PostgreSQL spends its time: every 50 ms, the statements running on the database
    (pg_stat_activity, asked from a connection to it), each kept with the longest age seen."""
    connection = await asyncpg.connect(plain_url)
    try:
        while True:
            rows = await connection.fetch(
                "SELECT pid, query_start::text AS started,"
                " extract(epoch FROM clock_timestamp() - query_start) AS age,"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS statement"
                " FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
                " AND pid <> pg_backend_pid()"
            )
            for row in rows:
                seen[(row["pid"], row["started"])] = (float(row["age"]), row["statement"])
            await asyncio.sleep(0.05)
    finally:
        await connection.close()


def slowest_statements(seen: dict[tuple[int, str], tuple[float, str]]) -> list[dict[str, Any]]:
    """The statements seen running, by total time seen (a statement shorter than the sampling
    period is seen rarely and short: only the long ones are measured well)."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for age, statement in seen.values():
        grouped[statement].append(age * 1000)
    ranked = sorted(grouped.items(), key=lambda item: -sum(item[1]))[:5]
    return [
        {
            "statement": statement,
            "seen": len(ages),
            "seen_ms_total": round(sum(ages)),
            "longest_ms": round(max(ages)),
            "median_ms": round(sorted(ages)[len(ages) // 2]),
        }
        for statement, ages in ranked
    ]


async def database_outcome(plain_url: str) -> dict[str, Any]:
    """What the database says: each run change's `seq` (by change index), the deliveries per
    subscription and state, retried ones, and the errors recorded."""
    connection = await asyncpg.connect(plain_url)
    try:
        changes = await connection.fetch(
            "SELECT seq, registration_id, at FROM registration_changes WHERE at >= $1", T0
        )
        states = await connection.fetch(
            "SELECT subscription_id, state, count(*) AS n,"
            " count(*) FILTER (WHERE attempts > 1) AS retried,"
            " count(*) FILTER (WHERE attempts = 0) AS unsent"
            " FROM deliveries GROUP BY 1, 2"
        )
        errors = await connection.fetch(
            "SELECT last_error, count(*) AS n FROM deliveries"
            " WHERE last_error IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
        )
    finally:
        await connection.close()
    seq_of: dict[int, int | None] = {}
    for row in changes:
        at = row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=UTC)
        seq_of[round((at - T0).total_seconds())] = row["seq"]
    deliveries: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for row in states:
        deliveries[row["subscription_id"]][row["state"]] = {
            "count": row["n"],
            "retried": row["retried"],
            "unsent": row["unsent"],
        }
    return {
        "seq_of": seq_of,
        "deliveries": dict(deliveries),
        "errors": {row["last_error"]: row["n"] for row in errors},
    }


def analyse(
    receiver: Receiver,
    committed: Sequence[float],
    registrations: int,
    first_measured: int,
    seq_of: dict[int, int | None],
) -> dict[str, Any]:
    """Latencies (ms) of the measured changes one receiver got, and what is wrong with what it got:
    changes missing or repeated (by seq), items not as written, out of order per registration."""
    expected = {seq for index, seq in seq_of.items() if 0 <= index < len(committed) and seq}
    latencies: list[float] = []
    by_seq = Counter(seq for _, seq, _, _, _ in receiver.received)
    ids = Counter(webhook_id for *_, webhook_id in receiver.received)
    foreign = mismatched = out_of_order = 0
    last_seq: dict[str, int] = {}
    seen: set[int] = set()
    for received_at, seq, registration, index, _ in receiver.received:
        if seq not in expected:
            foreign += 1
            continue
        if seq_of.get(index) != seq or registration != change_document(index, registrations)["id"]:
            mismatched += 1
        if seq < last_seq.get(registration, 0):
            out_of_order += 1
        last_seq[registration] = max(seq, last_seq.get(registration, 0))
        if seq in seen:
            continue
        seen.add(seq)
        if index >= first_measured:
            latencies.append((received_at - committed[index]) * 1000)
    missing = len(expected - seen)
    # A measured change never delivered is later than any delivered one: it counts, as never.
    measured = {seq for index, seq in seq_of.items() if first_measured <= index < len(committed)}
    latencies += [math.inf] * len(measured - seen)
    duplicates = sum(n - 1 for seq, n in by_seq.items() if n > 1)
    problems = [
        f"{count} {what}"
        for count, what in (
            (len(committed) - len(expected), "changes written without a numbered change row"),
            (missing, "changes never delivered"),
            (duplicates, "deliveries of a change already delivered (duplicates by seq)"),
            (sum(n - 1 for n in ids.values() if n > 1), "requests repeating a webhook-id"),
            (foreign, "deliveries of no change of this run"),
            (mismatched, "deliveries whose seq or registration differ from what was written"),
            (out_of_order, "deliveries older than one already received for the registration"),
            (len(receiver.malformed), "requests that are no delivery (not a POST, bad JSON)"),
        )
        if count
    ]
    times = [at for at, *_ in receiver.received]
    return {
        "requests": receiver.requests,
        "received": len(seen),
        "expected": len(expected),
        "missing": missing,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "connections": receiver.connections,
        "measured": len(latencies),
        "never_delivered_measured": len(measured - seen),
        "latencies": latencies,
        "first_last": (min(times), max(times)) if times else None,
        "problems": problems,
    }


async def measure(
    args: argparse.Namespace,
    base_url: str,
    pids: dict[str, int],
    worker_pid: int,
    database: str,
    redis_url: str,
    stamp: str,
) -> dict[str, Any]:
    warmup = round(args.rate * args.warmup)
    total = warmup + round(args.rate * args.seconds)
    plain_url = database_url(DATABASE)
    plan = WriterPlan(database, redis_url, args.registrations, args.rate, total, args.writers)
    receivers, servers = await start_receivers(args.subscribers)
    backlog = Backlog()
    try:
        with helper_process("bench-subscriptions-writer", writer_main, plan) as (conn, process):
            # The writer seeds its registrations before the subscriptions exist: those first
            # changes have no deliveries.
            writer_pid = await receive(conn, process, seconds=120)
            async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as client:
                for receiver, filters in zip(receivers, FILTERS * args.subscribers, strict=False):
                    await subscribe(client, receiver, filters)
            meter = CpuMeter(
                {
                    "worker": [worker_pid],
                    "api": [pids["api"]],
                    "writer": [writer_pid],
                    "receivers (bench)": [os.getpid()],
                    "postgres": "postgres",
                    "redis": "redis-server",
                }
            )
            began = time.monotonic()
            statements: dict[tuple[int, str], tuple[float, str]] = {}
            samplers = [
                asyncio.create_task(sample_backlog(plain_url, redis_url, backlog, began)),
                asyncio.create_task(sample_statements(plain_url, statements)),
            ]
            profile = RESULTS / f"subscriptions-{stamp}-worker-profile.txt"
            profiler = start_profiler(args.py_spy, worker_pid, profile, rate=100)
            conn.send(("go",))
            # A writer starved by a busy machine still finishes, and the rate check says so.
            written = await receive(conn, process, seconds=10 * (args.seconds + args.warmup) + 120)
            writing_cpu = meter.stop()
            writing_seconds = time.monotonic() - began
            await wait_until(
                lambda: all(len(r.seqs) >= total for r in receivers),
                seconds=args.drain,
            )
            await asyncio.sleep(0.5)  # anything more than expected would come by now
            drained_seconds = time.monotonic() - began - writing_seconds
            all_cpu = meter.stop()
            if profiler is not None:
                stop_process(profiler)
            for sampler in samplers:
                sampler.cancel()
            await asyncio.gather(*samplers, return_exceptions=True)
    finally:
        for server in servers:
            server.close()
    outcome = await database_outcome(plain_url)
    due, started, committed = written["due"], written["started"], written["committed"]
    per_receiver = {
        r.name: analyse(r, committed, args.registrations, warmup, outcome["seq_of"])
        for r in receivers
    }
    every = [value for a in per_receiver.values() for value in a["latencies"]]
    spans = [a["first_last"] for a in per_receiver.values() if a["first_last"]]
    delivered = sum(a["requests"] for a in per_receiver.values())
    first = min(committed)
    last = max((span[1] for span in spans), default=first)
    for name, receiver in zip(per_receiver, receivers, strict=True):
        analysis = per_receiver[name]
        analysis["latency_ms"] = finite(latency_summary(analysis.pop("latencies")))
        analysis.pop("first_last")
        analysis["subscription_id"] = receiver.subscription_id
        analysis["filters"] = FILTERS[receivers.index(receiver) % len(FILTERS)]
        analysis["database"] = outcome["deliveries"].get(receiver.subscription_id, {})
        analysis["signatures"] = verify_samples(receiver)
    measured_span = committed[-1] - due[warmup]
    return {
        "changes": total,
        "warmup_changes": warmup,
        "subscribers": args.subscribers,
        "writer": {
            "changes_per_s": round((total - warmup) / measured_span, 1),
            "transaction_ms": latency_summary(
                [(c - s) * 1000 for s, c in zip(started, committed, strict=True)]
            ),
            "started_late_ms_max": round(
                max(s - d for s, d in zip(started, due, strict=True)) * 1000, 1
            ),
        },
        "latency_ms": finite(latency_summary(every)),
        "measured_deliveries": len(every),
        "requests": delivered,
        "deliveries_per_s": {
            "offered": round(args.rate * args.subscribers, 1),
            "achieved_first_commit_to_last_receipt": round(delivered / (last - first), 1)
            if last > first
            else 0.0,
            "received_while_writing": round(
                sum(1 for r in receivers for at, *_ in r.received if at <= committed[-1])
                / (committed[-1] - first),
                1,
            ),
        },
        "seconds": {
            "writing": round(writing_seconds, 1),
            "after_writing": round(drained_seconds, 1),
            "last_receipt_after_last_commit": round(last - committed[-1], 2),
        },
        "cpu_percent_of_one_core": {"writing": writing_cpu, "writing_and_after": all_cpu},
        "backlog_peak": backlog.peak(),
        "slowest_statements": slowest_statements(statements),
        "backlog": backlog.samples,
        "database_errors": outcome["errors"],
        "receivers": per_receiver,
    }


def finite(summary: dict[str, float]) -> dict[str, float | None]:
    """A latency summary with "never delivered" (infinite) as None."""
    return {key: None if math.isinf(value) else value for key, value in summary.items()}


def shown(value: float | None) -> object:
    return "never" if value is None else value


def report(results: dict[str, Any], args: argparse.Namespace) -> tuple[bool, list[str]]:
    """Print the run; answers whether the target was met, and the problems."""
    writer = results["writer"]
    rate = results["deliveries_per_s"]
    print(
        f"\n{results['changes'] - results['warmup_changes']} changes measured at "
        f"{writer['changes_per_s']}/s (target rate {args.rate:g}/s, after "
        f"{results['warmup_changes']} warm-up changes), to {results['subscribers']} subscribers; "
        f"writer transaction p50 {writer['transaction_ms']['p50']} ms, p99 "
        f"{writer['transaction_ms']['p99']} ms"
    )
    rows: list[list[object]] = [
        ["", "received", "dups", "out of order", "p50 ms", "p90 ms", "p99 ms", "max ms", "signed"]
    ]
    for name, r in results["receivers"].items():
        figures = r["latency_ms"]
        signed = r["signatures"]
        rows.append(
            [
                name,
                f"{r['received']}/{r['expected']}",
                r["duplicates"],
                r["out_of_order"],
                *(shown(figures.get(key)) for key in ("p50", "p90", "p99", "max")),
                f"{signed['checked'] - len(signed['failed'])}/{signed['checked']}",
            ]
        )
    figures = results["latency_ms"]
    ok = figures.get("p99") is not None and figures["p99"] <= TARGET_DELIVERY_P99_MS
    rows.append(
        [
            f"every delivery ({results['measured_deliveries']} measured)",
            "",
            "",
            "",
            *(shown(figures.get(key)) for key in ("p50", "p90", "p99", "max")),
            "",
        ]
    )
    print(table(rows))
    print(
        f"commit to delivery p99 <= {TARGET_DELIVERY_P99_MS:g} ms: {'met' if ok else 'NOT MET'}; "
        f"{results['requests']} requests; deliveries/s offered {rate['offered']:g}, received "
        f"while writing {rate['received_while_writing']:g}, first commit to last receipt "
        f"{rate['achieved_first_commit_to_last_receipt']:g}; last receipt "
        f"{results['seconds']['last_receipt_after_last_commit']} s after the last commit"
    )
    peak = results["backlog_peak"]
    print(
        f"backlog peak: {peak['pending_due']} pending and due, {peak['pending_retry']} "
        f"waiting for a retry, {peak['arq_queued']} in arq's queue"
    )
    cpu = ", ".join(f"{k} {v:g}%" for k, v in results["cpu_percent_of_one_core"]["writing"].items())
    print(f"CPU while writing (percent of one core): {cpu}")
    print("longest-running statements (pg_stat_activity every 50 ms):")
    rows = [["", "seen", "total s", "longest ms", "median ms"]]
    for statement in results["slowest_statements"]:
        rows.append(
            [
                f"  {statement['statement'][:70]}",
                statement["seen"],
                round(statement["seen_ms_total"] / 1000, 1),
                statement["longest_ms"],
                statement["median_ms"],
            ]
        )
    print(table(rows))
    problems = [f"{name}: {p}" for name, r in results["receivers"].items() for p in r["problems"]]
    for name, r in results["receivers"].items():
        signed = r["signatures"]
        if signed["failed"]:
            problems.append(f"{name}: {len(signed['failed'])} signatures refused")
        if signed["tampered_refused"] != signed["checked"]:
            problems.append(f"{name}: a tampered body passed the signature check")
        if r["missing"]:
            # Late or lost: a delivery still pending (never sent) is late; one the service
            # recorded as succeeded (answered 2xx) that the receiver never got is lost.
            states = r["database"]
            acknowledged = states.get("succeeded", {}).get("count", 0)
            in_db = ", ".join(
                f"{state} {v['count']} ({v['unsent']} never sent, {v['retried']} retried)"
                for state, v in sorted(states.items())
            )
            problems.append(f"{name}: its deliveries in the database at the end: {in_db}")
            if acknowledged > r["received"]:
                problems.append(
                    f"{name}: {acknowledged - r['received']} deliveries recorded as succeeded "
                    "were never received (lost)"
                )
    if results["database_errors"]:
        problems.append(f"errors recorded on deliveries: {results['database_errors']}")
    if writer["changes_per_s"] < 0.95 * args.rate:
        problems.append(f"the writer kept {writer['changes_per_s']}/s, not {args.rate:g}/s")
    return ok, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0, help="changes/s written (200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds written before (2)")
    parser.add_argument("--subscribers", type=int, default=5, help="receivers subscribed (5)")
    parser.add_argument(
        "--drain", type=float, default=30.0, help="seconds to wait for the rest after writing (30)"
    )
    parser.add_argument(
        "--registrations", type=int, default=200, help="registrations the changes go round (200)"
    )
    parser.add_argument(
        "--writers", type=int, default=4, help="transactions at once in the writer (4)"
    )
    parser.add_argument("--log-level", default="WARNING", help="the API's and worker's LOG_LEVEL")
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE", help="diagnostics"
    )
    parser.add_argument("--py-spy", help="profile the worker (diagnostics: figures are no result)")
    args = parser.parse_args(argv)

    if shutil.which("redis-server") is None:
        print(REDIS_INSTALL_HINT, file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    stamp = timestamp(started)
    busy_before = warn_if_busy()
    database = create_database(DATABASE)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-subscriptions-") as temp,
            private_redis(Path(temp), RESULTS / f"subscriptions-{stamp}-redis.log") as redis_url,
        ):
            env = {
                **os.environ,
                "DATABASE_URL": database,
                "REDIS_URL": redis_url,
                "INTERNAL_API_TOKENS": TOKEN,
                "SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1",
                "RECONCILE_INTERVAL_SECONDS": "0",
                "WORKER_METRICS_PORT": "0",
                "LOG_LEVEL": args.log_level,
            }
            worker_env = env | dict(item.split("=", 1) for item in args.worker_env)
            with (
                uvicorn_server(
                    "app.main:app",
                    cwd=RESULTS,
                    env=env,
                    log_path=RESULTS / f"subscriptions-{stamp}-api.log",
                ) as server,
                arq_worker(worker_env, RESULTS / f"subscriptions-{stamp}-worker.log") as worker,
            ):
                print("writing ...", flush=True)
                began = time.monotonic()
                results = run_async(
                    measure(
                        args,
                        server.base_url,
                        {"api": server.process.pid},
                        worker.pid,
                        database,
                        redis_url,
                        stamp,
                    )
                )
                results["run_seconds"] = round(time.monotonic() - began, 1)
                if worker.poll() is not None:
                    results.setdefault("problems", []).append(
                        f"the worker exited ({worker.returncode})"
                    )
    finally:
        drop_database(DATABASE)
    met, problems = report(results, args)
    problems = results.pop("problems", []) + problems
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    if not problems:
        print(
            "checks: every change delivered once to each subscriber (by seq), as written, in "
            "order per registration; sampled signatures verified (standardwebhooks), tampered "
            "bodies refused; no delivery error recorded"
        )
    write_results(
        "subscriptions",
        stamp,
        {
            "started": started.isoformat(),
            "settings": vars(args),
            "environment": describe_machine(),
            "machine_busy_before_percent": busy_before,
            "targets": {"delivery_p99_ms": TARGET_DELIVERY_P99_MS, "met": met},
            "problems": problems,
            **results,
        },
    )
    return 0 if met and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
