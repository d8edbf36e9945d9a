"""A restart with thousands of open orders: READY once they are listed, within the broker's limit.

The listing that READY waits for may borrow from the daemon's empty token bucket while
the broker's own window (its ``X-RateLimit-*`` headers) has a quarter of its limit to
spare. These tests shrink the daemon's bucket to 30/min (2.5 tokens): 2,000 open orders
are then five requests against a bucket of 2.5, as 10,000 are 21 against 190/min's 15.8.
"""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from harness import (
    Mosquitto,
    poll_until,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from protocol.messages import Accepted, OrderIntent
from sim.venue import PaperVenue
from sim.wire import OrderSpec

pytestmark = pytest.mark.anyio

OPEN_ORDERS = 2000
SMALL_BUCKET = {"rate_limit_per_min": 30.0}


def seed_resting_orders(venue: PaperVenue, state_db: Path, count: int) -> dict[str, str]:
    """``count`` resting buys of s1 at the venue, journaled as the order manager does.

    Returns:
        Broker order id by ``client_order_id``.
    """
    placed = []
    for n in range(count):
        order = venue.engine.submit(
            OrderSpec(
                symbol="AAPL",
                side="buy",
                type="limit",
                time_in_force="gtc",
                qty=Decimal(1),
                limit_price=Decimal(1),
                client_order_id=f"s1-seed-{n}",
            )
        )
        placed.append((order.client_order_id, order.id, time.time()))
    with sqlite3.connect(state_db) as db:
        for coid, broker_id, ts in placed:
            intent_id = coid.removeprefix("s1-")
            intent = OrderIntent(
                intent_id=intent_id,
                symbol="AAPL",
                side="buy",
                qty=1,
                order_type="limit",
                limit_price=1.0,
                time_in_force="gtc",
            )
            accepted = Accepted(intent_id=intent_id, client_order_id=coid, ts=ts)
            db.execute(
                "INSERT INTO decisions (strategy_id, intent_id, accepted, event, ts) "
                "VALUES (?,?,?,?,?)",
                ("s1", intent_id, 1, msgspec.json.encode(accepted), ts),
            )
            db.execute(
                "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
                "broker_order_id, created_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?)",
                (coid, "s1", intent_id, msgspec.json.encode(intent), "accepted", broker_id, ts, ts),
            )
    return {coid: broker_id for coid, broker_id, _ in placed}


def journal_statuses(state_db: Path) -> dict[str, int]:
    with sqlite3.connect(state_db) as db:
        return dict(db.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall())


async def test_ready_lists_every_open_order_borrowing_from_the_brokers_window(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(
            mosquitto, prefix, tmp_path, venue.base_url, broker_overrides=SMALL_BUCKET
        )
        config = write_config(tmp_path, tables)
        async with running_daemon(config):
            pass  # the journal's schema
        seeded = seed_resting_orders(venue, tmp_path / "state.db", OPEN_ORDERS)
        # While the daemon was down, ten of them were cancelled (by hand, say).
        for broker_id in list(seeded.values())[:10]:
            venue.engine.cancel(broker_id)
        venue.api.limiter.reset()
        async with running_daemon(config) as daemon:
            gateway = daemon.gateway
            assert gateway is not None
            assert gateway.bucket.borrowed >= 1
            assert gateway.bucket.tokens() < 1  # the loan is paid back at the bucket's rate
            # After READY, the ten are settled from one closed listing; the rest stay open.
            await poll_until(
                lambda: (
                    journal_statuses(tmp_path / "state.db")
                    == {"accepted": OPEN_ORDERS - 10, "cancelled": 10}
                )
            )
        assert not venue.order_post_arrivals  # nothing was sent again
        assert venue.api.rate_limited == 0


async def test_a_window_nearly_spent_lends_nothing_and_nothing_is_refused(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(
            mosquitto, prefix, tmp_path, venue.base_url, broker_overrides=SMALL_BUCKET
        )
        config = write_config(tmp_path, tables)
        async with running_daemon(config):
            pass
        seeded = seed_resting_orders(venue, tmp_path / "state.db", OPEN_ORDERS)
        venue.api.limiter.reset()
        # Another program on the same account has spent 170 of the window's 200.
        for _ in range(170):
            venue.api.limiter.hit("trading:PKTESTKEY")
        async with running_daemon(config, ready_timeout=60.0) as daemon:
            gateway = daemon.gateway
            assert gateway is not None
            assert gateway.bucket.borrowed == 0
        assert journal_statuses(tmp_path / "state.db") == {"accepted": len(seeded)}
        assert not venue.order_post_arrivals
        assert venue.api.rate_limited == 0
