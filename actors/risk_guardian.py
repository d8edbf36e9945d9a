"""The risk guardian: pre-trade checks and the daemon's portfolio view.

Order managers call :meth:`RiskGuardian.evaluate` synchronously right before
journaling a decision. It runs on the event loop without awaiting, so a check
and the reservation it makes are atomic with respect to every other strategy.
The guardian's own task publishes the retained daemon state.
"""

from __future__ import annotations

import time

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from actors.kill_switch import KillGate
from daemon.actor import Actor, TradingHalt
from daemon.channels import Publish
from daemon.config import Config
from protocol.codec import encode
from protocol.messages import CircuitState, DaemonState, OrderIntent, Reason
from protocol.reasons import ReasonCode
from protocol.topics import Topics

log = structlog.get_logger(__name__)


class RiskGuardian(Actor):
    """Decides whether an order intent may trade.

    Inputs: ``evaluate()`` calls from order managers; the kill gate and halt latch.
    Outputs: lists of :class:`Reason` (empty means pass); retained daemon state.
    Edge cases: a halted daemon rejects everything with ``TRADING_HALTED``; an
    intent whose ``ts`` is older (or further ahead) than ``max_intent_age_s``
    is ``STALE_INTENT``. Fail-closed: if it crashes, trading halts.
    """

    fail_closed = True

    def __init__(
        self,
        *,
        config: Config,
        gate: KillGate,
        topics: Topics,
        outbound: MemoryObjectSendStream[Publish],
        version: str,
        halt: TradingHalt,
    ) -> None:
        """Wire the guardian."""
        super().__init__("risk_guardian", halt=halt)
        self._config = config
        self._gate = gate
        self._topics = topics
        self._outbound = outbound
        self._version = version
        self._halt_latch = halt
        self.circuit: CircuitState = "closed"
        self.broker_connected = False
        self.equity: float | None = None
        self.daily_drawdown: float | None = None
        self.total_drawdown: float | None = None
        self._state_changed = anyio.Event()
        halt.subscribe(lambda _reason: self.state_changed())

    def state_changed(self) -> None:
        """Ask the guardian to re-publish the daemon state."""
        self._state_changed.set()

    def evaluate(self, strategy_id: str, intent: OrderIntent, now: float) -> list[Reason]:
        """Every limit ``intent`` breaks; empty when it may trade."""
        reasons: list[Reason] = []
        if self._halt_latch.reason is not None:
            reasons.append(
                Reason(
                    code=ReasonCode.TRADING_HALTED,
                    message=f"trading halted: {self._halt_latch.reason}",
                )
            )
        blocked = self._gate.blocked(strategy_id)
        if blocked is ReasonCode.KILL_SWITCH_GLOBAL:
            reasons.append(Reason(code=blocked, message="global kill switch is engaged"))
        elif blocked is ReasonCode.KILL_SWITCH_STRATEGY:
            reasons.append(
                Reason(code=blocked, message=f"kill switch of strategy {strategy_id} is engaged")
            )
        strategy = self._config.strategies[strategy_id]
        max_age = strategy.max_intent_age_s or self._config.risk.max_intent_age_s
        if intent.ts is not None and abs(now - intent.ts) > max_age:
            direction = "old" if intent.ts < now else "in the future"
            reasons.append(
                Reason(
                    code=ReasonCode.STALE_INTENT,
                    message=f"intent ts is {abs(now - intent.ts):.1f} s {direction} "
                    f"(limit {max_age:g} s)",
                )
            )
        return reasons

    def daemon_state(self) -> DaemonState:
        """The retained daemon state message."""
        return DaemonState(
            version=self._version,
            mode=self._config.broker.mode,
            broker=self._config.broker.kind,
            broker_connected=self.broker_connected,
            circuit=self.circuit,
            equity=self.equity,
            daily_drawdown=self.daily_drawdown,
            total_drawdown=self.total_drawdown,
            ts=time.time(),
            trading_halted=self._halt_latch.halted,
            halt_reason=self._halt_latch.reason,
            strategies=sorted(self._config.strategies),
        )

    async def _run(self) -> None:
        while True:
            await self._outbound.send(
                Publish(
                    topic=self._topics.daemon_state,
                    payload=encode(self.daemon_state()),
                    retain=True,
                )
            )
            with anyio.move_on_after(30):
                await self._state_changed.wait()
            self._state_changed = anyio.Event()
