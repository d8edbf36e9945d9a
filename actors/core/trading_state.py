"""Whether a strategy may trade now: kill switches, pauses, the halt and reduce-only. Pure.

The kill-switch authority owns the :class:`KillGate` and is its only writer; the other
actors are handed it as a :class:`GateView` and read it right before acting (the order
manager before journaling a decision, the gateway right before every POST).
:func:`trading_state` folds the four mechanisms into one state per scope.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Protocol

from protocol.messages import SwitchState
from protocol.reasons import ReasonCode

GLOBAL: Final = "global"
PAUSE_PREFIX: Final = "pause:"
"""How the journal keys a pause beside the switches (a strategy id has no colon)."""
_OFF: Final = SwitchState()


class GateView(Protocol):
    """The read-only side of the gate, as the other actors see it."""

    def blocked(self, strategy_id: str) -> ReasonCode | None:
        """Why ``strategy_id`` may not trade right now, or None."""
        ...

    def paused(self, strategy_id: str) -> bool:
        """Whether the strategy may only reduce its positions."""
        ...


class KillGate:
    """The kill switches (``global`` and per strategy) and the strategies' pauses."""

    def __init__(
        self,
        switches: Mapping[str, SwitchState] | None = None,
        pauses: Mapping[str, SwitchState] | None = None,
    ) -> None:
        """Start from the persisted switches and pauses."""
        self._switches: dict[str, SwitchState] = dict(switches or {})
        self._pauses: dict[str, SwitchState] = dict(pauses or {})

    def blocked(self, strategy_id: str) -> ReasonCode | None:
        """Why ``strategy_id`` may not trade right now, or None."""
        if self._switches.get(GLOBAL, _OFF).engaged:
            return ReasonCode.KILL_SWITCH_GLOBAL
        if self._switches.get(strategy_id, _OFF).engaged:
            return ReasonCode.KILL_SWITCH_STRATEGY
        return None

    def engaged(self, strategy_id: str | None) -> bool:
        """Whether that exact switch (None: global) is engaged."""
        return self._switches.get(strategy_id or GLOBAL, _OFF).engaged

    def switch(self, key: str) -> SwitchState:
        """One switch's state (``global`` or a strategy id)."""
        return self._switches.get(key, _OFF)

    def paused(self, strategy_id: str) -> bool:
        """Whether the strategy is paused (it may only reduce its positions)."""
        return self._pauses.get(strategy_id, _OFF).engaged

    def set_switch(self, key: str, state: SwitchState) -> None:
        """Set a switch (the authority only, after or right before journaling it)."""
        self._switches[key] = state

    def set_pause(self, strategy_id: str, state: SwitchState) -> None:
        """Set a strategy's pause (the authority only, after journaling it)."""
        self._pauses[strategy_id] = state


class TradingState(enum.Enum):
    """What a strategy may do now, most restrictive first."""

    HALTED = "halted"
    """Nothing trades: a kill switch is engaged, or the daemon halted (fail-closed)."""
    PAUSED = "paused"
    """Paused by an operator: only orders that reduce a position."""
    REDUCE_ONLY = "reduce_only"
    """The circuit breaker warns: only orders that reduce a position."""
    ACTIVE = "active"


def trading_state(
    gate: GateView, strategy_id: str, *, halted: bool, reduce_only: bool
) -> TradingState:
    """The one state ``strategy_id`` trades under, from the four mechanisms that set it."""
    if halted or gate.blocked(strategy_id) is not None:
        return TradingState.HALTED
    if gate.paused(strategy_id):
        return TradingState.PAUSED
    if reduce_only:
        return TradingState.REDUCE_ONLY
    return TradingState.ACTIVE
