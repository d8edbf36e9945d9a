"""What the guardian publishes: the retained daemon state and the pending-approval list."""

from __future__ import annotations

from actors.core.circuit_breaker import CircuitBreaker, SessionState
from actors.core.risk_reports import EXTERNAL_ORDERS_SHOWN, approval_list, daemon_state
from actors.core.settings import RiskConfig
from protocol.messages import DaemonState, PendingApproval

T0 = 1_700_000_000.0


def state(
    breaker: CircuitBreaker, *, halt_reason: str | None = None, external: list[str] | None = None
) -> DaemonState:
    return daemon_state(
        version="1.2.3",
        mode="paper",
        broker="alpaca",
        broker_connected=True,
        breaker=breaker,
        equity=97_500.0,
        halt_reason=halt_reason,
        strategies={"s2": 1, "s1": 2},
        session=SessionState(session="2024-05-01"),
        external_orders=external or [],
        ts=T0,
    )


def test_the_daemon_state_carries_the_breaker_and_the_session() -> None:
    breaker = CircuitBreaker(RiskConfig())
    breaker.update(100_000.0, T0)
    breaker.update(98_000.0 - 1 / 3, T0 + 1)  # past the 2 % warning
    got = state(breaker)
    assert got.version == "1.2.3"
    assert got.mode == "paper"
    assert got.broker == "alpaca"
    assert got.broker_connected
    assert got.circuit == "half_open"
    assert got.circuit_reason == breaker.reason
    assert got.equity == 97_500.0
    assert got.daily_drawdown == round(breaker.daily_drawdown or 0.0, 6)
    assert got.daily_drawdown != breaker.daily_drawdown  # rounded to 6 places
    assert got.total_drawdown == got.daily_drawdown
    assert got.start_of_day_equity == 100_000.0
    assert got.peak_equity == 100_000.0
    assert got.strategies == ["s1", "s2"]
    assert got.session == "2024-05-01"
    assert got.ts == T0
    assert not got.trading_halted
    assert got.halt_reason is None


def test_before_any_equity_the_drawdowns_are_unknown() -> None:
    got = state(CircuitBreaker(RiskConfig()))
    assert got.daily_drawdown is None
    assert got.total_drawdown is None
    assert got.circuit == "closed"


def test_a_halt_shows_with_its_reason() -> None:
    got = state(CircuitBreaker(RiskConfig()), halt_reason="kill_switch crashed")
    assert got.trading_halted
    assert got.halt_reason == "kill_switch crashed"


def test_only_the_latest_external_orders_are_shown() -> None:
    orders = [f"ext-{i}" for i in range(EXTERNAL_ORDERS_SHOWN + 7)]
    got = state(CircuitBreaker(RiskConfig()), external=orders)
    assert got.external_orders == orders[-EXTERNAL_ORDERS_SHOWN:]
    assert state(CircuitBreaker(RiskConfig()), external=["a"]).external_orders == ["a"]


def _approval(intent_id: str, requested_at: float) -> PendingApproval:
    return PendingApproval(
        strategy_id="s1",
        intent_id=intent_id,
        symbol="AAPL",
        side="buy",
        qty=10.0,
        notional=None,
        order_type="market",
        limit_price=None,
        requested_at=requested_at,
        expires_at=requested_at + 300,
    )


def test_the_approval_list_is_oldest_first() -> None:
    late, early = _approval("i-2", T0 + 5), _approval("i-1", T0)
    got = approval_list([late, early], T0 + 9)
    assert got.pending == [early, late]
    assert got.ts == T0 + 9
    assert approval_list([], 0.0).pending == []
