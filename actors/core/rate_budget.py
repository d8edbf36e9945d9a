"""The broker's request budget: a token bucket, and what it may borrow from the broker.

Pure arithmetic: no clock of its own (every call is given ``now``, monotonic, and
``wall``, Unix time), no anyio. The gateway's :class:`~actors.alpaca_adapter.TokenBucket`
waits on it.

One bucket serves every broker call; cancels are served before anything else. Alpaca
counts requests in windows of a minute and says on every answer how many the window
has left (``X-RateLimit-Remaining``) and when it ends (``X-RateLimit-Reset``). The
listing that READY waits for may borrow from an empty bucket while that window has
more than :data:`BROKER_WINDOW_RESERVE` of its limit to spare; nothing else may.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Final

BROKER_WINDOW_RESERVE: Final = 0.25
"""Share of the broker's per-minute window never borrowed against (orders, cancels)."""
ORDER_SHARE_OF_RATE: Final = 0.75
"""Share of the rate limit the admission estimate counts on for orders; the rest is
left for account polls (3 requests every ``broker.account_poll_s``), reconciles and
look-ups."""
MIN_WAIT_S: Final = 0.005
"""The shortest wait before asking the bucket again."""


class Grant(enum.Enum):
    """How a token was granted."""

    BUCKET = "bucket"
    """From the bucket."""
    LOAN = "loan"
    """Borrowed against the broker's window: the bucket goes into debt."""


def rate_window(headers: Mapping[str, str]) -> tuple[int, int, float] | None:
    """(limit, remaining, reset) from Alpaca's X-RateLimit-* headers, if all are sound."""
    try:
        limit = int(headers["X-RateLimit-Limit"])
        remaining = int(headers["X-RateLimit-Remaining"])
        reset = float(headers["X-RateLimit-Reset"])
    except (KeyError, ValueError):
        return None
    if limit <= 0 or not 0 <= remaining <= limit:
        return None
    return limit, remaining, reset


class RateBudget:
    """Tokens for broker calls at a sustained rate, with a burst; cancels go first.

    Args:
        per_minute: sustained rate.
        burst: bucket size (default: five seconds' worth, between 1 and 50).
        now: the monotonic time the bucket starts full at.
    """

    def __init__(self, per_minute: float, burst: float | None = None, *, now: float) -> None:
        """Start full."""
        self.rate = per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, min(per_minute / 60.0 * 5, 50.0))
        self._tokens = self.capacity
        self._stamp = now
        self._urgent_waiting = 0
        self._orders_waiting = 0
        self.borrowed = 0
        """Tokens lent so far (:attr:`Grant.LOAN`)."""
        self._taken = 0
        # The broker's own count, from its X-RateLimit-* headers: (limit, remaining,
        # reset as Unix time, our ``_taken`` when the answer was read). Written by the
        # HTTP threads as one tuple.
        self._window: tuple[int, int, float, int] | None = None

    def observe(self, limit: int, remaining: int, reset: float) -> None:
        """The broker's rate-limit headers of one answer (may be called from any thread)."""
        self._window = (limit, remaining, reset, self._taken)

    def window_spare(self, wall: float) -> int:
        """Requests the broker's current window still allows beyond its reserve.

        The reserve is a quarter of the broker's limit, kept for orders and cancels.
        Requests granted since the answer was read count as spent (those already on
        the wire then are counted twice: the estimate errs low). Zero when no answer
        has told the window, or when that window has ended at ``wall``.
        """
        window = self._window
        if window is None:
            return 0
        limit, remaining, reset, taken_then = window
        if wall >= reset:
            return 0
        spent_since = self._taken - taken_then
        return max(0, remaining - spent_since - math.ceil(limit * BROKER_WINDOW_RESERVE))

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (negative while a loan is being paid back)."""
        self._refill(now)
        return self._tokens

    def urgent_arrived(self) -> None:
        """An urgent caller (a cancel) waits: nobody else is served until it is."""
        self._urgent_waiting += 1

    def urgent_left(self) -> None:
        """An urgent caller was served, or gave up."""
        self._urgent_waiting -= 1

    def order_arrived(self) -> None:
        """An order (a POST) waits: polls, look-ups and listings wait behind it."""
        self._orders_waiting += 1

    def order_left(self) -> None:
        """A waiting order was served, or gave up."""
        self._orders_waiting -= 1

    def take(
        self,
        now: float,
        wall: float,
        *,
        urgent: bool = False,
        borrow: bool = False,
        order: bool = False,
    ) -> Grant | None:
        """Take one token if the rules allow it at ``now``; None: ask again later.

        Three ranks: urgent callers (cancels) first, then orders, then everything else
        (account polls, look-ups, reconciling listings), which waits while an order does.
        An order admitted against the bucket (``BROKER_BUSY`` counts the tokens) is then
        never overtaken by a poll that took its token.

        With ``borrow`` (the listing that READY waits for), an empty bucket lends up
        to its capacity while the broker's own window has room to spare
        (:meth:`window_spare`). The tokens go negative: later calls wait for them, so
        the sustained rate is the same, and the broker's window, not a guess, says
        the burst fits. Nobody borrows while an urgent caller waits.
        """
        self._refill(now)
        if not (urgent or order or borrow) and self._orders_waiting > 0:
            return None
        if self._tokens >= 1 and (urgent or self._urgent_waiting == 0):
            self._tokens -= 1
            self._taken += 1
            return Grant.BUCKET
        if (
            borrow
            and self._urgent_waiting == 0
            and self._tokens - 1 >= -self.capacity
            and self.window_spare(wall) >= 1
        ):
            self._tokens -= 1
            self._taken += 1
            self.borrowed += 1
            return Grant.LOAN
        return None

    def retry_after_s(self) -> float:
        """How long to wait, after a refused :meth:`take`, before asking again."""
        return max((1 - self._tokens) / self.rate, MIN_WAIT_S)

    def expected_wait_s(self, ahead: int, now: float) -> float:
        """When a call with ``ahead`` calls before it (itself included) would be served.

        An estimate in seconds from ``now``: the tokens in the bucket, then its refill
        rate less the share kept for polls and reconciles (:data:`ORDER_SHARE_OF_RATE`).
        """
        short = ahead - self.tokens(now)
        if short <= 0:
            return 0.0
        return short / (self.rate * ORDER_SHARE_OF_RATE)
