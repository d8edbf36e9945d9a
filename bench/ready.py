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
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import msgspec

from bench.rig import BIN, daemon_config, write_daemon_config
from protocol.messages import Accepted, OrderIntent
from sim.config import SimConfig
from sim.rest import RateLimiter
from sim.venue import PaperVenue

VENUE_LIMIT = 200
READY_TABLES = "[strategies.b1]\nallocation = 1.0\n"


def time_to_ready(config: Path) -> float:
    """Start ``tradeguard run``; seconds until its READY line; then stop it."""
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
    daemon.terminate()
    daemon.wait(30)
    if "ready" not in line:
        raise SystemExit(f"daemon did not become ready: {line!r}")
    return took


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


async def measure(mqtt_port: int, orders: int) -> tuple[float, float]:
    """(READY with an empty journal, READY with ``orders`` open orders), in seconds."""
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
        empty = await anyio.to_thread.run_sync(time_to_ready, config)
        venue.api.limiter = RateLimiter(10**7)  # seeding only
        placed = await anyio.to_thread.run_sync(seed, url, orders)
        journal(workdir / "state.db", placed)
        venue.api.limiter = RateLimiter(VENUE_LIMIT)  # Alpaca's limit from here on
        full = await anyio.to_thread.run_sync(time_to_ready, config)
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
            print(f"READY: empty journal {empty:.2f} s; {args.orders} open orders {full:.2f} s")
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio")
