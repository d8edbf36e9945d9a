"""Paper and live accounts side by side (issue 16), end to end.

Two paper venues stand in for the two accounts: ``[broker]`` is the paper account and
``[broker.live]`` (``rehearsal = true``) the live one. Real mosquitto, real alpaca-py
against both venues, a real journal; the venues keep Alpaca's rate limit and latency.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    VENV_BIN,
    DaemonProcess,
    Mosquitto,
    base_tables,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from actors.admin_code import hash_code
from protocol.topics import Topics
from sim.config import SymbolSpec
from sim.venue import PaperVenue

pytestmark = pytest.mark.anyio

CODE = "mode-admin-code-7"
EASY = {"min_sessions": 1, "min_filled_orders": 1, "max_drawdown": 0.5, "quiet_sessions": 1}


def two_accounts(
    mosquitto: Mosquitto,
    prefix: str,
    state_dir: Path,
    venues: tuple[PaperVenue, PaperVenue],
    *,
    promotion: dict[str, Any] | None = None,
    risk: dict[str, Any] | None = None,
    on_circuit_open: str = "demote",
    **strategies: dict[str, Any],
) -> Path:
    """A config with the paper account on ``venues[0]`` and the live stand-in on ``venues[1]``."""
    paper, live = venues
    tables = trading_tables(
        mosquitto, prefix, state_dir, paper.base_url, risk_overrides=risk, **strategies
    )
    (state_dir / "live_key_id").write_text("PKLIVESTANDIN\n")
    (state_dir / "live_secret").write_text("live-secret\n")
    tables["broker.live"] = {
        "kind": "alpaca",
        "rehearsal": True,  # a paper venue stands in for the live account
        "url": live.base_url,
        "stream_url": live.base_url.replace("http", "ws", 1) + "/stream",
        "data_url": live.base_url,
        "key_id_file": str(state_dir / "live_key_id"),
        "secret_key_file": str(state_dir / "live_secret"),
        "request_timeout_s": 2.0,
        "on_circuit_open": on_circuit_open,
    }
    tables["kill"] = {"admin_code_hash": hash_code(CODE)}
    tables["promotion"] = {**EASY, **(promotion or {})}
    return write_config(state_dir, tables)


def market(intent_id: str, side: str = "buy", qty: float = 1, symbol: str = "AAPL") -> Any:
    return {"type": "order", "intent_id": intent_id, "symbol": symbol, "side": side, "qty": qty}


def resting(intent_id: str) -> Any:
    return {**market(intent_id), "order_type": "limit", "limit_price": 1.0}


def coids(venue: PaperVenue, sid: str = "") -> list[str]:
    """Client order ids at ``venue`` (of ``sid``, or every one)."""
    return [
        o.client_order_id for o in venue.engine.orders.values() if o.client_order_id.startswith(sid)
    ]


def journal(state_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(state_dir / "state.db") as db:
        return db.execute(sql, params).fetchall()


def filled(client_order_id: str) -> Any:
    return lambda b: b.get("client_order_id") == client_order_id and b.get("status") == "filled"


def answer(kind: str, source: str) -> Any:
    return lambda a: a["type"] == kind and a.get("source") == source


async def test_a_promoted_strategy_trades_live_and_the_other_stays_on_paper(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue()) as live,
    ):
        config = two_accounts(mosquitto, prefix, tmp_path, (paper, live), s1={}, s2={})
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.audit, t.daemon_state, f"{prefix}/v1/strategy/#") as p,
        ):
            await p.expect(t.strategy_state("s1"), lambda s: s.get("mode") == "paper")
            await p.expect(t.daemon_state, lambda s: s.get("accounts") and s["equity"])
            await poll_until(lambda: daemon.guardians["paper"].equity is not None)
            # The paper record: one filled order in one session.
            await p.publish(t.intent("s1"), market("p-1"))
            await p.expect(t.event("s1"), lambda b: b.get("status") == "filled", timeout=20)
            await p.publish(
                t.kill_command,
                {"type": "promote", "strategy_id": "s1", "code": CODE, "source": "t-promote"},
            )
            record = await p.expect(t.audit, answer("mode.promote", "t-promote"), timeout=15)
            assert record["ok"], record
            await p.expect(t.strategy_state("s1"), lambda s: s.get("mode") == "live")
            await p.publish(t.intent("s1"), market("l-1", symbol="MSFT"))
            await p.publish(t.intent("s2"), market("p-2", symbol="MSFT"))
            await poll_until(lambda: "s1-l-1" in coids(live) and "s2-p-2" in coids(paper))
            assert coids(live) == ["s1-l-1"]  # the live venue sees only the promoted strategy
            assert "s1-l-1" not in coids(paper)
            assert sorted(coids(paper)) == ["s1-p-1", "s2-p-2"]
            state = await p.expect(
                t.daemon_state, lambda s: s["accounts"]["live"]["strategies"] == ["s1"]
            )
            assert state["accounts"]["paper"]["strategies"] == ["s2"]
            assert daemon.managers["s1"].mode == "live"
            rows = journal(tmp_path, "SELECT account FROM orders WHERE client_order_id = 's1-l-1'")
            assert rows == [("live",)]
            for sid, coid in (("s1", "s1-l-1"), ("s2", "s2-p-2")):
                await p.expect(t.event(sid), filled(coid), timeout=20)
        # `tradeguard positions` keeps each account's positions apart.
        shown = subprocess.run(  # our own console script
            [str(VENV_BIN / "tradeguard"), "positions", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        held = {
            (r["strategy_id"], r["account"], r["symbol"]): r["qty"]
            for r in json.loads(shown.stdout)
        }
        assert held == {
            ("s1", "paper", "AAPL"): 1,
            ("s1", "live", "MSFT"): 1,
            ("s2", "paper", "MSFT"): 1,
        }


async def test_promotion_without_a_code_with_a_wrong_one_or_short_of_evidence_is_refused(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    strict = {"min_sessions": 5, "min_filled_orders": 20, "max_drawdown": 0.05}
    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue()) as live,
    ):
        config = two_accounts(mosquitto, prefix, tmp_path, (paper, live), promotion=strict, s1={})
        async with running_daemon(config) as daemon, probe(mosquitto, t.audit, t.event("s1")) as p:
            await poll_until(lambda: daemon.guardians["paper"].equity is not None)
            await p.publish(t.intent("s1"), resting("open-1"))  # an open paper order
            await p.expect(t.event("s1"), lambda b: b.get("status") == "accepted", timeout=20)
            for source, code in (("t-none", None), ("t-wrong", "not-the-code")):
                command = {"type": "promote", "strategy_id": "s1", "source": source}
                if code is not None:
                    command["code"] = code
                await p.publish(t.kill_command, command)
                refused = await p.expect(t.audit, answer("mode.promote", source), timeout=15)
                assert not refused["ok"]
                assert refused["detail"].startswith("denied: ")
                assert code is None or code not in refused["detail"]
            await p.publish(
                t.kill_command,
                {"type": "promote", "strategy_id": "s1", "code": CODE, "source": "t-short"},
            )
            refused = await p.expect(t.audit, answer("mode.promote", "t-short"), timeout=15)
            assert not refused["ok"]
            reasons = refused["reasons"]
            assert {r["code"] for r in reasons} == {"MODE_CHANGE_REFUSED"}
            text = " | ".join(r["message"] for r in reasons)
            # Every unmet criterion is listed, not just the first.
            for criterion in ("sessions", "filled", "open paper orders"):
                assert criterion in text, text
            assert daemon.managers["s1"].mode == "paper"
        audited = journal(
            tmp_path, "SELECT source, ok FROM audit WHERE type = 'mode.promote' ORDER BY id"
        )
        assert audited == [("t-none", 0), ("t-wrong", 0), ("t-short", 0)]
        assert journal(tmp_path, "SELECT value FROM meta WHERE key = 'mode.s1'") == []


async def test_demotion_cancels_every_live_order_before_the_first_paper_order(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue()) as live,
    ):
        # 20 POSTs and then 20 cancels at Alpaca's 190/min take about 8 s: the paper intent
        # sent during the demotion waits that long, under a staleness limit that allows it.
        config = two_accounts(
            mosquitto,
            prefix,
            tmp_path,
            (paper, live),
            s1={"mode": "live", "max_intent_age_s": 60.0},
        )
        async with running_daemon(config) as daemon, probe(mosquitto, t.audit, t.event("s1")) as p:
            for n in range(20):
                await p.publish(t.intent("s1"), resting(f"r-{n}"))
            await poll_until(lambda: len(live.engine.open_orders()) == 20, timeout=60)
            await p.publish(
                t.kill_command, {"type": "demote", "strategy_id": "s1", "source": "t-d"}
            )
            await p.publish(t.intent("s1"), market("paper-1"))
            demoted = await p.expect(t.audit, answer("mode.demote", "t-d"), timeout=60)
            assert demoted["ok"], demoted
            assert "20 live orders cancelled" in demoted["detail"]
            accepted = await p.expect(
                t.event("s1"), lambda b: b.get("intent_id") == "paper-1", timeout=30
            )
            assert accepted["type"] == "accepted", accepted
            await poll_until(lambda: "s1-paper-1" in coids(paper))
            assert not live.engine.open_orders()
            assert "s1-paper-1" not in coids(live)
            assert daemon.managers["s1"].mode == "paper"
        # Every live order was known cancelled before the paper order was decided.
        (decided,) = journal(tmp_path, "SELECT ts FROM decisions WHERE intent_id = 'paper-1'")[0]
        cancels = journal(
            tmp_path,
            "SELECT status, updated_ts FROM orders WHERE account = 'live' AND intent_id LIKE 'r-%'",
        )
        assert len(cancels) == 20
        assert all(status == "cancelled" and ts < decided for status, ts in cancels), cancels


async def test_kill9_right_after_a_promotion_keeps_the_strategy_live(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue()) as live,
    ):
        config = two_accounts(mosquitto, prefix, tmp_path, (paper, live), s1={}, s2={})
        daemon = DaemonProcess(config)
        try:
            await anyio.to_thread.run_sync(daemon.start)
            async with probe(mosquitto, t.audit, f"{prefix}/v1/strategy/+/event") as p:
                await p.publish(t.intent("s1"), market("p-1"))
                await p.expect(t.event("s1"), lambda b: b.get("status") == "filled", timeout=20)
                await p.publish(
                    t.kill_command,
                    {"type": "promote", "strategy_id": "s1", "code": CODE, "source": "t-p"},
                )
                promoted = await p.expect(t.audit, answer("mode.promote", "t-p"), timeout=15)
                assert promoted["ok"], promoted
                daemon.kill9()
            await anyio.to_thread.run_sync(daemon.start)
            async with probe(mosquitto, f"{prefix}/v1/strategy/+/event") as p:
                await p.publish(t.intent("s1"), market("l-1"))
                await p.publish(t.intent("s1"), market("p-1"))  # a re-send: answered, not re-sent
                await p.publish(t.intent("s2"), market("p-2"))
                await p.expect(t.event("s1"), lambda b: b.get("intent_id") == "l-1", timeout=20)
                dup = await p.expect(t.event("s1"), lambda b: b.get("intent_id") == "p-1")
                assert dup["duplicate"]
                await poll_until(lambda: "s1-l-1" in coids(live) and "s2-p-2" in coids(paper))
            await anyio.sleep(0.5)  # anything doubled would reach a venue by now
            assert sorted(coids(live)) == ["s1-l-1"]
            assert sorted(coids(paper)) == ["s1-p-1", "s2-p-2"]
        finally:
            daemon.stop_quietly()


@pytest.mark.parametrize("action", ["demote", "kill"])
async def test_a_live_circuit_trip_demotes_or_kills_live_strategies_and_paper_keeps_trading(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path, action: str
) -> None:
    t = Topics(prefix)
    spy = {"SPY": SymbolSpec(start_price=500.0, volatility=0.0, spread_bps=0.2)}
    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue(symbols=spy)) as live,
    ):
        config = two_accounts(
            mosquitto,
            prefix,
            tmp_path,
            (paper, live),
            risk={"max_notional": 100_000.0},
            s1={"mode": "live", "allocation": 0.5},
            s2={"allocation": 0.5},
            on_circuit_open=action,
        )
        async with (
            running_daemon(config) as daemon,
            probe(
                mosquitto, t.audit, t.kill_state, t.daemon_state, t.event("s1"), t.event("s2")
            ) as p,
        ):
            await poll_until(lambda: daemon.guardians["live"]._basis is not None, timeout=20)
            await p.publish(t.intent("s1"), market("buy-1", qty=90, symbol="SPY"))
            await p.expect(t.event("s1"), lambda b: b.get("status") == "filled", timeout=20)
            live.set_price("SPY", 460.0)  # -3.6 % of the live account: past the daily limit
            kind = "mode.demote" if action == "demote" else "kill.engage"
            acted = await p.expect(t.audit, lambda a: a["type"] == kind and a["ok"], timeout=20)
            assert acted["source"] == "circuit_breaker"
            assert acted["strategy_id"] == "s1"
            assert daemon.guardians["live"].circuit == "open"
            assert daemon.guardians["paper"].circuit == "closed"
            if action == "demote":
                assert daemon.managers["s1"].mode == "paper"
            else:
                assert daemon.gate.blocked("s1")
                assert daemon.managers["s1"].mode == "live"
            await p.publish(t.intent("s2"), market("after-1"))
            await p.expect(t.event("s2"), lambda b: b.get("status") == "filled", timeout=20)
            assert not daemon.gate.blocked("s2")
            kill = p.bodies(t.kill_state)[-1]
            assert not kill["global"]["engaged"]
            # One reset closes every account's circuit (the live one was open).
            await p.publish(
                t.kill_command, {"type": "reset_circuit", "code": CODE, "source": "t-r"}
            )
            assert (await p.expect(t.audit, answer("circuit.reset", "t-r")))["ok"]
            closed = await p.expect(t.audit, lambda a: a["type"] == "circuit.closed")
            assert closed["detail"].startswith("live account: open -> closed: reset by"), closed
            assert daemon.guardians["live"].circuit == "closed"


async def test_demote_with_flatten_closes_live_positions_and_the_global_switch_covers_both(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue()) as live,
    ):
        config = two_accounts(
            mosquitto, prefix, tmp_path, (paper, live), s1={"mode": "live"}, s2={"mode": "live"}
        )
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.audit, t.kill_state, f"{prefix}/v1/strategy/+/event") as p,
        ):
            await p.publish(t.intent("s1"), market("l-1", qty=3))
            await p.expect(t.event("s1"), lambda b: b.get("status") == "filled", timeout=20)
            await p.publish(
                t.kill_command,
                {"type": "demote", "strategy_id": "s1", "flatten": True, "source": "t-f"},
            )
            demoted = await p.expect(t.audit, answer("mode.demote", "t-f"), timeout=30)
            assert demoted["ok"]
            assert "1 live positions closed" in demoted["detail"], demoted
            assert live.engine.position_qty("AAPL") == 0
            # A resting order on each account (s1 now trades paper, s2 live); the global
            # switch cancels both, and says settled once both gateways have.
            await p.publish(t.intent("s1"), resting("r-paper"))
            await p.publish(t.intent("s2"), resting("r-live"))
            await poll_until(lambda: bool(paper.engine.open_orders() and live.engine.open_orders()))
            assert daemon.managers["s1"].mode == "paper"
            await p.publish(t.kill_command, {"type": "engage", "scope": "global"})
            settled = await p.expect(
                t.kill_state,
                lambda s: s["global"]["engaged"] and s["global"]["settled"],
                timeout=30,
            )
            assert settled["global"]["reason"]  # the engage's own state, not a stale one
            assert not paper.engine.open_orders()
            assert not live.engine.open_orders()


async def test_the_embedded_venue_stands_in_for_the_live_account_in_a_rehearsal(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    tables = base_tables(mosquitto, prefix, tmp_path, s1={"mode": "live"}, s2={})
    tables["broker.live"] = {"kind": "sim", "rehearsal": True}
    tables["broker.live.sim"] = {"port": 0, "clock": "always-open"}
    tables["kill"] = {"admin_code_hash": hash_code(CODE)}
    config = write_config(tmp_path, tables)
    async with running_daemon(config) as daemon, probe(mosquitto, t.event("s1")) as p:
        assert daemon.live_venue is not None
        assert daemon.live_venue is not daemon.venue
        await p.publish(t.intent("s1"), market("l-1"))
        await p.expect(t.event("s1"), filled("s1-l-1"), timeout=20)
        assert coids(daemon.live_venue) == ["s1-l-1"]
        assert coids(daemon.venue) == []
    # Each venue keeps its own paper account beside the journal.
    assert (tmp_path / "paper-venue.db").exists()
    assert (tmp_path / "paper-venue-live.db").exists()
