"""Whether a strategy may trade now: the kill switches and pauses, as a read-only view.

Pure: the kill-switch authority writes it, the other actors read it right before
acting (the order manager before journaling a decision, the gateway before a POST).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from protocol.messages import SwitchState
from protocol.reasons import ReasonCode

GLOBAL: Final = "global"
PAUSE_PREFIX: Final = "pause:"
"""Pauses are kept beside the switches (a strategy id never contains a colon)."""


class KillGate:
    """The read-only view of the switches that other actors consult.

    Only the authority writes it; readers call :meth:`blocked` right before
    acting (the order manager before journaling, the gateway before every POST).
    """

    def __init__(self, switches: Mapping[str, SwitchState] | None = None) -> None:
        """Start from persisted switches (key ``global`` or a strategy id)."""
        self._switches: dict[str, SwitchState] = dict(switches or {})

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
        """One switch's state."""
        return self._switches.get(key, _OFF)

    def paused(self, strategy_id: str) -> bool:
        """Whether the strategy is paused (it may only reduce its positions)."""
        return self._switches.get(PAUSE_PREFIX + strategy_id, _OFF).engaged

    def _set(self, key: str, state: SwitchState) -> None:
        self._switches[key] = state


_OFF: Final = SwitchState()
