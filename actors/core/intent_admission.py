"""Admission of intents over time: the per-second rate and the duplicate window.

:class:`IntentRateLimit` answers ``RATE_LIMIT`` (``max_intents_per_second``, per
strategy and optionally across all of them); :class:`DuplicateDetector` answers
``DUPLICATE_INTENT`` (the same order under a new ``intent_id`` within
``duplicate_window_s``). Both keep state but read no clock: the caller passes ``now``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

from protocol.messages import OrderIntent, Reason
from protocol.reasons import ReasonCode

__all__ = ["DuplicateDetector", "IntentBucket", "IntentRateLimit"]


class IntentBucket:
    """A token bucket of intents: ``rate`` tokens a second, holding at most ``burst``.

    It starts full. ``now`` going backwards (a clock step) refills nothing.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, *, now: float | None = None) -> None:
        """A full bucket; ``now`` is the time of the first take (default: at the first take)."""
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def _refill(self, now: float) -> None:
        last = self._last
        if last is None or now <= last:
            if last is None:
                self._last = now
            return
        self._tokens = min(self.burst, self._tokens + (now - last) * self.rate)
        self._last = now

    def available(self, now: float) -> bool:
        """Whether a token can be taken at ``now`` (refills, takes nothing)."""
        self._refill(now)
        return self._tokens >= 1

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class IntentRateLimit:
    """``RATE_LIMIT``: one token bucket per strategy plus an optional global one.

    Each bucket refills at its rate (``max_intents_per_second``) and holds one
    second's worth, at least one intent. An intent takes a token from both its
    strategy's bucket and the global one, or from neither: a strategy refused
    by the global bucket keeps its own tokens.
    """

    def __init__(
        self,
        strategy_rates: Mapping[str, float],
        *,
        global_rate: float | None = None,
    ) -> None:
        """Buckets for the strategies in ``strategy_rates``; ``global_rate`` None: no global cap."""
        self._buckets = {
            sid: IntentBucket(rate, max(1.0, rate)) for sid, rate in strategy_rates.items()
        }
        self._global = (
            None if global_rate is None else IntentBucket(global_rate, max(1.0, global_rate))
        )

    def check(self, strategy_id: str, now: float) -> Reason | None:
        """Admit one intent of ``strategy_id`` at ``now``, or say why not.

        Raises:
            KeyError: ``strategy_id`` was not configured (unknown strategies are
                rejected before any limit is checked).
        """
        bucket = self._buckets[strategy_id]
        glob = self._global
        if not bucket.available(now):
            return Reason(
                code=ReasonCode.RATE_LIMIT,
                message=f"more than {bucket.rate:g} intents/s from strategy {strategy_id} "
                f"(burst {bucket.burst:g})",
            )
        if glob is not None and not glob.take(now):
            return Reason(
                code=ReasonCode.RATE_LIMIT,
                message=f"more than {glob.rate:g} intents/s across all strategies "
                f"(burst {glob.burst:g})",
            )
        bucket.take(now)
        return None


_ContentKey = tuple[
    str,
    str,
    str,
    float | None,
    float | None,
    str,
    float | None,
    float | None,
    str,
    bool,
    tuple[str, float | None, float | None, float | None, float | None],
]


class DuplicateDetector:
    """``DUPLICATE_INTENT``: the same order under a new ``intent_id``, too soon.

    The content is what the broker would receive: symbol, side, qty, notional,
    order type, limit and stop price, time in force, extended hours, trail and
    order class with its take-profit and (for a bracket, where it is a broker-held
    stop) ``stop_loss`` (not a simple order's ``stop_loss``, ``confidence`` or ``ts``),
    per strategy: two strategies may
    send the same order. It is a duplicate when an *accepted* intent of the same
    content and another id was recorded less than ``window_s`` before (at
    exactly ``window_s`` it is new again). A re-sent intent with the *same* id
    is not a duplicate: the order manager answers it from the journal.

    Memory is bounded: expired entries are dropped as they reach the front of
    the insertion order, and beyond ``max_entries`` the oldest ones go.
    """

    def __init__(self, *, max_entries: int = 10_000) -> None:
        """An empty detector keeping at most ``max_entries`` recent orders."""
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        # key -> (intent_id, recorded at, expires at); insertion order ~ time order.
        self._seen: OrderedDict[_ContentKey, tuple[str, float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many orders are remembered."""
        return len(self._seen)

    @staticmethod
    def _key(strategy_id: str, intent: OrderIntent) -> _ContentKey:
        return (
            strategy_id,
            intent.symbol,
            intent.side,
            intent.qty,
            intent.notional,
            intent.order_type,
            intent.limit_price,
            intent.stop_price,
            intent.time_in_force,
            intent.extended_hours,
            (
                intent.order_class,
                intent.take_profit,
                intent.stop_loss if intent.order_class == "bracket" else None,
                intent.trail_percent,
                intent.trail_price,
            ),
        )

    def check(
        self, strategy_id: str, intent: OrderIntent, *, now: float, window_s: float
    ) -> Reason | None:
        """Whether ``intent`` repeats a recorded order inside ``window_s`` (0: never)."""
        if window_s <= 0:
            return None
        entry = self._seen.get(self._key(strategy_id, intent))
        if entry is None:
            return None
        first_id, recorded_at, _ = entry
        age = now - recorded_at
        if first_id == intent.intent_id or age >= window_s:
            return None
        return Reason(
            code=ReasonCode.DUPLICATE_INTENT,
            message=f"same order as intent {first_id} {max(age, 0.0):.1f} s ago "
            f"(window {window_s:g} s); send it again after the window or change it",
        )

    def record(self, strategy_id: str, intent: OrderIntent, *, now: float, window_s: float) -> None:
        """Remember an accepted ``intent`` for ``window_s`` (0: not at all)."""
        seen = self._seen
        while seen:
            _, (_, _, expires) = next(iter(seen.items()))
            if expires > now and len(seen) < self._max_entries:
                break
            seen.popitem(last=False)
        if window_s <= 0:
            return
        key = self._key(strategy_id, intent)
        seen.pop(key, None)
        seen[key] = (intent.intent_id, now, now + window_s)
