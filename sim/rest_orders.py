"""REST routes of ``/v2/orders``: submit, list, get, replace and cancel orders."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from aiohttp import web

from sim.errors import RequestRefusedError
from sim.rest_io import flag_param, json_body, json_response, parse_time
from sim.wire import NOT_FOUND, decimal_value, invalid, parse_order_request

if TYPE_CHECKING:
    from sim.orders import SimOrder
    from sim.venue import PaperVenue
    from sim.wire import TimeInForceName

_TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})


class OrderRoutes:
    """Handlers of the order routes.

    Args:
        venue: The venue whose engine takes the orders (and whose matcher they wake).
    """

    def __init__(self, venue: PaperVenue) -> None:
        """Bind to ``venue``."""
        self._venue = venue
        self._engine = venue.engine

    async def post_order(self, request: web.Request) -> web.Response:
        """``POST /v2/orders``."""
        spec = parse_order_request(await json_body(request))
        order = self._engine.submit(spec)
        self._venue.wake_matcher()
        return json_response(self._engine.order_json(order))

    async def get_orders(self, request: web.Request) -> web.Response:
        """``GET /v2/orders`` with status, limit, after, until, direction, symbols, side."""
        query = request.query
        status = query.get("status", "open")
        if status not in {"open", "closed", "all"}:
            raise invalid(f"invalid status: {status!r}")
        direction = query.get("direction", "desc")
        if direction not in {"asc", "desc"}:
            raise invalid(f"invalid direction: {direction!r}")
        try:
            limit = int(query.get("limit", "50"))
        except ValueError as exc:
            raise invalid("invalid limit") from exc
        if not 1 <= limit <= 500:
            raise invalid("limit must be between 1 and 500")
        side = query.get("side")
        if side is not None and side not in {"buy", "sell"}:
            raise invalid(f"invalid side: {side!r}")
        symbols_raw = query.get("symbols")
        symbols = [s for s in symbols_raw.split(",") if s] if symbols_raw else None
        nested = flag_param(query.get("nested"), "nested")
        orders = self._engine.list_orders(
            status=status,
            limit=limit,
            after=parse_time(query.get("after"), "after"),
            until=parse_time(query.get("until"), "until"),
            direction=direction,
            symbols=symbols,
            side=side,
            nested=nested,
        )
        return json_response([self._engine.order_json(o, nested=nested) for o in orders])

    async def delete_orders(self, _request: web.Request) -> web.Response:
        """``DELETE /v2/orders``: cancel every open order (207 multi-status)."""
        canceled = self._engine.cancel_all()
        body = [{"id": order.id, "status": 200, "body": order.to_json()} for order in canceled]
        return json_response(body, 207)

    async def get_order(self, request: web.Request) -> web.Response:
        """``GET /v2/orders/{order_id}?nested=``."""
        nested = flag_param(request.query.get("nested"), "nested")
        return json_response(self._engine.order_json(self._order(request), nested=nested))

    async def get_order_by_client_id(self, request: web.Request) -> web.Response:
        """``GET /v2/orders:by_client_order_id?client_order_id=``."""
        client_order_id = request.query.get("client_order_id")
        if not client_order_id:
            raise invalid("client_order_id is required")
        return json_response(self._engine.get_by_client_id(client_order_id).to_json())

    async def delete_order(self, request: web.Request) -> web.Response:
        """``DELETE /v2/orders/{order_id}``: 204, or 422 if the order is final."""
        self._engine.cancel(self._order(request).id)
        return web.Response(status=204)

    async def patch_order(self, request: web.Request) -> web.Response:
        """``PATCH /v2/orders/{order_id}``: replace; answers the new order."""
        order = self._order(request)
        body = await json_body(request)
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        tif = body.get("time_in_force")
        if tif is not None and (not isinstance(tif, str) or tif not in _TIME_IN_FORCE):
            raise invalid(f"invalid time_in_force: {tif!r}")
        client_order_id = body.get("client_order_id")
        if client_order_id is not None and (
            not isinstance(client_order_id, str) or not 0 < len(client_order_id) <= 128
        ):
            raise invalid("invalid client_order_id")
        new = self._engine.replace(
            order.id,
            qty=decimal_value(body.get("qty"), "qty"),
            limit_price=decimal_value(body.get("limit_price"), "limit_price"),
            stop_price=decimal_value(body.get("stop_price"), "stop_price"),
            trail=decimal_value(body.get("trail"), "trail"),
            time_in_force=cast("TimeInForceName | None", tif),
            client_order_id=client_order_id,
        )
        self._venue.wake_matcher()
        return json_response(new.to_json())

    def _order(self, request: web.Request) -> SimOrder:
        order_id = request.match_info["order_id"]
        try:
            return self._engine.get(order_id)
        except RequestRefusedError:
            raise RequestRefusedError(404, NOT_FOUND, f"order not found for {order_id}") from None
