"""The ``/_sim`` control API (served only with ``control_enabled``; no auth: loopback use).

Every route answers JSON; a bad request gets 400 ``{"message": ...}``.

=========================  ==========================================================
``GET /_sim/state``        account, positions, open orders, quotes, clock, faults
``POST /_sim/reset``       fresh account, prices, clock and faults (same seed)
``POST /_sim/tick``        ``{"n": 1}``: advance prices n ticks, matching after each
``POST /_sim/clock``       ``{"advance_s": 86400}`` or ``{"at": "2027-03-08T09:30:00-05:00"}``:
                           jump the clock forward; due orders expire, queued ones open
``POST /_sim/price``       ``{"symbol": "AAPL", "price": 150.0, "drift": -0.01,
                           "volatility": 0.0, "spread_bps": 5}`` (all but symbol optional)
``POST /_sim/faults``      arm faults, any subset of:
                           ``{"latency": {"POST /v2/orders": 0.5},
                           "errors": [{"route": "POST /v2/orders", "status": 503, "count": 2}],
                           "drops": [{"route": "POST /v2/orders", "count": 1, "mode": "close"}],
                           "reject_orders": 1, "stream_drop_interval_s": 2.0,
                           "stream_mute": true}``
``DELETE /_sim/faults``    disarm every fault
``POST /_sim/stream/drop`` cut every trade stream connection now: ``{"dropped": n}``
=========================  ==========================================================

Routes are named ``"METHOD /path/template"`` (see :mod:`sim.faults`); ``"*"`` is every
``/v2`` route. Each operation is also a :class:`sim.venue.PaperVenue` method.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import structlog
from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sim.venue import PaperVenue

log = structlog.get_logger(__name__)


class ControlRequestError(Exception):
    """A control request that cannot be applied (answered with 400)."""


class _Tick(msgspec.Struct, forbid_unknown_fields=True):
    n: int = 1


class _Clock(msgspec.Struct, forbid_unknown_fields=True):
    advance_s: float | None = None
    at: datetime | None = None


class _Price(msgspec.Struct, forbid_unknown_fields=True):
    symbol: str
    price: float | None = None
    drift: float | None = None
    volatility: float | None = None
    spread_bps: float | None = None


class _ErrorFault(msgspec.Struct, forbid_unknown_fields=True):
    route: str
    status: int
    count: int = 1


class _DropFault(msgspec.Struct, forbid_unknown_fields=True):
    route: str = "POST /v2/orders"
    count: int = 1
    mode: str = "close"


class _Faults(msgspec.Struct, forbid_unknown_fields=True):
    latency: dict[str, float] = msgspec.field(default_factory=dict)
    errors: list[_ErrorFault] = msgspec.field(default_factory=list)
    drops: list[_DropFault] = msgspec.field(default_factory=list)
    reject_orders: int = 0
    stream_drop_interval_s: float | None = None
    stream_mute: bool | None = None


T = TypeVar("T")


async def _decode(request: web.Request, kind: type[T]) -> tuple[T, set[str]]:
    """The body as ``kind``, and the names of the fields the client actually sent."""
    raw = await request.read()
    try:
        data = msgspec.json.decode(raw or b"{}")
        return msgspec.convert(data, type=kind), set(data) if isinstance(data, dict) else set()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ControlRequestError(str(exc)) from exc


class ControlApi:
    """Routes of the control API.

    Args:
        venue: The venue to control.
    """

    def __init__(self, venue: PaperVenue) -> None:
        """Bind to ``venue``."""
        self._venue = venue

    def routes(self) -> list[web.RouteDef]:
        """Every control route."""
        return [
            web.get("/_sim/state", self._guard(self.state)),
            web.post("/_sim/reset", self._guard(self.reset)),
            web.post("/_sim/tick", self._guard(self.tick)),
            web.post("/_sim/clock", self._guard(self.clock)),
            web.post("/_sim/price", self._guard(self.price)),
            web.post("/_sim/faults", self._guard(self.arm_faults)),
            web.delete("/_sim/faults", self._guard(self.clear_faults)),
            web.post("/_sim/stream/drop", self._guard(self.drop_streams)),
        ]

    @staticmethod
    def _guard(
        handler: Callable[[web.Request], Awaitable[dict[str, Any]]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            try:
                body = await handler(request)
            except (ControlRequestError, ValueError) as exc:
                log.warning("sim.control.refused", path=request.path, error=str(exc))
                return _json({"message": str(exc)}, 400)
            log.info("sim.control.applied", path=request.path)
            return _json(body, 200)

        return guarded

    async def state(self, _request: web.Request) -> dict[str, Any]:
        """``GET /_sim/state``."""
        return self._venue.snapshot()

    async def reset(self, _request: web.Request) -> dict[str, Any]:
        """``POST /_sim/reset``."""
        self._venue.reset()
        return self._venue.snapshot()

    async def tick(self, request: web.Request) -> dict[str, Any]:
        """``POST /_sim/tick``."""
        body, _ = await _decode(request, _Tick)
        if not 1 <= body.n <= 100_000:
            raise ControlRequestError("n must be between 1 and 100000")
        self._venue.tick(body.n)
        return self._venue.snapshot()

    async def clock(self, request: web.Request) -> dict[str, Any]:
        """``POST /_sim/clock``."""
        body, _ = await _decode(request, _Clock)
        if (body.advance_s is None) == (body.at is None):
            raise ControlRequestError("give exactly one of advance_s, at")
        if body.at is not None:
            if body.at.tzinfo is None:
                raise ControlRequestError("at needs a UTC offset")
            self._venue.set_time(body.at)
        else:
            assert body.advance_s is not None
            self._venue.advance_clock(body.advance_s)
        return self._venue.snapshot()

    async def price(self, request: web.Request) -> dict[str, Any]:
        """``POST /_sim/price``."""
        body, _ = await _decode(request, _Price)
        venue = self._venue
        if body.drift is not None:
            venue.set_drift(body.symbol, body.drift)
        if body.volatility is not None:
            venue.set_volatility(body.symbol, body.volatility)
        if body.spread_bps is not None:
            venue.set_spread_bps(body.symbol, body.spread_bps)
        if body.price is not None:
            venue.set_price(body.symbol, body.price)
        return venue.snapshot()

    async def arm_faults(self, request: web.Request) -> dict[str, Any]:
        """``POST /_sim/faults``."""
        body, present = await _decode(request, _Faults)
        venue = self._venue
        for route, seconds in body.latency.items():
            venue.set_latency(route, seconds)
        for error in body.errors:
            venue.inject_errors(error.route, error.status, error.count)
        for drop in body.drops:
            if drop.mode not in {"close", "504"}:
                raise ControlRequestError("mode must be 'close' or '504'")
            venue.drop_after_accept(
                drop.route, drop.count, "close" if drop.mode == "close" else "504"
            )
        if body.reject_orders:
            venue.reject_next_orders(body.reject_orders)
        if "stream_drop_interval_s" in present:
            venue.set_stream_drop_interval(body.stream_drop_interval_s)
        if body.stream_mute is not None:
            venue.mute_streams(body.stream_mute)
        return venue.snapshot()

    async def clear_faults(self, _request: web.Request) -> dict[str, Any]:
        """``DELETE /_sim/faults``."""
        self._venue.clear_faults()
        return self._venue.snapshot()

    async def drop_streams(self, _request: web.Request) -> dict[str, Any]:
        """``POST /_sim/stream/drop``."""
        return {"dropped": self._venue.drop_streams()}


def _json(body: Any, status: int) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )
