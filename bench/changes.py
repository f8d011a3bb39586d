"""Benchmark of the change feed (`GET /v1/changes`, `GET /v1/changes/stream`).

1. Commit-to-reader latency at a steady 200 changes/s (target p99 <= 100 ms for each reader): the
   harness's writer process applies status changes through `apply_snapshot` and pokes its
   `Sequencer`, as the worker does; a long-poll reader (`?wait=30`, the README's consumer loop)
   and an SSE reader follow the feed at the same time. Latency = the reader's receive time minus
   the writer's commit time (CLOCK_MONOTONIC is machine-wide on Linux). Checked: each reader gets
   every change once, as written, `seq` going up by exactly 1; the writer kept the rate.
2. The API's memory with 200 open SSE streams (a fresh API process): RSS before, open and idle,
   after closing them and after opening and closing 200 more; with them open, 2,000 signed
   callbacks at 500/s from a process of their own (each answered 200; p99 against the endpoint's
   own target, 50 ms; the same without streams for reference) and 5 changes written meanwhile,
   which every stream must receive in order; the server must let go of every closed stream.

Run from the repository root: `.venv/bin/python -m bench.changes` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.support import (
    AUTH,
    T0,
    Helper,
    Server,
    Stack,
    change_document,
    change_index,
    cpu_line,
    document,
    finish,
    latency_summary,
    parser,
    post_in_process,
    seed_documents,
    stack,
    table,
    verdict,
    wait_until,
    write_in_process,
    writer_figures,
    writer_options,
)

TARGET_FEED_P99_MS = 100.0
TARGET_CALLBACK_P99_MS = 50.0
MEMORY_BASE = 10_000_000
"""Indices of the memory phase's changes (new registrations, so each is a change)."""


@dataclass
class Reader:
    """What one reader of the feed received: (monotonic receive time, item), in order."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0


async def long_poll(client: httpx.AsyncClient, cursor: str, reader: Reader) -> None:
    reader.opened.set()
    while True:
        params: dict[str, str | int] = {"cursor": cursor, "wait": 30, "limit": 500}
        page = (await client.get("/v1/changes", params=params)).raise_for_status().json()
        reader.received += [(time.monotonic(), item) for item in page["items"]]
        cursor = page["nextCursor"]


async def stream(client: httpx.AsyncClient, cursor: str, reader: Reader) -> None:
    """Follow the SSE stream; an item's time is when its `data:` line arrived."""
    try:
        async with client.stream("GET", "/v1/changes/stream", params={"cursor": cursor}) as answer:
            reader.status = answer.status_code
            reader.opened.set()
            async for line in answer.raise_for_status().aiter_lines():
                if line.startswith("data:"):
                    reader.received.append((time.monotonic(), json.loads(line[5:])))
    finally:
        reader.opened.set()


@contextlib.asynccontextmanager
async def following(
    server: Server, count: int, problems: list[str], long_polling: bool = False
) -> AsyncIterator[list[Reader]]:
    """`count` SSE streams (and a long-poll reader first, when asked) from the latest position,
    each on a connection of its own; entered once every stream has its answer's headers."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=AUTH, timeout=httpx.Timeout(60, read=None), limits=limits
    ) as client:
        latest = await client.get("/v1/changes", params={"cursor": "latest"})
        cursor = latest.raise_for_status().json()["nextCursor"]
        readers = [Reader() for _ in range(count + long_polling)]
        follow = [long_poll] * long_polling + [stream] * count
        tasks = [
            asyncio.create_task(f(client, cursor, r)) for f, r in zip(follow, readers, strict=True)
        ]
        await wait_until(lambda: all(r.opened.is_set() for r in readers), 60)
        await asyncio.sleep(0.5)  # a long-poll's first request is waiting by now
        if (opened := sum(r.status == 200 for r in readers)) != count:
            problems.append(f"{opened} of {count} streams opened with 200")
        try:
            yield readers
        finally:
            for task in tasks:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if not isinstance(outcome, asyncio.CancelledError | None):
                    problems.append(f"a reader failed: {outcome!r}")


def analyse(reader: Reader, committed: Sequence[float], registrations: int, warmup: int) -> Any:
    """Latencies (ms) of the measured changes a reader received, and what is wrong with them."""
    latencies, seen, seqs = [], set(), []
    repeated = foreign = mismatched = 0
    for received_at, item in reader.received:
        index = change_index(item)
        if not 0 <= index < len(committed) or index in seen:
            foreign += index not in seen
            repeated += index in seen
            continue
        seen.add(index)
        seqs.append(item["seq"])
        expected = change_document(index, registrations)
        mismatched += [item["registrationId"], item["toStatus"]] != [*expected.values()][:2]
        if index >= warmup:
            latencies.append((received_at - committed[index]) * 1000)
    gaps = sum(b != a + 1 for a, b in itertools.pairwise(seqs))
    counts = {"never received": len(committed) - len(seen), "received twice": repeated}
    counts |= {"not of this run": foreign, "not as written": mismatched, "seq gaps": gaps}
    problems = [f"{n} changes {what}" for what, n in counts.items() if n]
    return {"received": len(seen), "latency_ms": latency_summary(latencies), "problems": problems}


async def latency(run: Stack, server: Server) -> dict[str, Any]:
    args, problems = run.args, list[str]()
    warmup = round(args.rate * args.warmup)
    docs = [
        change_document(i, args.registrations)
        for i in range(warmup + round(args.rate * args.seconds))
    ]
    with Helper() as writer:
        await writer.call(
            write_in_process, run.url, run.redis_url, seed_documents(args.registrations), 0
        )
        async with following(server, 1, problems, long_polling=True) as readers:
            meter = run.cpu(api=server.process.pid, writer=await writer.pid())
            written = await writer.call(
                write_in_process, run.url, run.redis_url, docs, args.rate, args.writers
            )
            cpu = meter.stop()
            await wait_until(lambda: all(len(r.received) >= len(docs) for r in readers), 10)
    analysed = {
        name: analyse(reader, written["committed"], args.registrations, warmup)
        for name, reader in zip(("long-poll", "sse"), readers, strict=True)
    }
    figures = writer_figures(written, warmup)
    if figures["changes_per_s"] < 0.95 * args.rate:
        problems.append(f"the writer kept {figures['changes_per_s']}/s")
    problems += [f"{name}: {p}" for name, a in analysed.items() for p in a["problems"]]
    return {"writer": figures, "readers": analysed, "cpu": cpu, "problems": problems}


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def held(port: int) -> int:
    """Connections the server on `port` holds: established or CLOSE_WAIT (/proc/net/tcp)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(int(r[1].rsplit(":", 1)[1], 16) == port and r[3] in ("01", "08") for r in rows)


async def callbacks(run: Stack, sender: Helper, server: Server) -> dict[str, Any]:
    """`--callbacks` at `--callback-rate` from the sender's process: answers, latencies, the
    API's CPU meanwhile, and the PostgreSQL sessions opened meanwhile."""
    args = run.args
    sessions = f"SELECT sessions FROM pg_stat_database WHERE datname = 'bench_{run.name}'"
    before, meter = await run.value(sessions, admin=True), run.cpu(api=server.process.pid)
    began = time.monotonic()
    posted = await sender.call(post_in_process, server.port, args.callbacks, args.callback_rate)
    seconds, cpu = time.monotonic() - began, meter.stop()
    await asyncio.sleep(1.1)  # PostgreSQL publishes its statistics at most once a second
    return {
        "statuses": posted["statuses"],
        "latency_ms": latency_summary(posted["latencies"]),
        "api_cpu_ms": round(cpu["api"] / 100 * seconds * 1000),
        "sessions_opened": await run.value(sessions, admin=True) - before,
    }


async def memory(run: Stack, server: Server) -> dict[str, Any]:
    args, pid, port, problems = run.args, server.process.pid, server.port, list[str]()
    new = [
        document(f"bench-new-{i}", "IN_QUEUE", T0 + timedelta(seconds=MEMORY_BASE + i))
        for i in range(args.changes + 1)
    ]
    rss: dict[str, int] = {}
    with Helper() as writer, Helper() as sender:
        async with following(server, 1, problems) as one:  # warm-up: one stream, one change
            await writer.call(write_in_process, run.url, run.redis_url, new[:1], 0)
            await wait_until(lambda: bool(one[0].received), 10)
        reference = await callbacks(run, sender, server)
        await asyncio.sleep(args.settle)
        rss["before"], connections = rss_kib(pid), held(port)
        async with following(server, args.streams, problems) as streams:
            await asyncio.sleep(args.idle)
            rss["open_idle"] = rss_kib(pid)
            posting = asyncio.create_task(callbacks(run, sender, server))
            await asyncio.sleep(args.callbacks / args.callback_rate / (args.changes + 1))
            rate = (args.changes + 1) * args.callback_rate / args.callbacks
            writing = (write_in_process, run.url, run.redis_url, new[1:], rate, 1)
            written = await writer.call(*writing)
            with_streams = await posting
            await wait_until(lambda: all(len(s.received) >= args.changes for s in streams), 10)
            await asyncio.sleep(0.5)  # anything more than expected would come by now
            rss["open_after_callbacks"] = rss_kib(pid)
        closed = time.monotonic()
        if not await wait_until(lambda: held(port) <= connections, 20):
            problems.append(f"the server still holds {held(port)} connections 20 s after")
        release_seconds = round(time.monotonic() - closed, 2)
        await asyncio.sleep(args.settle)
        rss["after_close"] = rss_kib(pid)
        async with following(server, args.streams, problems):
            await asyncio.sleep(args.idle)
        await wait_until(lambda: held(port) <= connections, 20)
        await asyncio.sleep(args.settle)
        rss["after_second_round"] = rss_kib(pid)
    expected = [MEMORY_BASE + i for i in range(1, args.changes + 1)]
    committed = dict(zip(expected, written["committed"], strict=True))
    complete = sum([change_index(item) for _, item in s.received] == expected for s in streams)
    if complete != args.streams:
        problems.append(f"{args.streams - complete} streams did not get the {args.changes} changes")
    fan_out = [
        (at - committed[change_index(item)]) * 1000
        for s in streams
        for at, item in s.received
        if change_index(item) in committed
    ]
    for name, answered in (("without streams", reference), ("with streams", with_streams)):
        if answered["statuses"] != {"200": args.callbacks}:
            problems.append(f"callbacks {name}: answers {answered['statuses']}")
    return {
        "rss_kib": rss,
        "per_stream_kib": round((rss["open_idle"] - rss["before"]) / args.streams, 1),
        "release_seconds": release_seconds,
        "callbacks_without_streams": reference,
        "callbacks_with_streams": with_streams,
        "streams_complete": complete,
        "fan_out_ms": latency_summary(fan_out),
        "problems": problems,
    }


def report(results: dict[str, Any], args: Any) -> bool:
    """Print the phases' figures; answers whether their targets were met."""
    met, head = True, ["", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    if "latency" in results:
        figures, writer = results["latency"], results["latency"]["writer"]
        print(f"\n1. commit to reader, writing {writer['changes_per_s']}/s (asked {args.rate:g})")
        print(f"writer transaction: {writer['transaction_ms']} ms")
        rows: list[list[object]] = [[*head, "received", "target p99"]]
        for name, reader in figures["readers"].items():
            p99 = reader["latency_ms"].get("p99")
            met &= p99 is not None and p99 <= TARGET_FEED_P99_MS
            ms = reader["latency_ms"].values()
            rows.append([name, *ms, reader["received"], verdict(p99, TARGET_FEED_P99_MS)])
        print(table(rows))
        print(f"CPU while writing (percent of one core): {cpu_line(figures['cpu'])}")
    if "memory" in results:
        figures = results["memory"]
        print(f"\n2. the API's RSS (MiB) with {args.streams} SSE streams")
        print(table([[name, round(kib / 1024, 1)] for name, kib in figures["rss_kib"].items()]))
        print(f"{figures['per_stream_kib']} KiB per open stream; the server let go of them")
        print(f"{figures['release_seconds']} s after they were closed")
        rows = [["callbacks", *head[1:], "200s", "API CPU ms", "new PG sessions"]]
        for label in ("without_streams", "with_streams"):
            sent = figures[f"callbacks_{label}"]
            counts = [sent["statuses"].get("200"), sent["api_cpu_ms"]]
            rows.append([label, *sent["latency_ms"].values(), *counts, sent["sessions_opened"]])
        print(table(rows))
        p99 = figures["callbacks_with_streams"]["latency_ms"]["p99"]
        met &= p99 is not None and p99 <= TARGET_CALLBACK_P99_MS
        print(f"callbacks with streams open, p99 {verdict(p99, TARGET_CALLBACK_P99_MS)}")
        print(f"{figures['streams_complete']}/{args.streams} streams got every change in order;")
        print(f"commit to each stream: {figures['fan_out_ms']} ms")
    return met


def main() -> int:
    options = parser(__doc__)
    writer_options(options)
    add = options.add_argument
    add("--streams", type=int, default=200, help="SSE streams held open (200)")
    add("--callbacks", type=int, default=2000, help="callbacks sent with them open (2000)")
    add("--callback-rate", type=float, default=500.0, help="callbacks/s (500)")
    add("--changes", type=int, default=5, help="changes written meanwhile (5)")
    add("--idle", type=float, default=3.0, help="seconds the streams idle (3)")
    add("--settle", type=float, default=2.0, help="seconds before an RSS reading (2)")
    add("--skip-latency", action="store_true")
    add("--skip-memory", action="store_true")
    args = options.parse_args()
    results: dict[str, Any] = {}
    with stack("changes", args, LOG_LEVEL="INFO") as run:
        for phase, measure in (("latency", latency), ("memory", memory)):
            if not getattr(args, f"skip_{phase}"):
                print(f"{phase} ...", flush=True)
                with run.api(f"api-{phase}") as server:  # each phase on a fresh API process
                    results[phase] = asyncio.run(measure(run, server))
    met = report(results, args)
    problems = [p for phase in results.values() for p in phase.pop("problems")]
    return finish(run, results, met, problems)


if __name__ == "__main__":
    sys.exit(main())
