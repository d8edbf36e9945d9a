"""Market data on the decision path: a decision waits for a quote only when it has none.

A quote past half its allowed age (``risk.quote_max_age_s``) but still usable is
re-quoted in the background; the intent is decided at once with the quote at hand.
Real mosquitto, alpaca-py against the paper venue at Alpaca's rate limit with jittered
latency.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Mosquitto,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from protocol.topics import Topics

pytestmark = pytest.mark.anyio

QUOTES_ROUTE = "GET /v2/stocks/quotes/latest"
MAX_AGE_S = 2.0
SLOW_DATA_S = 1.5
"""Slower than a decision, quicker than the gateway's request timeout (2 s)."""


def resting_buy(intent_id: str) -> dict[str, Any]:
    return {
        "type": "order",
        "intent_id": intent_id,
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1,
        "order_type": "limit",
        "limit_price": 1.0,
    }


def decided(intent_id: str) -> Any:
    return lambda b: b.get("intent_id") == intent_id and b.get("type") in ("accepted", "rejected")


async def test_an_aging_quote_is_requoted_in_the_background_not_before_the_decision(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            risk_overrides={"quote_max_age_s": MAX_AGE_S},
        )
        async with (
            running_daemon(write_config(tmp_path, tables)) as daemon,
            probe(mosquitto, t.event("s1")) as p,
        ):
            gateway = daemon.gateway
            await p.publish(t.intent("s1"), resting_buy("q1"))
            assert (await p.expect(t.event("s1"), decided("q1")))["type"] == "accepted"
            first = gateway.quotes["AAPL"]  # fetched before q1 was decided: there was none

            await poll_until(lambda: aged(first.ts))
            venue.set_latency(QUOTES_ROUTE, SLOW_DATA_S)  # market data is slow from now on
            await p.publish(t.intent("s1"), resting_buy("q2"))
            answer = await p.expect(t.event("s1"), decided("q2"))
            assert answer["type"] == "accepted"
            # Decided with the quote at hand: the re-quote had not come back yet.
            assert gateway.quotes["AAPL"] is first
            await poll_until(lambda: gateway.quotes["AAPL"].ts > first.ts)


def aged(ts: float) -> bool:
    """Past half of ``MAX_AGE_S`` and well short of it."""
    return MAX_AGE_S / 2 + 0.1 < time.time() - ts < MAX_AGE_S * 0.7
