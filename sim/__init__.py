"""tradeguard's paper venue: a local broker that speaks Alpaca's Trading API.

See :class:`sim.venue.PaperVenue` and ``docs/sim.md``.
"""

from sim.config import SimConfig, SymbolSpec
from sim.venue import PaperVenue

__all__ = ["PaperVenue", "SimConfig", "SymbolSpec"]
