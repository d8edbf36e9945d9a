"""READY time: a daemon restart with 10,000 open orders in its journal and at the venue.

The venue (in this process) holds 10,000 resting orders of strategy ``b1``, placed
through alpaca-py with the venue's limit lifted for the seeding only; the journal holds
the same orders, written as the daemon writes them. Then ``tradeguard run`` starts with
Alpaca's limits (200/min at the venue, 190/min in the daemon) and the time to its READY
line is taken, beside the same start with an empty journal.

    python -m bench.ready --orders 10000
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import msgspec

from bench.rig import BIN, daemon_config, write_daemon_config
from daemon.mqtt_endpoint import MqttEndpoint, MqttLink
from protocol.messages import Accepted, OrderIntent
from sim.config import SimConfig
from sim.rest import RateLimiter
from sim.venue import PaperVenue

VENUE_LIMIT = 200
READY_TABLES = "[strategies.b1]\nallocation = 1.0\n"


def start_until_ready(config: Path) -> tuple[subprocess.Popen[str], float]:
    """Start ``tradeguard run``; return it and the seconds until its READY line."""
    started = time.perf_counter()
    daemon = subprocess.Popen(
        [str(BIN / "tradeguard"), "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=(config.parent / "daemon.log").open("a"),
        text=True,
    )
    assert daemon.stdout is not None
    line = daemon.stdout.readline()
    took = time.perf_counter() - started
    if "ready" not in line:
        daemon.terminate()
        raise SystemExit(f"daemon did not become ready: {line!r}")
    return daemon, took


def time_to_ready(config: Path) -> float:
    """Start ``tradeguard run``; seconds until its READY line; then stop it."""
    daemon, took = start_until_ready(config)
    daemon.terminate()
    daemon.wait(30)
    return took


async def ready_then_rejections(
    config: Path, mqtt_port: int, rounds: int
) -> tuple[float, list[float]]:
    """READY time, then ``rounds`` intent -> rejection round trips (ms) on that daemon.

    Each intent is stale (``ts`` a minute old), so every check runs, over every open
    order the daemon holds, and the answer is ``STALE_INTENT``: with an empty journal
    and with thousands of open orders, the two show whether a decision's cost is flat.
    """
    daemon, took = await anyio.to_thread.run_sync(start_until_ready, config)
    samples: list[float] = []
    try:
        endpoint = MqttEndpoint(host="127.0.0.1", port=mqtt_port, client_id="ready-probe")
        async with MqttLink(endpoint) as link:
            await link.subscribe("ready/v1/strategy/b1/event")
            messages = link.messages()
            run = time.time_ns()
            for i in range(rounds + 30):
                intent_id = f"flat-{run}-{i}"
                body = {
                    "type": "order",
                    "intent_id": intent_id,
                    "symbol": "AAPL",
                    "side": "buy",
                    "qty": 1,
                    "order_type": "limit",
                    "limit_price": 1.0,
                    "ts": time.time() - 60,
                }
                started = time.perf_counter()
                await link.publish("ready/v1/strategy/b1/intent", msgspec.json.encode(body))
                while intent_id.encode() not in (await anext(messages)).payload:
                    pass
                if i >= 30:
                    samples.append((time.perf_counter() - started) * 1000)
    finally:
        daemon.terminate()
        await anyio.to_thread.run_sync(daemon.wait, 30)
    return took, samples


def seed(venue_url: str, orders: int) -> list[tuple[str, str, float]]:
    """Place ``orders`` resting buys of strategy b1: (client_order_id, broker id, ts)."""
    from alpaca.trading.client import TradingClient  # noqa: PLC0415
    from alpaca.trading.enums import OrderSide, TimeInForce  # noqa: PLC0415
    from alpaca.trading.requests import LimitOrderRequest  # noqa: PLC0415

    client = TradingClient("PKREADY", "ready", raw_data=True, url_override=venue_url)

    def place(n: int) -> tuple[str, str, float]:
        coid = f"b1-seed-{n}"
        body = client.submit_order(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=1.0,
                client_order_id=coid,
            )
        )
        assert isinstance(body, dict)
        return coid, str(body["id"]), time.time()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(place, range(orders)))


def journal(state: Path, placed: list[tuple[str, str, float]]) -> None:
    """Write the orders as the order manager journals an accepted intent."""
    with sqlite3.connect(state) as db:
        for coid, broker_id, ts in placed:
            intent_id = coid.removeprefix("b1-")
            intent = OrderIntent(
                intent_id=intent_id,
                symbol="AAPL",
                side="buy",
                qty=1,
                order_type="limit",
                limit_price=1.0,
                time_in_force="gtc",
            )
            event = Accepted(intent_id=intent_id, client_order_id=coid, ts=ts)
            db.execute(
                "INSERT INTO decisions (strategy_id, intent_id, accepted, event, ts) "
                "VALUES (?,?,?,?,?)",
                ("b1", intent_id, 1, msgspec.json.encode(event), ts),
            )
            db.execute(
                "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
                "broker_order_id, created_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?)",
                (coid, "b1", intent_id, msgspec.json.encode(intent), "accepted", broker_id, ts, ts),
            )


class Restart(msgspec.Struct, frozen=True):
    """A start's READY time (s) and its intent -> rejection round trips (ms)."""

    ready_s: float
    rejections_ms: list[float]


async def measure(mqtt_port: int, orders: int, rounds: int = 200) -> tuple[Restart, Restart]:
    """(an empty journal, ``orders`` open orders): READY time and rejection latency."""
    workdir = Path(tempfile.mkdtemp(prefix="tg-ready-"))
    venue = PaperVenue(
        SimConfig(port=0, clock="always-open", rate_limit_per_min=10**7, tick_interval_s=1.0)
    )
    async with anyio.create_task_group() as tg:
        url = await tg.start(venue.run)
        text = daemon_config(
            workdir,
            mqtt_port=mqtt_port,
            venue_url=url,
            topic_prefix="ready",
            tables=READY_TABLES,
            # Its own client id: beside `make bench`'s daemon on the same broker, a shared one
            # would have the two take each other's session over and over.
            client_id="tradeguard-ready",
            log_level="info",
        )
        config = write_daemon_config(workdir, "ready", key_id="PKREADYDAEMON", config=text)
        venue.api.limiter = RateLimiter(VENUE_LIMIT)
        empty = Restart(*await ready_then_rejections(config, mqtt_port, rounds))
        venue.api.limiter = RateLimiter(10**7)  # seeding only
        placed = await anyio.to_thread.run_sync(seed, url, orders)
        journal(workdir / "state.db", placed)
        venue.api.limiter = RateLimiter(VENUE_LIMIT)  # Alpaca's limit from here on
        full = Restart(*await ready_then_rejections(config, mqtt_port, rounds))
        tg.cancel_scope.cancel()
    return empty, full


if __name__ == "__main__":
    from daemon.embedded_broker import EmbeddedMosquitto

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    args = parser.parse_args()

    async def main() -> None:
        workdir = Path(tempfile.mkdtemp(prefix="tg-ready-mqtt-"))
        port = 23000 + int(time.time()) % 1000
        broker = EmbeddedMosquitto(state_dir=workdir, port=port)
        async with anyio.create_task_group() as tg:
            await tg.start(broker.run)
            empty, full = await measure(port, args.orders)
            print(
                f"READY: empty journal {empty.ready_s:.2f} s; "
                f"{args.orders} open orders {full.ready_s:.2f} s"
            )
            p50 = statistics.median
            print(
                f"rejection p50: no open orders {p50(empty.rejections_ms):.2f} ms; "
                f"{args.orders} open orders {p50(full.rejections_ms):.2f} ms"
            )
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio")
