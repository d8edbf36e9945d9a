"""The venue's price model: a seeded random walk per symbol, or a CSV replay.

Every symbol has its own random generator seeded from ``(seed, symbol)``, so
a symbol's price path depends only on the seed and on how many ticks it has
seen. Scenarios steer it with :meth:`PriceModel.set_price`,
:meth:`PriceModel.set_drift` (e.g. -1 %/tick for a drawdown),
:meth:`PriceModel.set_volatility` and :meth:`PriceModel.set_spread_bps`.
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

from sim.errors import SimConfigError

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from sim.config import SimConfig

CENT = Decimal("0.01")
_MIN_MID = 0.01
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.]{0,11}$")


def is_valid_symbol(symbol: str) -> bool:
    """Whether the venue knows ``symbol`` as a tradable US equity."""
    return _SYMBOL.fullmatch(symbol) is not None


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
    replay: list[tuple[Decimal, Decimal]]
    replay_index: int = 0


class PriceModel:
    """Quotes for any valid symbol, advancing one step per tick.

    Args:
        config: Venue configuration (seed, symbols, CSV).
        now: Clock used to timestamp quotes.
    """

    def __init__(self, config: SimConfig, now: Callable[[], datetime]) -> None:
        """Load the CSV replay (if any); symbols are created on first use."""
        self._config = config
        self._now = now
        self._replays = _load_csv(config.quotes_csv) if config.quotes_csv else {}
        self._states: dict[str, _SymbolState] = {}

    def reset(self) -> None:
        """Forget every price path: the next quote starts from the start price again."""
        self._states.clear()

    def _state(self, symbol: str) -> _SymbolState:
        state = self._states.get(symbol)
        if state is not None:
            return state
        cfg = self._config
        rng = random.Random(f"{cfg.seed}:{symbol}:walk")  # noqa: S311 - simulation, not crypto
        spec = cfg.symbols.get(symbol)
        if spec is not None:
            start, vol, drift, spread = (
                spec.start_price,
                spec.volatility,
                spec.drift,
                spec.spread_bps,
            )
        else:
            low, high = cfg.unknown_price_range
            start_rng = random.Random(f"{cfg.seed}:{symbol}:start")  # noqa: S311 - simulation
            start = round(start_rng.uniform(low, high), 2)
            vol, drift, spread = cfg.default_volatility, 0.0, cfg.default_spread_bps
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
            replay=replay,
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
            bid_size=100,
            ask_size=100,
            timestamp=self._now(),
        )

    def lastday_price(self, symbol: str) -> Decimal:
        """Reference close of the previous day: the symbol's start price."""
        return Decimal(repr(self._state(symbol).start_price)).quantize(CENT)

    def tick(self) -> None:
        """Advance every symbol seen so far by one step."""
        for symbol in sorted(self._states):
            state = self._states[symbol]
            if state.replay:
                if state.replay_index < len(state.replay) - 1:
                    state.replay_index += 1
                bid, ask = state.replay[state.replay_index]
                state.mid = float((bid + ask) / 2)
                continue
            shock = state.rng.gauss(0.0, 1.0) * state.volatility
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
        self._state(symbol).volatility = volatility

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
