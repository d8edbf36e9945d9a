"""REST routes of the market data API: latest quotes (``/v2/stocks/...``).

They have their own rate budget (the ``data`` one, see :mod:`sim.rest`), and
answer like Alpaca's data API: 400 for a malformed symbol, quotes only for
listed assets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from sim.prices import is_valid_symbol
from sim.rest_io import json_response
from sim.wire import quote_json

if TYPE_CHECKING:
    from sim.venue import PaperVenue


class MarketDataRoutes:
    """Handlers of the latest-quote routes.

    Args:
        venue: The venue whose prices and asset book the routes serve.
    """

    def __init__(self, venue: PaperVenue) -> None:
        """Bind to ``venue``."""
        self._venue = venue
        self._engine = venue.engine

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
