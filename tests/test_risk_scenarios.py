"""Risk end to end over MQTT: the drawdown circuit breaker, approvals, pause and resume."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    VENV_BIN,
    Mosquitto,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import fast_config, running_venue

from actors.admin_code import hash_code
from protocol.topics import Topics
from sim.config import SymbolSpec

pytestmark = pytest.mark.anyio

CODE = "risk-admin-code-9"


def risk_config(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, venue_url: str, **strategies: dict[str, Any]
) -> Path:
    tables = trading_tables(
        mosquitto,
        prefix,
        tmp_path,
        venue_url,
        broker_overrides={"account_poll_s": 0.1},
        risk_overrides={"max_notional": 100_000.0, "duplicate_window_s": 2.0},
        **strategies,
    )
    tables["kill"] = {"admin_code_hash": hash_code(CODE)}
    return write_config(tmp_path, tables)


def decided(intent_id: str) -> Any:
    return lambda b: b.get("intent_id") == intent_id and b.get("type") in ("accepted", "rejected")


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body.get("reasons", [])}


def order(
    intent_id: str, side: str, qty: float, symbol: str = "SPY", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "order",
        "intent_id": intent_id,
        "symbol": symbol,
        "side": side,
        "qty": qty,
        **extra,
    }


def cli(config: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``code`` is the admin code it reads on stdin (never argv)."""
    return subprocess.run(
        [str(VENV_BIN / "tradeguard"), *args, "--config", str(config)],
        input=code,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


async def test_drawdown_opens_the_circuit_and_only_a_code_closes_it(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    venue_cfg = fast_config(
        rate_limit_per_min=10**6,
        symbols={"SPY": SymbolSpec(start_price=500.0, volatility=0.0, spread_bps=0.2)},
    )
    async with running_venue(venue_cfg) as venue:
        config = risk_config(tmp_path, mosquitto, prefix, venue.base_url, s1={"allocation": 1.0})
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.daemon_state, t.kill_state, t.event("s1"), t.audit) as p,
        ):
            await p.expect(
                t.daemon_state, lambda s: s["equity"] is not None and s["circuit"] == "closed"
            )
            await p.publish(t.intent("s1"), order("buy-1", "buy", 100))
            await p.expect(
                t.event("s1"), lambda b: b.get("type") == "order" and b["status"] == "filled"
            )
            await p.publish(
                t.intent("s1"), order("rest-1", "buy", 1, order_type="limit", limit_price=400.0)
            )
            await p.expect(
                t.event("s1"),
                lambda b: b.get("intent_id") == "rest-1" and b.get("status") == "accepted",
            )
            # Price turns against the position: -2% of equity -> half_open, reduce-only.
            venue.set_price("SPY", 479.5)
            await p.expect(t.daemon_state, lambda s: s["circuit"] == "half_open", timeout=10)
            await p.expect(t.audit, lambda a: a["type"] == "circuit.half_open")
            await p.publish(t.intent("s1"), order("more-1", "buy", 1))
            assert "REDUCE_ONLY" in codes(await p.expect(t.event("s1"), decided("more-1")))
            await p.publish(t.intent("s1"), order("trim-1", "sell", 5))
            trimmed = await p.expect(t.event("s1"), decided("trim-1"))
            assert trimmed["type"] == "accepted", trimmed
            # -3%: open; the global kill switch engages and the resting order is cancelled.
            venue.set_price("SPY", 469.0)
            state = await p.expect(t.daemon_state, lambda s: s["circuit"] == "open", timeout=10)
            assert state["daily_drawdown"] >= 0.03
            kill = await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            assert kill["global"]["reason"] == "circuit_breaker"
            await p.expect(
                t.event("s1"),
                lambda b: b.get("intent_id") == "rest-1" and b.get("status") == "cancelled",
            )
            assert not venue.engine.open_orders()
            await p.publish(t.intent("s1"), order("late-1", "sell", 1))
            late = await p.expect(t.event("s1"), decided("late-1"))
            assert {"CIRCUIT_OPEN", "KILL_SWITCH_GLOBAL"} <= codes(late)
            assert daemon.guardian.circuit == "open"
        # The circuit survives a restart, even with the price back up.
        venue.set_price("SPY", 500.0)
        async with running_daemon(config) as daemon, probe(mosquitto, t.daemon_state) as p:
            assert daemon.guardian.circuit == "open"
            await p.expect(t.daemon_state, lambda s: s["circuit"] == "open")
            (tmp_path / "bad-code").write_text("bad-code-1\n")
            (tmp_path / "code").write_text(CODE + "\n")
            denied = await anyio.to_thread.run_sync(
                cli, config, "reset-circuit", "--code-file", str(tmp_path / "bad-code")
            )
            assert denied.returncode == 3
            assert daemon.guardian.circuit == "open"
            reset = await anyio.to_thread.run_sync(
                cli, config, "reset-circuit", "--code-file", str(tmp_path / "code")
            )
            assert reset.returncode == 0, reset.stdout + reset.stderr
            await p.expect(t.daemon_state, lambda s: s["circuit"] == "closed")


async def test_drawdown_between_account_polls_opens_the_circuit(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    """Equity between polls is the last poll's, marked to the fills and quotes since."""
    t = Topics(prefix)
    venue_cfg = realistic_venue(
        symbols={"SPY": SymbolSpec(start_price=500.0, volatility=0.0, spread_bps=0.2)},
    )
    async with running_venue(venue_cfg) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            # One poll at start, then none for an hour: only the marks can see the loss.
            broker_overrides={"account_poll_s": 3600.0},
            risk_overrides={"max_notional": 100_000.0},
            s1={"allocation": 1.0},
        )
        tables["kill"] = {"admin_code_hash": hash_code(CODE)}
        config = write_config(tmp_path, tables)
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.daemon_state, t.kill_state, t.event("s1")) as p,
        ):
            await p.expect(
                t.daemon_state, lambda s: s["equity"] is not None and s["circuit"] == "closed"
            )
            # The full poll (equity and positions) after READY is the marks' basis.
            await poll_until(lambda: daemon.guardian._basis is not None)
            polled = daemon.guardian.equity
            await p.publish(t.intent("s1"), order("buy-1", "buy", 100))
            await p.expect(
                t.event("s1"), lambda b: b.get("type") == "order" and b["status"] == "filled"
            )
            venue.set_price("SPY", 469.0)  # -3.1% of equity: past the daily limit
            state = await p.expect(t.daemon_state, lambda s: s["circuit"] == "open", timeout=15)
            assert state["daily_drawdown"] >= 0.03
            kill = await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            assert kill["global"]["reason"] == "circuit_breaker"
            assert daemon.guardian.equity == polled  # no account poll saw it


async def test_approval_flow_with_wrong_code_deny_and_timeout(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        config = risk_config(
            tmp_path,
            mosquitto,
            prefix,
            venue.base_url,
            s1={"approval_above_notional": 1000.0, "approval_timeout_s": 60.0},
            s2={"approval_above_notional": 1000.0, "approval_timeout_s": 0.5},
        )
        async with (
            running_daemon(config),
            probe(mosquitto, t.approval_pending, f"{prefix}/v1/strategy/+/event", t.audit) as p,
        ):
            await p.publish(t.intent("s1"), order("big-1", "buy", 10, "AAPL"))
            pending = await p.expect(t.approval_pending, lambda b: len(b["pending"]) == 1)
            entry = pending["pending"][0]
            assert (entry["strategy_id"], entry["intent_id"]) == ("s1", "big-1")
            assert entry["notional"] > 1000
            # A small one passes straight through.
            await p.publish(t.intent("s1"), order("small-1", "buy", 1, "AAPL"))
            assert (await p.expect(t.event("s1"), decided("small-1")))["type"] == "accepted"
            wrong = await anyio.to_thread.run_sync(
                functools.partial(
                    cli, config, "approve", "--strategy", "s1", "--intent", "big-1", code="nope-123"
                )
            )
            assert wrong.returncode == 3
            assert not [b for b in p.bodies(t.event("s1")) if decided("big-1")(b)]
            right = await anyio.to_thread.run_sync(
                functools.partial(
                    cli, config, "approve", "--strategy", "s1", "--intent", "big-1", code=CODE
                )
            )
            assert right.returncode == 0, right.stderr
            assert (await p.expect(t.event("s1"), decided("big-1")))["type"] == "accepted"
            await p.expect(
                t.event("s1"),
                lambda b: b.get("intent_id") == "big-1" and b.get("status") == "filled",
            )
            # Deny.
            await p.publish(t.intent("s1"), order("big-2", "buy", 11, "AAPL"))
            await p.expect(
                t.approval_pending, lambda b: any(e["intent_id"] == "big-2" for e in b["pending"])
            )
            await p.publish(
                t.approval_command,
                {"type": "deny", "strategy_id": "s1", "intent_id": "big-2", "code": CODE},
            )
            assert codes(await p.expect(t.event("s1"), decided("big-2"))) == {"APPROVAL_DENIED"}
            # Timeout.
            await p.publish(t.intent("s2"), order("big-3", "buy", 10, "AAPL"))
            assert codes(await p.expect(t.event("s2"), decided("big-3"))) == {"APPROVAL_TIMEOUT"}
            await p.expect(t.approval_pending, lambda b: b["pending"] == [])
            # A re-sent decided intent gets the same answer again.
            await p.publish(t.intent("s2"), order("big-3", "buy", 10, "AAPL"))
            again = await p.expect(t.event("s2"), lambda b: decided("big-3")(b) and b["duplicate"])
            assert codes(again) == {"APPROVAL_TIMEOUT"}
        assert sum(1 for o in venue.engine.orders.values() if o.client_order_id == "s1-big-1") == 1


async def test_pause_is_reduce_only_and_resume_needs_the_code(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        config = risk_config(tmp_path, mosquitto, prefix, venue.base_url, s1={})
        async with (
            running_daemon(config),
            probe(mosquitto, t.event("s1"), t.audit, t.kill_state) as p,
        ):
            await p.publish(t.intent("s1"), order("b1", "buy", 5, "AAPL"))
            await p.expect(
                t.event("s1"), lambda b: b.get("intent_id") == "b1" and b.get("status") == "filled"
            )
            await p.publish(
                t.kill_command, {"type": "pause", "strategy_id": "s1", "reason": "review"}
            )
            await p.expect(t.kill_state, lambda s: s["paused"]["s1"])
            await p.publish(t.intent("s1"), order("b2", "buy", 1, "AAPL"))
            assert "STRATEGY_PAUSED" in codes(await p.expect(t.event("s1"), decided("b2")))
            await p.publish(t.intent("s1"), order("s1x", "sell", 2, "AAPL"))
            assert (await p.expect(t.event("s1"), decided("s1x")))["type"] == "accepted"
            await p.publish(
                t.kill_command, {"type": "resume", "strategy_id": "s1", "code": "wrong-1"}
            )
            denied = await p.expect(t.audit, lambda a: a["type"] == "strategy.resume")
            assert denied["ok"] is False
            start = len(p.received)
            await p.publish(t.kill_command, {"type": "resume", "strategy_id": "s1", "code": CODE})
            await p.expect(t.kill_state, lambda s: not s["paused"]["s1"], start=start)
            await p.publish(t.intent("s1"), order("b3", "buy", 1, "AAPL"))
            assert (await p.expect(t.event("s1"), decided("b3")))["type"] == "accepted"


async def test_one_answer_lists_every_broken_limit(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            s1={"min_confidence": 0.6, "restricted_symbols": ["TSLA"]},
        )
        tables["risk"].update({"max_notional": 25_000.0, "min_price": 5.0})
        config = write_config(tmp_path, tables)
        async with running_daemon(config), probe(mosquitto, t.event("s1")) as p:
            await p.publish(t.intent("s1"), order("x1", "buy", 500, "TSLA", confidence=0.1))
            body = await p.expect(t.event("s1"), decided("x1"))
            assert {"MAX_NOTIONAL", "RESTRICTED_SYMBOL", "LOW_CONFIDENCE"} <= codes(body)
            assert all(r["message"] for r in body["reasons"])


async def test_home_assistant_approves_with_a_code(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            s1={"approval_above_notional": 1000.0, "approval_timeout_s": 60.0},
        )
        tables["kill"] = {"admin_code_hash": hash_code(CODE)}
        tables["homeassistant"] = {"enabled": True, "discovery_prefix": f"ha{prefix}"}
        config = write_config(tmp_path, tables)
        async with (
            running_daemon(config),
            probe(mosquitto, t.approval_pending, t.event("s1"), t.audit) as p,
        ):
            await p.publish(t.intent("s1"), order("ha-1", "buy", 10, "AAPL"))
            await p.expect(t.approval_pending, lambda b: len(b["pending"]) == 1)
            await p.publish(f"{prefix}/v1/ha/approve", "s1 ha-1 wrong-code-1")
            denied = await p.expect(t.audit, lambda a: a["type"] == "approval.approve")
            assert denied["ok"] is False
            await p.publish(f"{prefix}/v1/ha/approve", "two words")
            await p.expect(t.audit, lambda a: "expected 'STRATEGY INTENT_ID CODE'" in a["detail"])
            await p.publish(f"{prefix}/v1/ha/approve", f"s1 ha-1 {CODE}")
            assert (await p.expect(t.event("s1"), decided("ha-1")))["type"] == "accepted"
        for body in p.bodies(t.audit):
            assert CODE not in str(body)
