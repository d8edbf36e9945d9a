"""The gateway's token bucket, and what it borrows against the broker's own window.

Alpaca counts requests in windows of a minute and says, on every answer, how many the
window has left (``X-RateLimit-Remaining``) and when it ends (``X-RateLimit-Reset``).
The listing that READY waits for may borrow from an empty bucket while that window
has more than a quarter of its limit to spare; nothing else may.
"""

from __future__ import annotations

import time

import anyio
import pytest

from actors.alpaca_adapter import TokenBucket
from actors.core.rate_budget import ORDER_SHARE_OF_RATE, Grant, RateBudget, rate_window

pytestmark = pytest.mark.anyio

SLOW = 1.0
"""Requests per minute: an empty bucket refills one token a minute, so any wait for a
token outlasts the short deadlines below."""


async def granted(bucket: TokenBucket, *, borrow: bool, within: float = 0.5) -> bool:
    """Whether ``acquire`` returns within ``within`` seconds."""
    with anyio.move_on_after(within):
        await bucket.acquire(borrow=borrow)
        return True
    return False


async def test_without_the_brokers_headers_nothing_is_borrowed() -> None:
    bucket = TokenBucket(SLOW, burst=1.0)
    assert await granted(bucket, borrow=True)
    assert not await granted(bucket, borrow=True)
    assert bucket.borrowed == 0


async def test_borrowing_stops_at_the_windows_reserve() -> None:
    bucket = TokenBucket(SLOW, burst=100.0)
    for _ in range(100):
        assert await granted(bucket, borrow=False)
    # 60 left in the window; a quarter of 200 (50) is kept: 10 may be borrowed.
    bucket.observe(200, 60, time.time() + 30)
    results = [await granted(bucket, borrow=True, within=0.05) for _ in range(12)]
    assert results == [True] * 10 + [False] * 2
    assert bucket.borrowed == 10


async def test_borrowing_stops_at_one_bucket_of_debt() -> None:
    bucket = TokenBucket(SLOW, burst=3.0)
    bucket.observe(200, 200, time.time() + 30)
    results = [await granted(bucket, borrow=True, within=0.05) for _ in range(8)]
    assert results == [True] * 6 + [False] * 2  # 3 tokens, then 3 of debt
    assert bucket.tokens() < -2.9


async def test_a_debt_makes_every_other_caller_wait() -> None:
    bucket = TokenBucket(SLOW, burst=2.0)
    bucket.observe(200, 200, time.time() + 30)
    for _ in range(3):
        assert await granted(bucket, borrow=True)
    # One token of debt: orders (which never borrow) wait until it is paid back.
    assert not await granted(bucket, borrow=False)


async def test_an_ended_window_lends_nothing() -> None:
    bucket = TokenBucket(SLOW, burst=1.0)
    bucket.observe(200, 200, time.time() - 1)
    assert await granted(bucket, borrow=True)
    assert not await granted(bucket, borrow=True)
    assert bucket.borrowed == 0


async def test_the_latest_answer_counts_with_the_requests_granted_since() -> None:
    bucket = TokenBucket(SLOW, burst=1.0)
    bucket.observe(200, 200, time.time() + 30)
    assert bucket.window_spare() == 150
    await bucket.acquire()
    assert bucket.window_spare() == 149  # granted after the answer was read
    bucket.observe(200, 52, time.time() + 30)
    assert bucket.window_spare() == 2


@pytest.mark.parametrize(
    ("headers", "window"),
    [
        (
            {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "17", "X-RateLimit-Reset": "9"},
            (200, 17, 9.0),
        ),
        ({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "17"}, None),
        (
            {"X-RateLimit-Limit": "x", "X-RateLimit-Remaining": "17", "X-RateLimit-Reset": "9"},
            None,
        ),
        (
            {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "201", "X-RateLimit-Reset": "9"},
            None,
        ),
        (
            {"X-RateLimit-Limit": "0", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9"},
            None,
        ),
        ({}, None),
    ],
)
def test_headers_are_read_only_when_all_three_are_sound(
    headers: dict[str, str], window: tuple[int, int, float] | None
) -> None:
    assert rate_window(headers) == window


# ---------------------------------------------------------------------- the arithmetic alone

WALL = 1_000_000.0
"""Unix time in the pure tests: the broker's windows below end a minute after it."""


def test_an_urgent_caller_is_served_first_and_nobody_borrows_meanwhile() -> None:
    budget = RateBudget(60.0, burst=1.0, now=0.0)
    budget.observe(200, 200, WALL + 60)
    budget.urgent_arrived()
    assert budget.take(0.0, WALL) is None  # a token is there, but a cancel waits
    assert budget.take(0.0, WALL, borrow=True) is None
    assert budget.take(0.0, WALL, urgent=True) is Grant.BUCKET
    budget.urgent_left()
    assert budget.take(0.0, WALL, borrow=True) is Grant.LOAN
    assert budget.borrowed == 1


def test_the_bucket_refills_at_its_rate_up_to_its_size() -> None:
    budget = RateBudget(60.0, burst=2.0, now=0.0)
    assert budget.take(0.0, WALL) is Grant.BUCKET
    assert budget.take(0.0, WALL) is Grant.BUCKET
    assert budget.take(0.0, WALL) is None
    assert budget.retry_after_s() == pytest.approx(1.0)
    assert budget.take(0.5, WALL) is None
    assert budget.retry_after_s() == pytest.approx(0.5)
    assert budget.take(1.0, WALL) is Grant.BUCKET
    assert budget.tokens(100.0) == 2.0


def test_the_default_burst_is_five_seconds_worth_between_one_and_fifty() -> None:
    assert RateBudget(190.0, now=0.0).capacity == pytest.approx(190 / 60 * 5)
    assert RateBudget(6.0, now=0.0).capacity == 1.0
    assert RateBudget(6000.0, now=0.0).capacity == 50.0


def test_the_admission_estimate_counts_the_tokens_then_the_order_share_of_the_rate() -> None:
    budget = RateBudget(60.0, burst=2.0, now=0.0)
    assert budget.expected_wait_s(2, 0.0) == 0.0
    # Three ahead, two tokens: one short, at 75% of one token a second.
    assert budget.expected_wait_s(3, 0.0) == pytest.approx(1 / (1.0 * ORDER_SHARE_OF_RATE))


def test_polls_and_look_ups_wait_while_an_order_waits() -> None:
    """Cancels, then orders, then everything else: a poll never takes an order's token."""
    budget = RateBudget(60.0, 2.0, now=0.0)
    budget.order_arrived()
    assert budget.take(0.0, 0.0) is None  # a poll waits behind the order
    assert budget.take(0.0, 0.0, borrow=True) is not None  # READY's listing: no orders yet
    budget.urgent_arrived()
    assert budget.take(0.0, 0.0, order=True) is None  # a cancel waits: the order too
    assert budget.take(0.0, 0.0, urgent=True) is Grant.BUCKET
    budget.urgent_left()
    assert budget.take(2.0, 0.0, order=True) is Grant.BUCKET
    budget.order_left()
    assert budget.take(3.0, 0.0) is Grant.BUCKET  # no order waits: the poll goes


async def test_a_poll_waiting_for_the_bucket_yields_to_an_order_that_came_later() -> None:
    bucket = TokenBucket(60.0, burst=1.0)
    await bucket.acquire()  # the bucket is empty: the next token comes in a second
    served: list[str] = []

    async def call(name: str, *, order: bool) -> None:
        await bucket.acquire(order=order)
        served.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: call("poll", order=False))
        await anyio.sleep(0.1)
        tg.start_soon(lambda: call("order", order=True))
    assert served == ["order", "poll"]
