"""The strategy client and the journal commands against a running daemon."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest
from harness import VENV_BIN, Mosquitto, running_daemon, trading_tables, write_config
from sim_harness import fast_config, running_venue

from protocol.client import StrategyClient
from protocol.messages import Accepted, OrderIntent, Rejected

pytestmark = pytest.mark.anyio


async def test_submit_gets_one_decision_and_follows_the_order(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with (
            running_daemon(config),
            StrategyClient("s1", port=mosquitto.port, prefix=prefix) as client,
        ):
            intent = OrderIntent(intent_id="c-1", symbol="AAPL", side="buy", qty=2)
            decision = await client.submit(intent)
            assert isinstance(decision, Accepted)
            assert decision.client_order_id == "s1-c-1"
            order = await client.wait_order("c-1")
            assert order.status == "filled"
            assert order.filled_qty == 2
            again = await client.submit(intent)
            assert isinstance(again, Accepted)
            assert again.duplicate
            bad = await client.submit(
                OrderIntent(intent_id="c-2", symbol="AAPL", side="sell", qty=1, ts=1.0)
            )
            assert isinstance(bad, Rejected)
            assert bad.reasons[0].code == "STALE_INTENT"
        assert sum(1 for o in venue.engine.orders.values() if o.client_order_id == "s1-c-1") == 1

        # The journal commands read what the daemon wrote.
        def cli(*args: str) -> str:
            out = subprocess.run(
                [str(VENV_BIN / "tradeguard"), *args, "--config", str(config)],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            return out.stdout

        orders = json.loads(await anyio.to_thread.run_sync(cli, "orders", "--json"))
        assert [o["client_order_id"] for o in orders] == ["s1-c-1"]
        assert orders[0]["status"] == "filled"
        positions = json.loads(await anyio.to_thread.run_sync(cli, "positions", "--json"))
        assert positions == [
            {
                "strategy_id": "s1",
                "account": "paper",
                "symbol": "AAPL",
                "qty": 2.0,
                "avg_price": pytest.approx(orders[0]["filled_avg_price"]),
                "realized_pnl": 0.0,
            }
        ]
        table = await anyio.to_thread.run_sync(cli, "orders")
        assert "s1-c-1" not in table  # the table shows intents, not broker ids
        assert "c-1" in table


async def test_demo_strategy_trades_end_to_end(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        config = write_config(
            tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url, demo={})
        )
        async with running_daemon(config):
            result = await anyio.to_thread.run_sync(
                lambda: subprocess.run(
                    [
                        str(VENV_BIN / "tradeguard"),
                        "demo-strategy",
                        "--rounds",
                        "2",
                        "--config",
                        str(config),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=60,
                )
            )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("-> filled") == 4, result.stdout
