"""The trading path end to end: real mosquitto, alpaca-py against the paper venue, SQLite."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    DaemonProcess,
    Mosquitto,
    free_port,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from daemon.config import load_config
from daemon.wiring import Daemon
from protocol.topics import Topics
from sim.venue import PaperVenue

pytestmark = pytest.mark.anyio

FAST = 10**7
LIFTED = {"rate_limit_per_min": float(FAST)}


def resting_buy(intent_id: str, symbol: str = "AAPL") -> dict[str, Any]:
    """A limit buy far below the market: it rests at the venue."""
    return {
        "type": "order",
        "intent_id": intent_id,
        "symbol": symbol,
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 1.0,
    }


def market(
    intent_id: str, side: str = "buy", qty: float = 1, symbol: str = "AAPL"
) -> dict[str, Any]:
    return {"type": "order", "intent_id": intent_id, "symbol": symbol, "side": side, "qty": qty}


def trading_errors(venue: PaperVenue, status: int) -> None:
    """Every trading route answers ``status``; market data keeps working."""
    for route in (
        "POST /v2/orders",
        "GET /v2/orders",
        "GET /v2/orders:by_client_order_id",
        "GET /v2/account",
        "GET /v2/positions",
        "GET /v2/clock",
        "DELETE /v2/orders/{order_id}",
    ):
        venue.inject_errors(route, status, 10**6)


def venue_orders(venue: PaperVenue, sid: str = "s1") -> list[Any]:
    return [o for o in venue.engine.orders.values() if o.client_order_id.startswith(f"{sid}-")]


def decisions(bodies: list[Any]) -> list[dict[str, Any]]:
    return [b for b in bodies if isinstance(b, dict) and b.get("type") in ("accepted", "rejected")]


def journal_rows(state_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(state_dir / "state.db") as db:
        return db.execute(sql).fetchall()


async def test_thousand_intents_each_sent_one_to_three_times(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    rng = random.Random(1000)
    copies = {f"i{n:04d}": rng.randint(1, 3) for n in range(1000)}
    sends = [iid for iid, count in copies.items() for _ in range(count)]
    rng.shuffle(sends)
    t = Topics(prefix)
    # Rate limit lifted: idempotency over 1,000 orders; at 190/min they would take 5 minutes.
    async with running_venue(realistic_venue(rate_limit_per_min=FAST)) as venue:
        config = write_config(
            tmp_path,
            trading_tables(mosquitto, prefix, tmp_path, venue.base_url, broker_overrides=LIFTED),
        )
        async with running_daemon(config), probe(mosquitto, t.event("s1")) as p:
            for iid in sends:
                await p.publish(t.intent("s1"), resting_buy(iid))
            # Liveness bounds, not speed: 1,000 POSTs at 20-80 ms each, beside a loaded CPU.
            await p.wait_until(
                lambda: len(decisions(p.bodies(t.event("s1")))) >= len(sends), timeout=180
            )
            answers = decisions(p.bodies(t.event("s1")))
            assert len(answers) == len(sends)
            for iid, count in copies.items():
                mine = [a for a in answers if a["intent_id"] == iid]
                assert len(mine) == count, iid
                assert sum(1 for a in mine if not a["duplicate"]) == 1, iid
                assert all(a["type"] == "accepted" for a in mine), mine
            # Every order reaches the venue exactly once.
            await p.wait_until(
                lambda: (
                    sum(
                        1
                        for b in p.bodies(t.event("s1"))
                        if b.get("type") == "order" and b.get("status") == "accepted"
                    )
                    >= len(copies)
                ),
                timeout=180,
            )
            at_venue = venue_orders(venue)
            assert len(at_venue) == len(copies)
            assert {o.client_order_id for o in at_venue} == {f"s1-{iid}" for iid in copies}


async def test_kill9_during_bursts_loses_and_doubles_nothing(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    rng = random.Random(99)
    intent_ids = [f"k{n:03d}" for n in range(500)]
    t = Topics(prefix)
    # Rate limit lifted: ten 500-intent bursts take 2+ min each at 190/min; this is about loss.
    async with running_venue(realistic_venue(rate_limit_per_min=FAST)) as venue:
        config = write_config(
            tmp_path,
            trading_tables(
                mosquitto,
                prefix,
                tmp_path,
                venue.base_url,
                broker_overrides={"submit_deadline_s": 120.0, **LIFTED},
            ),
        )
        daemon = DaemonProcess(config)
        try:
            async with probe(mosquitto, t.event("s1")) as p:
                for _ in range(10):
                    await anyio.to_thread.run_sync(daemon.start)
                    async with anyio.create_task_group() as tg:

                        async def burst() -> None:
                            for iid in intent_ids:
                                await p.publish(t.intent("s1"), resting_buy(iid))

                        tg.start_soon(burst)
                        await anyio.sleep(rng.uniform(0.05, 1.0))  # a random point in the burst
                        daemon.kill9()
                        tg.cancel_scope.cancel()
                # Final start: re-send until every intent has its decision.
                await anyio.to_thread.run_sync(daemon.start)
                start = len(p.received)
                for iid in intent_ids:
                    await p.publish(t.intent("s1"), resting_buy(iid))

                def all_decided() -> bool:
                    got = {b["intent_id"] for b in decisions(p.bodies(t.event("s1"))[start:])}
                    return got >= set(intent_ids)

                await p.wait_until(all_decided, timeout=60)

                def settled() -> bool:
                    rows = journal_rows(
                        tmp_path,
                        "SELECT count(*) FROM orders WHERE status IN ('pending','submitted')",
                    )
                    return bool(rows[0][0] == 0)

                await poll_until(settled, timeout=60)
                accepted = {
                    row[0]
                    for row in journal_rows(
                        tmp_path, "SELECT intent_id FROM decisions WHERE accepted = 1"
                    )
                }
                orders = journal_rows(
                    tmp_path, "SELECT client_order_id, status, broker_order_id FROM orders"
                )
                at_venue = [o.client_order_id for o in venue_orders(venue)]
                assert len(at_venue) == len(set(at_venue)), "an order was doubled at the venue"
                assert set(at_venue) == {f"s1-{iid}" for iid in accepted}, "lost or extra order"
                assert {row[0] for row in orders} == set(at_venue)
                assert all(row[2] is not None and row[1] == "accepted" for row in orders), orders
                # Each intent had exactly one decision across all the runs.
                rows = journal_rows(
                    tmp_path, "SELECT count(*), count(DISTINCT intent_id) FROM decisions"
                )
                assert rows[0][0] == rows[0][1]
                code = await anyio.to_thread.run_sync(daemon.terminate)
                assert code == 0, daemon.log_text()[-3000:]
        finally:
            daemon.stop_quietly()


async def test_broker_outage_30s_doubles_nothing_and_settles_fast(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    outage_s = 30.0
    async with running_venue(realistic_venue()) as venue:
        config = write_config(
            tmp_path,
            trading_tables(
                mosquitto,
                prefix,
                tmp_path,
                venue.base_url,
                broker_overrides={"submit_deadline_s": 120.0, "request_timeout_s": 1.0},
            ),
        )
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            manager = daemon.managers["s1"]
            began = time.monotonic()
            phases: list[Callable[[], None]] = [
                lambda: venue.inject_errors("POST /v2/orders", 504, 10**6),
                # Trading routes only: market data is another Alpaca service, and the
                # guardian (rightly) rejects what it cannot price.
                partial(trading_errors, venue, 503),
                lambda: venue.drop_after_accept("POST /v2/orders", 10**6, "close"),
            ]
            sent: list[str] = []
            for index, arm in enumerate(phases):
                venue.clear_faults()
                arm()
                for n in range(5):
                    iid = f"o{index}-{n}"
                    sent.append(iid)
                    await p.publish(t.intent("s1"), resting_buy(iid))
                await anyio.sleep(outage_s / len(phases))  # the outage lasts this long
            venue.clear_faults()
            recovered = time.monotonic()
            assert recovered - began >= outage_s

            def settled() -> bool:
                return all(
                    o.status not in ("pending", "submitted") for o in manager.orders.values()
                ) and len(manager.orders) == len(sent)

            await poll_until(settled, timeout=10)
            assert time.monotonic() - recovered <= 10
            at_venue = [o.client_order_id for o in venue_orders(venue)]
            assert len(at_venue) == len(set(at_venue))
            assert set(at_venue) == {f"s1-{iid}" for iid in sent}
            assert all(o.status == "accepted" for o in manager.orders.values())


async def test_stream_drops_during_fills_lose_no_fill(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    cfg = realistic_venue(partial_fill_probability=0.3, fill_delay_s=0.01)
    async with running_venue(cfg) as venue:
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
            manager = daemon.managers["s1"]
            venue.set_stream_drop_interval(0.3)
            rng = random.Random(5)
            for n in range(40):
                symbol = rng.choice(["AAPL", "MSFT", "SPY"])
                await p.publish(t.intent("s1"), market(f"m{n}", "buy", 2, symbol))
            venue.mute_streams(muted=True)  # events during the mute are lost for good
            for n in range(40, 60):
                await p.publish(t.intent("s1"), market(f"m{n}", "buy", 1, "MSFT"))

            def all_final_at_venue() -> bool:
                mine = venue_orders(venue)
                return len(mine) == 60 and all(o.is_final for o in mine)

            # 60 orders at 190/min (a burst of 16, then ~3 a second) take about 20 s.
            await poll_until(all_final_at_venue, timeout=60)
            venue.mute_streams(muted=False)
            venue.set_stream_drop_interval(None)

            def books_match() -> bool:
                for order in venue_orders(venue):
                    mine = manager.orders.get(order.client_order_id)
                    if mine is None or abs(mine.filled_qty - float(order.filled_qty)) > 1e-9:
                        return False
                return True

            await poll_until(books_match, timeout=20)
            for symbol, position in venue.engine.positions.items():
                assert manager.positions[symbol].qty == pytest.approx(float(position.qty))
            # The books move first; each fill event follows once its journal write is
            # durable. So wait for the events (the race, not a lost fill, made this flaky
            # under CPU load), then check that they add up exactly.
            filled_at_venue = sum(float(o.filled_qty) for o in venue_orders(venue))

            def fill_events() -> float:
                return float(
                    sum(b["qty"] for b in p.bodies(t.event("s1")) if b.get("type") == "fill")
                )

            with anyio.move_on_after(20):
                await p.wait_until(lambda: fill_events() >= filled_at_venue - 1e-9)
            assert fill_events() == pytest.approx(filled_at_venue)


async def test_global_engage_cancels_200_open_orders_and_stops_posts(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    # Rate limit lifted: 200 resting orders take a minute to place at 190/min; cancel-all is 1 call.
    async with running_venue(realistic_venue(rate_limit_per_min=FAST)) as venue:
        config = write_config(
            tmp_path,
            trading_tables(
                mosquitto, prefix, tmp_path, venue.base_url, broker_overrides=LIFTED, s1={}, s2={}
            ),
        )
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.kill_state, f"{prefix}/v1/strategy/+/event") as p,
        ):
            for n in range(100):
                await p.publish(t.intent("s1"), resting_buy(f"r{n}"))
                await p.publish(t.intent("s2"), resting_buy(f"r{n}", "MSFT"))
            await poll_until(lambda: sum(1 for o in venue.engine.open_orders()) == 200, timeout=30)
            engaged_state: dict[str, Any] = {}
            async with anyio.create_task_group() as tg:

                async def keep_trading() -> None:
                    n = 0
                    while True:
                        await p.publish(t.intent("s1"), resting_buy(f"late{n}"))
                        n += 1

                tg.start_soon(keep_trading)
                await p.publish(
                    t.kill_command, {"type": "engage", "scope": "global", "reason": "drill"}
                )
                engaged_state = await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
                # Keep trying for a while after the engage was processed.
                after = len(p.received)
                await p.wait_until(
                    lambda: (
                        sum(
                            1
                            for m in p.received[after:]
                            if m.topic == t.event("s1") and b'"KILL_SWITCH_GLOBAL"' in m.payload
                        )
                        >= 50
                    )
                )
                tg.cancel_scope.cancel()
            closed_at = engaged_state["global"]["since"]
            await poll_until(lambda: not venue.engine.open_orders(), timeout=20)
            assert_no_post_after(daemon, venue, closed_at)
            assert all(o.status == "canceled" for o in venue.engine.orders.values()), (
                "an order escaped the cancel"
            )


async def test_intents_queued_while_the_broker_is_down_are_never_traded_late(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tables = trading_tables(
        mosquitto, prefix, tmp_path, url, risk_overrides={"max_intent_age_s": 1.0}
    )
    daemon = Daemon(load_config(write_config(tmp_path, tables)))
    async with anyio.create_task_group() as tg, probe(mosquitto, t.event("s1")) as p:
        tg.start_soon(daemon.run)
        assert daemon.session is None or not daemon.ready.is_set()
        # No broker yet: the daemon cannot reconcile, so it holds intents (no ts at all).
        await poll_until(lambda: daemon.session is not None and daemon.session.is_connected)
        await p.publish(t.intent("s1"), resting_buy("queued-1"))
        await anyio.sleep(1.5)  # longer than max_intent_age_s: the intent is now too old
        async with running_venue(realistic_venue(port=port)) as venue:
            body = await p.expect(t.event("s1"), decided_for("queued-1"), timeout=20)
            assert body["type"] == "rejected"
            assert body["reasons"][0]["code"] == "STALE_INTENT"
            assert "waited" in body["reasons"][0]["message"]
            await p.publish(t.intent("s1"), resting_buy("fresh-1"))
            fresh = await p.expect(t.event("s1"), decided_for("fresh-1"))
            assert fresh["type"] == "accepted"
            assert not [o for o in venue_orders(venue) if o.client_order_id == "s1-queued-1"]
            daemon.request_stop()


def assert_no_post_after(daemon: Daemon, venue: PaperVenue, closed_at: float) -> None:
    """No POST passed the gateway's last gate check after the gate closed at ``closed_at``,
    and none reached the venue later than a request already on the wire could."""
    assert daemon.gateway is not None
    passed_late = [c for ts, c in daemon.gateway.gate_passes if ts > closed_at]
    assert not passed_late, f"POSTs passed the gate after the engage: {passed_late}"
    arrived_late = [ts - closed_at for ts in venue.order_post_arrivals if ts > closed_at + 0.2]
    assert not arrived_late, f"POSTs reached the venue {arrived_late} s after the engage"


def decided_for(intent_id: str) -> Callable[[Any], bool]:
    return lambda b: b.get("intent_id") == intent_id and b.get("type") in ("accepted", "rejected")


async def test_engage_with_flatten_cancels_then_closes_positions(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        config = write_config(
            tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url, s1={}, s2={})
        )
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, f"{prefix}/v1/strategy/+/event", t.kill_state) as p,
        ):
            await p.publish(t.intent("s1"), market("f1", "buy", 3, "AAPL"))
            await p.publish(t.intent("s2"), market("f2", "buy", 2, "MSFT"))
            await p.publish(t.intent("s1"), resting_buy("f3"))
            await p.wait_until(
                lambda: (
                    sum(
                        1
                        for m in p.received
                        if b'"status":"filled"' in m.payload
                        or (b'"f3"' in m.payload and b'"status":"accepted"' in m.payload)
                    )
                    >= 3
                )
            )
            await p.publish(
                t.kill_command,
                {"type": "engage", "scope": "strategy", "strategy_id": "s1", "flatten": True},
            )
            await p.expect(t.kill_state, lambda s: s["strategies"]["s1"]["engaged"])
            await poll_until(lambda: daemon.managers["s1"].positions["AAPL"].qty == 0, timeout=20)
            assert venue.engine.position_qty("AAPL") == 0
            # The other strategy is untouched, and s1's resting order was cancelled first.
            assert venue.engine.position_qty("MSFT") == 2
            assert daemon.managers["s1"].orders["s1-f3"].status == "cancelled"
            flattens = [o for o in venue_orders(venue) if "flatten" in o.client_order_id]
            assert len(flattens) == 1
            assert flattens[0].side == "sell"
