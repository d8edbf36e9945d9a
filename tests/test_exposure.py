"""Exposure right after fills: the limits see a fill the moment it is reported.

The broker's account poll runs every ``broker.account_poll_s``; a burst sent between two
polls must meet the positions its own fills made, not the last poll's. Real mosquitto,
alpaca-py against the paper venue at Alpaca's rate limit with jittered latency.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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
