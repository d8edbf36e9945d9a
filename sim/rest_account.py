"""REST routes of the account: account, configurations, activities, history, positions.

Also the market's calendar routes (``/v2/clock``, ``/v2/calendar``) and the
asset list (``/v2/assets``), which answer from the venue clock and asset book.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sim.clock import NEW_YORK
from sim.errors import RequestRefusedError
from sim.orders import ZERO
from sim.rest_io import int_param, json_body, json_response, parse_date, parse_time
from sim.wire import NOT_FOUND, asset_id_of, clock_json, dec, decimal_value, invalid, ts

if TYPE_CHECKING:
    from sim.venue import PaperVenue

PCT_STEP = Decimal("0.000001")
CALENDAR_DEFAULT_SPAN = timedelta(days=365)
CALENDAR_FIRST_DAY = date(2015, 1, 1)
CALENDAR_MAX_AHEAD = timedelta(days=2 * 365)
HISTORY_MAX_DAYS = 30 * 365
ACTIVITY_PAGE_SIZE = 100
_PERIOD = re.compile(r"^([1-9][0-9]{0,3})(D|W|M|A)$")
_PERIOD_DAYS = {"D": 1, "W": 7, "M": 30, "A": 365}
_TIMEFRAMES = frozenset({"1Min", "5Min", "15Min", "1H", "1D"})


class AccountRoutes:
    """Handlers of the account, position, asset and calendar routes.

    Args:
        venue: The venue whose engine, prices and clock the routes serve.
    """

    def __init__(self, venue: PaperVenue) -> None:
        """Bind to ``venue``."""
        self._venue = venue
        self._engine = venue.engine

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
        start = parse_date(request.query.get("start"), "start") or today - CALENDAR_DEFAULT_SPAN
        end = parse_date(request.query.get("end"), "end") or today + CALENDAR_DEFAULT_SPAN
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
        return json_response(self._engine.configure(await json_body(request)))

    async def get_activities(self, request: web.Request) -> web.Response:
        """``GET /v2/account/activities[/{activity_type}]`` (FILL, and CSD for the funding)."""
        query = request.query
        path_type = request.match_info.get("activity_type")
        raw_types = path_type or query.get("activity_types") or ""
        types = {t.strip() for t in raw_types.split(",") if t.strip()}
        direction = query.get("direction", "desc")
        if direction not in {"asc", "desc"}:
            raise invalid(f"invalid direction: {direction!r}")
        page_size = int_param(query.get("page_size"), "page_size", ACTIVITY_PAGE_SIZE, 1, 100)
        on_day = parse_date(query.get("date"), "date")
        after = parse_time(query.get("after"), "after")
        until = parse_time(query.get("until"), "until")
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
        end = parse_time(query.get("end"), "end") or now
        if query.get("start") is not None:
            start = parse_time(query.get("start"), "start") or start
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
