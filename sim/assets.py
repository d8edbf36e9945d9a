"""The venue's asset list: a few hundred US stocks and ETFs shipped as ``assets.csv``.

Each row gives the symbol, name, listing exchange, kind (``stock`` or ``etf``),
a reference price (the mid the price model starts from), the symbol's daily
volatility (standard deviation of the daily log return: about 1 % for broad
ETFs, 1-2 % for large caps, up to 3 % for high-beta names), the full bid/ask
spread in basis points, and Alpaca's flags: ``status``, ``tradable``,
``marginable``, ``shortable``, ``easy_to_borrow`` and ``fractionable``.

Orders, positions and quotes exist only for listed symbols; anything else is
refused as Alpaca refuses it. The reference prices and volatilities are
round-number approximations of real markets, not market data.
"""

from __future__ import annotations

import csv
import functools
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sim.errors import SimConfigError

ASSET_FILE = "assets.csv"
_TRUE = {"true": True, "false": False}


def asset_id_of(symbol: str) -> str:
    """Stable asset id of ``symbol`` (independent of the seed, as real ids are)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"tradeguard-sim:asset:{symbol}"))


@dataclass(frozen=True, slots=True)
class Asset:
    """One listed asset and its trading flags."""

    symbol: str
    name: str
    exchange: str
    kind: str
    reference_price: float
    daily_volatility: float
    spread_bps: float
    status: str
    tradable: bool
    marginable: bool
    shortable: bool
    easy_to_borrow: bool
    fractionable: bool

    @property
    def id(self) -> str:
        """The asset id."""
        return asset_id_of(self.symbol)

    def to_json(self) -> dict[str, Any]:
        """The Alpaca Asset entity."""
        margin = "30" if self.marginable else "100"
        return {
            "id": self.id,
            "class": "us_equity",
            "exchange": self.exchange,
            "symbol": self.symbol,
            "name": self.name,
            "status": self.status,
            "tradable": self.tradable,
            "marginable": self.marginable,
            "maintenance_margin_requirement": 30 if self.marginable else 100,
            "margin_requirement_long": margin,
            "margin_requirement_short": margin,
            "shortable": self.shortable,
            "easy_to_borrow": self.easy_to_borrow,
            "borrow_status": "easy_to_borrow" if self.easy_to_borrow else "hard_to_borrow",
            "fractionable": self.fractionable,
            "attributes": [],
        }


def _flag(row: dict[str, str], name: str, line: int) -> bool:
    value = _TRUE.get(row[name].strip().lower())
    if value is None:
        raise SimConfigError(f"{ASSET_FILE} line {line}: {name} must be true or false")
    return value


@functools.cache
def load_assets() -> dict[str, Asset]:
    """The shipped asset list by symbol (read once per process).

    Raises:
        SimConfigError: If the file is malformed.
    """
    text = resources.files("sim").joinpath(ASSET_FILE).read_text(encoding="utf-8")
    assets: dict[str, Asset] = {}
    for line, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        try:
            asset = Asset(
                symbol=row["symbol"],
                name=row["name"],
                exchange=row["exchange"],
                kind=row["kind"],
                reference_price=float(row["reference_price"]),
                daily_volatility=float(row["daily_volatility"]),
                spread_bps=float(row["spread_bps"]),
                status=row["status"],
                tradable=_flag(row, "tradable", line),
                marginable=_flag(row, "marginable", line),
                shortable=_flag(row, "shortable", line),
                easy_to_borrow=_flag(row, "easy_to_borrow", line),
                fractionable=_flag(row, "fractionable", line),
            )
        except (KeyError, ValueError) as exc:
            raise SimConfigError(f"{ASSET_FILE} line {line}: {exc}") from exc
        assets[asset.symbol] = asset
    return assets


class AssetBook:
    """Lookups over the asset list: by symbol or by asset id."""

    def __init__(self) -> None:
        """Load the shipped list."""
        self.by_symbol = load_assets()
        self._by_id = {asset.id: asset for asset in self.by_symbol.values()}

    def get(self, symbol_or_id: str) -> Asset | None:
        """The asset with this symbol or id, None if unlisted."""
        return self.by_symbol.get(symbol_or_id) or self._by_id.get(symbol_or_id)

    def listed(self, symbol: str) -> bool:
        """Whether ``symbol`` is on the list (tradable or not)."""
        return symbol in self.by_symbol

    def select(self, *, status: str | None = None, exchange: str | None = None) -> list[Asset]:
        """Assets filtered like ``GET /v2/assets`` (``us_equity`` only), by symbol."""
        return [
            asset
            for symbol, asset in sorted(self.by_symbol.items())
            if (status is None or asset.status == status)
            and (exchange is None or asset.exchange == exchange)
        ]
