"""The order manager of one strategy: decisions, idempotency, the order state machine, positions.

Every intent gets exactly one decision, journaled before it is published and
before any POST; a re-sent intent (same ``intent_id``) is answered from the
journal with ``duplicate: true`` and never reaches the broker twice:
``client_order_id = SID-intent_id`` makes even a retried POST harmless.

Order state machine (docs/protocol.md), an explicit transition table
(:data:`TRANSITIONS`); an update that would take an illegal transition is
logged and audited, never applied. Fills are derived from the broker's
cumulative ``filled_qty``, so the stream and REST look-ups can report the same
state twice without a fill being counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Final, assert_never

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.base import Actor, TradingHalt
from actors.channels import (
    ApprovalDecision,
    CancelOrder,
    FlattenNow,
    InboundIntent,
    JournalSink,
    KillChanged,
    ModeChange,
    OrderMetrics,
    OrderUpdate,
    Publish,
    RiskDesk,
    SubmitOrder,
    receive_batch,
)
from actors.core.book import (
    FINAL,
    OrderRecord,
    Position,
    order_event,
)
from actors.core.order_book import OrderBook, approval_refusal, broker_busy
from actors.core.risk_limits import StrategyView
from actors.core.rows import Row
from actors.core.trading_state import KillGate, trading_state
from actors.mode_switch import AccountDesk, ModeSwitcher, Promotion, flatten_desk
from actors.parked_intents import ParkedIntents
from protocol.codec import encode
from protocol.messages import (
    Accepted,
    AuditRecord,
    CancelAllIntent,
    CancelIntent,
    FillEvent,
    OrderEvent,
    OrderIntent,
    Reason,
    Rejected,
    StrategyState,
)
from protocol.reasons import ReasonCode
from protocol.topics import Topics

log = structlog.get_logger(__name__)

_EPS: Final = 1e-9
DECISION_BATCH: Final = 32
"""Intents decided per group commit. Deciding runs without a pause, so a batch this size
keeps the event loop turning every few milliseconds even under a flood (the control
plane shares the loop)."""
ADMISSION_MARGIN: Final = 0.8
"""An order is admitted only if its POST is expected within this share of the deadline."""
_decision_decoder = msgspec.json.Decoder(Accepted | Rejected)


class OrderManager(Actor):
    """One strategy's orders.

    Inputs: intents of this strategy (from the MQTT session), kill changes (from the
    authority), order updates and flatten requests (from the gateway).
    Outputs: decision, order and fill events on ``P/v1/strategy/SID/event``;
    retained ``P/v1/strategy/SID/state``; journal rows; orders and cancels to the
    gateway.

    Edge cases: duplicates are answered from the journal; ``cancel`` and
    ``cancel_all`` are always allowed, even while killed; ``cancel`` of an intent
    with no order is ``UNKNOWN_ORDER``; ``cancel_all`` has no id and so no
    decision event (its orders answer with order events); intents wait until the
    gateway has reconciled with the broker. Fail-closed: it decides orders (and runs
    the guardian's checks in its own task), so if it crashes, trading halts.
    """

    fail_closed = True

    def __init__(
        self,
        *,
        strategy_id: str,
        intents: MemoryObjectReceiveStream[InboundIntent],
        kill_changes: MemoryObjectReceiveStream[KillChanged | ApprovalDecision | ModeChange],
        updates: MemoryObjectReceiveStream[OrderUpdate | FlattenNow],
        outbound: MemoryObjectSendStream[Publish],
        journal: JournalSink,
        desks: Mapping[str, AccountDesk],
        mode: str,
        gate: KillGate,
        topics: Topics,
        broker_ready: anyio.Event,
        audit: Callable[[AuditRecord], None],
        halt: TradingHalt,
        approval_timeout_s: float = 120.0,
        metrics: OrderMetrics | None = None,
        submit_deadline_s: float = 30.0,
        promotion: Promotion | None = None,
    ) -> None:
        """Wire it; ``desks``: each account's book, guardian and queues, by ``mode``."""
        super().__init__(f"order_manager.{strategy_id}", halt=halt)
        self.strategy_id = strategy_id
        self._intents = intents
        self._kill_changes = kill_changes
        self._updates = updates
        self._outbound = outbound
        self._journal = journal
        self.desks = desks
        self.mode = mode
        # Approvals are listed by the [broker] account's guardian, whatever the mode.
        self._approvals = next(d for d in desks.values() if d.account is None).guardian
        self._switcher = ModeSwitcher(
            strategy_id, desks, journal, outbound, topics=topics, promotion=promotion
        )
        self._mode_send, self._mode_receive = anyio.create_memory_object_stream[ModeChange](8)
        self._deciding = anyio.Lock()  # a mode change waits for the batch being decided
        self._gate = gate
        self._topics = topics
        self._event_topic = topics.event(strategy_id)
        self._broker_ready = broker_ready
        self._audit = audit
        self._metrics = metrics
        self._submit_deadline_s = submit_deadline_s
        self._parked = ParkedIntents(
            strategy_id,
            self._approvals,
            timeout_s=approval_timeout_s,
            metrics=metrics,
            changed=self._state_dirty_set,
        )
        self._state_dirty = anyio.Event()
        self._early: list[bytes] = []  # rejections: published ahead of their commit

    @property
    def desk(self) -> AccountDesk:
        """The account new orders go to (the strategy's mode)."""
        return self.desks[self.mode]

    @property
    def book(self) -> OrderBook:
        """The strategy's book on the account of its mode."""
        return self.desk.book

    @property
    def orders(self) -> dict[str, OrderRecord]:
        """Orders in memory on the account of its mode."""
        return self.book.orders

    @property
    def positions(self) -> dict[str, Position]:
        """Positions on the account of its mode."""
        return self.book.positions

    @property
    def _guardian(self) -> RiskDesk:
        return self.desk.guardian

    @property
    def open_orders(self) -> int:
        """Orders not yet in a final state, on every account."""
        return sum(len(desk.book.open) for desk in self.desks.values())

    async def _run(self) -> None:
        await self._publish_state()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._consume_kill_changes)
            tg.start_soon(self._consume_updates)
            tg.start_soon(self._state_publisher)
            tg.start_soon(self._parked.run_timeouts, self._approval_timeout)
            tg.start_soon(self._mode_changes)
            await self._broker_ready.wait()
            while (batch := await receive_batch(self._intents, DECISION_BATCH)) is not None:
                async with self._deciding:
                    await self._handle(batch)
            tg.cancel_scope.cancel()

    async def _mode_changes(self) -> None:
        """Promotions and demotions, one at a time, while no intent is being decided."""
        async for change in self._mode_receive:
            async with self._deciding:
                self.mode = await self._switcher.change(change, self.mode)
            self._state_dirty.set()

    async def _handle(self, batch: list[InboundIntent]) -> None:
        """Decide a batch of intents in arrival order, journaled in one group commit.

        Cancels are handled in order too, after the orders before them are decided.
        """
        writes: list[Row] = []
        answers: list[bytes] = []
        submissions: list[SubmitOrder] = []
        symbols = {
            i.intent.symbol
            for i in batch
            if isinstance(i.intent, OrderIntent) and i.intent.intent_id not in self.book.decisions
        }
        if symbols and self.desk.refresh_quotes is not None:
            await self.desk.refresh_quotes(symbols)
        for inbound in batch:
            intent = inbound.intent
            match intent:
                case OrderIntent():
                    self._decide(intent, inbound.received_at, writes, answers, submissions)
                case CancelIntent() | CancelAllIntent():
                    await self._commit(writes, answers, submissions)
                    await self._cancel(intent)
                case _:
                    assert_never(intent)
        await self._commit(writes, answers, submissions)
        self._observe_latency(batch)

    def _observe_latency(self, batch: list[InboundIntent]) -> None:
        if self._metrics is None:
            return
        done = time.time()
        for inbound in batch:
            if isinstance(inbound.intent, OrderIntent):
                self._metrics.decision_latency(done - inbound.received_at)

    async def _cancel(self, intent: CancelIntent | CancelAllIntent) -> None:
        if isinstance(intent, CancelIntent):
            await self._cancel_intent(intent.intent_id)
            return
        orders = [order for desk in self.desks.values() for order in desk.book.open.values()]
        for order in orders:
            await self._request_cancel(order)
        # One decision, even with nothing open: the strategy knows it was heard.
        await self._send_event(
            Accepted(
                intent_id=intent.intent_id,
                client_order_id=None,
                cancelling=len(orders),
                ts=time.time(),
            )
        )

    async def _commit(
        self, writes: list[Row], answers: list[bytes], submissions: list[SubmitOrder]
    ) -> None:
        """Answer rejections; journal; then answer the rest and hand orders to the gateway.

        A rejection changes no state, so it is published before its commit completes
        (it is still journaled, in order); an acceptance only once it is durable.
        """
        early, self._early = self._early, []
        for payload in early:
            await self._outbound.send(Publish(topic=self._event_topic, payload=payload))
        if writes:
            await self._journal.write(*writes)
        for payload in answers:
            await self._outbound.send(Publish(topic=self._event_topic, payload=payload))
        for submission in submissions:
            await self.desk.submissions.send(submission)
        if submissions:
            self._state_dirty.set()
        writes.clear()
        answers.clear()
        submissions.clear()

    def _decide(
        self,
        intent: OrderIntent,
        received_at: float,
        writes: list[Row],
        answers: list[bytes],
        submissions: list[SubmitOrder],
    ) -> None:
        """Decide one order intent; the caller journals before anything leaves."""
        now = time.time()
        known = self.book.decisions.get(intent.intent_id)
        if known is not None:
            decision = _decision_decoder.decode(known)
            answers.append(encode(msgspec.structs.replace(decision, duplicate=True, ts=now)))
            if self._metrics is not None:
                self._metrics.intent(self.strategy_id, "duplicate")
            return
        if intent.intent_id in self._parked:
            return  # waiting for a person: its one decision comes then
        view = self.strategy_view(received_at)
        reasons = self._guardian.evaluate(
            self.strategy_id, intent, now, view, received_at=received_at
        )
        busy = self._broker_busy(pending=len(submissions))
        if busy is not None:
            reasons = [*reasons, busy]
        if reasons:
            self._reject(intent, reasons, now, writes)
            return
        notional = self._guardian.needs_approval(self.strategy_id, intent, view, now)
        if notional is not None:
            self._parked.park(intent, notional, now)
            return
        self._accept(intent, now, writes, answers, submissions)

    def _broker_busy(self, *, pending: int) -> Reason | None:
        """``BROKER_BUSY`` when the queue ahead would push the POST past the deadline."""
        admission = self.desk.admission
        if admission is None:
            return None
        return broker_busy(admission(pending), self._submit_deadline_s, ADMISSION_MARGIN)

    def _reject(
        self,
        intent: OrderIntent,
        reasons: list[Reason],
        now: float,
        writes: list[Row],
    ) -> None:
        payload, row = self.book.reject(intent, reasons, now)
        writes.append(row)
        self._early.append(payload)
        if self._metrics is not None:
            self._metrics.intent(self.strategy_id, "rejected", [r.code.value for r in reasons])
        log.debug(  # per intent: metrics count these; info would cost the hot path
            "intent.rejected",
            strategy_id=self.strategy_id,
            intent_id=intent.intent_id,
            codes=[r.code.value for r in reasons],
        )

    def _accept(
        self,
        intent: OrderIntent,
        now: float,
        writes: list[Row],
        answers: list[bytes],
        submissions: list[SubmitOrder],
    ) -> None:
        payload, rows, record = self.book.accept(intent, now)
        coid = record.client_order_id
        writes += rows
        answers.append(payload)
        submissions.append(
            SubmitOrder(
                strategy_id=self.strategy_id, client_order_id=coid, intent=intent, accepted_at=now
            )
        )
        if self._metrics is not None:
            self._metrics.intent(self.strategy_id, "accepted")
        log.debug(  # per intent: metrics count these; info would cost the hot path
            "intent.accepted",
            strategy_id=self.strategy_id,
            intent_id=intent.intent_id,
            client_order_id=coid,
        )

    # ------------------------------------------------------------------ approvals

    async def _settle_parked(self, intent_id: str, *, approved: bool | None) -> None:
        """Decide a parked intent: approved, denied, or (None) timed out."""
        intent = self._parked.take(intent_id)
        if intent is None:
            return
        now = time.time()
        writes: list[Row] = []
        answers: list[bytes] = []
        submissions: list[SubmitOrder] = []
        reasons = approval_refusal(approved=approved, timeout_s=self._parked.timeout_s)
        if approved:
            if self.desk.refresh_quotes is not None:
                await self.desk.refresh_quotes({intent.symbol})
            reasons = self._guardian.recheck_after_approval(
                self.strategy_id, intent, now, self.strategy_view(now)
            )
        if reasons:
            self._reject(intent, reasons, now, writes)
        else:
            self._accept(intent, now, writes, answers, submissions)
        await self._commit(writes, answers, submissions)

    async def _approval_timeout(self, intent_id: str) -> None:
        async with self._deciding:
            await self._settle_parked(intent_id, approved=None)

    def _state_dirty_set(self) -> None:
        self._state_dirty.set()

    # ------------------------------------------------------------------ exposure views

    def _mark(self, symbol: str) -> float | None:
        quote = self._guardian.quotes.get(symbol)
        return quote.mid if quote is not None else None

    def strategy_view(self, now: float) -> StrategyView:
        """This strategy as the limits see it."""
        del now
        return self.book.view(
            self._mark,
            session_base=self._guardian.session_pnl_base(self.strategy_id),
            paused=self._gate.paused(self.strategy_id),
        )

    async def _cancel_intent(self, intent_id: str) -> None:
        order = next(
            (o for d in self.desks.values() if (o := d.book.order_of(intent_id)) is not None),
            None,
        )
        if order is None:
            await self._send_event(
                Rejected(
                    intent_id=intent_id,
                    reasons=[
                        Reason(
                            code=ReasonCode.UNKNOWN_ORDER,
                            message=f"no order for intent {intent_id!r}",
                        )
                    ],
                    ts=time.time(),
                )
            )
            return
        if order.status in FINAL:
            await self._send_event(self._order_event(order))
            return
        await self._request_cancel(order)

    def _desk_of(self, account: str | None) -> AccountDesk:
        return next(d for d in self.desks.values() if d.account == account)

    async def _request_cancel(self, order: OrderRecord) -> None:
        await self._desk_of(order.account).cancels.send(
            CancelOrder(strategy_id=self.strategy_id, client_order_id=order.client_order_id)
        )

    # ------------------------------------------------------------------ broker updates

    async def _consume_updates(self) -> None:
        while (batch := await receive_batch(self._updates)) is not None:
            writes: list[Row] = []
            events: list[OrderEvent | FillEvent] = []
            flatten: FlattenNow | None = None
            for item in batch:
                match item:
                    case FlattenNow():
                        flatten = item
                    case OrderUpdate():
                        self._apply(item, writes, events)
                    case _:
                        assert_never(item)
            if writes:
                await self._journal.write(*writes)
            for event in events:
                await self._send_event(event)
            if events:
                self._state_dirty.set()
            if flatten is not None:
                await self._flatten(self._desk_of(flatten.account))

    def _apply(
        self, update: OrderUpdate, writes: list[Row], events: list[OrderEvent | FillEvent]
    ) -> None:
        """Apply one broker report to the book (:func:`actors.core.book.apply_report`)."""
        now = time.time()
        leg = update.parent_client_order_id is not None
        book, applied = self.book, None
        for desk in self.desks.values():
            book = desk.book
            applied = book.apply_leg(update, now) if leg else book.apply(update, now)
            if applied is not None:
                break
        if applied is None:
            log.warning("order.unknown_update", client_order_id=update.client_order_id, leg=leg)
            return
        if applied.illegal is not None:
            self._illegal(update, applied.illegal, now)
            return
        writes += applied.rows
        events += applied.events
        order = book.orders.get(update.client_order_id)
        if leg or order is None or not applied.changed:
            return
        if self._metrics is not None:
            self._metrics.order_status(self.strategy_id, order.status)
        if order.status != "submitted":
            log.info(
                "order.status",
                client_order_id=order.client_order_id,
                status=order.status,
                filled_qty=order.filled_qty,
                source=update.source,
            )

    def _illegal(self, update: OrderUpdate, detail: str, now: float) -> None:
        log.error(
            "order.illegal_transition",
            client_order_id=update.client_order_id,
            reported=update.status,
            source=update.source,
        )
        self._audit(
            AuditRecord(
                type="order.illegal_transition",
                ok=False,
                detail=detail,
                ts=now,
                strategy_id=self.strategy_id,
                source="broker",
            )
        )

    async def _flatten(self, desk: AccountDesk) -> None:
        """Close this strategy's positions on ``desk``'s account (after its cancels)."""
        await flatten_desk(desk, self.strategy_id, self._journal)

    # ------------------------------------------------------------------ kill and state

    async def _consume_kill_changes(self) -> None:
        async for change in self._kill_changes:
            match change:
                case ApprovalDecision():
                    async with self._deciding:
                        await self._settle_parked(change.intent_id, approved=change.approved)
                case ModeChange():
                    await self._mode_send.send(change)
                case KillChanged():
                    if change.strategy_id in (None, self.strategy_id):
                        self._state_dirty.set()
                case _:
                    assert_never(change)

    async def _state_publisher(self) -> None:
        """Publish the retained state when it changed, at most every 50 ms."""
        while True:
            await self._state_dirty.wait()
            self._state_dirty = anyio.Event()
            await self._publish_state()
            await anyio.sleep(0.05)

    def _order_event(self, order: OrderRecord, detail: str | None = None) -> OrderEvent:
        return order_event(order, time.time(), detail)

    async def _send_event(self, event: Accepted | Rejected | OrderEvent | FillEvent) -> None:
        await self._outbound.send(Publish(topic=self._event_topic, payload=encode(event)))

    def strategy_state(self) -> StrategyState:
        """The retained strategy state."""
        return StrategyState(
            strategy_id=self.strategy_id,
            kill_engaged=self._gate.blocked(self.strategy_id) is not None,
            open_orders=self.open_orders,
            positions={s: p.qty for s, p in sorted(self.positions.items()) if abs(p.qty) > _EPS},
            ts=time.time(),
            realized_pnl=float(round(self.book.realized_pnl(), 6)),
            paused=self._gate.paused(self.strategy_id),
            abstentions=sum(
                d.guardian.abstentions.get(self.strategy_id, 0) for d in self.desks.values()
            ),
            session_pnl=float(round(self.strategy_view(time.time()).session_pnl, 6)),
            pending_approvals=len(self._parked),
            trading=trading_state(
                self._gate,
                self.strategy_id,
                halted=self._halt.halted,
                reduce_only=self._guardian.reduce_only,
            ).value,
            mode="live" if self.mode == "live" else "paper",
        )

    async def _publish_state(self) -> None:
        await self._outbound.send(
            Publish(
                topic=self._topics.strategy_state(self.strategy_id),
                payload=encode(self.strategy_state()),
                retain=True,
            )
        )
