"""One trading state per strategy, folded from the kill switches, pauses, halt and breaker."""

from __future__ import annotations

import pytest

from actors.core.trading_state import KillGate, TradingState, trading_state
from protocol.messages import SwitchState
from protocol.reasons import ReasonCode

ON = SwitchState(engaged=True, since=1.0, reason="test", source="test")


@pytest.mark.parametrize(
    ("switches", "pauses", "halted", "reduce_only", "state"),
    [
        ({}, {}, False, False, TradingState.ACTIVE),
        ({}, {}, False, True, TradingState.REDUCE_ONLY),
        ({}, {"s1": ON}, False, True, TradingState.PAUSED),
        ({"s1": ON}, {"s1": ON}, False, True, TradingState.HALTED),
        ({"global": ON}, {}, False, False, TradingState.HALTED),
        ({}, {}, True, False, TradingState.HALTED),
        ({"s2": ON}, {"s2": ON}, False, False, TradingState.ACTIVE),
    ],
)
def test_the_most_restrictive_mechanism_wins(
    switches: dict[str, SwitchState],
    pauses: dict[str, SwitchState],
    halted: bool,
    reduce_only: bool,
    state: TradingState,
) -> None:
    gate = KillGate(switches, pauses)
    assert trading_state(gate, "s1", halted=halted, reduce_only=reduce_only) is state


def test_pauses_live_apart_from_the_switches() -> None:
    gate = KillGate()
    gate.set_pause("s1", ON)
    assert gate.paused("s1")
    assert gate.blocked("s1") is None  # a pause only reduces; it does not kill
    assert not gate.engaged("s1")
    gate.set_switch("s1", ON)
    assert gate.blocked("s1") is ReasonCode.KILL_SWITCH_STRATEGY
    gate.set_switch("global", ON)
    assert gate.blocked("s1") is ReasonCode.KILL_SWITCH_GLOBAL
    gate.set_pause("s1", SwitchState())
    assert not gate.paused("s1")
