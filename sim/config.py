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
    """Price model settings of one symbol, overriding the asset list's.

    Attributes:
        start_price: Mid price at start (and after a reset).
        volatility: Standard deviation of the relative mid change per tick, whatever
            the session; None (default): derived from ``daily_volatility``.
        daily_volatility: Standard deviation of one trading day's log return; None:
            the asset list's (see ``sim/assets.py``).
        drift: Deterministic relative mid change per tick (``-0.01`` is -1 %/tick).
        spread_bps: Full bid/ask spread in basis points of the mid (at least one cent).
    """

    start_price: float
    volatility: float | None = None
    daily_volatility: float | None = None
    drift: float = 0.0
    spread_bps: float = 2.0


class SimConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of the Alpaca-compatible paper venue.

    Attributes:
        host: Interface to bind.
        port: TCP port to bind; 0 picks a free port (read it from ``PaperVenue.run``).
        seed: Seed of every random choice: prices, ids, partial fills.
        clock: ``always-open`` holds the market open (tests, and the default of
            ``tradeguard sim``); ``us-equities`` follows the NYSE calendar (holidays,
            early closes) with extended sessions 04:00-09:30 and 16:00-20:00 New York.
        key_id: With ``secret_key``: the only key pair accepted. None: any non-empty pair.
        secret_key: See ``key_id``.
        starting_cash: Cash of a fresh (or reset) account.
        cash_account: True: a cash account (multiplier 1, no shorting), the venue's
            old behaviour. False (default): a margin account like Alpaca's paper
            accounts (multiplier 2, 4 at or above $25,000 of last equity).
        shorting_enabled: With a margin account, whether short sales are allowed
            (default true; they also follow the shortable / easy-to-borrow flags).
            False, or a cash account: a sell beyond the position (minus the
            quantity already held by open sell orders) is refused with 403
            ``insufficient qty available for order``.
        state_path: SQLite file keeping the account, orders, positions, activities
            and last prices across restarts; None (default): nothing persists.
        partial_fill_probability: Chance that an eligible fill is only partial.
        emit_pending_new: Send a ``pending_new`` event before ``new``.
        rate_limit_per_min: Requests per minute per API key before 429.
        control_enabled: Serve the ``/_sim/...`` control endpoint.
        symbols: Price model overrides per symbol (prices otherwise follow the
            shipped asset list, ``sim/assets.csv``).
        default_daily_volatility: Daily volatility of symbols quoted but not listed
            (only reachable through the price model: the API refuses them).
        default_spread_bps: Spread of such symbols.
        unknown_price_range: Start prices of such symbols are drawn (seeded, per
            symbol) uniformly from this range.
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
    cash_account: bool = False
    shorting_enabled: bool = True
    state_path: str | None = None
    partial_fill_probability: float = 0.10
    emit_pending_new: bool = True
    rate_limit_per_min: int = 200
    control_enabled: bool = False
    symbols: dict[str, SymbolSpec] = msgspec.field(default_factory=dict)
    default_daily_volatility: float = 0.02
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
