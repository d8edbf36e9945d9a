"""A strategy's orders, positions and decisions: the order state machine, pure.

No I/O and no anyio: the order manager applies broker updates to these, the journal
(:mod:`daemon.journal`) loads them at start-up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from protocol.messages import OrderIntent, OrderStatus

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
    ) -> None:
        """Start from the most recent decisions; ``lookup`` reads older ones."""
        self._recent: OrderedDict[str, bytes] = OrderedDict(recent or {})
        self._lookup = lookup
        self._capacity = capacity

    def get(self, intent_id: str) -> bytes | None:
        """The decision for ``intent_id``, or None if there never was one."""
        found = self._recent.get(intent_id)
        if found is None and self._lookup is not None:
            found = self._lookup(intent_id)
            if found is not None:
                self.put(intent_id, found)
        return found

    def __contains__(self, intent_id: object) -> bool:
        """Whether ``intent_id`` was decided (memory or journal)."""
        return isinstance(intent_id, str) and self.get(intent_id) is not None

    def put(self, intent_id: str, payload: bytes) -> None:
        """Remember a decision (the caller journals it)."""
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
