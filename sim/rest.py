"""The Trading API v2 and latest-quote routes, with auth, rate limits and REST faults.

Errors are answered as Alpaca answers them:

* 401 ``{"message": "unauthorized"}``: missing or wrong ``APCA-API-KEY-ID`` /
  ``APCA-API-SECRET-KEY``.
* 403 ``{"code": 40310000, "message": "insufficient buying power", ...}`` and
  ``"insufficient qty available for order (requested: X, available: Y)"``.
* 404 ``{"code": 40410000, "message": "order not found"}`` (also positions, assets).
* 422 ``{"code": 40010001, "message": "client_order_id must be unique"}`` and every
  invalid request (the message names the field); 422 ``{"code": 42210000, ...}``
  when an order cannot be cancelled or replaced any more.
* 429 ``{"code": 42910000, "message": "rate limit exceeded"}`` past
  ``rate_limit_per_min`` requests per minute per key (market data has its own budget).

Every ``/v2`` response carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``
and ``X-RateLimit-Reset`` (Unix time the window restarts).

The route handlers live by resource: :mod:`sim.rest_orders`,
:mod:`sim.rest_account` (account, positions, assets, clock) and
:mod:`sim.rest_market_data`; :mod:`sim.rest_io` holds what they share.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aiohttp import web

from sim.errors import RequestRefusedError
from sim.rest_account import AccountRoutes
from sim.rest_io import json_response
from sim.rest_market_data import MarketDataRoutes
from sim.rest_orders import OrderRoutes
from sim.wire import NOT_FOUND

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sim.venue import PaperVenue

__all__ = ["RATE_LIMITED", "RateLimiter", "TradingApi", "json_response", "route_key"]

log = structlog.get_logger(__name__)

RATE_WINDOW_S = 60.0
RATE_LIMITED = 42910000
_ERROR_BODIES: dict[int, dict[str, Any]] = {
    429: {"code": RATE_LIMITED, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error occurred"},
    502: {"message": "Bad Gateway"},
    503: {"message": "Service Unavailable"},
    504: {"message": "Gateway Timeout"},
}


def route_key(request: web.Request) -> str:
    """``"METHOD /path/template"`` of the matched route (the fault plan's route names)."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else request.path
    return f"{request.method} {template}"


class RateLimiter:
    """Fixed one-minute windows per key.

    Args:
        limit: Requests allowed per window.
    """

    def __init__(self, limit: int) -> None:
        """Start with no windows."""
        self.limit = limit
        self._windows: dict[str, tuple[float, int]] = {}

    def reset(self) -> None:
        """Forget every window."""
        self._windows.clear()

    def hit(self, key: str) -> tuple[bool, int, int]:
        """Count one request of ``key``.

        Returns:
            Whether it is allowed, the requests remaining, and the reset time (Unix s).
        """
        now = time.time()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= RATE_WINDOW_S:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        return count <= self.limit, max(self.limit - count, 0), math.ceil(start + RATE_WINDOW_S)


class TradingApi:
    """aiohttp routes of the Trading API v2 and the latest-quote data API.

    Args:
        venue: The venue whose engine, prices, clock and faults the routes serve.
    """

    def __init__(self, venue: PaperVenue) -> None:
        """Bind to ``venue``."""
        self._venue = venue
        self.orders = OrderRoutes(venue)
        self.account = AccountRoutes(venue)
        self.market_data = MarketDataRoutes(venue)
        self.limiter = RateLimiter(venue.config.rate_limit_per_min)
        self.rate_limited = 0
        """Requests answered 429 for the rate limit (injected 429s not counted)."""

    def routes(self) -> list[web.RouteDef]:
        """Every route of the API."""
        account, orders, data = self.account, self.orders, self.market_data
        return [
            web.get("/v2/account", account.get_account),
            web.get("/v2/account/configurations", account.get_configurations),
            web.patch("/v2/account/configurations", account.patch_configurations),
            web.get("/v2/account/activities", account.get_activities),
            web.get("/v2/account/activities/{activity_type}", account.get_activities),
            web.get("/v2/account/portfolio/history", account.get_portfolio_history),
            web.get("/v2/clock", account.get_clock),
            web.get("/v2/calendar", account.get_calendar),
            web.get("/v2/assets", account.get_assets),
            web.get("/v2/assets/{symbol}", account.get_asset),
            web.post("/v2/orders", orders.post_order),
            web.get("/v2/orders", orders.get_orders),
            web.delete("/v2/orders", orders.delete_orders),
            web.get("/v2/orders:by_client_order_id", orders.get_order_by_client_id),
            web.get("/v2/orders/{order_id}", orders.get_order),
            web.patch("/v2/orders/{order_id}", orders.patch_order),
            web.delete("/v2/orders/{order_id}", orders.delete_order),
            web.get("/v2/positions", account.get_positions),
            web.delete("/v2/positions", account.delete_positions),
            web.get("/v2/positions/{symbol}", account.get_position),
            web.delete("/v2/positions/{symbol}", account.delete_position),
            web.get("/v2/stocks/quotes/latest", data.get_latest_quotes),
            web.get("/v2/stocks/{symbol}/quotes/latest", data.get_latest_quote),
        ]

    # ------------------------------------------------------------ middleware

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Latency, rate limit, auth, injected errors and accept-then-drop for ``/v2``."""
        if not request.path.startswith("/v2/"):
            return await handler(request)
        faults = self._venue.faults
        route = route_key(request)
        if route == "POST /v2/orders":
            self._venue.order_post_arrivals.append(time.time())
        latency = faults.latency_for(route)
        if latency > 0:
            await anyio.sleep(latency)
        key_id = request.headers.get("APCA-API-KEY-ID", "")
        secret = request.headers.get("APCA-API-SECRET-KEY", "")
        budget = "data" if request.path.startswith("/v2/stocks/") else "trading"
        allowed, remaining, reset = self.limiter.hit(f"{budget}:{key_id}")
        response = await self._answer(request, handler, route, key_id, secret, allowed=allowed)
        response.headers["X-RateLimit-Limit"] = str(self.limiter.limit)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(reset)
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        route: str,
        key_id: str,
        secret: str,
        *,
        allowed: bool,
    ) -> web.StreamResponse:
        faults = self._venue.faults
        if not self._venue.authorize(key_id, secret):
            return json_response({"message": "unauthorized"}, 401)
        if not allowed:
            self.rate_limited += 1
            log.warning("sim.http.rate_limited", route=route)
            return json_response(_ERROR_BODIES[429], 429)
        injected = faults.take_error(route)
        if injected is not None:
            log.info("sim.fault.error", route=route, status=injected)
            return json_response(_ERROR_BODIES[injected], injected)
        drop = faults.take_drop(route)
        try:
            response = await handler(request)
        except RequestRefusedError as exc:
            response = json_response(exc.body(), exc.status)
        except web.HTTPNotFound:
            response = json_response({"code": NOT_FOUND, "message": "endpoint not found"}, 404)
        except web.HTTPMethodNotAllowed:
            response = json_response({"code": 40510000, "message": "method not allowed"}, 405)
        if drop is None:
            return response
        log.info("sim.fault.accept_then_drop", route=route, mode=drop, status=response.status)
        if drop == "504":
            return json_response(_ERROR_BODIES[504], 504)
        # Cut the connection; aiohttp then fails (quietly) to write the response.
        transport = request.transport
        if transport is not None:
            transport.abort()
        return response
