"""Model check: the exposure the limits see is never below the broker's true exposure.

hypothesis interleaves, for buys, what the broker does (acknowledge, fill part or all,
cancel the rest) with what the daemon hears of it (a report now, later, twice, or
never: the stream drops it) and the account polls (a snapshot of the truth that the
guardian gets, possibly after more has happened). After every step the exposure of
the guardian's portfolio view (positions, each symbol at the larger of the books and
the last poll, plus open opening orders) must cover the broker's true exposure: its
positions plus the unfilled rest of every order that can still fill.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, cast

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_order_state_machine import make_manager

from actors.channels import OrderUpdate
from actors.core.book import OrderRecord
from actors.core.risk_limits import Quote
from actors.core.rows import Row
from protocol.messages import FillEvent, OrderEvent, OrderIntent

PRICE = 100.0
SYMBOLS = ("AAPL", "MSFT", "NVDA")


class BrokerOrder:
    """The truth about one order at the broker."""

    def __init__(self, coid: str, symbol: str, qty: float) -> None:
        self.coid = coid
        self.symbol = symbol
        self.qty = qty
        self.filled = 0.0
        self.acked = False
        self.cancelled = False

    @property
    def status(self) -> str:
        if self.filled >= self.qty:
            return "filled"
        if self.cancelled:
            return "cancelled"
        if self.filled > 0:
            return "partially_filled"
        return "accepted" if self.acked else "submitted"

    def update(self) -> OrderUpdate:
        """What a report (stream event, look-up, listing) says now."""
        return OrderUpdate(
            client_order_id=self.coid,
            status=self.status,  # type: ignore[arg-type]  # the broker's status, mapped
            broker_order_id="b-" + self.coid,
            filled_qty=self.filled,
            filled_avg_price=PRICE if self.filled else None,
            source="stream",
        )


class ExposureMachine(RuleBasedStateMachine):
    """Broker truth and what the daemon hears, interleaved at random."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.manager, _audits = make_manager(Path(self._tmp.name))
        self.guardian: Any = cast("Any", self.manager._guardian)
        self.guardian.quotes = {s: Quote(bid=PRICE, ask=PRICE, ts=1e12) for s in SYMBOLS}
        self.broker: dict[str, BrokerOrder] = {}
        self.snapshots: list[dict[str, tuple[float, float]]] = []

    def teardown(self) -> None:
        self._tmp.cleanup()

    def _order(self, pick: int) -> BrokerOrder | None:
        if not self.broker:
            return None
        return self.broker[sorted(self.broker)[pick % len(self.broker)]]

    @rule(symbol=st.sampled_from(SYMBOLS), qty=st.integers(1, 5))
    def decide(self, symbol: str, qty: int) -> None:
        """An intent is accepted: journaled, open in the books, on its way to the broker."""
        n = len(self.broker)
        coid = f"demo-o{n}"
        intent = OrderIntent(
            intent_id=f"o{n}",
            symbol=symbol,
            side="buy",
            qty=float(qty),
            order_type="limit",
            limit_price=PRICE,
        )
        record = OrderRecord(
            client_order_id=coid, intent_id=f"o{n}", intent=intent, status="pending"
        )
        self.manager.orders[coid] = record
        self.manager.book.open.add(record)
        self.manager.book.by_intent[record.intent_id] = record
        self.broker[coid] = BrokerOrder(coid, symbol, float(qty))

    @rule(pick=st.integers(0, 20))
    def broker_acknowledges(self, pick: int) -> None:
        order = self._order(pick)
        if order is not None:
            order.acked = True

    @rule(pick=st.integers(0, 20), part=st.sampled_from([0.2, 0.5, 1.0]))
    def broker_fills(self, pick: int, part: float) -> None:
        order = self._order(pick)
        if order is not None and order.acked and not order.cancelled:
            order.filled = min(order.qty, round(order.filled + order.qty * part, 6))

    @rule(pick=st.integers(0, 20))
    def broker_cancels_the_rest(self, pick: int) -> None:
        order = self._order(pick)
        if order is not None and order.acked and order.filled < order.qty:
            order.cancelled = True

    @rule(pick=st.integers(0, 20))
    def daemon_hears(self, pick: int) -> None:
        """A report reaches the daemon (a lost one is simply never heard: no rule)."""
        order = self._order(pick)
        if order is None or order.status == "submitted":
            return
        writes: list[Row] = []
        events: list[OrderEvent | FillEvent] = []
        self.manager._apply(order.update(), writes, events)

    @rule()
    def broker_snapshot(self) -> None:
        """The account poll is taken now..."""
        positions: dict[str, tuple[float, float]] = {}
        for order in self.broker.values():
            qty, _ = positions.get(order.symbol, (0.0, 0.0))
            qty += order.filled
            positions[order.symbol] = (qty, qty * PRICE)
        self.snapshots.append(positions)

    @rule()
    def poll_arrives(self) -> None:
        """...and reaches the guardian later, after more may have happened."""
        if self.snapshots:
            self.guardian.positions = self.snapshots.pop(0)

    @invariant()
    def the_limits_never_see_less_than_the_truth(self) -> None:
        view = self.guardian.portfolio_view()
        seen = view.gross_exposure + sum(view.pending_opening.values())
        true_positions = sum(o.filled for o in self.broker.values()) * PRICE
        can_still_fill = sum(
            (o.qty - o.filled) * PRICE
            for o in self.broker.values()
            if not o.cancelled and o.filled < o.qty
        )
        assert seen >= true_positions + can_still_fill - 1e-6, (seen, true_positions)
        held = {o.symbol for o in self.broker.values() if o.filled > 0}
        assert held <= view.held_symbols | set(view.pending_opening)


ExposureMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
TestExposureMachine = ExposureMachine.TestCase
