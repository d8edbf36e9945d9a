"""One strategy's order book: decisions, orders, positions, and what the limits see. Pure.

The order manager asks it to accept or reject an intent and to apply the broker's
reports; each call changes the book in place and returns the rows to journal and the
events to publish. The manager journals, publishes and talks to the other actors.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

from actors.core.book import (
    FINAL,
    RECENT_FINAL_ORDERS,
    Applied,
    LegState,
    OrderRecord,
    StrategyBook,
    apply_leg_report,
    apply_report,
    client_order_id,
)
from actors.core.messages import OrderUpdate
from actors.core.open_orders import OpenOrders
from actors.core.risk_limits import PositionView, StrategyView
from actors.core.rows import DecisionRow, OrderRow, Row
from protocol.codec import encode
from protocol.messages import Accepted, OrderIntent, PendingApproval, Reason, Rejected
from protocol.reasons import ReasonCode

_EPS: Final = 1e-9


class OrderBook:
    """A strategy's book, loaded from the journal at start-up (``book``)."""

    def __init__(self, strategy_id: str, book: StrategyBook, account: str | None = None) -> None:
        """Index the journaled orders; unfinished ones count in the exposure totals.

        ``account``: the broker account this book's orders go to (None: the ``[broker]``
        account). A strategy with two accounts has two books that share ``decisions``.
        """
        self.strategy_id = strategy_id
        self.account = account
        self.decisions = book.decisions
        self.orders = book.orders
        self.positions = book.positions
        self._lookup_order = book.lookup_order
        self.by_intent = {o.intent_id: o for o in self.orders.values()}
        self.open: OpenOrders[OrderRecord] = OpenOrders()
        for order in self.orders.values():
            if order.status not in FINAL:
                self.open.add(order)
        self._finals: deque[str] = deque(c for c, o in self.orders.items() if o.status in FINAL)
        self._legs: OrderedDict[str, LegState] = OrderedDict()
        """Bracket legs seen (the broker's ``client_order_id``): status, cumulative fill."""

    # ------------------------------------------------------------------ decisions

    def order_of(self, intent_id: str) -> OrderRecord | None:
        """The order of ``intent_id`` (finished long ago: from the journal), or None."""
        order = self.by_intent.get(intent_id)
        if order is None and self._lookup_order is not None:
            order = self._lookup_order(intent_id)
            if order is not None and order.account != self.account:
                return None  # an order of the strategy's other account
        return order

    def reject(self, intent: OrderIntent, reasons: list[Reason], now: float) -> tuple[bytes, Row]:
        """Decide ``intent`` rejected: the answer and its journal row."""
        payload = encode(Rejected(intent_id=intent.intent_id, reasons=reasons, ts=now))
        self.decisions.put(intent.intent_id, payload)
        return payload, self._decision_row(intent.intent_id, payload, now, accepted=False)

    def accept(self, intent: OrderIntent, now: float) -> tuple[bytes, list[Row], OrderRecord]:
        """Decide ``intent`` accepted: the answer, its rows and its (pending) order."""
        record = self._open_order(intent, now)
        payload = encode(
            Accepted(intent_id=intent.intent_id, client_order_id=record.client_order_id, ts=now)
        )
        self.decisions.put(intent.intent_id, payload)
        rows: list[Row] = [
            self._decision_row(intent.intent_id, payload, now, accepted=True),
            self._order_row(record, now),
        ]
        return payload, rows, record

    def flatten(self, now: float) -> list[tuple[OrderRecord, OrderRow]]:
        """Market orders that close every position (the kill switch's ``flatten``)."""
        stamp = int(now * 1000)
        orders = []
        for symbol, position in list(self.positions.items()):
            if abs(position.qty) < _EPS:
                continue
            intent = OrderIntent(
                intent_id=f"flatten-{stamp}-{re.sub(r'[^A-Za-z0-9]', '_', symbol)}",
                symbol=symbol,
                side="sell" if position.qty > 0 else "buy",
                qty=abs(position.qty),
            )
            record = self._open_order(intent, now)
            orders.append((record, self._order_row(record, now)))
        return orders

    def _open_order(self, intent: OrderIntent, now: float) -> OrderRecord:
        coid = client_order_id(self.strategy_id, intent.intent_id)
        record = OrderRecord(
            client_order_id=coid,
            intent_id=intent.intent_id,
            intent=intent,
            status="pending",
            created_ts=now,
            account=self.account,
        )
        self.orders[coid] = record
        self.open.add(record)
        self.by_intent[intent.intent_id] = record
        return record

    def _decision_row(
        self, intent_id: str, payload: bytes, now: float, *, accepted: bool
    ) -> DecisionRow:
        return DecisionRow(
            strategy_id=self.strategy_id,
            intent_id=intent_id,
            accepted=accepted,
            event=payload,
            ts=now,
        )

    def _order_row(self, record: OrderRecord, now: float) -> OrderRow:
        return OrderRow(
            client_order_id=record.client_order_id,
            strategy_id=self.strategy_id,
            intent_id=record.intent_id,
            intent=encode(record.intent),
            status=record.status,
            ts=now,
            account=self.account,
        )

    # ------------------------------------------------------------------ broker reports

    def apply(self, report: OrderUpdate, now: float) -> Applied | None:
        """Apply a report of one of our orders (None: not an order of this book)."""
        order = self.orders.get(report.client_order_id)
        if order is None:
            return None
        applied = apply_report(order, report, self.positions, strategy_id=self.strategy_id, now=now)
        if applied.filled:
            self.open.refill(order)
        if order.status in FINAL and order.client_order_id in self.open:
            self.open.remove(order.client_order_id)
            self._forget_old_finals(order)
        return applied

    def apply_leg(self, report: OrderUpdate, now: float) -> Applied | None:
        """Apply a report of a bracket leg (None: its parent is not an order of ours)."""
        parent_coid = report.parent_client_order_id
        assert parent_coid is not None
        parent = self.orders.get(parent_coid) or self.order_of(
            parent_coid.removeprefix(f"{self.strategy_id}-")
        )
        if parent is None:
            return None
        leg = self._legs.get(report.client_order_id, LegState())
        leg, applied = apply_leg_report(
            parent, leg, report, self.positions, strategy_id=self.strategy_id, now=now
        )
        self._legs[report.client_order_id] = leg
        self._legs.move_to_end(report.client_order_id)
        while len(self._legs) > RECENT_FINAL_ORDERS:
            self._legs.popitem(last=False)
        return applied

    def _forget_old_finals(self, order: OrderRecord) -> None:
        """Keep the most recent finished orders in memory; the journal keeps them all."""
        self._finals.append(order.client_order_id)
        while len(self._finals) > RECENT_FINAL_ORDERS:
            old = self.orders.pop(self._finals.popleft(), None)
            if old is not None and self.by_intent.get(old.intent_id) is old:
                del self.by_intent[old.intent_id]

    # ------------------------------------------------------------------ exposure

    def realized_pnl(self) -> float:
        """Realized P&L of every position ever held."""
        return sum(p.realized_pnl for p in self.positions.values())

    def position_costs(self) -> dict[str, tuple[float, float]]:
        """Symbol to (signed qty, net cash invested), as the fills so far made them.

        The cash a symbol's fills cost, net of what its sales brought: for an
        average-cost book, the shares at their average price less the realized P&L.
        """
        return {s: (p.qty, p.qty * p.avg_price - p.realized_pnl) for s, p in self.positions.items()}

    def held_positions(self) -> dict[str, tuple[float, float]]:
        """Symbol to (signed qty, average price), as the fills so far made them."""
        return {s: (p.qty, p.avg_price) for s, p in self.positions.items() if p.qty != 0}

    def open_symbols(self) -> set[str]:
        """Symbols with an order of this strategy not yet final."""
        return self.open.symbols()

    def held(self, symbol: str) -> float:
        """Signed shares held in ``symbol``."""
        position = self.positions.get(symbol)
        return position.qty if position else 0.0

    def pending_opening(self, mark: Callable[[str], float | None]) -> dict[str, float]:
        """Notional of open orders that would open or grow a position, by symbol."""
        return self.open.pending_opening(self.held, lambda symbol: mark(symbol) or 0.0)

    def view(
        self, mark: Callable[[str], float | None], *, session_base: float, paused: bool
    ) -> StrategyView:
        """This strategy as the limits see it, at the ``mark`` prices (None: no quote)."""
        open_qty = self.open.open_qty()
        positions: dict[str, PositionView] = {}
        gross = unrealized = 0.0
        for symbol, position in self.positions.items():
            buying, selling = (
                open_qty.get((symbol, "buy"), 0.0),
                open_qty.get((symbol, "sell"), 0.0),
            )
            if abs(position.qty) < _EPS and not (buying or selling):
                continue
            price = mark(symbol) or position.avg_price
            gross += abs(position.qty) * price
            unrealized += (price - position.avg_price) * position.qty
            positions[symbol] = PositionView(
                qty=position.qty,
                avg_price=position.avg_price,
                market_price=price,
                pending_buy_qty=buying,
                pending_sell_qty=selling,
            )
        for (symbol, side), qty in open_qty.items():
            if symbol not in positions:
                positions[symbol] = PositionView(
                    qty=0.0,
                    avg_price=0.0,
                    market_price=mark(symbol) or 0.0,
                    pending_buy_qty=qty if side == "buy" else 0.0,
                    pending_sell_qty=qty if side == "sell" else 0.0,
                )
        gross += sum(self.pending_opening(mark).values())
        return StrategyView(
            gross_exposure=gross,
            session_pnl=self.realized_pnl() - session_base + unrealized,
            paused=paused,
            positions=positions,
        )


# ---------------------------------------------------------------- decision reasons


def approval_request(
    strategy_id: str, intent: OrderIntent, notional: float, now: float, timeout_s: float
) -> PendingApproval:
    """The pending approval of an intent above ``approval_above_notional``."""
    return PendingApproval(
        strategy_id=strategy_id,
        intent_id=intent.intent_id,
        symbol=intent.symbol,
        side=intent.side,
        qty=intent.qty,
        notional=round(notional, 2),
        order_type=intent.order_type,
        limit_price=intent.limit_price,
        requested_at=now,
        expires_at=now + timeout_s,
    )


def approval_refusal(*, approved: bool | None, timeout_s: float) -> list[Reason]:
    """Why a parked intent is rejected: denied, or (None) not decided in time."""
    if approved is None:
        return [
            Reason(code=ReasonCode.APPROVAL_TIMEOUT, message=f"no approval within {timeout_s:g} s")
        ]
    if not approved:
        return [Reason(code=ReasonCode.APPROVAL_DENIED, message="denied by an operator")]
    return []


def broker_busy(wait_s: float, deadline_s: float, margin: float) -> Reason | None:
    """``BROKER_BUSY`` when the expected wait for the POST is past ``margin`` of the deadline.

    Better a clear no now than an order sent late, or one that expires unsent.
    """
    if wait_s <= deadline_s * margin:
        return None
    return Reason(
        code=ReasonCode.BROKER_BUSY,
        message=f"the broker queue would hold this order about {wait_s:.0f} s "
        f"(broker.submit_deadline_s {deadline_s:g} s, at the broker's rate limit): re-send later",
    )
