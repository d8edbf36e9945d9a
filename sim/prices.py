"""The venue's price model: a seeded random walk per symbol, or a CSV replay.

Every symbol has its own random generator seeded from ``(seed, symbol)``, so
a symbol's price path depends only on the seed and on how many ticks it has
seen. Scenarios steer it with :meth:`PriceModel.set_price`,
:meth:`PriceModel.set_drift` (e.g. -1 %/tick for a drawdown),
:meth:`PriceModel.set_volatility` and :meth:`PriceModel.set_spread_bps`.

Calibration: the mid follows a geometric random walk whose variance per
trading day is the symbol's daily volatility squared (``daily_volatility`` of
the asset list, 1-3 % by symbol). Each tick stands for ``step_s`` seconds of
market time (the tick interval, 0.25 s when ticks are manual). 90 % of a day's
variance falls in the regular session (6.5 h) and 10 % in the extended
sessions (9.5 h); outside every session (nights, weekends, holidays) prices are
frozen, quote sizes too. With the ``always-open`` clock every hour counts as
regular-session time. Bid and ask sizes are drawn per tick from 1-20 round
lots (100-2000 shares) by a generator of their own, so they never perturb the
price path.
"""

from __future__ import annotations

import csv
import math
import random
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from sim.assets import load_assets
from sim.errors import SimConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from sim.clock import Phase
    from sim.config import SimConfig

CENT = Decimal("0.01")
_MIN_MID = 0.01
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,11}$")
REGULAR_SESSION_S = 6.5 * 3600
EXTENDED_SESSIONS_S = 9.5 * 3600
REGULAR_VARIANCE_SHARE = 0.9
NOMINAL_STEP_S = 0.25
LOT = 100
MAX_LOTS = 20


def is_valid_symbol(symbol: str) -> bool:
    """Whether ``symbol`` is spelled like a US equity ticker (listed or not)."""
    return _SYMBOL.fullmatch(symbol) is not None


def step_volatility(daily_volatility: float, phase: Phase, seconds: float) -> float:
    """Standard deviation of the log return over ``seconds`` of market time in ``phase``.

    Args:
        daily_volatility: Standard deviation of one trading day's log return.
        phase: Session phase the time falls in (``closed``: prices are frozen).
        seconds: Length of the step.
    """
    if phase == "closed" or seconds <= 0:
        return 0.0
    if phase == "regular":
        share, length = REGULAR_VARIANCE_SHARE, REGULAR_SESSION_S
    else:
        share, length = 1.0 - REGULAR_VARIANCE_SHARE, EXTENDED_SESSIONS_S
    return daily_volatility * math.sqrt(share * seconds / length)


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid and offer of a symbol at one moment."""

    symbol: str
    bid: Decimal
    ask: Decimal
    bid_size: int
    ask_size: int
    timestamp: datetime

    @property
    def mid(self) -> Decimal:
        """Midpoint of bid and ask."""
        return (self.bid + self.ask) / 2


@dataclass(slots=True)
class _SymbolState:
    mid: float
    start_price: float
    volatility: float
    drift: float
    spread_bps: float
    rng: random.Random
    size_rng: random.Random
    replay: list[tuple[Decimal, Decimal]]
    daily_volatility: float | None = None
    replay_index: int = 0
    bid_size: int = 100
    ask_size: int = 100


class PriceModel:
    """Quotes for any valid symbol, advancing one step per tick.

    Args:
        config: Venue configuration (seed, symbols, CSV).
        now: Clock used to timestamp quotes.
        phase: Session phase right now (``closed`` freezes prices); None: always regular.
    """

    def __init__(
        self,
        config: SimConfig,
        now: Callable[[], datetime],
        phase: Callable[[], Phase] | None = None,
    ) -> None:
        """Load the CSV replay (if any); symbols are created on first use."""
        self._config = config
        self._now = now
        self._phase = phase
        self._replays = _load_csv(config.quotes_csv) if config.quotes_csv else {}
        self._states: dict[str, _SymbolState] = {}
        self._lastday: dict[str, Decimal] = {}
        self.step_s = config.tick_interval_s if config.tick_interval_s > 0 else NOMINAL_STEP_S

    def reset(self) -> None:
        """Forget every price path: the next quote starts from the start price again."""
        self._states.clear()
        self._lastday.clear()

    def _state(self, symbol: str) -> _SymbolState:
        state = self._states.get(symbol)
        if state is not None:
            return state
        cfg = self._config
        rng = random.Random(f"{cfg.seed}:{symbol}:walk")  # noqa: S311 - simulation, not crypto
        size_rng = random.Random(f"{cfg.seed}:{symbol}:sizes")  # noqa: S311 - simulation
        spec = cfg.symbols.get(symbol)
        asset = load_assets().get(symbol)
        daily: float | None = asset.daily_volatility if asset else cfg.default_daily_volatility
        if asset is not None:
            start, spread = asset.reference_price, asset.spread_bps
        else:
            low, high = cfg.unknown_price_range
            start_rng = random.Random(f"{cfg.seed}:{symbol}:start")  # noqa: S311 - simulation
            start = round(start_rng.uniform(low, high), 2)
            spread = cfg.default_spread_bps
        vol, drift = 0.0, 0.0
        if spec is not None:
            start, drift, spread = spec.start_price, spec.drift, spec.spread_bps
            if spec.daily_volatility is not None:
                daily = spec.daily_volatility
            if spec.volatility is not None:
                vol, daily = spec.volatility, None
        replay = self._replays.get(symbol, [])
        if replay:
            bid, ask = replay[0]
            start = float((bid + ask) / 2)
        state = _SymbolState(
            mid=start,
            start_price=start,
            volatility=vol,
            drift=drift,
            spread_bps=spread,
            rng=rng,
            size_rng=size_rng,
            replay=replay,
            daily_volatility=daily,
        )
        self._states[symbol] = state
        return state

    def symbols(self) -> list[str]:
        """Symbols that have been quoted so far, sorted."""
        return sorted(self._states)

    def quote(self, symbol: str) -> Quote:
        """Current quote of ``symbol``."""
        state = self._state(symbol)
        if state.replay:
            bid, ask = state.replay[state.replay_index]
        else:
            half = max(state.mid * state.spread_bps / 20_000.0, 0.005)
            bid = Decimal(repr(state.mid - half)).quantize(CENT, ROUND_FLOOR)
            ask = Decimal(repr(state.mid + half)).quantize(CENT, ROUND_CEILING)
            bid = max(bid, CENT)
            if ask <= bid:
                ask = bid + CENT
        return Quote(
            symbol=symbol,
            bid=bid,
            ask=ask,
            bid_size=state.bid_size,
            ask_size=state.ask_size,
            timestamp=self._now(),
        )

    def lastday_price(self, symbol: str) -> Decimal:
        """Close of the previous session (before the first close: the start price)."""
        rolled = self._lastday.get(symbol)
        if rolled is not None:
            return rolled
        return Decimal(repr(self._state(symbol).start_price)).quantize(CENT)

    def roll_day(self) -> None:
        """A session closed: every symbol's ``lastday_price`` becomes its mid now."""
        for symbol in self._states:
            self._lastday[symbol] = self.quote(symbol).mid.quantize(CENT)

    def marks(self) -> dict[str, tuple[float, str]]:
        """Each quoted symbol's mid and last-day price (what a restart resumes from)."""
        return {
            symbol: (state.mid, str(self.lastday_price(symbol)))
            for symbol, state in sorted(self._states.items())
        }

    def restore(self, marks: dict[str, tuple[float, str]]) -> None:
        """Resume the mids and last-day prices saved by :meth:`marks`."""
        for symbol, (mid, lastday) in marks.items():
            if not is_valid_symbol(symbol) or not mid > 0:
                continue
            self._state(symbol).mid = mid
            self._lastday[symbol] = Decimal(lastday)

    def tick(self, seconds: float | None = None) -> None:
        """Advance every symbol seen so far by one step of market time.

        Args:
            seconds: Market time the step stands for (default :attr:`step_s`).
                Nothing moves while every session is closed.
        """
        phase: Phase = self._phase() if self._phase is not None else "regular"
        if phase == "closed":
            return
        step = self.step_s if seconds is None else seconds
        for symbol in sorted(self._states):
            state = self._states[symbol]
            state.bid_size = LOT * state.size_rng.randint(1, MAX_LOTS)
            state.ask_size = LOT * state.size_rng.randint(1, MAX_LOTS)
            if state.replay:
                if state.replay_index < len(state.replay) - 1:
                    state.replay_index += 1
                bid, ask = state.replay[state.replay_index]
                state.mid = float((bid + ask) / 2)
                continue
            vol = state.volatility
            if state.daily_volatility is not None:
                vol = step_volatility(state.daily_volatility, phase, step)
            shock = state.rng.gauss(0.0, 1.0) * vol
            state.mid = max(state.mid * (1.0 + state.drift) * math.exp(shock), _MIN_MID)

    def set_price(self, symbol: str, price: float) -> None:
        """Move the mid of ``symbol`` to ``price`` (leaves CSV replay for that symbol)."""
        if not price > 0:
            raise ValueError("price must be > 0")
        state = self._state(symbol)
        state.replay = []
        state.mid = price

    def set_drift(self, symbol: str, drift: float) -> None:
        """Set the relative mid change per tick of ``symbol`` (-0.01 is -1 %/tick)."""
        self._state(symbol).drift = drift

    def set_volatility(self, symbol: str, volatility: float) -> None:
        """Set the per-tick relative standard deviation of ``symbol``."""
        if volatility < 0:
            raise ValueError("volatility must be >= 0")
        state = self._state(symbol)
        state.volatility = volatility
        state.daily_volatility = None

    def set_spread_bps(self, symbol: str, spread_bps: float) -> None:
        """Set the full bid/ask spread of ``symbol`` in basis points."""
        if spread_bps < 0:
            raise ValueError("spread_bps must be >= 0")
        self._state(symbol).spread_bps = spread_bps


def _load_csv(path: str) -> dict[str, list[tuple[Decimal, Decimal]]]:
    replays: dict[str, list[tuple[Decimal, Decimal]]] = {}
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    symbol = row["symbol"].strip().upper()
                    bid, ask = Decimal(row["bid"]), Decimal(row["ask"])
                except (KeyError, ArithmeticError, AttributeError) as exc:
                    raise SimConfigError(
                        f"quotes_csv {path} line {line}: needs symbol,bid,ask"
                    ) from exc
                if not (0 < bid <= ask):
                    raise SimConfigError(f"quotes_csv {path} line {line}: need 0 < bid <= ask")
                replays.setdefault(symbol, []).append((bid, ask))
    except OSError as exc:
        raise SimConfigError(f"quotes_csv {path}: {exc}") from exc
    return replays
