"""The Alpaca adapter: the only code that imports alpaca-py (and requests).

alpaca-py's REST client is synchronous, retries every request (POST included)
three times on 429/504 and sets no HTTP timeout. So here every call runs in a
worker thread, through one token bucket (cancels first), with a real timeout,
and with alpaca-py's own retry turned off. Every call ends as an :class:`Outcome`:
:class:`Ok` with the parsed answer, or :class:`Failed` with a structured
:class:`BrokerCallError` (HTTP status, Alpaca error code, message). Callers match
on those fields, never on the message text.

Alpaca order status -> contract status (docs/protocol.md), one table:

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

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import anyio
import requests
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
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from actors.channels import BrokerStatus
from actors.core.broker_outcome import (
    BrokerCallError,
    CallResult,
    Failed,
    Ok,
    Outcome,
    Refusal,
)
from actors.core.order_sync import LIST_PAGE, BrokerOrder
from actors.core.rate_budget import Grant, RateBudget, rate_window
from actors.core.risk_limits import Quote
from protocol.messages import OrderIntent, OrderStatus

T = TypeVar("T")

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
DUPLICATE_CODE: Final = 40010001
"""Alpaca's error code for a ``client_order_id`` it already has (with HTTP 422)."""
QUOTE_TIMEOUT_S: Final = 2.0
"""A quote older than this is of no use to a decision anyway."""
ListedStatus: TypeAlias = Literal["open", "closed"]


@dataclass(frozen=True)
class BrokerRequest(Generic[T]):
    """One REST call, described: :meth:`AlpacaAdapter.perform` sends it."""

    send: Callable[[TradingClient], Any]
    parse: Callable[[Any], T]


def classify(http_status: int | None, code: int | None) -> Outcome:
    """The outcome of an error answer, from its HTTP status and Alpaca error code."""
    if http_status == 404:
        return Outcome.NOT_FOUND
    if http_status == 422 and code == DUPLICATE_CODE:
        return Outcome.DUPLICATE
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return Outcome.UNKNOWN
    return Outcome.REJECTED


class TokenBucket:
    """One bucket for every broker call; cancels are served before anything else.

    The arithmetic is :class:`~actors.core.rate_budget.RateBudget`; this puts it on
    the clock and waits for it.

    Args:
        per_minute: sustained rate.
        burst: bucket size.
    """

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        """Start full."""
        self._budget = RateBudget(per_minute, burst, now=time.monotonic())
        self.waits = 0
        """Tokens granted from the bucket after a wait."""

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self._budget.rate

    @property
    def borrowed(self) -> int:
        """Tokens lent against the broker's window so far."""
        return self._budget.borrowed

    def observe(self, limit: int, remaining: int, reset: float) -> None:
        """The broker's rate-limit headers of one answer (called from the HTTP thread)."""
        self._budget.observe(limit, remaining, reset)

    def window_spare(self) -> int:
        """Requests the broker's current window still allows beyond its reserve."""
        return self._budget.window_spare(time.time())

    def tokens(self) -> float:
        """Tokens available now."""
        return self._budget.tokens(time.monotonic())

    def expected_wait_s(self, ahead: int) -> float:
        """When a call with ``ahead`` calls before it (itself included) would be served."""
        return self._budget.expected_wait_s(ahead, time.monotonic())

    async def acquire(
        self, *, urgent: bool = False, borrow: bool = False, order: bool = False
    ) -> None:
        """Take one token, waiting as needed: cancels first, then orders, then the rest.

        With ``borrow`` (the listing that READY waits for), an empty bucket lends
        against the broker's own window (:meth:`RateBudget.take`).
        """
        budget = self._budget
        if urgent:
            budget.urgent_arrived()
        if order:
            budget.order_arrived()
        try:
            waited = False
            while (
                grant := budget.take(
                    time.monotonic(), time.time(), urgent=urgent, borrow=borrow, order=order
                )
            ) is None:
                waited = True
                await anyio.sleep(budget.retry_after_s())
            if waited and grant is Grant.BUCKET:
                self.waits += 1
        finally:
            if urgent:
                budget.urgent_left()
            if order:
                budget.order_left()


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
            window = rate_window(response.headers)
            if window is not None:
                self._bucket.observe(*window)
        return response


class _Stream(TradingStream):
    """TradingStream that tells us every time it has (re)connected."""

    def __init__(self, *args: Any, on_connect: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]  # alpaca-py: unannotated
        self._on_connect()


@dataclass(frozen=True)
class AlpacaEndpoints:
    """Where Alpaca is, and the keys."""

    url: str
    stream_url: str
    data_url: str
    key_id: str
    secret_key: str


class AlpacaAdapter:
    """Alpaca's REST, market data and trade stream, as typed calls with outcomes.

    Args:
        endpoints: where, and the keys.
        timeout_s: the HTTP timeout of every request.
        rate_limit_per_min: the bucket's sustained rate.
        threads: worker threads for calls (they block on the network).
    """

    def __init__(
        self,
        endpoints: AlpacaEndpoints,
        *,
        timeout_s: float,
        rate_limit_per_min: float,
        threads: int,
    ) -> None:
        """No connection yet (:meth:`connect`)."""
        self._endpoints = endpoints
        self._timeout_s = timeout_s
        self.bucket = TokenBucket(rate_limit_per_min)
        self._limiter = anyio.CapacityLimiter(threads)
        self._client: TradingClient | None = None
        self._data_client: StockHistoricalDataClient | None = None

    def connect(self) -> None:
        """A fresh trading client (and HTTP session): once per run of the gateway."""
        e = self._endpoints
        client = TradingClient(e.key_id, e.secret_key, raw_data=True, url_override=e.url)
        # alpaca-py retries every request, POST included, on 429/504 and sets no timeout.
        client._retry = 0  # noqa: SLF001  # no public switch; we retry by looking up instead
        adapter = _TimeoutAdapter(self._timeout_s, self.bucket)
        client._session.mount("http://", adapter)  # noqa: SLF001  # no public hook for timeouts
        client._session.mount("https://", adapter)  # noqa: SLF001
        self._client = client

    async def perform(
        self,
        request: BrokerRequest[T],
        *,
        urgent: bool = False,
        borrow: bool = False,
        precheck: Callable[[], Refusal | None] | None = None,
        order: bool = False,
    ) -> CallResult[T]:
        """Send one request in a worker thread through the bucket; classify the outcome.

        ``precheck`` runs after the token is granted, in the worker thread right before
        the request leaves: the kill gate is checked there, not before a wait for the
        bucket or for a thread. It must read plain attributes only (safe from a thread).
        """
        await self.bucket.acquire(urgent=urgent, borrow=borrow, order=order)
        client = self._client
        assert client is not None, "connect() first"

        def send() -> Any:
            if precheck is not None and (refusal := precheck()) is not None:
                return refusal
            return request.send(client)

        try:
            body = await anyio.to_thread.run_sync(send, limiter=self._limiter)
        except APIError as exc:
            error = _call_error(exc)
            return Failed(classify(error.http_status, error.code), error=error)
        except (requests.RequestException, OSError) as exc:
            error = BrokerCallError(str(exc), transport=type(exc).__name__)
            return Failed(Outcome.UNKNOWN, error=error)
        if isinstance(body, Refusal):
            return Failed(body.outcome, reason=body.reason)
        return Ok(request.parse(body))

    # ------------------------------------------------------------------ the calls

    @staticmethod
    def submit(client_order_id: str, intent: OrderIntent) -> BrokerRequest[BrokerOrder]:
        """POST the order (the same request object for every attempt)."""
        order = _order_request(client_order_id, intent)
        return BrokerRequest(lambda c: c.submit_order(order), parse_order)

    @staticmethod
    def order_by_client_id(client_order_id: str) -> BrokerRequest[BrokerOrder]:
        """Look an order up by our id."""
        return BrokerRequest(lambda c: c.get_order_by_client_id(client_order_id), parse_order)

    @staticmethod
    def order_with_legs(order_id: str) -> BrokerRequest[BrokerOrder]:
        """Read an order by the broker's id, with its legs (``nested=true``)."""
        nested = GetOrderByIdRequest(nested=True)
        return BrokerRequest(lambda c: c.get_order_by_id(order_id, filter=nested), parse_order)

    @staticmethod
    def cancel(order_id: str) -> BrokerRequest[None]:
        """Cancel one order by the broker's id (the stream reports its end)."""
        return BrokerRequest(lambda c: c.cancel_order_by_id(order_id), _nothing)

    @staticmethod
    def cancel_all() -> BrokerRequest[int]:
        """Cancel every open order (``DELETE /v2/orders``); the answer counts them."""
        return BrokerRequest(lambda c: c.cancel_orders(), lambda body: len(body or []))

    @staticmethod
    def orders_page(
        status: ListedStatus, after: datetime | None
    ) -> BrokerRequest[list[BrokerOrder]]:
        """One page of orders of ``status`` submitted after ``after``, oldest first."""
        query = GetOrdersRequest(
            status=QueryOrderStatus(status), limit=LIST_PAGE, after=after, direction=Sort.ASC
        )
        return BrokerRequest(
            lambda c: c.get_orders(filter=query), lambda body: [parse_order(b) for b in body or []]
        )

    @staticmethod
    def account() -> BrokerRequest[Mapping[str, Any]]:
        """The account (equity and cash)."""
        return BrokerRequest(lambda c: c.get_account(), _mapping)

    @staticmethod
    def positions() -> BrokerRequest[list[Mapping[str, Any]]]:
        """Every position."""
        return BrokerRequest(lambda c: c.get_all_positions(), lambda body: list(body or []))

    @staticmethod
    def clock() -> BrokerRequest[Mapping[str, Any]]:
        """The market clock."""
        return BrokerRequest(lambda c: c.get_clock(), _mapping)

    # ------------------------------------------------------------------ quotes and stream

    async def latest_quotes(
        self, symbols: Sequence[str], now: float
    ) -> CallResult[dict[str, Quote]]:
        """The latest quote of each symbol (market data: not through the trading bucket).

        A quote without a timestamp is stamped ``now``; one without a bid or an ask is
        left out.
        """
        if self._data_client is None:
            self._data_client = self._make_data_client()
        client = self._data_client
        request = StockLatestQuoteRequest(symbol_or_symbols=list(symbols))
        try:
            body = await anyio.to_thread.run_sync(
                lambda: client.get_stock_latest_quote(request), limiter=self._limiter
            )
        except APIError as exc:
            error = _call_error(exc)
            return Failed(classify(error.http_status, error.code), error=error)
        except (requests.RequestException, OSError) as exc:
            return Failed(Outcome.UNKNOWN, BrokerCallError(str(exc), transport=type(exc).__name__))
        return Ok(_quotes(dict(body or {}), now))

    def _make_data_client(self) -> StockHistoricalDataClient:
        e = self._endpoints
        client = StockHistoricalDataClient(
            e.key_id, e.secret_key, raw_data=True, url_override=e.data_url
        )
        client._retry = 0  # noqa: SLF001  # as for the trading client: we decide about retries
        adapter = _TimeoutAdapter(min(self._timeout_s, QUOTE_TIMEOUT_S))
        client._session.mount("http://", adapter)  # noqa: SLF001  # no public hook for timeouts
        client._session.mount("https://", adapter)  # noqa: SLF001
        return client

    async def run_trade_stream(
        self,
        *,
        on_connect: Callable[[], None],
        on_event: Callable[[BrokerOrder | None], Awaitable[None]],
    ) -> None:
        """Follow the trade stream on this event loop until cancelled (it reconnects itself).

        ``on_connect`` runs after every (re)connect; ``on_event`` gets each event's order
        (None for an event without one with a ``client_order_id``).
        """
        e = self._endpoints
        stream = _Stream(
            e.key_id,
            e.secret_key,
            raw_data=True,
            url_override=e.stream_url,
            websocket_params={"ping_interval": 5, "ping_timeout": 10, "max_queue": 4096},
            on_connect=on_connect,
        )
        stream._reconnect_min_backoff = 0.2  # noqa: SLF001  # defaults are 1 s .. 30 s
        stream._reconnect_max_backoff = 5.0  # noqa: SLF001

        async def on_update(message: dict[str, Any]) -> None:
            order = (message.get("data") or {}).get("order")
            if isinstance(order, dict) and order.get("client_order_id"):
                await on_event(parse_order(order))
            else:
                await on_event(None)

        stream.subscribe_trade_updates(on_update)
        try:
            # Runs on our loop rather than in a thread of its own (alpaca-py: unannotated).
            await stream._run_forever()  # type: ignore[no-untyped-call]  # noqa: SLF001
        finally:
            with anyio.CancelScope(shield=True):
                await stream.close()


# ---------------------------------------------------------------------- Alpaca's JSON


def parse_order(body: Mapping[str, Any]) -> BrokerOrder:
    """An Alpaca order object (raw JSON) in contract terms, legs included."""
    raw_status = str(body.get("status", ""))
    raw_legs = body.get("legs")
    return BrokerOrder(
        client_order_id=str(body.get("client_order_id") or ""),
        broker_order_id=str(body.get("id")) if body.get("id") else None,
        status=STATUS_MAP.get(raw_status, "accepted"),
        filled_qty=_as_float(body.get("filled_qty")) or 0.0,
        filled_avg_price=_as_float(body.get("filled_avg_price")),
        detail=None if raw_status in STATUS_MAP else f"alpaca status {raw_status}",
        created_at=_datetime(body.get("created_at")),
        bracket=body.get("order_class") == "bracket",
        legs=tuple(
            parse_order(leg)
            for leg in raw_legs
            if isinstance(leg, Mapping) and leg.get("id") and leg.get("client_order_id")
        )
        if raw_legs
        else None,
    )


def account_status(
    account: Mapping[str, Any],
    positions: Sequence[Mapping[str, Any]] | None = None,
    clock: Mapping[str, Any] | None = None,
) -> BrokerStatus:
    """The account, its positions and the market clock as one status for the guardian."""
    held = None
    if positions is not None:
        held = {}
        for p in positions:
            qty = _as_float(p.get("qty")) or 0.0
            if p.get("side") == "short" and qty > 0:
                qty = -qty
            held[str(p["symbol"])] = (qty, _as_float(p.get("market_value")) or 0.0)
    market_open = bool(clock.get("is_open")) if clock is not None else None
    session = str(clock.get("next_close", ""))[:10] if clock is not None and market_open else None
    return BrokerStatus(
        connected=True,
        equity=_as_float(account.get("equity")),
        cash=_as_float(account.get("cash")),
        positions=held,
        market_open=market_open,
        session=session,
    )


def _quotes(raw_quotes: Mapping[str, Any], now: float) -> dict[str, Quote]:
    quotes = {}
    for symbol, raw in raw_quotes.items():
        bid, ask = _as_float(raw.get("bp")), _as_float(raw.get("ap"))
        if bid is not None and ask is not None:
            quotes[symbol] = Quote(bid=bid, ask=ask, ts=_epoch(raw.get("t")) or now)
    return quotes


def _order_request(client_order_id: str, intent: OrderIntent) -> Any:
    common: dict[str, Any] = {
        "symbol": intent.symbol,
        "side": OrderSide.BUY if intent.side == "buy" else OrderSide.SELL,
        "time_in_force": TimeInForce(intent.time_in_force),
        "client_order_id": client_order_id,
        "extended_hours": intent.extended_hours or None,
    }
    if intent.qty is not None:
        common["qty"] = intent.qty
    else:
        common["notional"] = intent.notional
    if intent.order_class == "bracket":
        # The broker holds the exits: they survive this daemon (docs/protocol.md).
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


def _call_error(exc: APIError) -> BrokerCallError:
    """The fields of alpaca-py's error (its properties parse JSON and may raise)."""
    try:
        status = exc.status_code
    except AttributeError:
        status = None
    try:
        code: int | None = int(exc.code)
    except (AttributeError, KeyError, TypeError, ValueError):
        code = None
    try:
        message = str(exc.message)
    except (AttributeError, KeyError, TypeError, ValueError):
        message = str(exc)[:200]
    return BrokerCallError(
        message, http_status=int(status) if status is not None else None, code=code
    )


def _nothing(_body: Any) -> None:
    return None


def _mapping(body: Any) -> Mapping[str, Any]:
    return dict(body or {})


def _as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    result = float(value)
    return result if math.isfinite(result) else None


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
    when = _datetime(value)
    return when.timestamp() if when is not None else None
