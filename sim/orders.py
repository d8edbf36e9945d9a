"""Orders and trade events of the paper venue: the order record, its JSON and its persistence.

:class:`SimOrder` is one order and its lifecycle state; :class:`TradeEvent` is one
``trade_updates`` event. Both are plain data: the rules that change them live in
the matching engine (``sim/engine.py``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from sim.wire import asset_id_of, dec, ts

if TYPE_CHECKING:
    from sim.wire import OrderTypeName, Side, TimeInForceName

QTY_STEP = Decimal("0.000000001")
PRICE_STEP = Decimal("0.0001")
CENT = Decimal("0.01")
ZERO = Decimal(0)
ONE = Decimal(1)
FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})
OPEN_STATUSES = frozenset(
    {
        "pending_new",
        "accepted",
        "new",
        "partially_filled",
        "held",
        "pending_cancel",
        "pending_replace",
    }
)
EventName = Literal[
    "pending_new",
    "new",
    "partial_fill",
    "fill",
    "canceled",
    "expired",
    "rejected",
    "replaced",
    "pending_cancel",
    "pending_replace",
]
_DECIMAL_FIELDS = frozenset(
    {
        "qty",
        "notional",
        "limit_price",
        "stop_price",
        "filled_qty",
        "filled_value",
        "trail_price",
        "trail_percent",
        "hwm",
    }
)
_TIME_FIELDS = frozenset(
    {
        "created_at",
        "expires_at",
        "updated_at",
        "filled_at",
        "canceled_at",
        "expired_at",
        "failed_at",
        "replaced_at",
        "auction_at",
    }
)


@dataclass(slots=True)
class SimOrder:
    """One order and its lifecycle state."""

    seq: int
    id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderTypeName
    time_in_force: TimeInForceName
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    position_intent: str
    created_at: datetime
    expires_at: datetime
    fill_rng: random.Random
    status: str = "pending_new"
    updated_at: datetime | None = None
    filled_qty: Decimal = ZERO
    filled_value: Decimal = ZERO
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    triggered: bool = False
    doomed: bool = False
    passes: int = 0
    order_class: str = "simple"
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    hwm: Decimal | None = None
    parent_id: str | None = None
    leg_ids: list[str] = field(default_factory=list)
    auction_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        """Whether the order can no longer change."""
        return self.status in FINAL_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        """Average fill price, None before the first fill."""
        if self.filled_qty == 0:
            return None
        return (self.filled_value / self.filled_qty).quantize(PRICE_STEP).normalize()

    @property
    def remaining_notional(self) -> Decimal:
        """Dollar amount still to trade (notional orders)."""
        return (self.notional or ZERO) - self.filled_value

    def remaining_qty(self) -> Decimal:
        """Shares still to trade (zero for notional orders, which fill in one go)."""
        if self.qty is None:
            return ZERO
        return self.qty - self.filled_qty

    def to_json(self, legs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The Alpaca Order entity (``legs``: the leg entities, for ``nested`` answers)."""
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": ts(self.created_at),
            "updated_at": ts(self.updated_at or self.created_at),
            "submitted_at": ts(self.created_at),
            "filled_at": ts(self.filled_at),
            "expired_at": ts(self.expired_at),
            "expires_at": ts(self.expires_at),
            "canceled_at": ts(self.canceled_at),
            "failed_at": ts(self.failed_at),
            "replaced_at": ts(self.replaced_at),
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": asset_id_of(self.symbol),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": dec(self.notional),
            "qty": dec(self.qty),
            "filled_qty": dec(self.filled_qty),
            "filled_avg_price": dec(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": dec(self.limit_price),
            "stop_price": dec(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": legs,
            "trail_percent": dec(self.trail_percent),
            "trail_price": dec(self.trail_price),
            "hwm": dec(self.hwm),
        }

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record of every field but the random generator (persistence)."""
        record: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "fill_rng":
                continue
            value = getattr(self, item.name)
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, list):
                value = list(value)
            record[item.name] = value
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], seed: int) -> SimOrder:
        """Rebuild an order saved by :meth:`to_record`."""
        names = {item.name for item in dataclasses.fields(cls)} - {"fill_rng"}
        values: dict[str, Any] = {k: v for k, v in record.items() if k in names}
        for name in _DECIMAL_FIELDS & values.keys():
            if values[name] is not None:
                values[name] = Decimal(values[name])
        for name in _TIME_FIELDS & values.keys():
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        rng = random.Random(f"{seed}:fill:{values['seq']}:restored")  # noqa: S311 - simulation
        return cls(fill_rng=rng, **values)


@dataclass(frozen=True, slots=True)
class TradeEvent:
    """One ``trade_updates`` event, with the order as it was right after the change."""

    event: EventName
    order_id: str
    order: dict[str, Any]
    timestamp: datetime
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None
    execution_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``data`` object of a ``trade_updates`` message."""
        data: dict[str, Any] = {
            "event": self.event,
            "timestamp": ts(self.timestamp),
            "order": self.order,
        }
        if self.execution_id is not None:
            data["execution_id"] = self.execution_id
        if self.price is not None:
            data["price"] = dec(self.price)
        if self.qty is not None:
            data["qty"] = dec(self.qty)
        if self.position_qty is not None:
            data["position_qty"] = dec(self.position_qty)
        return data
