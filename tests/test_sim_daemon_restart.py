"""Issue 14 acceptance: the daemon's embedded paper venue keeps its account across restarts.

``make run`` (the daemon on its embedded venue), buy 5 AAPL, stop, run again: the
venue still holds 5 AAPL, ``tradeguard positions`` (the journal) agrees, and new
order ids differ from the old.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
from harness import VENV_BIN, Mosquitto, base_tables, probe, running_daemon, write_config
from sim_harness import Broker, rest

from protocol.topics import Topics

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

SIM_KEYS = ("tradeguard-sim", "tradeguard-sim")  # what the daemon uses on its embedded venue


def _filled(intent_id: str) -> Any:
    return lambda body: (
        body.get("type") == "order"
        and body.get("intent_id") == intent_id
        and body.get("status") == "filled"
    )


async def test_embedded_venue_keeps_positions_across_daemon_restarts(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    buy = {"type": "order", "symbol": "AAPL", "side": "buy", "qty": 5}
    async with running_daemon(config), probe(mosquitto, topics.event("s1")) as p:
        await p.publish(topics.intent("s1"), {**buy, "intent_id": "first"})
        first = await p.expect(topics.event("s1"), _filled("first"))
    assert (tmp_path / "paper-venue.db").is_file()

    async with running_daemon(config) as daemon, probe(mosquitto, topics.event("s1")) as p:
        broker = Broker(daemon.broker_url, *SIM_KEYS)
        positions = await broker.positions()
        assert [(pos.symbol, pos.qty) for pos in positions] == [("AAPL", "5")]
        old = await broker.order(first["broker_order_id"])
        assert old.filled_qty == "5"
        await p.publish(topics.intent("s1"), {**buy, "qty": 1, "intent_id": "second"})
        second = await p.expect(topics.event("s1"), _filled("second"))
        assert second["broker_order_id"] != first["broker_order_id"]
        assert (await broker.position("AAPL")).qty == "6"

    listed = await rest(
        subprocess.run,
        [str(VENV_BIN / "tradeguard"), "positions", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    journal = {(r["strategy_id"], r["symbol"]): r["qty"] for r in json.loads(listed.stdout)}
    assert journal == {("s1", "AAPL"): 6}
