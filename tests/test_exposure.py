"""Exposure right after fills: the limits see a fill the moment it is reported.

The broker's account poll runs every ``broker.account_poll_s``; a burst sent between two
polls must meet the positions its own fills made, not the last poll's. Real mosquitto,
alpaca-py against the paper venue at Alpaca's rate limit with jittered latency.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    Mosquitto,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from protocol.topics import Topics

pytestmark = pytest.mark.anyio

# The poll must not see the fills during the test: the window between polls is the point.
SLOW_POLL = {"account_poll_s": 300.0}


def buy(intent_id: str, symbol: str, qty: float = 1) -> dict[str, Any]:
    return {"type": "order", "intent_id": intent_id, "symbol": symbol, "side": "buy", "qty": qty}


def filled(intent_id: str) -> Callable[[Any], bool]:
    return lambda b: (
        b.get("type") == "order" and b.get("intent_id") == intent_id and b.get("status") == "filled"
    )


def decision(bodies: list[Any], intent_id: str) -> dict[str, Any] | None:
    for body in bodies:
        if body.get("intent_id") == intent_id and body.get("type") in ("accepted", "rejected"):
            return dict(body)
    return None


async def fill_then_try(
    mosquitto: Mosquitto,
    prefix: str,
    tmp_path: Path,
    *,
    risk: dict[str, Any],
    fills: list[tuple[str, float]],
    then: tuple[str, float],
    strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Market buys that fill and are reported, then one more at once: its decision."""
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            broker_overrides=SLOW_POLL,
            risk_overrides=risk,
            s1=strategy or {"allocation": 1.0},
        )
        async with (
            running_daemon(write_config(tmp_path, tables)),
            probe(mosquitto, t.event("s1")) as p,
        ):
            for n, (symbol, qty) in enumerate(fills):
                await p.publish(t.intent("s1"), buy(f"f{n}", symbol, qty))
                await p.expect(t.event("s1"), filled(f"f{n}"))
            symbol, qty = then
            await p.publish(t.intent("s1"), buy("next", symbol, qty))
            await p.wait_until(lambda: decision(p.bodies(t.event("s1")), "next") is not None)
            found = decision(p.bodies(t.event("s1")), "next")
            assert found is not None
            return found


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body.get("reasons", [])}


async def test_max_positions_counts_fills_the_poll_has_not_seen(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    answer = await fill_then_try(
        mosquitto,
        prefix,
        tmp_path,
        risk={"max_positions": 2},
        fills=[("AAPL", 1), ("MSFT", 1)],
        then=("NVDA", 1),
    )
    assert answer["type"] == "rejected"
    assert "MAX_POSITIONS" in codes(answer)


async def test_capital_deployed_counts_fills_the_poll_has_not_seen(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    # 100,000 of equity, at most 1 % deployed: ~1,000. Two fills of ~400 each leave no
    # room for a third; without them the third (~400) would pass.
    answer = await fill_then_try(
        mosquitto,
        prefix,
        tmp_path,
        risk={"max_capital_deployed": 0.01},
        fills=[("MSFT", 1), ("MSFT", 1)],
        then=("MSFT", 1),
    )
    assert answer["type"] == "rejected"
    assert "CAPITAL_DEPLOYED" in codes(answer)


async def test_strategy_allocation_counts_fills_the_poll_has_not_seen(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    answer = await fill_then_try(
        mosquitto,
        prefix,
        tmp_path,
        risk={},
        fills=[("MSFT", 1), ("MSFT", 1)],
        then=("MSFT", 1),
        strategy={"allocation": 0.01},
    )
    assert answer["type"] == "rejected"
    assert "STRATEGY_ALLOCATION" in codes(answer)


async def test_a_trade_outside_tradeguard_is_an_audited_drift(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    from alpaca.trading.client import TradingClient  # noqa: PLC0415
    from alpaca.trading.enums import OrderSide, TimeInForce  # noqa: PLC0415
    from alpaca.trading.requests import MarketOrderRequest  # noqa: PLC0415

    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            # Polls often, so that two of them confirm the drift within the test.
            broker_overrides={"account_poll_s": 0.5},
            s1={"allocation": 1.0},
        )
        async with (
            running_daemon(write_config(tmp_path, tables)),
            probe(mosquitto, t.event("s1"), t.audit) as p,
        ):
            await p.publish(t.intent("s1"), buy("own", "AAPL", 3))
            await p.expect(t.event("s1"), filled("own"))
            # Someone sells 2 AAPL of the same account by hand, outside tradeguard.
            hand = TradingClient("PKHAND", "hand", raw_data=True, url_override=venue.base_url)
            await anyio.to_thread.run_sync(
                lambda: hand.submit_order(
                    MarketOrderRequest(
                        symbol="AAPL",
                        qty=2,
                        side=OrderSide.SELL,
                        time_in_force=TimeInForce.DAY,
                        client_order_id="by-hand-1",
                    )
                )
            )
            drift = await p.expect(t.audit, lambda a: a.get("type") == "ledger.drift", timeout=20)
            assert "AAPL" in drift["detail"]
            assert "broker holds 1" in drift["detail"]
            assert "books 3" in drift["detail"]
            assert drift["ok"] is False
            # Reported once.
            await anyio.sleep(2.0)  # four more polls: no second record for the same change
            assert sum(1 for a in p.bodies(t.audit) if a.get("type") == "ledger.drift") == 1
