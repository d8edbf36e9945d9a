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
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec
import structlog
from aiohttp import web

from sim.clock import NEW_YORK
from sim.engine import ZERO
from sim.errors import RequestRefusedError
from sim.prices import is_valid_symbol
from sim.wire import (
    NOT_FOUND,
    asset_id_of,
    clock_json,
    dec,
    decimal_value,
    invalid,
    parse_order_request,
    quote_json,
    ts,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sim.engine import SimOrder
    from sim.venue import PaperVenue
    from sim.wire import TimeInForceName

log = structlog.get_logger(__name__)

RATE_WINDOW_S = 60.0
RATE_LIMITED = 42910000
PCT_STEP = Decimal("0.000001")
CALENDAR_DEFAULT_SPAN = timedelta(days=365)
CALENDAR_FIRST_DAY = date(2015, 1, 1)
CALENDAR_MAX_AHEAD = timedelta(days=2 * 365)
HISTORY_MAX_DAYS = 30 * 365
ACTIVITY_PAGE_SIZE = 100
_PERIOD = re.compile(r"^([1-9][0-9]{0,3})(D|W|M|A)$")
_PERIOD_DAYS = {"D": 1, "W": 7, "M": 30, "A": 365}
_TIMEFRAMES = frozenset({"1Min", "5Min", "15Min", "1H", "1D"})
_TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
_ERROR_BODIES: dict[int, dict[str, Any]] = {
    429: {"code": RATE_LIMITED, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error occurred"},
    502: {"message": "Bad Gateway"},
    503: {"message": "Service Unavailable"},
    504: {"message": "Gateway Timeout"},
}


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )


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
        self._engine = venue.engine
        self.limiter = RateLimiter(venue.config.rate_limit_per_min)
        self.rate_limited = 0
        """Requests answered 429 for the rate limit (injected 429s not counted)."""

    def routes(self) -> list[web.RouteDef]:
        """Every route of the API."""
        return [
            web.get("/v2/account", self.get_account),
            web.get("/v2/account/configurations", self.get_configurations),
            web.patch("/v2/account/configurations", self.patch_configurations),
            web.get("/v2/account/activities", self.get_activities),
            web.get("/v2/account/activities/{activity_type}", self.get_activities),
            web.get("/v2/account/portfolio/history", self.get_portfolio_history),
            web.get("/v2/clock", self.get_clock),
            web.get("/v2/calendar", self.get_calendar),
            web.get("/v2/assets", self.get_assets),
            web.get("/v2/assets/{symbol}", self.get_asset),
            web.post("/v2/orders", self.post_order),
            web.get("/v2/orders", self.get_orders),
            web.delete("/v2/orders", self.delete_orders),
            web.get("/v2/orders:by_client_order_id", self.get_order_by_client_id),
            web.get("/v2/orders/{order_id}", self.get_order),
            web.patch("/v2/orders/{order_id}", self.patch_order),
            web.delete("/v2/orders/{order_id}", self.delete_order),
            web.get("/v2/positions", self.get_positions),
            web.delete("/v2/positions", self.delete_positions),
            web.get("/v2/positions/{symbol}", self.get_position),
            web.delete("/v2/positions/{symbol}", self.delete_position),
            web.get("/v2/stocks/quotes/latest", self.get_latest_quotes),
            web.get("/v2/stocks/{symbol}/quotes/latest", self.get_latest_quote),
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

    # ---------------------------------------------------------------- account

    async def get_account(self, _request: web.Request) -> web.Response:
        """``GET /v2/account``."""
        return json_response(self.account_json())

    def account_json(self) -> dict[str, Any]:
        """The Account entity."""
        engine = self._engine
        account = engine.account()
        equity = dec(account.equity)
        config = self._venue.config
        shorting = (
            not config.cash_account
            and config.shorting_enabled
            and not engine.configurations["no_shorting"]
        )
        return {
            "id": engine.account_id,
            "account_number": engine.account_number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": dec(account.buying_power),
            "regt_buying_power": dec(account.regt_buying_power),
            "daytrading_buying_power": dec(account.daytrading_buying_power),
            "effective_buying_power": dec(account.buying_power),
            "non_marginable_buying_power": dec(account.non_marginable_buying_power),
            "options_buying_power": dec(account.non_marginable_buying_power),
            "bod_dtbp": dec(account.daytrading_buying_power),
            "cash": dec(account.cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "portfolio_value": equity,
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": ts(engine.created_at),
            "trade_suspended_by_user": bool(engine.configurations["suspend_trade"]),
            "multiplier": str(account.multiplier),
            "shorting_enabled": shorting,
            "equity": equity,
            "last_equity": dec(engine.last_equity),
            "long_market_value": dec(account.long_market_value),
            "short_market_value": dec(account.short_market_value),
            "position_market_value": dec(account.long_market_value - account.short_market_value),
            "initial_margin": dec(account.initial_margin),
            "maintenance_margin": dec(account.maintenance_margin),
            "last_maintenance_margin": dec(engine.last_maintenance_margin),
            "sma": "0",
            "daytrade_count": 0,
            "balance_asof": self._venue.clock.now().astimezone(NEW_YORK).date().isoformat(),
            "options_approved_level": 0,
            "options_trading_level": 0,
            "intraday_adjustments": "0",
            "pending_reg_taf_fees": "0",
        }

    async def get_clock(self, _request: web.Request) -> web.Response:
        """``GET /v2/clock``."""
        return json_response(clock_json(self._venue.clock))

    async def get_calendar(self, request: web.Request) -> web.Response:
        """``GET /v2/calendar?start=&end=``: sessions of the venue clock (a year each way)."""
        today = self._venue.clock.now().astimezone(NEW_YORK).date()
        start = _parse_date(request.query.get("start"), "start") or today - CALENDAR_DEFAULT_SPAN
        end = _parse_date(request.query.get("end"), "end") or today + CALENDAR_DEFAULT_SPAN
        date_type = request.query.get("date_type", "TRADING")
        if date_type not in {"TRADING", "SETTLEMENT"}:
            raise invalid(f"invalid date_type: {date_type!r}")
        # The calendar is known from 2015 to a few years ahead; nothing exists outside.
        start = max(start, CALENDAR_FIRST_DAY)
        end = min(end, today + CALENDAR_MAX_AHEAD)
        if start > end:
            return json_response([])
        clock = self._venue.clock
        sessions = clock.sessions(start - timedelta(days=7), end + timedelta(days=7))
        body: list[dict[str, Any]] = []
        for index, session in enumerate(sessions):
            following = sessions[index + 1].day if index + 1 < len(sessions) else None
            settlement = following or session.day + timedelta(days=1)
            key = session.day if date_type == "TRADING" else settlement
            if not start <= key <= end:
                continue
            body.append(
                {
                    "date": session.day.isoformat(),
                    "open": session.open.astimezone(NEW_YORK).strftime("%H:%M"),
                    "close": session.close.astimezone(NEW_YORK).strftime("%H:%M"),
                    "session_open": session.pre_open.astimezone(NEW_YORK).strftime("%H%M"),
                    "session_close": session.post_close.astimezone(NEW_YORK).strftime("%H%M"),
                    "settlement_date": settlement.isoformat(),
                }
            )
        return json_response(body)

    async def get_assets(self, request: web.Request) -> web.Response:
        """``GET /v2/assets?status=&asset_class=&exchange=``."""
        query = request.query
        status = query.get("status")
        if status is not None and status not in {"active", "inactive"}:
            raise invalid(f"invalid status: {status!r}")
        asset_class = query.get("asset_class", "us_equity")
        if asset_class != "us_equity":
            return json_response([])
        assets = self._engine.assets.select(status=status, exchange=query.get("exchange"))
        return json_response([asset.to_json() for asset in assets])

    async def get_asset(self, request: web.Request) -> web.Response:
        """``GET /v2/assets/{symbol_or_asset_id}``."""
        asset = self._engine.assets.get(request.match_info["symbol"])
        if asset is None:
            raise RequestRefusedError(404, NOT_FOUND, "asset not found")
        return json_response(asset.to_json())

    async def get_configurations(self, _request: web.Request) -> web.Response:
        """``GET /v2/account/configurations``."""
        return json_response(dict(self._engine.configurations))

    async def patch_configurations(self, request: web.Request) -> web.Response:
        """``PATCH /v2/account/configurations``: change some settings; answers all."""
        return json_response(self._engine.configure(await _json_body(request)))

    async def get_activities(self, request: web.Request) -> web.Response:
        """``GET /v2/account/activities[/{activity_type}]`` (FILL, and CSD for the funding)."""
        query = request.query
        path_type = request.match_info.get("activity_type")
        raw_types = path_type or query.get("activity_types") or ""
        types = {t.strip() for t in raw_types.split(",") if t.strip()}
        direction = query.get("direction", "desc")
        if direction not in {"asc", "desc"}:
            raise invalid(f"invalid direction: {direction!r}")
        page_size = _int_param(query.get("page_size"), "page_size", ACTIVITY_PAGE_SIZE, 1, 100)
        on_day = _parse_date(query.get("date"), "date")
        after = _parse_time(query.get("after"), "after")
        until = _parse_time(query.get("until"), "until")
        selected = [
            activity
            for activity in self._engine.activities
            if (not types or activity["activity_type"] in types)
            and _activity_in(activity, on_day=on_day, after=after, until=until)
        ]
        if direction == "desc":
            selected.reverse()
        token = query.get("page_token")
        if token:
            ids = [activity["id"] for activity in selected]
            selected = selected[ids.index(token) + 1 :] if token in ids else []
        return json_response(selected[:page_size])

    async def get_portfolio_history(self, request: web.Request) -> web.Response:
        """``GET /v2/account/portfolio/history``: equity at each session close, then now."""
        query = request.query
        timeframe = query.get("timeframe", "1D")
        if timeframe not in _TIMEFRAMES:
            raise invalid(f"invalid timeframe: {timeframe!r}")
        period = query.get("period", "1M")
        match = _PERIOD.fullmatch(period)
        if match is None:
            raise invalid(f"invalid period: {period!r}")
        now = self._venue.clock.now()
        days = min(int(match.group(1)) * _PERIOD_DAYS[match.group(2)], HISTORY_MAX_DAYS)
        start = now - timedelta(days=days)
        end = _parse_time(query.get("end"), "end") or now
        if query.get("start") is not None:
            start = _parse_time(query.get("start"), "start") or start
        engine = self._engine
        points = [(t, e) for t, e in engine.history if start <= t <= end]
        if end >= now:
            points.append((now, engine.account().equity))
        base = points[0][1] if points else engine.last_equity
        equity = [float(e) for _, e in points]
        profit_loss = [float(e - base) for _, e in points]
        pct = [float(_ratio(e - base, base)) for _, e in points]
        return json_response(
            {
                "timestamp": [int(t.timestamp()) for t, _ in points],
                "equity": equity,
                "profit_loss": profit_loss,
                "profit_loss_pct": pct,
                "base_value": float(base),
                "timeframe": timeframe,
            }
        )

    # ----------------------------------------------------------------- orders

    async def post_order(self, request: web.Request) -> web.Response:
        """``POST /v2/orders``."""
        spec = parse_order_request(await _json_body(request))
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
        nested = _flag_param(query.get("nested"), "nested")
        orders = self._engine.list_orders(
            status=status,
            limit=limit,
            after=_parse_time(query.get("after"), "after"),
            until=_parse_time(query.get("until"), "until"),
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
        nested = _flag_param(request.query.get("nested"), "nested")
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
        body = await _json_body(request)
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

    # -------------------------------------------------------------- positions

    def position_json(self, symbol: str) -> dict[str, Any]:
        """The Position entity of an open position."""
        engine = self._engine
        position = engine.positions[symbol]
        quote = self._venue.prices.quote(symbol)
        mark = quote.mid
        lastday = self._venue.prices.lastday_price(symbol)
        qty = position.qty
        size = abs(qty)
        avg = position.avg_entry_price.quantize(Decimal("0.0001"))
        cost_basis = qty * position.avg_entry_price
        market_value = qty * mark
        unrealized = market_value - cost_basis
        intraday = qty * (mark - lastday)
        held = engine.sell_holds(symbol) if qty > 0 else ZERO
        asset = engine.assets.get(symbol)
        return {
            "asset_id": asset_id_of(symbol),
            "symbol": symbol,
            "exchange": asset.exchange if asset is not None else "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": asset.marginable if asset is not None else True,
            "avg_entry_price": dec(avg),
            "qty": dec(qty),
            "qty_available": dec(max(size - held, ZERO)),
            "side": "long" if qty > 0 else "short",
            "market_value": dec(market_value),
            "cost_basis": dec(cost_basis),
            "unrealized_pl": dec(unrealized),
            "unrealized_plpc": dec(_ratio(unrealized, abs(cost_basis))),
            "unrealized_intraday_pl": dec(intraday),
            "unrealized_intraday_plpc": dec(_ratio(intraday, size * lastday)),
            "current_price": dec(mark),
            "lastday_price": dec(lastday),
            "change_today": dec(_ratio(mark - lastday, lastday)),
        }

    async def get_positions(self, _request: web.Request) -> web.Response:
        """``GET /v2/positions``."""
        return json_response([self.position_json(s) for s in sorted(self._engine.positions)])

    async def get_position(self, request: web.Request) -> web.Response:
        """``GET /v2/positions/{symbol}``."""
        symbol = self._position_symbol(request)
        return json_response(self.position_json(symbol))

    def _position_symbol(self, request: web.Request) -> str:
        symbol = request.match_info["symbol"]
        if symbol not in self._engine.positions:
            by_asset = {asset_id_of(s): s for s in self._engine.positions}
            if symbol in by_asset:
                return by_asset[symbol]
            raise RequestRefusedError(404, NOT_FOUND, "position does not exist")
        return symbol

    async def delete_position(self, request: web.Request) -> web.Response:
        """``DELETE /v2/positions/{symbol}?qty=|percentage=``: a market order closing it."""
        symbol = self._position_symbol(request)
        qty = decimal_value(request.query.get("qty"), "qty")
        percentage = decimal_value(request.query.get("percentage"), "percentage")
        order = self._venue.close_position(symbol, qty=qty, percentage=percentage)
        return json_response(order.to_json())

    async def delete_positions(self, request: web.Request) -> web.Response:
        """``DELETE /v2/positions?cancel_orders=``: close every position (207)."""
        if request.query.get("cancel_orders", "false").lower() == "true":
            self._engine.cancel_all()
        results: list[dict[str, Any]] = []
        for symbol in sorted(self._engine.positions):
            try:
                order = self._venue.close_position(symbol)
            except RequestRefusedError as exc:
                results.append({"symbol": symbol, "status": exc.status, "body": exc.body()})
            else:
                results.append(
                    {"symbol": symbol, "status": 200, "order_id": order.id, "body": order.to_json()}
                )
        return json_response(results, 207)

    # ----------------------------------------------------------------- quotes

    async def get_latest_quotes(self, request: web.Request) -> web.Response:
        """``GET /v2/stocks/quotes/latest?symbols=A,B``."""
        raw = request.query.get("symbols", "")
        symbols = [s for s in raw.split(",") if s]
        if not symbols:
            return json_response({"code": 40010001, "message": "missing symbols"}, 400)
        for symbol in symbols:
            if not is_valid_symbol(symbol):
                return json_response({"message": f"invalid symbol: {symbol}"}, 400)
        prices = self._venue.prices
        listed = [s for s in symbols if self._engine.assets.listed(s)]
        return json_response({"quotes": {s: quote_json(prices.quote(s)) for s in listed}})

    async def get_latest_quote(self, request: web.Request) -> web.Response:
        """``GET /v2/stocks/{symbol}/quotes/latest``."""
        symbol = request.match_info["symbol"]
        if not is_valid_symbol(symbol):
            return json_response({"message": f"invalid symbol: {symbol}"}, 400)
        if not self._engine.assets.listed(symbol):
            return json_response({"message": f"no quote for {symbol}"}, 404)
        quote = self._venue.prices.quote(symbol)
        return json_response({"symbol": symbol, "quote": quote_json(quote)})


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise invalid("request body format is invalid") from exc


def _parse_time(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw + "T00:00:00+00:00")
        except ValueError as exc:
            raise invalid(f"invalid {name}: {raw!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_date(raw: str | None, name: str) -> date | None:
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw[:10])
    except ValueError as exc:
        raise invalid(f"invalid {name}: {raw!r}") from exc


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid(f"invalid {name}: {raw!r}") from exc
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}")
    return value


def _flag_param(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    if raw.lower() not in {"true", "false"}:
        raise invalid(f"invalid {name}: {raw!r}")
    return raw.lower() == "true"


def _activity_in(
    activity: dict[str, Any],
    *,
    on_day: date | None,
    after: datetime | None,
    until: datetime | None,
) -> bool:
    at = datetime.fromisoformat(str(activity.get("transaction_time") or activity["date"]))
    if on_day is not None and at.astimezone(NEW_YORK).date() != on_day:
        return False
    if after is not None and at <= after:
        return False
    return until is None or at < until


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal:
    if denominator == 0:
        return ZERO
    return (numerator / denominator).quantize(PCT_STEP)
