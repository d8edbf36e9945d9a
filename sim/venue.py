"""PaperVenue: the Alpaca-compatible local broker, served over HTTP and websocket.

One port serves the Trading API under ``/v2/...``, latest quotes under
``/v2/stocks/...``, the trade stream at ``/stream`` and (with
``control_enabled``) the control API under ``/_sim/...``. Point alpaca-py at it::

    TradingClient(key, secret, url_override=base_url)
    TradingStream(key, secret, url_override=base_url.replace("http", "ws") + "/stream")
    StockHistoricalDataClient(key, secret, url_override=base_url)

In-process, start it in a task group and drive it with the control methods
(the same operations the ``/_sim`` endpoint offers)::

    venue = PaperVenue(SimConfig(port=0))
    async with anyio.create_task_group() as tg:
        base_url = await tg.start(venue.run)
        venue.set_drift("AAPL", -0.01)
        ...
        tg.cancel_scope.cancel()

The control methods are plain synchronous methods: call them from the event
loop the venue runs in, never from another thread.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aiohttp import web

from sim.clock import MarketClock
from sim.control import ControlApi
from sim.engine import MatchingEngine
from sim.errors import RequestRefusedError
from sim.faults import FaultPlan
from sim.orders import QTY_STEP, SimOrder, TradeEvent
from sim.prices import PriceModel, Quote
from sim.rest import TradingApi
from sim.store import VenueStore
from sim.stream import StreamHub
from sim.wire import FORBIDDEN, OrderSpec, dec, invalid

if TYPE_CHECKING:
    from sim.config import DropMode, SimConfig

log = structlog.get_logger(__name__)

EVENT_LOG_SIZE = 10_000
SHUTDOWN_GRACE_S = 2.0


class PaperVenue:
    """A local broker speaking Alpaca's Trading API, misbehaving on demand.

    Args:
        config: Venue settings.

    Attributes:
        config: The settings it was made with.
        store: The SQLite state file (``config.state_path``), None without one.
        clock: Market clock (sessions, clock jumps).
        prices: Price model (quotes, drift, spread).
        engine: Matching engine (orders, positions, account).
        faults: Armed faults.
        streams: Trade stream connections.
        events: The most recent trade events, oldest first (bounded).
        order_post_arrivals: Wall-clock arrival time of each ``POST /v2/orders``,
            taken before any latency (bounded): when a request left its client,
            give or take the loopback hop.
    """

    def __init__(self, config: SimConfig) -> None:
        """Build the venue (resuming ``config.state_path`` if it holds an account).

        Nothing listens until :meth:`run`.

        Raises:
            SimConfigError: If the state file cannot be opened.
        """
        self.config = config
        self.clock = MarketClock(config.clock)
        self.prices = PriceModel(config, self.clock.now, self.clock.phase)
        self.faults = FaultPlan.from_config(config)
        self.streams = StreamHub(self.authorize, self.faults, config.stream_queue_size)
        self.events: deque[TradeEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self.order_post_arrivals: deque[float] = deque(maxlen=EVENT_LOG_SIZE)
        self.store = VenueStore(config.state_path) if config.state_path else None
        self.engine = MatchingEngine(
            config, self.clock, self.prices, on_event=self._on_event, store=self.store
        )
        self.api = TradingApi(self)
        self._base_url: str | None = None
        self._matcher_wake: anyio.Event | None = None
        self._dropper_wake: anyio.Event | None = None

    # ------------------------------------------------------------- addresses

    @property
    def base_url(self) -> str:
        """``http://host:port`` while running.

        Raises:
            RuntimeError: If the venue is not running.
        """
        if self._base_url is None:
            raise RuntimeError("the paper venue is not running")
        return self._base_url

    @property
    def stream_url(self) -> str:
        """``ws://host:port/stream`` while running."""
        return "ws" + self.base_url.removeprefix("http") + "/stream"

    def authorize(self, key_id: str, secret_key: str) -> bool:
        """Whether the key pair may use the venue."""
        if not key_id or not secret_key:
            return False
        if self.config.key_id is None or self.config.secret_key is None:
            return True
        return key_id == self.config.key_id and secret_key == self.config.secret_key

    def _on_event(self, event: TradeEvent) -> None:
        self.events.append(event)
        self.streams.publish(event)

    # --------------------------------------------------------------- serving

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; reports the base URL through ``task_status``."""
        app = web.Application(middlewares=[self.api.middleware])
        app.add_routes(self.api.routes())
        app.router.add_get("/stream", self.streams.handle)
        if self.config.control_enabled:
            app.add_routes(ControlApi(self).routes())
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            host = f"[{host}]" if ":" in host else host
            self._base_url = f"http://{host}:{port}"
            self._matcher_wake = anyio.Event()
            self._dropper_wake = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._match_loop)
                tg.start_soon(self._stream_drop_loop)
                log.info("sim.venue.listening", url=self._base_url, seed=self.config.seed)
                task_status.started(self._base_url)
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2 * SHUTDOWN_GRACE_S):
                await self.streams.close_all()
                await runner.cleanup()
            if self.store is not None:
                # Last prices, so a restart resumes from them rather than the start price.
                self.store.save_account(self.engine.account_record())
            self._base_url = None
            log.info("sim.venue.stopped")

    def wake_matcher(self) -> None:
        """Run a matching pass soon (after ``fill_delay_s``), e.g. after a new order."""
        if self._matcher_wake is not None:
            self._matcher_wake.set()

    async def _match_loop(self) -> None:
        interval = self.config.tick_interval_s
        next_tick = anyio.current_time() + interval if interval > 0 else math.inf
        while True:
            wake = self._matcher_wake
            assert wake is not None
            with anyio.move_on_after(max(next_tick - anyio.current_time(), 0)):
                await wake.wait()
            if wake.is_set():
                self._matcher_wake = anyio.Event()
                if self.config.fill_delay_s > 0:
                    await anyio.sleep(self.config.fill_delay_s)
            else:
                self.prices.tick()
                next_tick += interval
            if self.engine.match():
                self.wake_matcher()

    async def _stream_drop_loop(self) -> None:
        while True:
            wake = self._dropper_wake = anyio.Event()
            interval = self.faults.stream_drop_interval_s
            with anyio.move_on_after(interval or math.inf) as scope:
                await wake.wait()
            if scope.cancelled_caught:
                self.streams.drop_all()

    # ------------------------------------------------------- order shortcuts

    def close_position(
        self, symbol: str, *, qty: Decimal | None = None, percentage: Decimal | None = None
    ) -> SimOrder:
        """Submit the market order that closes (part of) a position.

        Raises:
            RequestRefusedError: 404 no position, 422 bad qty/percentage, 403 shares held.
        """
        engine = self.engine
        position = engine.positions.get(symbol)
        if position is None:
            raise RequestRefusedError(404, 40410000, "position does not exist")
        size = abs(position.qty)
        if qty is not None and percentage is not None:
            raise invalid("qty and percentage cannot be used together")
        if qty is not None:
            if qty <= 0:
                raise invalid("qty must be > 0")
            if qty > size:
                raise RequestRefusedError(
                    403,
                    FORBIDDEN,
                    f"insufficient qty available for order (requested: {dec(qty)}, "
                    f"available: {dec(size)})",
                )
            close_qty = qty
        elif percentage is not None:
            if not 0 < percentage <= 100:
                raise invalid("percentage must be between 0 and 100")
            step = QTY_STEP if size != size.to_integral_value() else Decimal(1)
            close_qty = (size * percentage / 100).quantize(step, ROUND_DOWN)
            if close_qty <= 0:
                raise invalid("percentage leaves nothing to close")
        else:
            close_qty = size
        order = engine.submit(
            OrderSpec(
                symbol=symbol,
                side="sell" if position.qty > 0 else "buy",
                type="market",
                time_in_force="day",
                qty=close_qty,
            )
        )
        self.wake_matcher()
        return order

    # --------------------------------------------------------------- control

    def quote(self, symbol: str) -> Quote:
        """Current quote of ``symbol``."""
        return self.prices.quote(symbol)

    def tick(self, n: int = 1) -> None:
        """Advance prices ``n`` ticks, with a matching pass after each."""
        for _ in range(n):
            self.prices.tick()
            self.engine.match()

    def match(self) -> None:
        """Run one matching pass now (no price move)."""
        self.engine.match()

    def advance_clock(self, seconds: float) -> None:
        """Jump the venue clock forward; due ``day``/``gtc`` orders expire at once."""
        self.clock.advance(seconds)
        log.info("sim.clock.advanced", seconds=seconds, offset_s=self.clock.offset_s)
        self.engine.match()

    def set_time(self, when: datetime) -> None:
        """Jump the venue clock forward to ``when`` and run a matching pass.

        Raises:
            ValueError: If ``when`` is in the venue's past.
        """
        self.clock.set_time(when)
        log.info("sim.clock.set", at=when.isoformat(), offset_s=self.clock.offset_s)
        self.engine.match()

    def set_price(self, symbol: str, price: float) -> None:
        """Move the mid of ``symbol`` to ``price`` and match against it."""
        self.prices.set_price(symbol, price)
        self.engine.match()

    def set_drift(self, symbol: str, drift: float) -> None:
        """Relative mid change per tick of ``symbol`` (-0.01 = -1 %/tick)."""
        self.prices.set_drift(symbol, drift)

    def set_volatility(self, symbol: str, volatility: float) -> None:
        """Per-tick relative standard deviation of ``symbol``."""
        self.prices.set_volatility(symbol, volatility)

    def set_spread_bps(self, symbol: str, spread_bps: float) -> None:
        """Full bid/ask spread of ``symbol`` in basis points."""
        self.prices.set_spread_bps(symbol, spread_bps)

    def set_latency(self, route: str, seconds: float) -> None:
        """Delay every request on ``route`` (e.g. ``"POST /v2/orders"``, or ``"*"``)."""
        self.faults.set_latency(route, seconds)

    def inject_errors(self, route: str, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests on ``route`` with 429/500/502/503/504."""
        self.faults.add_errors(route, status, count)

    def drop_after_accept(
        self, route: str = "POST /v2/orders", count: int = 1, mode: DropMode = "close"
    ) -> None:
        """Serve the next ``count`` requests on ``route`` but lose the answer.

        ``close`` cuts the connection without a response; ``504`` answers 504.
        """
        self.faults.add_drops(route, count, mode)

    def reject_next_orders(self, count: int = 1) -> None:
        """Accept the next ``count`` orders, then reject them (``rejected`` event)."""
        if count < 1:
            raise ValueError("count must be >= 1")
        self.engine.rejects_armed += count

    def set_stream_drop_interval(self, seconds: float | None) -> None:
        """Cut every trade stream connection every ``seconds`` (None: stop)."""
        if seconds is not None and seconds <= 0:
            raise ValueError("interval must be > 0")
        self.faults.stream_drop_interval_s = seconds
        if self._dropper_wake is not None:
            self._dropper_wake.set()

    def mute_streams(self, muted: bool = True) -> None:
        """Keep trade streams connected but send nothing (events are lost meanwhile)."""
        self.faults.stream_mute = muted
        log.info("sim.stream.muted", muted=muted)

    def drop_streams(self) -> int:
        """Cut every trade stream connection now; returns how many."""
        return self.streams.drop_all()

    def clear_faults(self) -> None:
        """Disarm every fault (latency, errors, drops, stream faults, armed rejects)."""
        self.faults.clear()
        self.engine.rejects_armed = 0
        if self._dropper_wake is not None:
            self._dropper_wake.set()

    def reset(self) -> None:
        """Fresh account, prices, clock, rate limits and faults; same seed."""
        self.clear_faults()
        self.clock.reset()
        self.prices.reset()
        self.engine.reset()
        self.api.limiter.reset()
        self.events.clear()
        log.info("sim.venue.reset")

    def snapshot(self) -> dict[str, Any]:
        """Account, positions, open orders, clock and faults (``GET /_sim/state``)."""
        account = self.engine.account()
        return {
            "cash": dec(account.cash),
            "equity": dec(account.equity),
            "buying_power": dec(account.buying_power),
            "long_market_value": dec(account.long_market_value),
            "short_market_value": dec(account.short_market_value),
            "positions": {s: dec(p.qty) for s, p in sorted(self.engine.positions.items())},
            "open_orders": [o.id for o in self.engine.open_orders()],
            "orders_total": len(self.engine.orders),
            "clock_offset_s": self.clock.offset_s,
            "market_open": self.clock.is_open(),
            "session_phase": self.clock.phase(),
            "quotes": {
                s: {"bid": dec(q.bid), "ask": dec(q.ask)}
                for s in self.prices.symbols()
                for q in [self.prices.quote(s)]
            },
            "faults": self.faults.to_json(),
            "rejects_armed": self.engine.rejects_armed,
            "stream_connections": self.streams.connection_count,
            "stream_listeners": self.streams.listening_keys(),
        }
