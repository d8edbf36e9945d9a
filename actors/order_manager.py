"""The order manager of one strategy: decisions, idempotency, orders, positions.

Every intent gets exactly one decision, journaled before it is published; a
re-sent intent (same ``intent_id``) is answered from the journal with
``duplicate: true`` and never reaches the broker twice.
"""

from __future__ import annotations

import time
from typing import assert_never

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.kill_switch import KillGate
from actors.risk_guardian import RiskGuardian
from daemon.actor import Actor, TradingHalt
from daemon.channels import InboundIntent, KillChanged, Publish
from daemon.journal import Journal, JournalWriter, Write
from protocol.codec import encode
from protocol.messages import (
    Accepted,
    CancelAllIntent,
    CancelIntent,
    OrderIntent,
    Reason,
    Rejected,
    StrategyState,
)
from protocol.reasons import ReasonCode
from protocol.topics import Topics

log = structlog.get_logger(__name__)

_decision_decoder = msgspec.json.Decoder(Accepted | Rejected)


def client_order_id(strategy_id: str, intent_id: str) -> str:
    """The broker-side id of an intent's order: ``SID-intent_id`` (at most 97 chars)."""
    return f"{strategy_id}-{intent_id}"


class OrderManager(Actor):
    """One strategy's orders.

    Inputs: intents of this strategy (from the MQTT session), kill changes.
    Outputs: decision, order and fill events on ``P/v1/strategy/SID/event``;
    retained ``P/v1/strategy/SID/state``; journal rows.
    Edge cases: duplicates are answered from the journal; ``cancel`` of an
    intent with no order is ``UNKNOWN_ORDER``; ``cancel_all`` has no decision
    event (it has no id) and answers with order events; while no broker is
    connected every order intent is rejected ``BROKER_UNAVAILABLE``.
    """

    def __init__(
        self,
        *,
        strategy_id: str,
        intents: MemoryObjectReceiveStream[InboundIntent],
        kill_changes: MemoryObjectReceiveStream[KillChanged],
        outbound: MemoryObjectSendStream[Publish],
        journal: JournalWriter,
        decisions: dict[str, bytes],
        guardian: RiskGuardian,
        gate: KillGate,
        topics: Topics,
        halt: TradingHalt,
    ) -> None:
        """Wire the manager; ``decisions`` are this strategy's journaled decisions."""
        super().__init__(f"order_manager.{strategy_id}", halt=halt)
        self.strategy_id = strategy_id
        self._intents = intents
        self._kill_changes = kill_changes
        self._outbound = outbound
        self._journal = journal
        self._decisions = decisions
        self._guardian = guardian
        self._gate = gate
        self._topics = topics
        self._event_topic = topics.event(strategy_id)
        self.positions: dict[str, float] = {}
        self.open_orders = 0

    async def _run(self) -> None:
        await self._publish_state()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._consume_kill_changes)
            async for inbound in self._intents:
                await self._handle(inbound)
            tg.cancel_scope.cancel()

    async def _consume_kill_changes(self) -> None:
        async for change in self._kill_changes:
            if change.strategy_id in (None, self.strategy_id):
                await self._publish_state()

    async def _handle(self, inbound: InboundIntent) -> None:
        intent = inbound.intent
        match intent:
            case OrderIntent():
                await self._decide(intent, inbound.received_at)
            case CancelIntent():
                await self._reject_now(
                    intent.intent_id,
                    ReasonCode.UNKNOWN_ORDER,
                    f"no order for intent {intent.intent_id!r}",
                )
            case CancelAllIntent():
                log.info("order.cancel_all", strategy_id=self.strategy_id, open_orders=0)
            case _:
                assert_never(intent)

    async def _decide(self, intent: OrderIntent, received_at: float) -> None:
        known = self._decisions.get(intent.intent_id)
        if known is not None:
            decision = _decision_decoder.decode(known)
            await self._publish(msgspec.structs.replace(decision, duplicate=True, ts=time.time()))
            return
        reasons = self._guardian.evaluate(self.strategy_id, intent, received_at)
        if not reasons:
            reasons = [
                Reason(
                    code=ReasonCode.BROKER_UNAVAILABLE,
                    message="no broker is connected: the trading path is not configured",
                )
            ]
        decision = Rejected(intent_id=intent.intent_id, reasons=reasons, ts=time.time())
        payload = encode(decision)
        await self._journal.write(
            Write(
                "INSERT INTO decisions (strategy_id, intent_id, accepted, event, ts) "
                "VALUES (?,?,?,?,?)",
                (self.strategy_id, intent.intent_id, 0, payload, decision.ts),
            )
        )
        self._decisions[intent.intent_id] = payload
        log.info(
            "intent.rejected",
            strategy_id=self.strategy_id,
            intent_id=intent.intent_id,
            codes=[r.code.value for r in reasons],
        )
        await self._outbound.send(Publish(topic=self._event_topic, payload=payload))

    async def _reject_now(self, intent_id: str | None, code: ReasonCode, message: str) -> None:
        """Answer without journaling: for answers that are not decisions (cancel lookups)."""
        await self._publish(
            Rejected(
                intent_id=intent_id, reasons=[Reason(code=code, message=message)], ts=time.time()
            )
        )

    async def _publish(self, event: Accepted | Rejected) -> None:
        await self._outbound.send(Publish(topic=self._event_topic, payload=encode(event)))

    def strategy_state(self) -> StrategyState:
        """The retained strategy state."""
        return StrategyState(
            strategy_id=self.strategy_id,
            kill_engaged=self._gate.blocked(self.strategy_id) is not None,
            open_orders=self.open_orders,
            positions=dict(self.positions),
            ts=time.time(),
        )

    async def _publish_state(self) -> None:
        await self._outbound.send(
            Publish(
                topic=self._topics.strategy_state(self.strategy_id),
                payload=encode(self.strategy_state()),
                retain=True,
            )
        )


def load_decisions(journal: Journal) -> dict[str, dict[str, bytes]]:
    """Every journaled decision, by strategy and intent id (start-up)."""
    result: dict[str, dict[str, bytes]] = {}
    for sid, intent_id, event in journal.query(
        "SELECT strategy_id, intent_id, event FROM decisions"
    ):
        result.setdefault(sid, {})[intent_id] = bytes(event)
    return result
