"""Benchmark of the webhook deliveries: commit-to-delivery latency at a steady 200 changes/s to 5
subscribers (target p99 <= 500 ms over every delivery of every subscriber).

One API, ONE worker (`arq app.worker.WorkerSettings`, which numbers nothing here: the writer does)
and ONE delivery worker (`arq app.worker.DeliveryWorkerSettings`: its dispatcher wakes on the
numbering's Redis signal and its `deliver` jobs POST; "worker" below is this process). Five
receivers in the bench process (minimal HTTP/1.1 servers, keep-alive, answering 200 as soon as
a body is in) subscribe through `POST /v1/subscriptions`, two with filters every change
matches. The harness's writer process applies status changes through `apply_snapshot` (which
writes the outbox) and pokes its `Sequencer`.
Latency = the receiver's time once the request is read minus the writer's commit time of its
change; a measured change never delivered counts as infinitely late. Checked per receiver: every
change delivered once (by `seq`), as written, in order per registration, nothing else; sampled
requests verify with `standardwebhooks` and the same bodies changed by one byte are refused.

Run from the repository root: `.venv/bin/python -m bench.subscriptions` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bench.support import (
    AUTH,
    CYCLE,
    T0,
    Helper,
    Stack,
    analyzed_after,
    change_document,
    change_index,
    cpu_line,
    finish,
    latency_summary,
    parser,
    seed_documents,
    stack,
    start_profiler,
    table,
    verdict,
    wait_until,
    write_in_process,
    writer_figures,
    writer_options,
)

TARGET_P99_MS = 500.0
FILTERS: list[dict[str, Any]] = [
    {},
    {"statuses": list(CYCLE)},
    {"registrationTypes": ["ALPHANUMERIC_SENDER_ID"]},
]
"""Receiver n's filters are FILTERS[n % 3]: every change of the run matches each."""
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


@dataclass
class Receiver:
    """A subscriber: what it received, (monotonic time once read, seq, registrationId, change
    index, webhook-id), in arrival order; the first 10 requests and every 100th kept for the
    signature check."""

    received: list[tuple[float, int, str, int, str]] = field(default_factory=list)
    samples: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    malformed: int = 0
    secret: str = ""

    def record(self, at: float, headers: dict[str, str], body: bytes) -> None:
        try:
            data = json.loads(body)["data"]
            item = (at, int(data["seq"]), data["registrationId"], change_index(data))
            self.received.append((*item, headers.get("webhook-id", "")))
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
        if len(self.received) <= 10 or len(self.received) % 100 == 0:
            self.samples.append((headers, body))


class Connection(asyncio.Protocol):
    """One connection to a receiver (HTTP/1.1 keep-alive, Content-Length bodies): answers 200 as
    soon as a request's body is in, then records it."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver, self.buffer, self.transport = receiver, bytearray(), cast(Any, None)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")[1:]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)
            }
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            now = time.monotonic()
            self.transport.write(OK)
            self.receiver.record(now, headers, body)


def signatures(receiver: Receiver) -> list[str]:
    """Problems of the kept requests' signatures: refused, or a tampered body accepted."""
    webhook, problems = Webhook(receiver.secret), []
    for headers, body in receiver.samples:
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            problems.append(f"signature refused: {exc}")
        try:
            webhook.verify(body.replace(b'"seq":', b'"seq": ', 1), headers)
            problems.append("a tampered body passed the signature check")
        except WebhookVerificationError:
            pass
    return problems


def analyse(
    receiver: Receiver,
    committed: list[float],
    warmup: int,
    seq_of: dict[int, int],
    registrations: int,
) -> Any:
    """Latencies (ms) of the measured changes a receiver got, and what is wrong with what it got."""
    expected = {seq for index, seq in seq_of.items() if 0 <= index < len(committed)}
    latencies: list[float] = []
    seen: set[int] = set()
    last_seq: dict[str, int] = {}
    foreign = mismatched = out_of_order = 0
    for at, seq, registration, index, _ in receiver.received:
        if seq not in expected:
            foreign += 1
            continue
        mismatched += (
            seq_of[index] != seq or registration != change_document(index, registrations)["id"]
        )
        out_of_order += seq < last_seq.get(registration, 0)
        last_seq[registration] = max(seq, last_seq.get(registration, 0))
        if seq not in seen and index >= warmup:
            latencies.append((at - committed[index]) * 1000)
        seen.add(seq)
    measured = {seq for index, seq in seq_of.items() if warmup <= index < len(committed)}
    latencies += [math.inf] * len(measured - seen)  # never delivered: later than any delivered
    counts = {
        "changes written without a numbered change row": len(committed) - len(expected),
        "changes never delivered": len(expected - seen),
        "deliveries repeated (by seq)": len(receiver.received) - foreign - len(seen),
        "requests repeating a webhook-id": sum(
            n - 1 for n in Counter(r[4] for r in receiver.received).values()
        ),
        "deliveries of no change of this run": foreign,
        "deliveries whose seq or registration differ from what was written": mismatched,
        "deliveries older than one already received for their registration": out_of_order,
        "requests that are no delivery": receiver.malformed,
    }
    problems = [f"{n} {what}" for what, n in counts.items() if n] + signatures(receiver)
    return {
        "received": len(seen),
        "expected": len(expected),
        "latencies": latencies,
        "problems": problems,
    }


async def backlog(run: Stack, peak: dict[str, int]) -> None:
    """The backlog's peak, sampled every 0.5 s: deliveries pending and due, waiting for a retry."""
    while True:
        for row in await run.rows(
            "SELECT next_attempt_at <= now(), count(*) FROM deliveries WHERE state = 'pending'"
            " GROUP BY 1"
        ):
            name = "pending_due" if row[0] else "pending_retry"
            peak[name] = max(peak.get(name, 0), row[1])
        await asyncio.sleep(0.5)


async def measure(run: Stack, api: Any, worker: Any, events_worker: Any) -> dict[str, Any]:
    args = run.args
    warmup = round(args.rate * args.warmup)
    docs = [
        change_document(i, args.registrations)
        for i in range(warmup + round(args.rate * args.seconds))
    ]
    loop = asyncio.get_running_loop()
    receivers = [Receiver() for _ in range(args.subscribers)]
    servers = [await loop.create_server(partial(Connection, r), "127.0.0.1", 0) for r in receivers]
    with Helper() as writer:
        # Seeded before the subscriptions exist: those first changes have no deliveries.
        await writer.call(
            write_in_process, run.url, run.redis_url, seed_documents(args.registrations), 0
        )
        async with httpx.AsyncClient(base_url=api.base_url, headers=AUTH, timeout=30) as client:
            for n, (receiver, server) in enumerate(zip(receivers, servers, strict=True)):
                url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks/{n}"
                answer = await client.post("/v1/subscriptions", json={"url": url, **FILTERS[n % 3]})
                receiver.secret = answer.raise_for_status().json()["secret"]
        meter = run.cpu(
            worker=worker.pid,
            events_worker=events_worker.pid,
            api=api.process.pid,
            writer=await writer.pid(),
        )
        peak: dict[str, int] = {}
        sampler = asyncio.create_task(backlog(run, peak))
        profiler = start_profiler(args.py_spy, worker.pid, run.log("worker-profile"))
        analyzing = asyncio.create_task(analyzed_after(run, args.warmup))
        written = await writer.call(
            write_in_process, run.url, run.redis_url, docs, args.rate, args.writers
        )
        cpu = meter.stop()
        await analyzing
        await wait_until(lambda: all(len(r.received) >= len(docs) for r in receivers), args.drain)
        await asyncio.sleep(0.5)  # anything more than expected would come by now
        if profiler is not None:
            profiler.send_signal(2)
        sampler.cancel()
    for server in servers:
        server.close()
    rows = await run.rows("SELECT at, seq FROM registration_changes WHERE at >= $1", T0)
    seq_of = {round((at - T0).total_seconds()): seq for at, seq in rows}
    committed = written["committed"]
    analysed = [analyse(r, committed, warmup, seq_of, args.registrations) for r in receivers]
    every = [ms for a in analysed for ms in a["latencies"]]
    for a in analysed:
        a["latency_ms"] = latency_summary(a.pop("latencies"))
    last = max((r.received[-1][0] for r in receivers if r.received), default=committed[-1])
    problems = [f"receiver {n + 1}: {p}" for n, a in enumerate(analysed) for p in a["problems"]]
    if problems:
        states = await run.rows(
            "SELECT state, count(*), max(last_error) FROM deliveries GROUP BY 1"
        )
        problems.append(f"deliveries in the database (state, count, an error): {states}")
    figures = writer_figures(written, warmup)
    if figures["changes_per_s"] < 0.95 * args.rate:
        problems.append(f"the writer kept {figures['changes_per_s']}/s")
    received = sum(at <= committed[-1] for r in receivers for at, *_ in r.received)
    return {
        "writer": figures,
        "latency_ms": latency_summary(every),
        "receivers": analysed,
        "deliveries_per_s": {
            "offered": args.rate * args.subscribers,
            "received_while_writing": round(received / (committed[-1] - committed[0]), 1),
            "first_commit_to_last_receipt": round(
                sum(len(r.received) for r in receivers) / (last - committed[0]), 1
            ),
        },
        "last_receipt_after_last_commit_s": round(last - committed[-1], 2),
        "backlog_peak": peak,
        "cpu": cpu,
        "problems": problems,
    }


def main() -> int:
    options = parser(__doc__)
    writer_options(options)
    add = options.add_argument
    add("--subscribers", type=int, default=5, help="receivers subscribed (5)")
    add("--drain", type=float, default=30.0, help="seconds to wait for the rest (30)")
    args = options.parse_args()
    allowed = {
        "SUBSCRIPTION_ALLOWED_HOSTS": "127.0.0.1",
        "SUBSCRIPTION_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    with (
        stack("subscriptions", args, **allowed) as run,
        run.api() as api,
        run.worker() as events_worker,
        run.deliveries() as worker,
    ):
        results = asyncio.run(measure(run, api, worker, events_worker))
    writer, rates = results["writer"], results["deliveries_per_s"]
    print(f"\nwriting {writer['changes_per_s']}/s (asked {args.rate:g})")
    print(f"writer transactions: {writer['transaction_ms']} ms")
    rows: list[list[object]] = [["", "received", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
    for n, receiver in enumerate(results["receivers"]):
        got = f"{receiver['received']}/{receiver['expected']}"
        rows.append([f"receiver {n + 1}", got, *receiver["latency_ms"].values()])
    rows.append(["every delivery", "", *results["latency_ms"].values()])
    print(table(rows))
    p99 = results["latency_ms"].get("p99")
    print(f"commit to delivery p99 {verdict(p99, TARGET_P99_MS)}; deliveries/s {rates}")
    print(f"last receipt {results['last_receipt_after_last_commit_s']} s after the last commit")
    print(f"backlog peak: {results['backlog_peak']}")
    print(f"CPU while writing (percent of one core): {cpu_line(results['cpu'])}")
    met = p99 is not None and p99 <= TARGET_P99_MS
    return finish(run, results, met, results.pop("problems"))


if __name__ == "__main__":
    sys.exit(main())
