"""Alpaca JSON shapes: rendering the venue's state and parsing order requests.

Decimals are rendered as strings, as the Trading API does; nullable fields
are ``null`` only where alpaca-py's pydantic models and the OpenAPI spec allow
it. Order requests accept numbers or strings for every decimal field (alpaca-py
sends numbers, the spec says strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from sim.assets import asset_id_of
from sim.clock import NEW_YORK
from sim.errors import RequestRefusedError

if TYPE_CHECKING:
    from sim.clock import MarketClock
    from sim.prices import Quote

Side = Literal["buy", "sell"]
OrderTypeName = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
TimeInForceName = Literal["day", "gtc", "opg", "cls", "ioc", "fok"]
OrderClassName = Literal["simple", "bracket", "oco", "oto"]

INVALID_REQUEST = 40010001
FORBIDDEN = 40310000
NOT_FOUND = 40410000
NOT_CANCELABLE = 42210000
UNPROCESSABLE = 42210000

__all__ = ["asset_id_of"]


def dec(value: Decimal | None) -> str | None:
    """Render a decimal the way Alpaca does: plain notation, no exponent."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", ""} else text


def ts(value: datetime | None) -> str | None:
    """Render a timestamp as RFC 3339 UTC with microseconds."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, kw_only=True, slots=True)
class OrderSpec:
    """A validated order request, independent of the wire format."""

    symbol: str
    side: Side
    type: OrderTypeName
    time_in_force: TimeInForceName
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = None
    extended_hours: bool = False
    order_class: OrderClassName = "simple"
    take_profit: Decimal | None = None
    stop_loss_stop: Decimal | None = None
    stop_loss_limit: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None


def invalid(message: str) -> RequestRefusedError:
    """A 422 ``40010001`` error with ``message`` (which names the field)."""
    return RequestRefusedError(422, INVALID_REQUEST, message)


def _decimal_field(body: dict[str, Any], name: str) -> Decimal | None:
    return decimal_value(body.get(name), name)


def decimal_value(raw: object, name: str) -> Decimal | None:
    """A request's decimal (JSON number or string); None when absent, 422 when not a number."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise invalid(f"invalid {name}")
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise invalid(f"invalid {name}") from exc
    if not value.is_finite():
        raise invalid(f"invalid {name}")
    return value


def _choice(body: dict[str, Any], name: str, allowed: Any) -> str:
    raw = body.get(name)
    if raw is None:
        raise invalid(f"{name} is required")
    if not isinstance(raw, str) or raw not in get_args(allowed):
        raise invalid(f"invalid {name}: {raw!r}")
    return raw


def parse_order_request(body: object) -> OrderSpec:
    """Validate a ``POST /v2/orders`` body.

    Args:
        body: Decoded JSON body.

    Returns:
        The order request.

    Raises:
        RequestRefusedError: 422 naming the offending field.
    """
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    order_class = body.get("order_class")
    if order_class is None or order_class == "":
        order_class = "simple"
    if not isinstance(order_class, str) or order_class not in get_args(OrderClassName):
        raise invalid(f"invalid order_class: {order_class!r}")
    take_profit = _leg(body, "take_profit", ("limit_price",))
    stop_loss = _leg(body, "stop_loss", ("stop_price", "limit_price"))
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise invalid("symbol is required")
    side = cast("Side", _choice(body, "side", Side))
    order_type = cast("OrderTypeName", _choice(body, "type", OrderTypeName))
    tif = cast("TimeInForceName", _choice(body, "time_in_force", TimeInForceName))
    client_order_id = body.get("client_order_id")
    if client_order_id is not None and (
        not isinstance(client_order_id, str) or not 0 < len(client_order_id) <= 128
    ):
        raise invalid("client_order_id must be 1-128 characters")
    extended_hours = body.get("extended_hours", False)
    if not isinstance(extended_hours, bool):
        raise invalid("invalid extended_hours")
    return OrderSpec(
        symbol=symbol,
        side=side,
        type=order_type,
        time_in_force=tif,
        qty=_decimal_field(body, "qty"),
        notional=_decimal_field(body, "notional"),
        limit_price=_decimal_field(body, "limit_price"),
        stop_price=_decimal_field(body, "stop_price"),
        client_order_id=client_order_id,
        extended_hours=extended_hours,
        order_class=cast("OrderClassName", order_class),
        take_profit=take_profit.get("limit_price"),
        stop_loss_stop=stop_loss.get("stop_price"),
        stop_loss_limit=stop_loss.get("limit_price"),
        trail_price=_decimal_field(body, "trail_price"),
        trail_percent=_decimal_field(body, "trail_percent"),
    )


def _leg(body: dict[str, Any], name: str, fields: tuple[str, ...]) -> dict[str, Decimal]:
    raw = body.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid(f"invalid {name}")
    values: dict[str, Decimal] = {}
    for field in fields:
        value = decimal_value(raw.get(field), f"{name}.{field}")
        if value is not None:
            values[field] = value
    if not values:
        raise invalid(f"{name}.{fields[0]} is required")
    return values


def quote_json(quote: Quote) -> dict[str, Any]:
    """A latest-quote object of the market data API (``/v2/stocks/...``)."""
    return {
        "t": ts(quote.timestamp),
        "ax": "V",
        "ap": float(quote.ask),
        "as": quote.ask_size,
        "bx": "V",
        "bp": float(quote.bid),
        "bs": quote.bid_size,
        "c": ["R"],
        "z": "C",
    }


def clock_json(clock: MarketClock) -> dict[str, Any]:
    """The ``GET /v2/clock`` body (New York time, as Alpaca reports it)."""
    now = clock.now()
    return {
        "timestamp": now.astimezone(NEW_YORK).isoformat(),
        "is_open": clock.is_open(now),
        "next_open": clock.next_open(now).isoformat(),
        "next_close": clock.next_close(now).isoformat(),
    }
