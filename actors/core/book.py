"""A strategy's orders, positions and decisions: the order state machine, pure.

No I/O and no anyio: the order manager applies broker updates to these, the journal
(:mod:`daemon.journal`) loads them at start-up.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from actors.core.messages import OrderUpdate
from actors.core.rows import FillRow, OrderChangeRow, Row
from protocol.messages import FillEvent, OrderEvent, OrderIntent, OrderStatus, Side

FINAL: Final[frozenset[OrderStatus]] = frozenset({"filled", "cancelled", "rejected", "expired"})
_LIVE: Final[tuple[OrderStatus, ...]] = (
    "accepted",
    "partially_filled",
    "filled",
    "pending_cancel",
    "cancelled",
    "rejected",
    "expired",
)
TRANSITIONS: Final[dict[OrderStatus, frozenset[OrderStatus]]] = {
    "pending": frozenset({"submitted", "rejected", "cancelled", *_LIVE}),
    "submitted": frozenset({"submitted", *_LIVE}),
    "accepted": frozenset(_LIVE),
    "partially_filled": frozenset(s for s in _LIVE if s != "accepted"),
    "pending_cancel": frozenset(_LIVE),
    "filled": frozenset(),
    "cancelled": frozenset(),
    "rejected": frozenset(),
    "expired": frozenset(),
}
"""Allowed next statuses. Staying in a state is allowed where the fill can grow."""

_EPS: Final = 1e-9


def client_order_id(strategy_id: str, intent_id: str) -> str:
    """The broker-side id of an intent's order: ``SID-intent_id`` (at most 97 chars)."""
    return f"{strategy_id}-{intent_id}"


def legal(current: OrderStatus, new: OrderStatus) -> bool:
    """Whether the state machine allows ``current -> new``."""
    return new in TRANSITIONS[current]


@dataclass
class OrderRecord:
    """One order as the journal knows it."""

    client_order_id: str
    intent_id: str
    intent: OrderIntent
    status: OrderStatus
    broker_order_id: str | None = None
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    created_ts: float = 0.0
    account: str | None = None
    """The broker account it was sent to (None: the ``[broker]`` account; ``live``:
    ``[broker.live]``). An order stays with its account until it ends."""


@dataclass
class Position:
    """A strategy's position in one symbol (average-cost book)."""

    qty: float = 0.0
    avg_price: float = 0.0
    realized_pnl: float = 0.0

    def apply(self, side_sign: int, qty: float, price: float) -> None:
        """Book one fill; ``side_sign`` is +1 for a buy, -1 for a sell."""
        signed = side_sign * qty
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            total = self.qty + signed
            self.avg_price = (self.avg_price * abs(self.qty) + price * qty) / abs(total)
            self.qty = total
            return
        closing = min(qty, abs(self.qty))
        direction = 1 if self.qty > 0 else -1
        self.realized_pnl += (price - self.avg_price) * closing * direction
        remainder = qty - closing
        self.qty += side_sign * closing
        if abs(self.qty) < _EPS:
            self.qty = 0.0
            self.avg_price = 0.0
        if remainder > _EPS:
            self.qty = side_sign * remainder
            self.avg_price = price


class SeenIds:
    """A Bloom filter of every intent id ever decided: "no" is certain, "yes" is likely.

    A new ``intent_id`` then costs no journal read; only a likely repeat (or one in a
    hundred new ids, once a million are held) is looked up. Fixed size (1 MiB).
    """

    BITS: Final = 1 << 23
    HASHES: Final = 7

    def __init__(self, ids: Iterable[str] = ()) -> None:
        """Hold ``ids`` (the journal's, at start-up)."""
        self._bits = bytearray(self.BITS // 8)
        for intent_id in ids:
            self.add(intent_id)

    def _positions(self, intent_id: str) -> Iterator[int]:
        digest = hashlib.blake2b(intent_id.encode(), digest_size=16).digest()
        first, second = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
        for n in range(self.HASHES):
            yield (first + n * second) % self.BITS

    def add(self, intent_id: str) -> None:
        """Note ``intent_id`` as decided."""
        for position in self._positions(intent_id):
            self._bits[position >> 3] |= 1 << (position & 7)

    def __contains__(self, intent_id: object) -> bool:
        """False: never decided. True: probably decided (look it up)."""
        if not isinstance(intent_id, str):
            return False
        return all(self._bits[p >> 3] & (1 << (p & 7)) for p in self._positions(intent_id))


class DecisionIndex:
    """``intent_id`` -> journaled decision, for answering re-sent intents forever.

    The most recent decisions are kept in memory (bounded); an intent older than that
    is looked up in the journal, so a daemon that runs for years neither forgets an
    intent nor grows without bound.
    """

    def __init__(
        self,
        recent: Mapping[str, bytes] | None = None,
        *,
        lookup: Callable[[str], bytes | None] | None = None,
        capacity: int = 100_000,
        seen: SeenIds | None = None,
    ) -> None:
        """Start from the most recent decisions; ``lookup`` reads older ones.

        ``seen`` holds every id the journal has decided (with a ``lookup``, ids it
        does not hold are new: no read).
        """
        self._recent: OrderedDict[str, bytes] = OrderedDict(recent or {})
        self._lookup = lookup
        self._capacity = capacity
        self._seen = seen

    def get(self, intent_id: str) -> bytes | None:
        """The decision for ``intent_id``, or None if there never was one."""
        found = self._recent.get(intent_id)
        if found is None and self._lookup is not None:
            if self._seen is not None and intent_id not in self._seen:
                return None  # certainly never decided: no journal read
            found = self._lookup(intent_id)
            if found is not None:
                self.put(intent_id, found)
        return found

    def __contains__(self, intent_id: object) -> bool:
        """Whether ``intent_id`` was decided (memory or journal)."""
        return isinstance(intent_id, str) and self.get(intent_id) is not None

    def put(self, intent_id: str, payload: bytes) -> None:
        """Remember a decision (the caller journals it)."""
        if self._seen is not None:
            self._seen.add(intent_id)
        self._recent[intent_id] = payload
        self._recent.move_to_end(intent_id)
        while len(self._recent) > self._capacity:
            self._recent.popitem(last=False)

    def __len__(self) -> int:
        """Decisions held in memory."""
        return len(self._recent)


@dataclass
class StrategyBook:
    """Everything the journal knows about one strategy, loaded at start-up."""

    decisions: DecisionIndex = field(default_factory=DecisionIndex)
    lookup_order: Callable[[str], OrderRecord | None] | None = None
    orders: dict[str, OrderRecord] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)


RECENT_DECISIONS: Final = 2_000
"""Decisions kept in memory per strategy: re-sends come within seconds. Older repeats are
answered from the journal's primary key (one indexed read), so memory stays flat."""
RECENT_FINAL_ORDERS: Final = 1_000
"""Finished orders kept in memory per strategy; the journal keeps them all."""


# ---------------------------------------------------------------- applying broker reports


@dataclass
class Applied:
    """What one broker report did to an order: rows to journal, events to publish."""

    rows: list[Row] = field(default_factory=list)
    events: list[OrderEvent | FillEvent] = field(default_factory=list)
    illegal: str | None = None
    """Set (and nothing applied) when the report breaks the state machine."""
    filled: bool = False
    """The order's filled quantity grew (its open share must move)."""
    changed: bool = False
    """The order's status, broker id or fill changed (an ``order`` event was made)."""


def order_event(order: OrderRecord, now: float, detail: str | None = None) -> OrderEvent:
    """The ``order`` event of ``order`` as it stands."""
    return OrderEvent(
        intent_id=order.intent_id,
        client_order_id=order.client_order_id,
        broker_order_id=order.broker_order_id,
        status=order.status,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
        ts=now,
        detail=detail,
    )


def _fill_price(cum: float, avg: float | None, new_cum: float, new_avg: float | None) -> float:
    """The price of the shares between two cumulative fills (``avg``: their average)."""
    delta = new_cum - cum
    if delta <= _EPS:
        return new_avg or 0.0
    return ((new_avg or 0.0) * new_cum - (avg or 0.0) * cum) / delta


def apply_report(
    order: OrderRecord,
    report: OrderUpdate,
    positions: dict[str, Position],
    *,
    strategy_id: str,
    now: float,
) -> Applied:
    """Apply one broker report to ``order`` (and its position), in place.

    Cumulative fill figures make a report idempotent: a stream event and a look-up of
    the same state apply once. ``submitted`` is published but not journaled (recovery
    lists every unfinished order anyway).
    """
    status = report.status
    if status != order.status and not legal(order.status, status):
        return Applied(illegal=f"illegal transition {order.status} -> {status} ({report.source})")
    applied = Applied()
    if status == order.status and status in FINAL:
        return applied
    changed = status != order.status
    if report.broker_order_id and report.broker_order_id != order.broker_order_id:
        order.broker_order_id = report.broker_order_id
        changed = True
    if report.filled_qty > order.filled_qty + _EPS:
        _book_fill(order, report, positions, applied, strategy_id=strategy_id, now=now)
        changed = True
    if not changed:
        return applied
    order.status = status
    applied.changed = True
    applied.events.append(order_event(order, now, report.detail))
    if status != "submitted":
        applied.rows.append(
            OrderChangeRow(
                client_order_id=order.client_order_id,
                status=status,
                broker_order_id=order.broker_order_id,
                filled_qty=order.filled_qty,
                filled_avg_price=order.filled_avg_price,
                ts=now,
                detail=report.detail,
            )
        )
    return applied


def _book_fill(
    order: OrderRecord,
    report: OrderUpdate,
    positions: dict[str, Position],
    applied: Applied,
    *,
    strategy_id: str,
    now: float,
) -> None:
    """The shares ``report`` says filled since the last report: position, row and event."""
    intent = order.intent
    delta = report.filled_qty - order.filled_qty
    price = _fill_price(
        order.filled_qty, order.filled_avg_price, report.filled_qty, report.filled_avg_price
    )
    position = positions.setdefault(intent.symbol, Position())
    position.apply(1 if intent.side == "buy" else -1, delta, price)
    order.filled_qty = report.filled_qty
    order.filled_avg_price = report.filled_avg_price
    applied.rows.append(
        FillRow(
            client_order_id=order.client_order_id,
            strategy_id=strategy_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=delta,
            price=price,
            ts=now,
            cum_qty=order.filled_qty,
            account=order.account,
        )
    )
    applied.events.append(
        FillEvent(
            intent_id=order.intent_id,
            client_order_id=order.client_order_id,
            qty=delta,
            price=price,
            position_qty=position.qty,
            ts=now,
            symbol=intent.symbol,
            side=intent.side,
        )
    )
    applied.filled = True


@dataclass(frozen=True)
class LegState:
    """A bracket leg as last reported: status and cumulative fill."""

    status: OrderStatus = "accepted"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None


def apply_leg_report(
    parent: OrderRecord,
    leg: LegState,
    report: OrderUpdate,
    positions: dict[str, Position],
    *,
    strategy_id: str,
    now: float,
) -> tuple[LegState, Applied]:
    """Apply a report of one of ``parent``'s bracket legs: its fills move the position.

    A leg is the broker's order, on the exit side: its events carry the parent's
    ``intent_id``, the leg's own ``client_order_id`` and ``leg_of``; its fills are
    journaled under that id, so positions rebuilt from the journal include them.
    """
    applied = Applied()
    if leg.status in FINAL:
        return leg, applied
    intent = parent.intent
    side: Side = "sell" if intent.side == "buy" else "buy"
    cum, avg = leg.filled_qty, leg.filled_avg_price
    applied.changed = report.status != leg.status
    if report.filled_qty > cum + _EPS:
        delta = report.filled_qty - cum
        price = _fill_price(cum, avg, report.filled_qty, report.filled_avg_price)
        position = positions.setdefault(intent.symbol, Position())
        position.apply(1 if side == "buy" else -1, delta, price)
        cum, avg = report.filled_qty, report.filled_avg_price
        fill = FillRow(
            client_order_id=report.client_order_id,
            strategy_id=strategy_id,
            symbol=intent.symbol,
            side=side,
            qty=delta,
            price=price,
            ts=now,
            cum_qty=cum,
            account=parent.account,
        )
        applied.rows.append(fill)
        applied.events.append(_leg_fill(parent, fill, position.qty))
        applied.filled = applied.changed = True
    if applied.changed:
        applied.events.append(
            OrderEvent(
                intent_id=parent.intent_id,
                client_order_id=report.client_order_id,
                broker_order_id=report.broker_order_id,
                status=report.status,
                filled_qty=cum,
                filled_avg_price=avg,
                ts=now,
                detail=report.detail,
                leg_of=parent.client_order_id,
            )
        )
    return LegState(report.status, cum, avg), applied


def _leg_fill(parent: OrderRecord, fill: FillRow, position_qty: float) -> FillEvent:
    return FillEvent(
        intent_id=parent.intent_id,
        client_order_id=fill.client_order_id,
        qty=fill.qty,
        price=fill.price,
        position_qty=position_qty,
        ts=fill.ts,
        symbol=fill.symbol,
        side=fill.side,
        leg_of=parent.client_order_id,
    )
