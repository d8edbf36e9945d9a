"""The price-free gates of an intent: halt, kill switches, staleness, in that order."""

from __future__ import annotations

from actors.core.intent_gates import gate_reasons
from protocol.messages import OrderIntent, Reason
from protocol.reasons import ReasonCode as C

NOW = 1_700_000_000.0
INTENT = OrderIntent(intent_id="i-1", symbol="AAPL", side="buy", qty=1.0)


def gates(
    intent: OrderIntent = INTENT,
    *,
    received_at: float | None = None,
    halt_reason: str | None = None,
    blocked: C | None = None,
) -> list[Reason]:
    return gate_reasons(
        "s1",
        intent,
        now=NOW,
        received_at=received_at,
        halt_reason=halt_reason,
        blocked=blocked,
        max_intent_age_s=5.0,
    )


def test_nothing_blocks_a_fresh_intent() -> None:
    assert gates() == []
    assert gates(OrderIntent(intent_id="i-2", symbol="AAPL", side="buy", qty=1.0, ts=NOW)) == []


def test_a_halt_says_why() -> None:
    assert gates(halt_reason="risk_guardian crashed") == [
        Reason(code=C.TRADING_HALTED, message="trading halted: risk_guardian crashed")
    ]


def test_kill_switches_name_their_scope() -> None:
    assert gates(blocked=C.KILL_SWITCH_GLOBAL) == [
        Reason(code=C.KILL_SWITCH_GLOBAL, message="global kill switch is engaged")
    ]
    assert gates(blocked=C.KILL_SWITCH_STRATEGY) == [
        Reason(code=C.KILL_SWITCH_STRATEGY, message="kill switch of strategy s1 is engaged")
    ]


def test_an_intent_older_or_further_ahead_than_the_limit_is_stale() -> None:
    old = OrderIntent(intent_id="i-3", symbol="AAPL", side="buy", qty=1.0, ts=NOW - 5.5)
    ahead = OrderIntent(intent_id="i-4", symbol="AAPL", side="buy", qty=1.0, ts=NOW + 6.0)
    at_limit = OrderIntent(intent_id="i-5", symbol="AAPL", side="buy", qty=1.0, ts=NOW - 5.0)
    assert gates(old) == [Reason(code=C.STALE_INTENT, message="intent ts is 5.5 s old (limit 5 s)")]
    assert gates(ahead) == [
        Reason(code=C.STALE_INTENT, message="intent ts is 6.0 s in the future (limit 5 s)")
    ]
    assert gates(at_limit) == []


def test_waiting_in_the_daemon_counts_even_without_a_ts_and_wins_over_it() -> None:
    waited = gates(received_at=NOW - 7.0)
    assert waited == [
        Reason(
            code=C.STALE_INTENT,
            message="intent waited 7.0 s in the daemon before it could be decided (limit 5 s)",
        )
    ]
    old = OrderIntent(intent_id="i-6", symbol="AAPL", side="buy", qty=1.0, ts=NOW - 60.0)
    assert gates(old, received_at=NOW - 7.0) == waited  # one staleness reason, not two
    assert gates(received_at=NOW - 5.0) == []


def test_every_gate_at_once_keeps_the_order() -> None:
    old = OrderIntent(intent_id="i-7", symbol="AAPL", side="buy", qty=1.0, ts=NOW - 60.0)
    codes = [r.code for r in gates(old, halt_reason="x", blocked=C.KILL_SWITCH_GLOBAL)]
    assert codes == [C.TRADING_HALTED, C.KILL_SWITCH_GLOBAL, C.STALE_INTENT]
