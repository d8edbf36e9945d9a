"""Configuration of the paper venue.

Every knob of the venue is a field of :class:`SimConfig`, a frozen msgspec
Struct so the daemon can embed it in its own TOML configuration and decode it
with the same typed decoder it uses everywhere else.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ClockMode = Literal["always-open", "us-equities"]
DropMode = Literal["close", "504"]


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Price model settings of one symbol.

    Attributes:
        start_price: Mid price at start (and after a reset).
        volatility: Standard deviation of the relative mid change per tick.
        drift: Deterministic relative mid change per tick (``-0.01`` is -1 %/tick).
        spread_bps: Full bid/ask spread in basis points of the mid (at least one cent).
    """

    start_price: float
    volatility: float = 0.0005
    drift: float = 0.0
    spread_bps: float = 2.0


def _default_symbols() -> dict[str, SymbolSpec]:
    return {
        "AAPL": SymbolSpec(start_price=190.0),
        "MSFT": SymbolSpec(start_price=420.0),
        "NVDA": SymbolSpec(start_price=120.0),
        "AMZN": SymbolSpec(start_price=185.0),
        "GOOGL": SymbolSpec(start_price=170.0),
        "TSLA": SymbolSpec(start_price=250.0, volatility=0.001),
        "SPY": SymbolSpec(start_price=520.0, volatility=0.0002, spread_bps=0.5),
        "QQQ": SymbolSpec(start_price=440.0, volatility=0.0003, spread_bps=0.5),
    }


class SimConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of the Alpaca-compatible paper venue.

    Attributes:
        host: Interface to bind.
        port: TCP port to bind; 0 picks a free port (read it from ``PaperVenue.run``).
        seed: Seed of every random choice: prices, ids, partial fills.
        clock: ``always-open`` holds the market open (tests); ``us-equities`` follows
            NYSE regular hours (09:30-16:00 America/New_York, weekdays, no holidays).
        key_id: With ``secret_key``: the only key pair accepted. None: any non-empty pair.
        secret_key: See ``key_id``.
        starting_cash: Cash of a fresh (or reset) account.
        shorting_enabled: False (default): a sell beyond the position (minus the
            quantity already held by open sell orders) is refused with 403
            ``insufficient qty available for order``. True: short sells are allowed
            and checked against buying power.
        partial_fill_probability: Chance that an eligible fill is only partial.
        emit_pending_new: Send a ``pending_new`` event before ``new``.
        rate_limit_per_min: Requests per minute per API key before 429.
        control_enabled: Serve the ``/_sim/...`` control endpoint.
        symbols: Price model of the known symbols.
        default_volatility: Volatility of symbols not in ``symbols``.
        default_spread_bps: Spread of symbols not in ``symbols``.
        unknown_price_range: Start prices of unknown symbols are drawn (seeded,
            per symbol) uniformly from this range.
        quotes_csv: Optional CSV (``symbol,bid,ask`` header, one quote per row) to
            replay instead of the random walk: every tick moves each listed symbol
            to its next row; the last row then holds.
        tick_interval_s: Period of the price tick and matching pass; 0 disables
            automatic ticks (tests then tick with ``PaperVenue.tick``).
        fill_delay_s: Delay between accepting an order and its first matching pass.
        stream_queue_size: Events buffered per websocket before the venue drops
            that (too slow) connection.
        route_latency_s: Added latency per route, e.g. ``{"POST /v2/orders": 0.2}``.
        base_latency_s: Latency of every ``/v2`` request (0: none, the old behaviour).
        latency_jitter_s: Extra latency drawn uniformly from ``[0, this]`` per request.
        stream_drop_interval_s: Close every trade stream this often (None: never).
    """

    host: str = "127.0.0.1"
    port: int = 8790
    seed: int = 0
    clock: ClockMode = "always-open"
    key_id: str | None = None
    secret_key: str | None = None
    starting_cash: float = 100_000.0
    shorting_enabled: bool = False
    partial_fill_probability: float = 0.10
    emit_pending_new: bool = True
    rate_limit_per_min: int = 200
    control_enabled: bool = False
    symbols: dict[str, SymbolSpec] = msgspec.field(default_factory=_default_symbols)
    default_volatility: float = 0.0005
    default_spread_bps: float = 2.0
    unknown_price_range: tuple[float, float] = (20.0, 500.0)
    quotes_csv: str | None = None
    tick_interval_s: float = 0.25
    fill_delay_s: float = 0.01
    stream_queue_size: int = 1000
    route_latency_s: dict[str, float] = msgspec.field(default_factory=dict)
    base_latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    stream_drop_interval_s: float | None = None
