"""The drawdown circuit breaker: transitions, stickiness, sessions, reset, persistence."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerState,
    SessionState,
    Transition,
    apply_account_poll,
)
from daemon.config import RiskConfig
from protocol.messages import AuditRecord, CircuitState

T0 = 1_700_000_000.0
# Seed defaults: warn 2 %, open at 3 % daily or 10 % from the peak.
RISK = RiskConfig()


def _breaker(equity: float = 100_000.0, risk: RiskConfig = RISK) -> CircuitBreaker:
    breaker = CircuitBreaker(risk)
    assert breaker.update(equity, T0) == []
    return breaker


def _moves(transitions: list[Transition]) -> list[tuple[CircuitState, CircuitState]]:
    return [(t.before, t.after) for t in transitions]


def test_first_equity_sets_the_baselines() -> None:
    breaker = CircuitBreaker(RISK)
    assert breaker.daily_drawdown is None
    assert breaker.update(100_000.0, T0) == []
    assert breaker.state == "closed"
    assert breaker.start_of_day_equity == 100_000.0
    assert breaker.peak_equity == 100_000.0
    assert breaker.daily_drawdown == 0.0


@pytest.mark.parametrize(
    ("equity", "expected"),
    [
        (98_000.01, "closed"),  # just under the 2 % warning
        (98_000.0, "half_open"),  # at the warning
        (97_000.01, "half_open"),  # just under the 3 % limit
        (97_000.0, "open"),  # at the limit
        (96_999.99, "open"),
        (0.0, "open"),
        (-5.0, "open"),
    ],
)
def test_daily_drawdown_thresholds(equity: float, expected: CircuitState) -> None:
    breaker = _breaker()
    transitions = breaker.update(equity, T0 + 1)
    assert breaker.state == expected
    assert _moves(transitions) == ([] if expected == "closed" else [("closed", expected)])


def test_transitions_say_why_with_numbers() -> None:
    breaker = _breaker()
    (warn,) = breaker.update(98_000.0, T0 + 1)
    assert warn == Transition(
        before="closed",
        after="half_open",
        reason="daily drawdown 2.00% >= warning 2.00% (equity 98000.00, start of day 100000.00)",
        ts=T0 + 1,
    )
    (trip,) = breaker.update(96_500.0, T0 + 2)
    assert (trip.before, trip.after) == ("half_open", "open")
    assert trip.reason.startswith("daily drawdown 3.50% >= limit 3.00%")


def test_total_drawdown_from_the_peak_opens() -> None:
    breaker = _breaker()
    assert breaker.update(110_000.0, T0 + 1) == []
    assert breaker.peak_equity == 110_000.0
    breaker.new_session(110_000.0, T0 + 2)
    breaker.update(100_000.0, T0 + 3)  # 9.09 % from the peak, but 9.09 % daily too: open
    breaker.reset(T0 + 4)
    assert breaker.state == "closed"
    # The daily baseline moved to 100000 but the peak stayed (total drawdown 9.09 % < 10 %).
    assert breaker.start_of_day_equity == 100_000.0
    assert breaker.peak_equity == 110_000.0
    (trip,) = breaker.update(99_000.0, T0 + 5)  # 1 % today, 10 % from the peak
    assert (trip.before, trip.after) == ("closed", "open")
    assert trip.reason.startswith("total drawdown 10.00% >= limit 10.00%")


def test_half_open_is_sticky_for_the_session_and_reduce_only() -> None:
    breaker = _breaker()
    breaker.update(97_500.0, T0 + 1)
    assert breaker.state == "half_open"
    assert breaker.reduce_only
    assert breaker.update(100_000.0, T0 + 2) == []
    assert breaker.state == "half_open"


def test_reduce_only_follows_the_setting() -> None:
    breaker = _breaker(risk=RiskConfig(reduce_only_on_warn=False))
    breaker.update(97_500.0, T0 + 1)
    assert breaker.state == "half_open"
    assert not breaker.reduce_only


def test_open_is_sticky_until_reset() -> None:
    breaker = _breaker()
    breaker.update(96_000.0, T0 + 1)
    assert breaker.state == "open"
    assert not breaker.reduce_only
    assert breaker.update(120_000.0, T0 + 2) == []
    assert breaker.new_session(120_000.0, T0 + 3) == []
    assert breaker.state == "open"
    (reset,) = breaker.reset(T0 + 4, operator="alice")
    assert (reset.before, reset.after, reset.reason) == ("open", "closed", "reset by alice")
    # Through snapshot(): mypy keeps `state` narrowed to "open" from the assert above.
    assert breaker.snapshot().state == "closed"


def test_new_session_clears_the_daily_warning_only() -> None:
    breaker = _breaker()
    breaker.update(97_500.0, T0 + 1)
    (cleared,) = breaker.new_session(97_500.0, T0 + 2)
    assert (cleared.before, cleared.after) == ("half_open", "closed")
    assert breaker.start_of_day_equity == 97_500.0
    assert breaker.peak_equity == 100_000.0
    assert breaker.daily_drawdown == 0.0


def test_new_session_below_the_total_limit_opens_at_once() -> None:
    breaker = _breaker()
    breaker.update(97_500.0, T0 + 1)
    transitions = breaker.new_session(89_000.0, T0 + 2)
    assert _moves(transitions) == [("half_open", "closed"), ("closed", "open")]
    assert transitions[-1].reason.startswith("total drawdown 11.00%")


def test_reset_rebases_only_what_tripped() -> None:
    breaker = _breaker()
    breaker.update(96_000.0, T0 + 1)  # daily 4 %: open; total 4 % is within 10 %
    (reset,) = breaker.reset(T0 + 2)
    assert reset.reason == "reset by operator; start-of-day equity rebased to 96000.00"
    assert breaker.start_of_day_equity == 96_000.0
    assert breaker.peak_equity == 100_000.0  # the total drawdown is not forgotten
    assert breaker.update(96_000.0, T0 + 3) == []
    assert breaker.total_drawdown == pytest.approx(0.04)

    deep = _breaker()
    deep.update(85_000.0, T0 + 1)
    (reset,) = deep.reset(T0 + 2)
    assert reset.reason == (
        "reset by operator; start-of-day equity rebased to 85000.00; "
        "peak equity rebased to 85000.00"
    )
    assert deep.update(85_000.0, T0 + 3) == []


def test_reset_of_a_closed_circuit_does_nothing() -> None:
    breaker = _breaker()
    assert breaker.reset(T0 + 1) == []


def test_reset_from_half_open_closes() -> None:
    breaker = _breaker()
    breaker.update(97_500.0, T0 + 1)
    assert _moves(breaker.reset(T0 + 2)) == [("half_open", "closed")]
    assert breaker.update(97_500.0, T0 + 3) == []


def test_zero_thresholds_mean_no_loss_tolerated() -> None:
    risk = RiskConfig(warn_daily_drawdown=0.0, max_daily_drawdown=0.0)
    breaker = _breaker(risk=risk)
    assert breaker.update(100_000.0, T0 + 1) == []
    assert breaker.update(100_001.0, T0 + 2) == []
    assert _moves(breaker.update(99_999.0, T0 + 3)) == [("closed", "open")]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_equity_is_refused(bad: float) -> None:
    breaker = _breaker()
    with pytest.raises(ValueError, match="finite"):
        breaker.update(bad, T0 + 1)
    with pytest.raises(ValueError, match="finite"):
        breaker.new_session(bad, T0 + 1)
    assert breaker.snapshot() == _breaker().snapshot()


def test_persistence_round_trip() -> None:
    breaker = _breaker()
    breaker.update(103_000.0, T0 + 1)
    breaker.new_session(103_000.0, T0 + 1)
    breaker.update(99_000.0, T0 + 2)  # 3.88 % from the start of day: open
    saved = msgspec.json.encode(breaker.snapshot())
    restored = CircuitBreaker(RISK, msgspec.json.decode(saved, type=CircuitBreakerState))
    assert restored.snapshot() == breaker.snapshot()
    assert restored.state == "open"
    assert restored.since == T0 + 2
    assert restored.reason is not None
    assert restored.reason.startswith("daily drawdown 3.88%")
    assert restored.peak_equity == 103_000.0
    assert restored.update(110_000.0, T0 + 3) == []  # still sticky after a restart


def test_default_state_decodes_from_an_empty_object() -> None:
    state = msgspec.json.decode(b"{}", type=CircuitBreakerState)
    assert CircuitBreaker(RISK, state).state == "closed"


def test_a_transition_is_audited_as_circuit_state() -> None:
    breaker = _breaker()
    (opened,) = breaker.update(96_000.0, T0 + 1)
    assert opened.audit_record() == AuditRecord(
        type="circuit.open",
        ok=True,
        detail=f"closed -> open: {opened.reason}",
        ts=T0 + 1,
        scope="global",
        source="circuit_breaker",
    )


# --------------------------------------------------------------------------- account polls

SESSION = SessionState(session="2024-05-01", realized_base={"s1": 10.0})


def _never() -> dict[str, float]:
    raise AssertionError("realized P&L is read only when a session starts")


def test_a_poll_in_the_same_session_updates_a_copy() -> None:
    breaker = _breaker()
    before = breaker.snapshot()
    candidate, session, transitions = apply_account_poll(
        RISK,
        breaker,
        SESSION,
        equity=97_500.0,
        market_open=True,
        broker_session="2024-05-01",
        realized_pnl=_never,
        now=T0 + 1,
    )
    assert breaker.snapshot() == before  # the breaker given is not changed
    assert session is SESSION
    assert _moves(transitions) == [("closed", "half_open")]
    assert candidate.state == "half_open"
    assert candidate.snapshot().equity == 97_500.0


@pytest.mark.parametrize(
    ("market_open", "broker_session"),
    [(False, "2024-05-02"), (None, "2024-05-02"), (True, None), (True, "")],
)
def test_no_session_starts_while_the_market_is_closed_or_unnamed(
    market_open: bool | None, broker_session: str | None
) -> None:
    _, session, transitions = apply_account_poll(
        RISK,
        _breaker(),
        SESSION,
        equity=100_000.0,
        market_open=market_open,
        broker_session=broker_session,
        realized_pnl=_never,
        now=T0 + 1,
    )
    assert session is SESSION
    assert transitions == []


def test_a_new_session_moves_the_baseline_and_the_pnl_base() -> None:
    breaker = _breaker()
    breaker.update(97_500.0, T0 + 1)  # half_open in the old session
    candidate, session, transitions = apply_account_poll(
        RISK,
        breaker,
        SESSION,
        equity=97_500.0,
        market_open=True,
        broker_session="2024-05-02",
        realized_pnl=lambda: {"s1": 42.0, "s2": -3.0},
        now=T0 + 2,
    )
    assert session == SessionState(session="2024-05-02", realized_base={"s1": 42.0, "s2": -3.0})
    assert SESSION.session == "2024-05-01"  # the old session is not changed
    assert _moves(transitions) == [("half_open", "closed")]
    assert candidate.start_of_day_equity == 97_500.0
    assert candidate.peak_equity == 100_000.0
    assert breaker.state == "half_open"


def test_a_new_session_below_the_total_limit_opens_in_the_same_poll() -> None:
    candidate, _, transitions = apply_account_poll(
        RISK,
        _breaker(),
        SESSION,
        equity=89_000.0,
        market_open=True,
        broker_session="2024-05-02",
        realized_pnl=dict,
        now=T0 + 2,
    )
    assert _moves(transitions) == [("closed", "open")]
    assert candidate.state == "open"


# --------------------------------------------------------------------------- model check

Op = tuple[str, float]
ops = st.lists(
    st.tuples(
        st.sampled_from(["update", "update", "update", "new_session", "reset", "restart"]),
        st.sampled_from([80_000.0, 89_000.0, 90_000.0, 96_000.0, 97_000.0, 98_000.0, 100_000.0]),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_breaker_against_a_model(steps: list[Op]) -> None:
    """Open only leaves by reset; the state always matches the drawdowns it has seen."""
    breaker = _breaker()
    for step, (op, equity) in enumerate(steps):
        now = T0 + step + 1
        before = breaker.state
        if op == "update":
            transitions = breaker.update(equity, now)
        elif op == "new_session":
            transitions = breaker.new_session(equity, now)
        elif op == "reset":
            transitions = breaker.reset(now)
        else:
            snapshot = msgspec.json.encode(breaker.snapshot())
            breaker = CircuitBreaker(RISK, msgspec.json.decode(snapshot, type=CircuitBreakerState))
            transitions = []
        # Transitions chain from the old state to the new one, with their time.
        state = before
        for t in transitions:
            assert t.before == state
            assert t.after != t.before
            assert t.ts == now
            assert t.reason
            state = t.after
        assert state == breaker.state
        if before == "open" and op != "reset":
            assert breaker.state == "open"
        if op == "reset":
            assert breaker.state == "closed"
        daily = breaker.daily_drawdown
        total = breaker.total_drawdown
        assert daily is not None
        assert total is not None
        if breaker.state != "open":
            assert daily < RISK.max_daily_drawdown
            assert total < RISK.max_total_drawdown
        if breaker.state == "closed" and op == "update":
            assert daily < RISK.warn_daily_drawdown
        peak = breaker.peak_equity
        assert peak is not None
        if op in ("update", "new_session"):
            assert peak >= equity
