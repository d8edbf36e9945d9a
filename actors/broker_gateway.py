"""The broker gateway: the only code that touches alpaca-py.

alpaca-py's REST client is synchronous, retries every request (POST included)
three times on 429/504 and sets no HTTP timeout. So here every call runs in a
worker thread, through one token bucket (cancels first), with a real timeout,
and with alpaca-py's own retry turned off. A POST is never re-sent blindly:
after a timeout, a 5xx, a dropped connection or a 422 duplicate, the order is
looked up by ``client_order_id`` and what the broker has is adopted; only when
the broker provably does not have it is the POST repeated (the same
``client_order_id`` makes that safe), until ``broker.submit_deadline_s``.

The trade stream (``TradingStream``) runs on our event loop; after every
(re)connect, and periodically, open orders are reconciled over REST, because
the stream does not replay what was missed.

Alpaca order status -> contract status (CONTRACT §4), one table:

==========================================================  =================
Alpaca ``order.status``                                     contract status
==========================================================  =================
new, accepted, pending_new, accepted_for_bidding,           accepted
calculated, done_for_day, pending_replace, pending_review,
stopped, suspended, held
partially_filled                                            partially_filled
filled                                                      filled
pending_cancel                                              pending_cancel
canceled, replaced (we never replace)                       cancelled
expired                                                     expired
rejected                                                    rejected
==========================================================  =================
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import anyio
import msgspec
import requests
import structlog
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockLatestQuoteRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)
from alpaca.trading.stream import TradingStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from actors.base import Actor, TradingHalt
from actors.channels import (
    BrokerStatus,
    CancelOrder,
    FlattenNow,
    KillChanged,
    KillSettled,
    OrderUpdate,
    SubmitOrder,
)
from actors.core.errors import BrokerError
from actors.core.risk_limits import Quote
from actors.core.trading_state import KillGate
from protocol.messages import OrderIntent, OrderStatus

log = structlog.get_logger(__name__)

STATUS_MAP: Final[dict[str, OrderStatus]] = {
    "new": "accepted",
    "accepted": "accepted",
    "pending_new": "accepted",
    "accepted_for_bidding": "accepted",
    "calculated": "accepted",
    "done_for_day": "accepted",
    "pending_replace": "accepted",
    "pending_review": "accepted",
    "stopped": "accepted",
    "suspended": "accepted",
    "held": "accepted",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "pending_cancel": "pending_cancel",
    "canceled": "cancelled",
    "replaced": "cancelled",
    "expired": "expired",
    "rejected": "rejected",
}
FINAL: Final = frozenset({"filled", "cancelled", "rejected", "expired"})

LOOKUPS_BEFORE_LISTING: Final = 3
"""Beyond this many orders to settle, a closed-orders listing beats one look-up each."""
RECONCILE_MIN_GAP_S: Final = 2.0
"""Reconciles are at least this far apart, however often they are asked for."""
LIST_PAGE: Final = 500
"""Orders per listing page (Alpaca's maximum)."""
LIST_OVERLAP: Final = timedelta(milliseconds=1)
"""Each page starts this much before the last one's newest order (``after`` is exclusive)."""
CLOCK_SKEW_S: Final = 60.0
"""Margin between our clock and the broker's when listing orders by submission time."""
EXPIRY_SWEEP_S: Final = 0.25
"""How often queued orders are checked against their deadline."""
ORDER_SHARE_OF_RATE: Final = 0.75
"""Share of the rate limit the admission estimate counts on for orders; the rest is
left for account polls (3 requests every ``broker.account_poll_s``), reconciles and
look-ups."""
EXPIRED_MARK: Final = "\x00expired"
BROKER_WINDOW_RESERVE: Final = 0.25
"""Share of the broker's per-minute window never borrowed against (orders, cancels)."""

QUOTE_TIMEOUT_S: Final = 2.0
"""A quote older than this is of no use to a decision anyway."""
QUOTE_RETRY_S: Final = 1.0
"""After a failed quote fetch, that symbol is not fetched again for this long."""

DUPLICATE_CODE: Final = 40010001

RECENTLY_FINISHED: Final = 4096
"""Final orders remembered so that a late report of one (the stream after a look-up, or
the reverse) is known as ours, not reported as an external order."""
EARLY_LEGS: Final = 1024
"""Leg events kept while their parent's legs are not known yet (the stream can beat the
POST's answer); the oldest go first. Legs of other programs' brackets never match."""


class _TimeoutAdapter(HTTPAdapter):
    """requests adapter that gives every request a timeout (alpaca-py sets none)."""

    def __init__(self, timeout: float, bucket: TokenBucket | None = None) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout
        self._bucket = bucket

    def send(  # noqa: PLR0917  # the superclass signature, positional by design
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> Response:
        """Send with our timeout unless one was given; tell the bucket the broker's count."""
        response = super().send(
            request,
            stream=stream,
            timeout=self._timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )
        if self._bucket is not None:
            window = _rate_window(response.headers)
            if window is not None:
                self._bucket.observe(*window)
        return response


def _rate_window(headers: Mapping[str, str]) -> tuple[int, int, float] | None:
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


class TokenBucket:
    """One bucket for every broker call; cancels are served before anything else.

    Args:
        per_minute: sustained rate.
        burst: bucket size.
    """

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        """Start full."""
        self.rate = per_minute / 60.0
        self.capacity = burst if burst is not None else max(1.0, min(per_minute / 60.0 * 5, 50.0))
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._urgent_waiting = 0
        self.waits = 0
        self.borrowed = 0
        self._taken = 0
        # The broker's own count, from its X-RateLimit-* headers: (limit, remaining,
        # reset as Unix time, our ``_taken`` when the answer was read). Written by the
        # HTTP threads as one tuple.
        self._window: tuple[int, int, float, int] | None = None

    def observe(self, limit: int, remaining: int, reset: float) -> None:
        """The broker's rate-limit headers of one answer (called from the HTTP thread)."""
        self._window = (limit, remaining, reset, self._taken)

    def window_spare(self) -> int:
        """Requests the broker's current window still allows beyond its reserve.

        The reserve is a quarter of the broker's limit, kept for orders and cancels.
        Requests granted since the answer was read count as spent (those already on
        the wire then are counted twice: the estimate errs low). Zero when no answer
        has told the window, or when that window has ended.
        """
        window = self._window
        if window is None:
            return 0
        limit, remaining, reset, taken_then = window
        if time.time() >= reset:
            return 0
        spent_since = self._taken - taken_then
        return max(0, remaining - spent_since - math.ceil(limit * BROKER_WINDOW_RESERVE))

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def tokens(self) -> float:
        """Tokens available now."""
        self._refill()
        return self._tokens

    async def acquire(self, *, urgent: bool = False, borrow: bool = False) -> None:
        """Take one token, waiting as needed. Urgent callers (cancels) go first.

        With ``borrow`` (the listing that READY waits for), an empty bucket lends up
        to its capacity while the broker's own window has room to spare
        (:meth:`window_spare`). The tokens go negative: later calls wait for them, so
        the sustained rate is the same, and the broker's window, not a guess, says
        the burst fits.
        """
        if urgent:
            self._urgent_waiting += 1
        try:
            waited = False
            while True:
                self._refill()
                if self._tokens >= 1 and (urgent or self._urgent_waiting == 0):
                    self._tokens -= 1
                    self._taken += 1
                    if waited:
                        self.waits += 1
                    return
                if (
                    borrow
                    and self._urgent_waiting == 0
                    and self._tokens - 1 >= -self.capacity
                    and self.window_spare() >= 1
                ):
                    self._tokens -= 1
                    self._taken += 1
                    self.borrowed += 1
                    return
                waited = True
                await anyio.sleep(max((1 - self._tokens) / self.rate, 0.005))
        finally:
            if urgent:
                self._urgent_waiting -= 1


class _Outcome:
    """How a broker call ended."""

    OK = "ok"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"
    BLOCKED = "blocked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class _Blocked:
    detail: str


@dataclass
class _Result:
    outcome: str
    body: Any = None
    detail: str = ""
    status: int | None = None


@dataclass(frozen=True)
class _Leg:
    """A leg of one of our brackets: the broker made it, so its ids are the broker's."""

    strategy_id: str
    parent: str
    """The parent's ``client_order_id`` (``SID-intent_id``)."""


@dataclass
class _BracketLegs:
    """What the gateway follows of its brackets' legs."""

    legs: dict[str, _Leg] = field(default_factory=dict)
    """Open legs of our brackets, by the broker's order id."""
    known: set[str] = field(default_factory=set)
    """Parents (``client_order_id``) whose open legs are in ``legs``."""
    early: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    """Leg events seen before their parent's legs were known (at most ``EARLY_LEGS``)."""
    ended: anyio.Event = field(default_factory=anyio.Event)
    """Set (and replaced) each time a leg reaches a final state."""


@dataclass
class TrackedOrder:
    """An unfinished order the gateway follows until the broker calls it final."""

    strategy_id: str
    broker_order_id: str | None
    status: OrderStatus
    intent: OrderIntent
    accepted_at: float


class OrderOwners:
    """Which strategy an order belongs to: ``client_order_id`` is ``SID-intent_id``."""

    def __init__(self, strategies: frozenset[str]) -> None:
        """Longest ids first, so that ``s1-x`` never shadows ``s1-x-2``'s owner wrongly."""
        self._by_length = sorted(strategies, key=len, reverse=True)

    def owner(self, client_order_id: str) -> str | None:
        """The strategy that made this order, or None for an external one."""
        for sid in self._by_length:
            if client_order_id.startswith(sid + "-"):
                return sid
        return None


def _as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def order_update(body: Mapping[str, Any], source: str) -> OrderUpdate:
    """An Alpaca order object (raw JSON) in contract terms."""
    raw_status = str(body.get("status", ""))
    status = STATUS_MAP.get(raw_status, "accepted")
    return OrderUpdate(
        client_order_id=str(body["client_order_id"]),
        status=status,
        broker_order_id=str(body.get("id")) if body.get("id") else None,
        filled_qty=_as_float(body.get("filled_qty")) or 0.0,
        filled_avg_price=_as_float(body.get("filled_avg_price")),
        detail=None if raw_status in STATUS_MAP else f"alpaca status {raw_status}",
        source=source,
    )


class _Stream(TradingStream):
    """TradingStream that tells us every time it has (re)connected."""

    def __init__(self, *args: Any, on_connect: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]  # alpaca-py: unannotated
        self._on_connect()


class BrokerGateway(Actor):
    """Sends orders and cancels to the broker and reports what it says.

    Inputs: ``SubmitOrder`` and ``CancelOrder`` from the order managers; kill
    changes from the authority; the broker's trade stream.
    Outputs: ``OrderUpdate`` (and ``FlattenNow``) to each strategy's order
    manager; ``BrokerStatus`` to the guardian via ``on_status``.

    Edge cases: the kill gate is re-checked right before every POST; on an
    engage, in-flight POSTs are awaited, then the scope's open orders are
    cancelled (bulk ``DELETE /v2/orders`` for global), then flatten is requested;
    every reconcile also cancels any open order of an engaged scope; orders of
    ours unknown to the journal are reported as external.
    """

    fail_closed = True

    def __init__(
        self,
        *,
        url: str,
        stream_url: str,
        data_url: str,
        key_id: str,
        secret_key: str,
        gate: KillGate,
        strategies: frozenset[str],
        submissions: MemoryObjectReceiveStream[SubmitOrder],
        cancels: MemoryObjectReceiveStream[CancelOrder],
        kill_changes: MemoryObjectReceiveStream[KillChanged],
        updates: Mapping[str, MemoryObjectSendStream[OrderUpdate | FlattenNow]],
        tracked: Mapping[str, TrackedOrder],
        on_status: Callable[[BrokerStatus], None],
        on_external: Callable[[str, str], None],
        halt: TradingHalt,
        settlements: MemoryObjectSendStream[KillSettled] | None = None,
        request_timeout_s: float = 10.0,
        rate_limit_per_min: float = 190.0,
        reconcile_interval_s: float = 60.0,
        quiet_reconcile_s: float = 5.0,
        submit_deadline_s: float = 30.0,
        account_poll_s: float = 5.0,
        workers: int = 4,
    ) -> None:
        """Wire the gateway; ``tracked`` are the journal's unfinished orders."""
        super().__init__("broker_gateway", halt=halt)
        self._url = url
        self._stream_url = stream_url
        self._data_url = data_url
        self.quotes: dict[str, Quote] = {}
        self._data_client: StockHistoricalDataClient | None = None
        self._quote_failures: dict[str, float] = {}
        self._key_id = key_id
        self._secret_key = secret_key
        self._gate = gate
        self._halt_latch = halt
        self._owners = OrderOwners(strategies)
        self._submissions = submissions
        self._cancels = cancels
        self._kill_changes = kill_changes
        self._updates = updates
        self._tracked: dict[str, TrackedOrder] = dict(tracked)
        self._on_status = on_status
        self._on_external = on_external
        self._settlements = settlements
        self._timeout = request_timeout_s
        self.bucket = TokenBucket(rate_limit_per_min)
        self._reconcile_interval_s = reconcile_interval_s
        self._quiet_reconcile_s = quiet_reconcile_s
        self._deadline_s = submit_deadline_s
        self._account_poll_s = account_poll_s
        self._workers = workers
        self._limiter = anyio.CapacityLimiter(workers + 2)
        self._client: TradingClient | None = None
        self._submit_q: deque[SubmitOrder] = deque()
        self._cancel_q: deque[CancelOrder] = deque()
        # One permit per queued job (cancels and submissions alike): a worker takes a
        # permit, then the most urgent job. No wake-up can be lost, whatever the timing.
        self._jobs = anyio.Semaphore(0)
        self._inflight_posts = 0
        self._posts_idle = anyio.Event()
        self._posts_idle.set()
        self._cancel_requested: set[str] = set()
        self._reconcile_now = anyio.Event()
        self._last_stream_event = time.monotonic()
        self.recovered = anyio.Event()
        self.connected = False
        self.stream_connects = 0
        self.broker_errors = 0
        self.posts = 0
        self.expired = 0
        self.gate_passes: deque[tuple[float, str]] = deque(maxlen=1024)
        """(time, client_order_id) of the most recent POSTs that passed the last gate check."""
        self.external: set[str] = set()
        self._brackets = _BracketLegs()
        self._finished: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------ plumbing

    def _make_data_client(self) -> StockHistoricalDataClient:
        client = StockHistoricalDataClient(
            self._key_id, self._secret_key, raw_data=True, url_override=self._data_url
        )
        client._retry = 0  # noqa: SLF001  # as for the trading client: we decide about retries
        adapter = _TimeoutAdapter(min(self._timeout, QUOTE_TIMEOUT_S))
        client._session.mount("http://", adapter)  # noqa: SLF001  # no public hook for timeouts
        client._session.mount("https://", adapter)  # noqa: SLF001
        return client

    async def fresh_quotes(self, symbols: set[str], *, max_age_s: float) -> None:
        """Make sure the quote cache holds a quote younger than ``max_age_s`` for each symbol.

        Market data is a separate Alpaca service with its own limits, so this does not
        draw on the trading token bucket. A failed fetch leaves the cache as it was: the
        guardian then rejects for want of a usable quote, saying so.
        """
        now = time.time()
        stale = sorted(
            s
            for s in symbols
            if (s not in self.quotes or now - self.quotes[s].ts > max_age_s / 2)
            and now - self._quote_failures.get(s, 0.0) > QUOTE_RETRY_S
        )
        if not stale:
            return
        if self._data_client is None:
            self._data_client = self._make_data_client()
        client = self._data_client
        request = StockLatestQuoteRequest(symbol_or_symbols=stale)
        try:
            body = await anyio.to_thread.run_sync(
                lambda: client.get_stock_latest_quote(request), limiter=self._limiter
            )
        except (APIError, requests.RequestException, OSError) as exc:
            # Remembered for a moment: a data outage must not cost every intent a timeout.
            for symbol in stale:
                self._quote_failures[symbol] = time.time()
            log.warning("quotes.fetch_failed", symbols=stale, error=str(exc)[:200])
            return
        raw_quotes: dict[str, Any] = dict(body or {})
        for symbol, raw in raw_quotes.items():
            bid, ask = _as_float(raw.get("bp")), _as_float(raw.get("ap"))
            if bid is None or ask is None:
                continue
            self.quotes[symbol] = Quote(bid=bid, ask=ask, ts=_epoch(raw.get("t")) or now)

    def _make_client(self) -> TradingClient:
        client = TradingClient(
            self._key_id, self._secret_key, raw_data=True, url_override=self._url
        )
        # alpaca-py retries every request, POST included, on 429/504 and sets no timeout.
        client._retry = 0  # noqa: SLF001  # no public switch; we retry by looking up instead
        adapter = _TimeoutAdapter(self._timeout, self.bucket)
        client._session.mount("http://", adapter)  # noqa: SLF001  # no public hook for timeouts
        client._session.mount("https://", adapter)  # noqa: SLF001
        return client

    async def _call(
        self,
        fn: Callable[[], Any],
        *,
        urgent: bool = False,
        precheck: Callable[[], str | None] | None = None,
        borrow: bool = False,
    ) -> _Result:
        """Run one REST call in a worker thread through the bucket; classify the outcome.

        ``precheck`` runs after the token is granted, in the worker thread right before
        the request leaves: the kill gate is checked there, not before a wait for the
        bucket or for a thread. It reads plain attributes only (safe from a thread).
        """
        await self.bucket.acquire(urgent=urgent, borrow=borrow)

        def checked() -> Any:
            if precheck is not None and (blocked := precheck()) is not None:
                return _Blocked(blocked)
            return fn()

        try:
            body = await anyio.to_thread.run_sync(checked, limiter=self._limiter)
        except APIError as exc:
            status = _status_code(exc)
            code = _error_code(exc)
            detail = _error_message(exc)
            if status == 404:
                return _Result(_Outcome.NOT_FOUND, detail=detail, status=status)
            if status == 422 and code == DUPLICATE_CODE:
                return _Result(_Outcome.DUPLICATE, detail=detail, status=status)
            if status is not None and (status >= 500 or status == 429):
                self.broker_errors += 1
                return _Result(_Outcome.UNKNOWN, detail=f"HTTP {status}: {detail}", status=status)
            return _Result(_Outcome.REJECTED, detail=detail, status=status)
        except (requests.RequestException, OSError) as exc:
            self.broker_errors += 1
            return _Result(_Outcome.UNKNOWN, detail=f"{type(exc).__name__}: {exc}")
        if isinstance(body, _Blocked):
            return _Result(_Outcome.BLOCKED, detail=body.detail)
        self._set_connected(connected=True)
        return _Result(_Outcome.OK, body=body)

    def _set_connected(self, *, connected: bool, detail: str | None = None) -> None:
        if connected != self.connected:
            self.connected = connected
            log.info("broker.connectivity", connected=connected, detail=detail)
            self._on_status(BrokerStatus(connected=connected, detail=detail))

    async def _emit(self, update: OrderUpdate) -> None:
        tracked = self._tracked.get(update.client_order_id)
        sid = tracked.strategy_id if tracked else self._owners.owner(update.client_order_id)
        if sid is None or sid not in self._updates:
            return
        if tracked is None:
            if update.client_order_id in self._finished:
                return  # a late report (stream after look-up, or the reverse) of a final order
            # Ours by name but not in the journal: reported, never adopted silently.
            if update.client_order_id not in self.external:
                self.external.add(update.client_order_id)
                self._on_external(sid, update.client_order_id)
            return
        tracked.status = update.status
        if update.broker_order_id:
            tracked.broker_order_id = update.broker_order_id
        if update.status in FINAL:
            del self._tracked[update.client_order_id]
            self._cancel_requested.discard(update.client_order_id)
            self._finished[update.client_order_id] = None
            while len(self._finished) > RECENTLY_FINISHED:
                self._finished.popitem(last=False)
        await self._updates[sid].send(update)

    # ------------------------------------------------------------------ actor body

    async def _run(self) -> None:
        self._client = self._make_client()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._feed_submissions)
            tg.start_soon(self._feed_cancels)
            tg.start_soon(self._consume_kill_changes)
            opened = await self._recover()
            self.recovered.set()
            tg.start_soon(self._settle_unfinished, opened)
            for _ in range(self._workers):
                tg.start_soon(self._worker)
            tg.start_soon(self._run_stream)
            tg.start_soon(self._reconcile_loop)
            tg.start_soon(self._poll_account)
            tg.start_soon(self._expire_queued)

    async def _feed_submissions(self) -> None:
        async for job in self._submissions:
            self._tracked[job.client_order_id] = TrackedOrder(
                job.strategy_id, None, "pending", job.intent, job.accepted_at
            )
            self._queue_submit(job)

    async def _feed_cancels(self) -> None:
        async for job in self._cancels:
            self._queue_cancel(job)

    def _queue_submit(self, job: SubmitOrder) -> None:
        self._submit_q.append(job)
        self._jobs.release()

    def _queue_cancel(self, job: CancelOrder) -> None:
        self._cancel_requested.add(job.client_order_id)
        self._cancel_q.append(job)
        self._jobs.release()

    async def _worker(self) -> None:
        while True:
            await self._jobs.acquire()
            if self._cancel_q:
                await self._cancel(self._cancel_q.popleft())
            elif self._submit_q:
                await self._submit(self._submit_q.popleft())
            # else: the job was settled while queued (engage or expiry): nothing to do

    # ------------------------------------------------------------------ submission

    def _blocked(self, job: SubmitOrder) -> str | None:
        if job.bypass_gate:
            return None
        if self._halt_latch.reason is not None:
            return f"trading halted: {self._halt_latch.reason}"
        reason = self._gate.blocked(job.strategy_id)
        if reason is not None:
            return f"{reason.value}: kill switch engaged before the order reached the broker"
        if job.client_order_id in self._cancel_requested:
            return "cancelled before the order reached the broker"
        return None

    async def _submit(self, job: SubmitOrder) -> None:
        """Get one order to the broker exactly once, or settle that it never got there."""
        assert self._client is not None
        client = self._client
        request = _order_request(job)
        attempts = 0
        backoff = 0.1
        while True:
            # Checked before the wait for a token (no token spent on a dead order) and
            # again after it, right before the request leaves (``precheck``).
            if await self._settled_unsent(job, attempts=attempts):
                return
            first = attempts == 0
            attempts += 1
            result = await self._post(job, lambda: client.submit_order(request), first=first)
            if result.outcome == _Outcome.BLOCKED:
                continue  # the top of the loop settles it (cancelled)
            if result.outcome == _Outcome.EXPIRED:
                await self._expire(job)
                return
            self.posts += 1
            if result.outcome == _Outcome.OK:
                await self._learn_legs(result.body, "rest")
                await self._emit(order_update(result.body, "rest"))
                return
            if result.outcome == _Outcome.REJECTED:
                log.warning(
                    "order.broker_rejected",
                    client_order_id=job.client_order_id,
                    detail=result.detail,
                    http_status=result.status,
                )
                await self._emit(
                    OrderUpdate(
                        client_order_id=job.client_order_id,
                        status="rejected",
                        detail=f"BROKER_REJECTED: {result.detail}",
                    )
                )
                return
            # Unknown outcome or duplicate: the broker may have it. Look before sending again.
            log.warning(
                "order.outcome_unknown",
                client_order_id=job.client_order_id,
                detail=result.detail,
                attempt=attempts,
            )
            if await self._adopt_if_present(
                job.client_order_id, until=job.accepted_at + self._deadline_s
            ):
                return
            if time.time() > job.accepted_at + self._deadline_s:
                await self._emit(
                    OrderUpdate(
                        client_order_id=job.client_order_id,
                        status="rejected",
                        detail=f"BROKER_UNAVAILABLE: not accepted by the broker within "
                        f"{self._deadline_s:g} s ({result.detail})",
                    )
                )
                return
            self._set_connected(connected=False, detail=result.detail)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _settled_unsent(self, job: SubmitOrder, *, attempts: int) -> bool:
        """Settle ``job`` if it may not be sent now (gate closed or deadline passed)."""
        blocked = self._blocked(job)
        if blocked is None:
            if attempts == 0 and self._late(job):
                await self._expire(job)
                return True
            return False
        if attempts and await self._adopt_if_present(job.client_order_id):
            return True
        await self._emit(
            OrderUpdate(client_order_id=job.client_order_id, status="cancelled", detail=blocked)
        )
        return True

    def _late(self, job: SubmitOrder) -> bool:
        return not job.bypass_gate and time.time() > job.accepted_at + self._deadline_s

    async def _post(self, job: SubmitOrder, fn: Callable[[], Any], *, first: bool) -> _Result:
        """One POST of ``job``: through the bucket, with the last gate check right before it.

        The last check runs in the HTTP thread itself, immediately before the request
        is written: an engage (which closes the gate on the event loop) either comes
        first, and the order is not sent, or the request was already leaving.
        """

        def last_check() -> str | None:
            if (blocked := self._blocked(job)) is not None:
                return blocked
            if first and self._late(job):
                return EXPIRED_MARK
            self.gate_passes.append((time.time(), job.client_order_id))
            return None

        if first:
            await self._emit(OrderUpdate(client_order_id=job.client_order_id, status="submitted"))
        self._inflight_posts += 1
        if self._inflight_posts == 1:
            self._posts_idle = anyio.Event()
        try:
            result = await self._call(fn, precheck=last_check)
        finally:
            self._inflight_posts -= 1
            if self._inflight_posts == 0:
                self._posts_idle.set()
        if result.outcome == _Outcome.BLOCKED and result.detail == EXPIRED_MARK:
            return _Result(_Outcome.EXPIRED)
        return result

    async def _adopt_if_present(self, client_order_id: str, *, until: float | None = None) -> bool:
        """Look the order up until the broker answers; adopt it if it exists."""
        assert self._client is not None
        client = self._client
        backoff = 0.1
        while True:
            result = await self._call(lambda: client.get_order_by_client_id(client_order_id))
            if result.outcome == _Outcome.OK:
                await self._learn_legs(result.body, "lookup")
                await self._emit(order_update(result.body, "lookup"))
                return True
            if result.outcome in (_Outcome.NOT_FOUND, _Outcome.REJECTED):
                return False
            if until is not None and time.time() > until:
                return False
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # ------------------------------------------------------------------ cancels

    async def _cancel(self, job: CancelOrder) -> None:
        assert self._client is not None
        client = self._client
        tracked = self._tracked.get(job.client_order_id)
        if tracked is None:
            return
        if tracked.broker_order_id is None:
            # Not at the broker yet (or unknown): the submit path sees the request and stops.
            if tracked.status == "pending":
                return
            if not await self._adopt_if_present(job.client_order_id):
                return
            tracked = self._tracked.get(job.client_order_id)
            if tracked is None or tracked.broker_order_id is None:
                return
        broker_id = tracked.broker_order_id
        for _ in range(10):
            result = await self._call(lambda: client.cancel_order_by_id(broker_id), urgent=True)
            if result.outcome == _Outcome.OK:
                return  # the stream (or the next reconcile) reports `canceled`
            if result.outcome in (_Outcome.REJECTED, _Outcome.NOT_FOUND):
                # Not cancelable (already final): learn its real state.
                await self._adopt_if_present(job.client_order_id)
                return
            await anyio.sleep(0.2)

    async def wait_posts_idle(self) -> None:
        """Return once no POST is in flight (bounded by twice the request timeout).

        The authority awaits this after flipping the gate and before it reports the
        engage as done: from then on no order can reach the broker.
        """
        with anyio.move_on_after(self._timeout * 2):
            await self._posts_idle.wait()

    async def _consume_kill_changes(self) -> None:
        async for change in self._kill_changes:
            if change.engaged:
                await self.recovered.wait()
                await self._enforce_engage(change)

    async def _enforce_engage(self, change: KillChanged) -> None:
        """No POST after the engage: wait for in-flight ones, cancel the scope, flatten."""
        assert self._client is not None
        client = self._client
        dropped = await self._drop_blocked_submissions()
        inflight = self._inflight_posts
        await self.wait_posts_idle()
        if change.strategy_id is None:
            for attempt in range(20):
                result = await self._call(client.cancel_orders, urgent=True)
                if result.outcome == _Outcome.OK:
                    log.warning("kill.cancelled_all", responses=len(result.body or []))
                    break
                await anyio.sleep(min(0.1 * 2**attempt, 2.0))
            await self._legs_ended(list(self._brackets.legs))
        else:
            await self._cancel_open_of(change.strategy_id)
        self._reconcile_now.set()
        if self._settlements is not None:
            await self._settlements.send(
                KillSettled(
                    strategy_id=change.strategy_id,
                    detail=f"{inflight} POSTs in flight at the engage have returned; "
                    f"{dropped} queued orders dropped unsent; open orders cancelled",
                )
            )
        if change.flatten:
            targets = [change.strategy_id] if change.strategy_id else list(self._updates)
            for sid in targets:
                await self._updates[sid].send(FlattenNow(strategy_id=sid))

    async def _drop_blocked_submissions(self) -> int:
        """Settle every queued order the gate now blocks: it is cancelled, never sent."""
        keep: deque[SubmitOrder] = deque()
        dropped: list[tuple[SubmitOrder, str]] = []
        for job in self._submit_q:
            blocked = self._blocked(job)
            if blocked is None:
                keep.append(job)
            else:
                dropped.append((job, blocked))
        self._submit_q = keep
        for job, blocked in dropped:
            await self._emit(
                OrderUpdate(client_order_id=job.client_order_id, status="cancelled", detail=blocked)
            )
        return len(dropped)

    async def _expire_queued(self) -> None:
        """Orders still queued at their deadline end ``expired``: never sent late."""
        while True:
            await anyio.sleep(EXPIRY_SWEEP_S)
            now = time.time()
            late = [j for j in self._submit_q if now > j.accepted_at + self._deadline_s]
            if not late:
                continue
            self._submit_q = deque(j for j in self._submit_q if j not in late)
            for job in late:
                await self._expire(job)

    async def _expire(self, job: SubmitOrder) -> None:
        self.expired += 1
        log.warning("order.expired_unsent", client_order_id=job.client_order_id)
        await self._emit(
            OrderUpdate(
                client_order_id=job.client_order_id,
                status="expired",
                detail=f"BROKER_BUSY: not sent within broker.submit_deadline_s "
                f"({self._deadline_s:g} s); never sent",
            )
        )

    def expected_submit_wait_s(self, extra: int = 0) -> float:
        """When a new order would leave for the broker, in seconds from now (estimate).

        Counts the orders and cancels queued ahead, ``extra`` more (accepted but not yet
        handed over), the tokens in the bucket and its refill rate less a share kept for
        polls and reconciles. The order managers refuse an order with ``BROKER_BUSY`` when
        this passes the deadline.
        """
        ahead = len(self._submit_q) + len(self._cancel_q) + extra + 1
        short = ahead - self.bucket.tokens()
        if short <= 0:
            return 0.0
        return short / (self.bucket.rate * ORDER_SHARE_OF_RATE)

    @property
    def submit_deadline_s(self) -> float:
        """How long an accepted order may wait to be sent."""
        return self._deadline_s

    async def _cancel_open_of(self, strategy_id: str) -> None:
        for coid, tracked in list(self._tracked.items()):
            if tracked.strategy_id == strategy_id and tracked.status not in FINAL:
                self._cancel_requested.add(coid)
                await self._cancel(CancelOrder(strategy_id=strategy_id, client_order_id=coid))
        await self._cancel_legs_of(strategy_id)

    # ------------------------------------------------------------------ bracket legs

    async def _cancel_legs_of(self, strategy_id: str) -> None:
        """Cancel the open legs of the strategy's brackets whose entry has (partly) filled.

        An entry cancelled without fills takes its legs with it at the broker; once it
        has fills, the legs protect a position and are cancelled by their own ids; a
        flatten that follows waits until they have ended (:meth:`_legs_ended`).
        """
        assert self._client is not None
        client = self._client
        cancelling: list[str] = []
        for leg_id, leg in list(self._brackets.legs.items()):
            parent = self._tracked.get(leg.parent)
            if leg.strategy_id != strategy_id or (
                parent is not None and parent.status == "accepted"
            ):
                continue
            result = await self._call(
                functools.partial(client.cancel_order_by_id, leg_id), urgent=True
            )
            log.info("kill.leg_cancel", order_id=leg_id, parent=leg.parent, outcome=result.outcome)
            cancelling.append(leg_id)
        await self._legs_ended(cancelling)

    async def _legs_ended(self, leg_ids: list[str]) -> None:
        """Wait (up to the request timeout) until the stream reports these legs ended.

        Legs hold the position's shares until they are cancelled: a flatten sent before
        would be refused for want of available shares.
        """
        with anyio.move_on_after(self._timeout):
            while any(leg_id in self._brackets.legs for leg_id in leg_ids):
                await self._brackets.ended.wait()

    async def _learn_legs(self, body: Mapping[str, Any], source: str) -> None:
        """Follow the legs of one of our brackets, from its order object.

        The order object of a POST has its legs; a look-up by ``client_order_id`` may
        not, and then the parent is read again with ``nested=true``.
        """
        parent = str(body.get("client_order_id", ""))
        tracked = self._tracked.get(parent)
        if (
            tracked is None
            or body.get("order_class") != "bracket"
            or parent in self._brackets.known
        ):
            return
        legs = body.get("legs")
        if not legs and body.get("id"):
            assert self._client is not None
            client = self._client
            request = GetOrderByIdRequest(nested=True)
            result = await self._call(
                functools.partial(client.get_order_by_id, str(body["id"]), filter=request)
            )
            legs = result.body.get("legs") if result.outcome == _Outcome.OK else None
        if not legs:
            return
        self._brackets.known.add(parent)
        for leg in legs:
            if isinstance(leg, Mapping) and leg.get("id") and leg.get("client_order_id"):
                leg_id = str(leg["id"])
                self._brackets.legs[leg_id] = _Leg(strategy_id=tracked.strategy_id, parent=parent)
                await self._emit_leg(leg, source)
                early = self._brackets.early.pop(leg_id, None)
                if early is not None:
                    await self._emit_leg(early, "stream")

    async def _route_leg(self, body: Mapping[str, Any], source: str) -> bool:
        """Deal with ``body`` if it is a bracket leg (not our ``client_order_id``).

        Returns:
            True if it was a leg (followed, or kept until its parent's legs are known);
            False for any other order, which then goes the usual way.
        """
        order_id = str(body.get("id", ""))
        if order_id in self._brackets.legs:
            await self._emit_leg(body, source)
            return True
        coid = str(body["client_order_id"])
        tracked = self._tracked.get(coid)
        if tracked is not None:
            if tracked.status not in ("pending", "submitted"):
                # A bracket recovered from the journal: its legs are learnt from the broker.
                await self._learn_legs(body, source)
            return False
        if body.get("order_class") != "bracket" or self._owners.owner(coid) is not None:
            return False
        self._brackets.early[order_id] = dict(body)
        self._brackets.early.move_to_end(order_id)
        while len(self._brackets.early) > EARLY_LEGS:
            self._brackets.early.popitem(last=False)
        return True

    async def _emit_leg(self, body: Mapping[str, Any], source: str) -> None:
        """Report a leg's state to its strategy, marked with its parent."""
        leg_id = str(body.get("id", ""))
        leg = self._brackets.legs.get(leg_id)
        if leg is None or leg.strategy_id not in self._updates:
            return
        update = msgspec.structs.replace(
            order_update(body, source), parent_client_order_id=leg.parent
        )
        if update.status in FINAL:
            del self._brackets.legs[leg_id]
            if not any(other.parent == leg.parent for other in self._brackets.legs.values()):
                self._brackets.known.discard(leg.parent)
            self._brackets.ended.set()
            self._brackets.ended = anyio.Event()
        await self._updates[leg.strategy_id].send(update)

    # ------------------------------------------------------------------ stream and reconcile

    async def _run_stream(self) -> None:
        def connected() -> None:
            self.stream_connects += 1
            self._set_connected(connected=True)
            log.info("broker.stream_connected", connects=self.stream_connects)
            self._reconcile_now.set()

        stream = _Stream(
            self._key_id,
            self._secret_key,
            raw_data=True,
            url_override=self._stream_url,
            websocket_params={"ping_interval": 5, "ping_timeout": 10, "max_queue": 4096},
            on_connect=connected,
        )
        stream._reconnect_min_backoff = 0.2  # noqa: SLF001  # defaults are 1 s .. 30 s
        stream._reconnect_max_backoff = 5.0  # noqa: SLF001

        async def on_update(message: dict[str, Any]) -> None:
            self._last_stream_event = time.monotonic()
            data = message.get("data") or {}
            order = data.get("order")
            if (
                isinstance(order, dict)
                and order.get("client_order_id")
                and not await self._route_leg(order, "stream")
            ):
                await self._emit(order_update(order, "stream"))

        stream.subscribe_trade_updates(on_update)
        try:
            # Runs on our loop rather than in a thread of its own (alpaca-py: unannotated).
            await stream._run_forever()  # type: ignore[no-untyped-call]  # noqa: SLF001
        finally:
            with anyio.CancelScope(shield=True):
                await stream.close()

    async def _reconcile_loop(self) -> None:
        last_full = time.monotonic()
        while True:
            with anyio.move_on_after(1.0):
                await self._reconcile_now.wait()
            now = time.monotonic()
            due_full = now - last_full >= self._reconcile_interval_s
            quiet = now - self._last_stream_event >= self._quiet_reconcile_s
            open_orders = any(t.status not in FINAL for t in self._tracked.values())
            if self._reconcile_now.is_set() or due_full or (quiet and open_orders):
                self._reconcile_now = anyio.Event()
                await self.reconcile()
                last_full = time.monotonic()
                self._last_stream_event = time.monotonic()
                # A stream that keeps reconnecting asks for a reconcile each time; each one
                # costs requests that orders waiting for the rate limit need more.
                await anyio.sleep(RECONCILE_MIN_GAP_S)

    async def list_orders(
        self, status: QueryOrderStatus, after: datetime | None = None, *, borrow: bool = False
    ) -> dict[str, Any] | None:
        """Every order of ``status`` submitted after ``after``, by ``client_order_id``.

        Pages of 500, oldest first, each starting just before the last one's newest
        timestamp (``after`` is exclusive, so orders sharing that timestamp are fetched
        again and de-duplicated). One request per 500 orders, where looking each order
        up would cost one request per order. None if the broker did not answer.
        ``borrow``: the pages may borrow from the bucket (:meth:`TokenBucket.acquire`).
        """
        assert self._client is not None
        client = self._client
        found: dict[str, Any] = {}
        cursor = after
        while True:
            request = GetOrdersRequest(
                status=status, limit=LIST_PAGE, after=cursor, direction=Sort.ASC
            )
            result = await self._call(
                functools.partial(client.get_orders, filter=request), borrow=borrow
            )
            if result.outcome != _Outcome.OK:
                self._set_connected(connected=False, detail=result.detail)
                return None
            page: list[dict[str, Any]] = list(result.body or [])
            fresh = 0
            for body in page:
                coid = str(body.get("client_order_id", ""))
                if coid and coid not in found:
                    found[coid] = body
                    fresh += 1
            stamps = [t for b in page if (t := _datetime(b.get("created_at"))) is not None]
            if len(page) < LIST_PAGE or not stamps or fresh == 0:
                # A short page is the last; a page of nothing new would not progress.
                return found
            cursor = max(stamps) - LIST_OVERLAP

    async def _list_until_answered(
        self, status: QueryOrderStatus, after: datetime | None = None, *, borrow: bool = False
    ) -> dict[str, Any]:
        """:meth:`list_orders`, again every second until the broker answers."""
        while True:
            listed = await self.list_orders(status, after, borrow=borrow)
            if listed is not None:
                return listed
            await anyio.sleep(1.0)

    async def reconcile(self) -> None:
        """Bring every unfinished order up to the broker's state; enforce engaged scopes."""
        listed = await self.list_orders(QueryOrderStatus.OPEN)
        if listed is None:
            return
        open_at_broker = listed
        for coid, body in open_at_broker.items():
            sid = self._owners.owner(coid)
            tracked = self._tracked.get(coid)
            if tracked is not None:
                if not _same_state(tracked, body):
                    await self._emit(order_update(body, "reconcile"))
            elif sid is not None:
                await self._emit(order_update(body, "reconcile"))  # reported as external
            if sid is not None and self._gate.blocked(sid) is not None:
                self._cancel_requested.add(coid)
                if coid in self._tracked:
                    self._queue_cancel(CancelOrder(strategy_id=sid, client_order_id=coid))
        await self._look_up_closed(open_at_broker)

    async def _look_up_closed(self, open_at_broker: Mapping[str, Any]) -> None:
        """Orders we follow that are no longer open at the broker: ask for their end state.

        Few, normally: the stream reports most ends as they happen.
        """
        gone = {
            coid: tracked
            for coid, tracked in self._tracked.items()
            if coid not in open_at_broker and tracked.status != "pending"
        }
        if len(gone) > LOOKUPS_BEFORE_LISTING:
            # Many at once (events lost while the stream was down): one listing settles them.
            since = datetime.fromtimestamp(
                min(t.accepted_at for t in gone.values()) - CLOCK_SKEW_S, tz=UTC
            )
            closed = await self.list_orders(QueryOrderStatus.CLOSED, after=since) or {}
            for coid in list(gone):
                body = closed.get(coid)
                if body is not None:
                    await self._learn_legs(body, "reconcile")
                    await self._emit(order_update(body, "reconcile"))
                    del gone[coid]
        for coid, tracked in gone.items():
            if coid not in self._tracked:
                continue
            if not await self._adopt_if_present(coid) and tracked.status != "submitted":
                log.warning("order.missing_at_broker", client_order_id=coid)

    async def _recover(self) -> dict[str, Any]:
        """At start, before READY: the account, and which of our orders are open.

        Two kinds of request only: the account (equity for the limits) and the open
        orders, listed 500 at a time. READY follows at once; what the journal left
        unfinished and the listing did not show open is settled right after
        (:meth:`_settle_unfinished`), counted as open until then.

        Returns:
            The open orders at the broker, by ``client_order_id``.
        """
        assert self._client is not None
        backoff = 0.2
        while True:
            result = await self._call(self._client.get_account)
            if result.outcome == _Outcome.OK:
                self._publish_account(result.body)
                break
            if result.outcome == _Outcome.REJECTED:
                raise BrokerError(f"broker refused the account request: {result.detail}")
            log.warning("broker.unreachable_at_start", detail=result.detail)
            self._set_connected(connected=False, detail=result.detail)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        # READY waits for this listing: it may borrow against the broker's window.
        opened = await self._list_until_answered(QueryOrderStatus.OPEN, borrow=True)
        for coid, body in opened.items():
            tracked = self._tracked.get(coid)
            if tracked is not None and not _same_state(tracked, body):
                await self._emit(order_update(body, "reconcile"))
        log.info(
            "broker.open_orders_known",
            open=len(opened),
            unfinished=len(self._tracked),
            borrowed=self.bucket.borrowed,
        )
        return opened

    async def _settle_unfinished(self, opened: dict[str, Any]) -> None:
        """Settle the journal's unfinished orders that were not open: one more listing.

        Every one that closed since the oldest of them was accepted is in the closed
        listing. An order in neither listing never reached the broker: it is sent again
        within its deadline, else reported. (A POST of the previous process still on the
        wire would be refused as a duplicate ``client_order_id`` and then adopted.)
        """
        missing = {c: t for c, t in self._tracked.items() if c not in opened}
        if missing:
            since = datetime.fromtimestamp(
                min(t.accepted_at for t in missing.values()) - CLOCK_SKEW_S, tz=UTC
            )
            closed = await self._list_until_answered(QueryOrderStatus.CLOSED, after=since)
            for coid, tracked in missing.items():
                body = closed.get(coid)
                if body is not None:
                    await self._learn_legs(body, "reconcile")
                    await self._emit(order_update(body, "reconcile"))
                elif time.time() - tracked.accepted_at < self._deadline_s:
                    self._queue_submit(
                        SubmitOrder(
                            strategy_id=tracked.strategy_id,
                            client_order_id=coid,
                            intent=tracked.intent,
                            accepted_at=tracked.accepted_at,
                        )
                    )
                else:
                    await self._emit(
                        OrderUpdate(
                            client_order_id=coid,
                            status="rejected",
                            detail="BROKER_UNAVAILABLE: never reached the broker within "
                            f"{self._deadline_s:g} s (the daemon was down; was {tracked.status})",
                        )
                    )
        await self.poll_account()
        log.info("broker.recovered", unfinished=len(self._tracked), external=len(self.external))

    async def _poll_account(self) -> None:
        assert self._client is not None
        client = self._client
        while True:
            await anyio.sleep(self._account_poll_s)
            await self.poll_account(client)

    async def poll_account(self, client: TradingClient | None = None) -> None:
        """Account, positions and clock, reported to the guardian as one status."""
        client = client or self._client
        assert client is not None
        account = await self._call(client.get_account)
        if account.outcome != _Outcome.OK:
            return
        positions = await self._call(client.get_all_positions)
        clock = await self._call(client.get_clock)
        self._publish_account(
            account.body,
            positions.body if positions.outcome == _Outcome.OK else None,
            clock.body if clock.outcome == _Outcome.OK else None,
        )

    def _publish_account(
        self,
        body: Mapping[str, Any],
        positions: list[Mapping[str, Any]] | None = None,
        clock: Mapping[str, Any] | None = None,
    ) -> None:
        self._set_connected(connected=True)
        held = None
        if positions is not None:
            held = {}
            for p in positions:
                qty = _as_float(p.get("qty")) or 0.0
                if p.get("side") == "short" and qty > 0:
                    qty = -qty
                held[str(p["symbol"])] = (qty, _as_float(p.get("market_value")) or 0.0)
        market_open = bool(clock.get("is_open")) if clock is not None else None
        session = (
            str(clock.get("next_close", ""))[:10] if clock is not None and market_open else None
        )
        self._on_status(
            BrokerStatus(
                connected=True,
                equity=_as_float(body.get("equity")),
                cash=_as_float(body.get("cash")),
                positions=held,
                market_open=market_open,
                session=session,
            )
        )


def _order_request(job: SubmitOrder) -> Any:
    intent: OrderIntent = job.intent
    common: dict[str, Any] = {
        "symbol": intent.symbol,
        "side": OrderSide.BUY if intent.side == "buy" else OrderSide.SELL,
        "time_in_force": TimeInForce(intent.time_in_force),
        "client_order_id": job.client_order_id,
        "extended_hours": intent.extended_hours or None,
    }
    if intent.qty is not None:
        common["qty"] = intent.qty
    else:
        common["notional"] = intent.notional
    if intent.order_class == "bracket":
        # The broker holds the exits: they survive this daemon (CONTRACT §11).
        assert intent.take_profit is not None  # checked by OrderIntent
        assert intent.stop_loss is not None
        common["order_class"] = OrderClass.BRACKET
        common["take_profit"] = TakeProfitRequest(limit_price=intent.take_profit)
        common["stop_loss"] = StopLossRequest(stop_price=intent.stop_loss)
    match intent.order_type:
        case "market":
            return MarketOrderRequest(**common)
        case "limit":
            return LimitOrderRequest(limit_price=intent.limit_price, **common)
        case "stop":
            return StopOrderRequest(stop_price=intent.stop_price, **common)
        case "stop_limit":
            return StopLimitOrderRequest(
                limit_price=intent.limit_price, stop_price=intent.stop_price, **common
            )
        case "trailing_stop":
            return TrailingStopOrderRequest(
                trail_percent=intent.trail_percent, trail_price=intent.trail_price, **common
            )


def _same_state(tracked: TrackedOrder, body: Mapping[str, Any]) -> bool:
    """Whether a listed order says nothing new: acknowledged, unfilled, as we know it."""
    return (
        tracked.status == "accepted"
        and tracked.broker_order_id == body.get("id")
        and STATUS_MAP.get(str(body.get("status", ""))) == "accepted"
        and not _as_float(body.get("filled_qty"))
    )


def _datetime(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (as Alpaca sends them), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _epoch(value: Any) -> float | None:
    """An RFC 3339 timestamp (as Alpaca sends them) in epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _status_code(exc: APIError) -> int | None:
    try:
        code = exc.status_code
    except AttributeError:
        return None
    return int(code) if code is not None else None


def _error_code(exc: APIError) -> int | None:
    try:
        return int(exc.code)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _error_message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except (AttributeError, KeyError, TypeError, ValueError):
        return str(exc)[:200]
