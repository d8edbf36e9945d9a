"""``make bench``: latency ratios against baselines measured in the same run.

1. MQTT floor: a bare aiomqtt echo (decode JSON, publish back) in its own process,
   against tradeguard's intent -> decision event (journaled, fsync'd) in its own process.
2. Broker floor: a direct alpaca-py ``submit_order`` to the paper venue (its own
   process), against intent -> the order event saying the venue accepted it; and the
   goal's own measure, the time to the order's arrival at the venue (the venue's
   ``submitted_at``, same wall clock) from ``submit_order``'s call and from the intent.
3. Kill switch: a global engage -> the retained engaged state, idle and while three
   ``mosquitto_pub -l`` clients flood 30,000 intents (engage 1 s in), beside the floor.
4. READY after a restart with 10,000 open orders, beside an empty-journal start.
5. Throughput (:mod:`bench.throughput`): open-loop load at rising rates, the highest
   held at p99 <= 25 ms, for rejections and for acceptances.
6. Release storm (:mod:`bench.release_storm`): intent latency during a storm of forged
   releases, against the same without it.
7. Engage under load (:mod:`bench.engage_load`): engage latency while intents arrive at
   the highest rate (3) sustained on this machine, with enough engages for a p99.
All over one loopback mosquitto with TCP_NODELAY on both sides (5, 6 and 7 each on one
of their own, with daemons of their own).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors.admin_code import hash_code
from bench import engage_load, ready, release_storm, throughput
from bench.engage_load import engage_once
from bench.rig import (
    daemon_config,
    local_url,
    start,
    start_daemon,
    start_venue,
    stop,
    write_daemon_config,
)
from daemon.embedded_broker import EmbeddedMosquitto, find_mosquitto
from daemon.mqtt_session import MqttEndpoint, MqttLink, Received

ROUNDS = 300
WARMUP = 30
ENGAGES_IDLE = 40
READY_ORDERS = 10_000
LOAD_SECONDS = 8.0
"""Counted load per rate of the throughput search, and per phase of the release storm."""
FLOODS = 8
FLOOD_PER_CLIENT = 10_000
CODE = "bench-admin-code"
KILL_STATE = "bench/v1/kill/state"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    link: MqttLink,
    send: Callable[[int], Awaitable[None]],
    done: Callable[[int, Received], bool],
    rounds: int,
) -> list[float]:
    """Round trips in milliseconds: send i, wait for the message ``done`` recognises."""
    samples: list[float] = []
    messages = link.messages()
    for i in range(rounds + WARMUP):
        started = time.perf_counter()
        await send(i)
        while not done(i, await anext(messages)):
            pass
        if i >= WARMUP:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, samples: list[float], base: list[float] | None) -> str:
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    if base is None:
        return f"| {name:<40} | {p50:8.3f} | {p99:8.3f} | {'1.00':>8} | {'1.00':>8} |"
    b50, b99 = statistics.median(base), percentile(base, 0.99)
    return f"| {name:<40} | {p50:8.3f} | {p99:8.3f} | {p50 / b50:8.2f} | {p99 / b99:8.2f} |"


def arrival_ms(sent: float, order: dict[str, Any]) -> float:
    """Milliseconds from ``sent`` (``time.time()``) to the venue's stamp of the order's arrival.

    The venue is a process on this machine, so its stamp and ``sent`` share one clock.
    """
    return (datetime.fromisoformat(order["submitted_at"]).timestamp() - sent) * 1000


async def direct_submits(base_url: str, rounds: int) -> tuple[list[float], list[float]]:
    """alpaca-py straight to the venue, the floor for placing one order: round trips, arrivals."""
    from alpaca.trading.client import TradingClient  # noqa: PLC0415
    from alpaca.trading.enums import OrderSide, TimeInForce  # noqa: PLC0415
    from alpaca.trading.requests import LimitOrderRequest  # noqa: PLC0415

    client = TradingClient("PKBENCH", "bench", raw_data=True, url_override=base_url)
    run = time.time_ns()

    def submit(i: int) -> tuple[float, float]:
        request = LimitOrderRequest(
            symbol="AAPL",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=1.0,
            client_order_id=f"direct-{run}-{i}",
        )
        sent, started = time.time(), time.perf_counter()
        order = client.submit_order(request)
        assert isinstance(order, dict)  # raw_data
        return (time.perf_counter() - started) * 1000, arrival_ms(sent, order)

    samples = [await anyio.to_thread.run_sync(submit, i) for i in range(rounds + WARMUP)]
    return [s[0] for s in samples[WARMUP:]], [s[1] for s in samples[WARMUP:]]


async def venue_arrivals(base_url: str, paths: IntentPaths, rounds: int) -> list[float]:
    """Intent sent -> its order's arrival at the venue, for the ``o`` intents measured."""
    from alpaca.trading.client import TradingClient  # noqa: PLC0415

    client = TradingClient("PKBENCH", "bench", raw_data=True, url_override=base_url)

    def arrival(i: int) -> float:
        order = client.get_order_by_client_id(f"b1-o-{paths.run}-{i}")
        assert isinstance(order, dict)  # raw_data
        return arrival_ms(paths.sent[i], order)

    return [await anyio.to_thread.run_sync(arrival, i) for i in range(WARMUP, rounds + WARMUP)]


def flood_file(workdir: Path, sid: str, run: int) -> Path:
    """Intents the guardian refuses (MAX_NOTIONAL): every check and a journaled decision."""
    path = workdir / f"flood-{sid}-{run}.lines"
    path.write_text(
        "".join(
            f'{{"type":"order","intent_id":"fl-{run}-{n}","symbol":"AAPL","side":"buy",'
            f'"qty":100000}}\n'
            for n in range(FLOOD_PER_CLIENT)
        )
    )
    return path


async def engages(link: MqttLink, port: int, workdir: Path) -> tuple[list[float], list[float]]:
    """Engage latency idle, and 1 s into a flood of 30,000 intents from three clients."""
    await link.subscribe(KILL_STATE)
    messages = link.messages()
    idle = [await engage_once(link, messages, "bench", CODE) for _ in range(ENGAGES_IDLE)]
    pub = shutil.which("mosquitto_pub") or str(Path(find_mosquitto()).with_name("mosquitto_pub"))
    flooded: list[float] = []
    for run in range(FLOODS):
        clients = []
        for sid in ("f1", "f2", "f3"):
            with flood_file(workdir, sid, run).open("rb") as lines:
                clients.append(
                    subprocess.Popen(  # fire and reap below
                        [
                            pub,
                            "-p",
                            str(port),
                            "-q",
                            "1",
                            "-l",
                            "-t",
                            f"bench/v1/strategy/{sid}/intent",
                        ],
                        stdin=lines,
                    )
                )
        await anyio.sleep(1.0)
        flooded.append(await engage_once(link, messages, "bench", CODE))
        for client in clients:
            await anyio.to_thread.run_sync(client.wait)
    return idle, flooded


def bench_tables() -> str:
    """The daemon config's tables after ``[broker]``: limits, admin code, strategies."""
    return (
        # Every check stays on; the bench just sends faster than a strategy may by default.
        "[risk]\nmax_intents_per_second = 100000.0\n"
        f'[kill]\nadmin_code_hash = "{hash_code(CODE)}"\n'
        "[strategies.b1]\nallocation = 0.7\n"
        # Flooding strategies for the engage measurement.
        "[strategies.f1]\nallocation = 0.1\n"
        "[strategies.f2]\nallocation = 0.1\n"
        "[strategies.f3]\nallocation = 0.1\n"
    )


class IntentPaths:
    """What the latency rows send and wait for, over one link.

    ``run`` (nanoseconds at the start) keeps intent ids unique across bench runs on
    the same journal; the tag (``d``, ``r``, ``o``) tells the rows apart.
    """

    def __init__(self, link: MqttLink, run: int) -> None:
        self.link = link
        self.run = run
        self.sent: dict[int, float] = {}
        """``time.time()`` as each ``o`` intent left, for its arrival at the venue."""
        self.started: dict[int, float] = {}
        self.settled_decisions: list[float] = []
        """``o`` intent -> its acceptance (ms), each sent once the order before it settled."""

    def intent(self, i: int, tag: str) -> bytes:
        # A resting buy 2-4 % under the market: within every limit, never filled,
        # and a different price each time so the duplicate check has nothing to say.
        price = round(190.0 * (0.955 + (i % 400) * 0.0001), 2)
        return msgspec.json.encode(
            {
                "type": "order",
                "intent_id": f"{tag}-{self.run}-{i}",
                "symbol": "AAPL",
                "side": "buy",
                "qty": 1 if tag == "d" else 2,
                "order_type": "limit",
                "limit_price": price,
                "stop_loss": round(price * 0.98, 2),
                "ts": time.time(),
            }
        )

    async def wait_for_echo(self) -> None:
        """Subscribe, and wait until the echo process answers."""
        await self.link.subscribe("bench/echo/out", "bench/v1/strategy/b1/event")
        await self.link.publish("bench/echo/in", b'{"ping":0}')
        async for message in self.link.messages():
            if message.topic == "bench/echo/out":
                break

    async def echo_send(self, i: int) -> None:
        await self.link.publish("bench/echo/in", msgspec.json.encode({"i": i}))

    async def decision_send(self, i: int) -> None:
        await self.link.publish("bench/v1/strategy/b1/intent", self.intent(i, "d"))

    async def stale_send(self, i: int) -> None:
        body = msgspec.json.decode(self.intent(i, "r"))
        body["ts"] = time.time() - 60  # every check runs; the answer is STALE_INTENT
        await self.link.publish("bench/v1/strategy/b1/intent", msgspec.json.encode(body))

    async def order_send(self, i: int) -> None:
        payload = self.intent(i, "o")
        self.sent[i], self.started[i] = time.time(), time.perf_counter()
        await self.link.publish("bench/v1/strategy/b1/intent", payload)

    @staticmethod
    def echoed(_i: int, m: Received) -> bool:
        return m.topic == "bench/echo/out"

    def rejected(self, i: int, m: Received) -> bool:
        return f'"r-{self.run}-{i}"'.encode() in m.payload and b'"rejected"' in m.payload

    def refuse_rejections(self, i: int, m: Received, tag: str) -> None:
        if f'"{tag}-{self.run}-{i}"'.encode() in m.payload and b'"rejected"' in m.payload:
            raise SystemExit(f"bench intent rejected: {m.payload.decode()}")

    def decided(self, i: int, m: Received) -> bool:
        self.refuse_rejections(i, m, "d")
        return f'"d-{self.run}-{i}"'.encode() in m.payload and b'"accepted"' in m.payload

    def at_venue(self, i: int, m: Received) -> bool:
        self.refuse_rejections(i, m, "o")
        ours = f'"o-{self.run}-{i}"'.encode() in m.payload
        if ours and b'"type":"accepted"' in m.payload and i >= WARMUP:
            self.settled_decisions.append((time.perf_counter() - self.started[i]) * 1000)
        return ours and b'"type":"order"' in m.payload and b'"status":"accepted"' in m.payload


@dataclass
class Results:
    """Every row of the report: latencies in ms, READY times in s."""

    floor: list[float]
    refusal: list[float]
    decision: list[float]
    settled_decision: list[float]
    direct: list[float]
    through: list[float]
    direct_arrival: list[float]
    through_arrival: list[float]
    idle: list[float]
    flooded: list[float]
    commit: list[float]
    ready_empty: ready.Restart
    ready_full: ready.Restart


async def measure_all(endpoint: MqttEndpoint, workdir: Path, base_url: str, rounds: int) -> Results:
    """Every measurement, in order, against the running echo, venue and daemon."""
    run = time.time_ns()
    async with MqttLink(endpoint) as link:
        paths = IntentPaths(link, run)
        await paths.wait_for_echo()
        with anyio.fail_after(300):  # a bench that hangs says so instead
            floor = await measure(link, paths.echo_send, paths.echoed, rounds)
            refusal = await measure(link, paths.stale_send, paths.rejected, rounds)
            decision = await measure(link, paths.decision_send, paths.decided, rounds)
            direct, direct_arrival = await direct_submits(base_url, rounds)
            through = await measure(link, paths.order_send, paths.at_venue, rounds)
            through_arrival = await venue_arrivals(base_url, paths, rounds)
    async with MqttLink(endpoint) as kill_link:
        with anyio.fail_after(600):
            idle, flooded = await engages(kill_link, endpoint.port, workdir)
    commit = bare_commits(workdir / "bare.db", rounds)
    ready_empty, ready_full = await ready.measure(endpoint.port, READY_ORDERS)
    return Results(
        floor,
        refusal,
        decision,
        paths.settled_decisions,
        direct,
        through,
        direct_arrival,
        through_arrival,
        idle,
        flooded,
        commit,
        ready_empty,
        ready_full,
    )


def bare_commits(path: Path, rounds: int) -> list[float]:
    """One-row commits (ms) to a SQLite file as the journal opens it (WAL, synchronous=FULL)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
    samples = []
    for i in range(rounds + WARMUP):
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 200,))
        db.execute("COMMIT")
        if i >= WARMUP:
            samples.append((time.perf_counter() - started) * 1000)
    db.close()
    return samples


def report(rounds: int, r: Results) -> None:
    print(f"latency over loopback, {rounds} samples each (ms); ratios against the floor above\n")
    print(f"| {'path':<40} | {'p50':>8} | {'p99':>8} | {'p50 x':>8} | {'p99 x':>8} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    print(row("MQTT echo floor (aiomqtt)", r.floor, None))
    print(row("intent -> rejection, no order flow (tg)", r.refusal, r.floor))
    print(row("intent -> acceptance + order flow (tg)", r.decision, r.floor))
    print(row("bare SQLite commit (WAL, FULL)", r.commit, None))
    both = [f + c for f, c in zip(sorted(r.floor), sorted(r.commit), strict=False)]
    print(row("acceptance vs echo + bare commit", r.decision, both))
    print(row("acceptance, no order in flight (tg)", r.settled_decision, both))
    print(row("alpaca-py submit_order -> venue (direct)", r.direct, None))
    print(row("intent -> order accepted by venue (tg)", r.through, r.direct))
    print(row("submit_order -> arrival at venue (direct)", r.direct_arrival, None))
    print(row("intent -> arrival at venue (tg)", r.through_arrival, r.direct_arrival))
    print(row(f"engage -> retained state, idle ({len(r.idle)})", r.idle, r.floor))
    print(row(f"engage -> state, 30k-intent flood ({len(r.flooded)})", r.flooded, r.floor))
    print(row("rejection, no open orders (restarted tg)", r.ready_empty.rejections_ms, None))
    print(
        row(
            f"rejection, {READY_ORDERS} open orders (tg)",
            r.ready_full.rejections_ms,
            r.ready_empty.rejections_ms,
        )
    )
    added = statistics.median(r.through_arrival) - statistics.median(r.direct_arrival)
    print(f"\nadded latency to the venue over direct alpaca-py: p50 {added:+.2f} ms")
    print(
        f"\nREADY (process start -> READY line, Alpaca's limits): empty journal "
        f"{r.ready_empty.ready_s:.2f} s; {READY_ORDERS} open orders in the journal and at "
        f"the venue {r.ready_full.ready_s:.2f} s"
    )


async def main(rounds: int, load_seconds: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    port = 18000 + os.getpid() % 2000
    venue_port = port + 2500
    broker = EmbeddedMosquitto(state_dir=workdir, port=port)
    async with anyio.create_task_group() as tg:
        await tg.start(broker.run)
        endpoint = MqttEndpoint(host="127.0.0.1", port=port, client_id="bench")
        echo = start([sys.executable, "-m", "bench.echo", str(port)])
        venue = await start_venue(venue_port, rate_limit=1_000_000)
        base_url = local_url(venue_port)
        config = daemon_config(
            workdir,
            mqtt_port=port,
            venue_url=base_url,
            topic_prefix="bench",
            tables=bench_tables(),
            rate_limit_per_min=1000000.0,
        )
        path = write_daemon_config(workdir, "bench", key_id="PKBENCHDAEMON", config=config)
        daemon = await start_daemon(path)
        try:
            results = await measure_all(endpoint, workdir, base_url, rounds)
        finally:
            stop(daemon, echo, venue)
        report(rounds, results)
        tg.cancel_scope.cancel()
    print(f"\n{await throughput.main(throughput.Settings(seconds=load_seconds))}", flush=True)
    print(f"\n{await release_storm.main(load_seconds, release_storm.RATE)}", flush=True)
    print(f"\n{await engage_load.main(load_seconds, engage_load.RATE)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=LOAD_SECONDS,
        help="throughput: counted load per rate; release storm: per phase (default: 8)",
    )
    args = parser.parse_args()
    anyio.run(main, args.rounds, args.load_seconds, backend="asyncio")
