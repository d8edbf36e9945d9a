"""The broker gateway: every order and cancel goes to the broker through here.

The calls themselves are the Alpaca adapter's (:mod:`actors.alpaca_adapter`: worker
threads, timeouts, one token bucket with cancels first, outcomes as values); what
the broker's listings mean for our orders is :mod:`actors.core.order_sync`; the
orders followed and their reports are :mod:`actors.order_reports`. This actor keeps
the orchestration: the job queues and workers, the trade stream, the reconcile loop,
the account polls and the quote cache.

A POST is never re-sent blindly: after a timeout, a 5xx, a dropped connection or a
422 duplicate, the order is looked up by ``client_order_id`` and what the broker has
is adopted; only when the broker provably does not have it is the POST repeated (the
same ``client_order_id`` makes that safe), until ``broker.submit_deadline_s``.

The trade stream runs on our event loop; after every (re)connect, and periodically,
open orders are reconciled over REST, because the stream does not replay what was
missed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.alpaca_adapter import AlpacaAdapter, AlpacaEndpoints, BrokerRequest, TokenBucket
from actors.base import Actor, TradingHalt
from actors.broker_jobs import JobQueue, PostsInFlight
from actors.broker_sync import BrokerLink, BrokerSync
from actors.channels import (
    BrokerStatus,
    CancelOrder,
    FlattenNow,
    KillChanged,
    KillSettled,
    OrderUpdate,
    SubmitOrder,
)
from actors.core.broker_outcome import CallResult, Ok, Outcome, Refusal
from actors.core.order_sync import FINAL, BrokerOrder, TrackedOrder
from actors.core.risk_limits import Quote
from actors.core.trading_state import KillGate
from actors.order_reports import OrderReports
from protocol.messages import OrderStatus

__all__ = ["BrokerGateway", "TrackedOrder"]

log = structlog.get_logger(__name__)

RECONCILE_MIN_GAP_S: Final = 2.0
"""Reconciles are at least this far apart, however often they are asked for."""
EXPIRY_SWEEP_S: Final = 0.25
"""How often queued orders are checked against their deadline."""
QUOTE_RETRY_S: Final = 1.0
"""After a failed quote fetch, that symbol is not fetched again for this long."""
QUOTE_USABLE_SHARE: Final = 0.9
"""A quote older than this share of ``quote_max_age_s`` is fetched before deciding: one
just under the limit could age past it between this check and the guardian's."""


@dataclass(frozen=True)
class _Timing:
    request_timeout_s: float
    reconcile_interval_s: float
    quiet_reconcile_s: float
    submit_deadline_s: float
    account_poll_s: float


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

    Attributes:
        recovered: set once the account and the open orders are known (READY waits).
        quotes: the quote cache, by symbol (:meth:`fresh_quotes` fills it).
        gate_passes: (time, ``client_order_id``) of the most recent POSTs that passed
            the last gate check.
        posts: POSTs sent, whatever came back; expired: orders that expired unsent;
            stream_connects: trade-stream (re)connects.
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
        account: str | None = None,
    ) -> None:
        """Wire it; ``tracked``: unfinished orders of ``account`` (None: ``[broker]``)."""
        super().__init__("broker_gateway" + (f".{account}" if account else ""), halt=halt)
        self.account = account
        self._adapter = adapter = AlpacaAdapter(
            AlpacaEndpoints(url, stream_url, data_url, key_id, secret_key),
            timeout_s=request_timeout_s,
            rate_limit_per_min=rate_limit_per_min,
            threads=workers + 2,
        )
        self._link = BrokerLink(adapter, on_status)
        self._orders = OrderReports(
            strategies, tracked, updates, on_external, fetch_legs=self._link.fetch_legs
        )
        self._sync = BrokerSync(
            self._link, self._orders, gate=gate, enqueue=self._enqueue, deadline_s=submit_deadline_s
        )
        self._timing = _Timing(
            request_timeout_s, reconcile_interval_s, quiet_reconcile_s, submit_deadline_s,
            account_poll_s,
        )  # fmt: skip
        self._gate, self._updates, self._settlements = gate, updates, settlements
        self._inputs, self._workers = (submissions, cancels, kill_changes), workers
        self._jobs = JobQueue()
        self._posts = PostsInFlight()
        self._last_stream_event = time.monotonic()
        self.quotes: dict[str, Quote] = {}
        self._quote_failures: dict[str, float] = {}
        self._requote: set[str] = set()  # usable quotes to refresh in the background
        self._reconcile_now, self._requote_wake = anyio.Event(), anyio.Event()
        self.recovered = anyio.Event()
        self.stream_connects = self.posts = self.expired = 0
        self.gate_passes: deque[tuple[float, str]] = deque(maxlen=1024)

    @property
    def bucket(self) -> TokenBucket:
        """The token bucket every broker call goes through."""
        return self._adapter.bucket

    @property
    def external(self) -> set[str]:
        """Orders ours by name, unknown to the journal, reported as external."""
        return self._orders.external

    @property
    def connected(self) -> bool:
        """Whether the broker answered the last call (or the stream connected)."""
        return self._link.connected

    @property
    def broker_errors(self) -> int:
        """Calls without a usable answer (timeouts, 5xx, 429, dropped connections)."""
        return self._link.errors

    @property
    def submit_deadline_s(self) -> float:
        """How long an accepted order may wait to be sent."""
        return self._timing.submit_deadline_s

    # ------------------------------------------------------------------ quotes

    async def fresh_quotes(self, symbols: set[str], *, max_age_s: float) -> None:
        """Make sure the quote cache holds a usable quote (``max_age_s``) for each symbol.

        Only a symbol without one waits for a fetch. One past half its age is still
        usable: it is re-quoted in the background, so no decision waits for market
        data while a usable quote is at hand.

        Market data is a separate Alpaca service with its own limits, so this does not
        draw on the trading token bucket. A failed fetch leaves the cache as it was: the
        guardian then rejects for want of a usable quote, saying so.
        """
        now = time.time()
        missing: list[str] = []
        for s in symbols:
            if now - self._quote_failures.get(s, 0.0) <= QUOTE_RETRY_S:
                continue
            age = now - self.quotes[s].ts if s in self.quotes else None
            if age is None or age > max_age_s * QUOTE_USABLE_SHARE:
                missing.append(s)
            elif age > max_age_s / 2:
                self._requote.add(s)
                self._requote_wake.set()
        if missing:
            await self._fetch_quotes(sorted(missing))

    async def _requote_aging(self) -> None:
        """Re-quote, in the background, symbols whose quotes are usable but aging."""
        while True:
            await self._requote_wake.wait()
            self._requote_wake = anyio.Event()
            symbols, self._requote = sorted(self._requote), set()
            await self._fetch_quotes(symbols)

    async def _fetch_quotes(self, stale: list[str]) -> None:
        now = time.time()
        result = await self._adapter.latest_quotes(stale, now)
        if not isinstance(result, Ok):
            # Remembered for a moment: a data outage must not cost every intent a timeout.
            for symbol in stale:
                self._quote_failures[symbol] = time.time()
            log.warning("quotes.fetch_failed", symbols=stale, error=result.detail[:200])
            return
        for symbol, quote in result.value.items():  # a slower fetch never puts an older back
            if symbol not in self.quotes or quote.ts >= self.quotes[symbol].ts:
                self.quotes[symbol] = quote

    # ------------------------------------------------------------------ actor body

    async def _run(self) -> None:
        self._adapter.connect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._feed_submissions)
            tg.start_soon(self._feed_cancels)
            tg.start_soon(self._consume_kill_changes)
            opened = await self._sync.recover()
            self.recovered.set()
            tg.start_soon(self._sync.settle_unfinished, opened)
            for _ in range(self._workers):
                tg.start_soon(self._worker)
            tg.start_soon(self._run_stream)
            tg.start_soon(self._reconcile_loop)
            tg.start_soon(self._poll_account)
            tg.start_soon(self._expire_queued)
            tg.start_soon(self._requote_aging)

    async def _feed_submissions(self) -> None:
        async for job in self._inputs[0]:
            self._orders.track(job)
            self._jobs.put(job)

    async def _feed_cancels(self) -> None:
        async for job in self._inputs[1]:
            self._enqueue(job)

    def _enqueue(self, job: SubmitOrder | CancelOrder) -> None:
        if isinstance(job, CancelOrder):
            self._orders.cancel_requested.add(job.client_order_id)
        self._jobs.put(job)

    async def _worker(self) -> None:
        while True:
            job = await self._jobs.next()
            if isinstance(job, CancelOrder):
                await self._cancel(job)
            elif job is not None:
                await self._submit(job)
            # else: the job was settled while queued (engage or expiry): nothing to do

    # ------------------------------------------------------------------ submission

    def _blocked(self, job: SubmitOrder) -> str | None:
        if job.bypass_gate:
            return None
        if self._halt.reason is not None:
            return f"trading halted: {self._halt.reason}"
        reason = self._gate.blocked(job.strategy_id)
        if reason is not None:
            return f"{reason.value}: kill switch engaged before the order reached the broker"
        if job.client_order_id in self._orders.cancel_requested:
            return "cancelled before the order reached the broker"
        return None

    async def _submit(self, job: SubmitOrder) -> None:
        """Get one order to the broker exactly once, or settle that it never got there."""
        request = self._adapter.submit(job.client_order_id, job.intent)
        attempts = 0
        backoff = 0.1
        while True:
            # Checked before the wait for a token (no token spent on a dead order) and
            # again after it, right before the request leaves (``precheck``).
            if await self._settled_unsent(job, attempts=attempts):
                return
            attempts += 1
            result = await self._post(job, request, first=attempts == 1)
            if result.outcome is Outcome.BLOCKED:
                continue  # the top of the loop settles it (cancelled)
            if result.outcome is Outcome.EXPIRED:
                await self._expire(job)
                return
            self.posts += 1
            if isinstance(result, Ok):
                await self._orders.adopt(result.value, "rest")
                return
            if result.outcome is Outcome.REJECTED:
                log.warning(
                    "order.broker_rejected",
                    client_order_id=job.client_order_id,
                    detail=result.detail,
                    http_status=result.http_status,
                )
                await self._settle(job, "rejected", f"BROKER_REJECTED: {result.detail}")
                return
            # Unknown outcome or duplicate: the broker may have it. Look before sending again.
            log.warning(
                "order.outcome_unknown",
                client_order_id=job.client_order_id,
                detail=result.detail,
                attempt=attempts,
            )
            if await self._gave_up(job, result.detail):
                return
            self._link.set_connected(connected=False, detail=result.detail)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _gave_up(self, job: SubmitOrder, detail: str) -> bool:
        """After an unknown outcome: True if the broker has the order, or it is too late."""
        deadline = job.accepted_at + self._timing.submit_deadline_s
        if await self._sync.adopt_if_present(job.client_order_id, until=deadline):
            return True
        if time.time() <= deadline:
            return False
        await self._settle(
            job,
            "rejected",
            f"BROKER_UNAVAILABLE: not accepted by the broker within "
            f"{self._timing.submit_deadline_s:g} s ({detail})",
        )
        return True

    async def _settle(self, job: SubmitOrder, status: OrderStatus, detail: str) -> None:
        await self._orders.emit(
            OrderUpdate(client_order_id=job.client_order_id, status=status, detail=detail)
        )

    async def _settled_unsent(self, job: SubmitOrder, *, attempts: int) -> bool:
        """Settle ``job`` if it may not be sent now (gate closed or deadline passed)."""
        blocked = self._blocked(job)
        if blocked is None:
            if attempts == 0 and self._late(job):
                await self._expire(job)
                return True
            return False
        if attempts and await self._sync.adopt_if_present(job.client_order_id):
            return True
        await self._settle(job, "cancelled", blocked)
        return True

    def _late(self, job: SubmitOrder) -> bool:
        return (
            not job.bypass_gate and time.time() > job.accepted_at + self._timing.submit_deadline_s
        )

    async def _post(
        self, job: SubmitOrder, request: BrokerRequest[BrokerOrder], *, first: bool
    ) -> CallResult[BrokerOrder]:
        """One POST of ``job``: through the bucket, with the last gate check right before it.

        The last check runs in the HTTP thread itself, immediately before the request
        is written: an engage (which closes the gate on the event loop) either comes
        first, and the order is not sent, or the request was already leaving.
        """

        def last_check() -> Refusal | None:
            if (blocked := self._blocked(job)) is not None:
                return Refusal(Outcome.BLOCKED, blocked)
            if first and self._late(job):
                return Refusal(Outcome.EXPIRED)
            self.gate_passes.append((time.time(), job.client_order_id))
            return None

        if first:
            await self._orders.emit(
                OrderUpdate(client_order_id=job.client_order_id, status="submitted")
            )
        self._posts.enter()
        try:
            return await self._link.call(request, precheck=last_check, order=True)
        finally:
            self._posts.leave()

    # ------------------------------------------------------------------ cancels and kills

    async def _cancel(self, job: CancelOrder) -> None:
        tracked = self._orders.tracked.get(job.client_order_id)
        if tracked is None:
            return
        if tracked.broker_order_id is None:
            # Not at the broker yet (or unknown): the submit path sees the request and stops.
            if tracked.status == "pending":
                return
            if not await self._sync.adopt_if_present(job.client_order_id):
                return
            tracked = self._orders.tracked.get(job.client_order_id)
            if tracked is None or tracked.broker_order_id is None:
                return
        request = self._adapter.cancel(tracked.broker_order_id)
        for _ in range(10):
            result = await self._link.call(request, urgent=True)
            if isinstance(result, Ok):
                return  # the stream (or the next reconcile) reports `canceled`
            if result.outcome in {Outcome.REJECTED, Outcome.NOT_FOUND}:
                # Not cancelable (already final): learn its real state.
                await self._sync.adopt_if_present(job.client_order_id)
                return
            await anyio.sleep(0.2)

    async def wait_posts_idle(self) -> None:
        """Return once no POST is in flight (bounded by twice the request timeout).

        The authority awaits this after flipping the gate and before it reports the
        engage as done: from then on no order can reach the broker.
        """
        with anyio.move_on_after(self._timing.request_timeout_s * 2):
            await self._posts.idle.wait()

    async def _consume_kill_changes(self) -> None:
        async for change in self._inputs[2]:
            if change.engaged:
                await self.recovered.wait()
                await self._enforce_engage(change)

    async def _enforce_engage(self, change: KillChanged) -> None:
        """No POST after the engage: wait for in-flight ones, cancel the scope, flatten."""
        dropped = await self._drop_blocked_submissions()
        inflight = self._posts.count
        await self.wait_posts_idle()
        if change.strategy_id is None:
            await self._cancel_all()
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
                await self._updates[sid].send(FlattenNow(strategy_id=sid, account=self.account))

    async def _cancel_all(self) -> None:
        """Every open order at the broker (bulk ``DELETE /v2/orders``), then wait for legs."""
        for attempt in range(20):
            result = await self._link.call(self._adapter.cancel_all(), urgent=True)
            if isinstance(result, Ok):
                log.warning("kill.cancelled_all", responses=result.value)
                break
            await anyio.sleep(min(0.1 * 2**attempt, 2.0))
        legs = list(self._orders.legs.legs)
        await self._orders.legs_ended(legs, self._timing.request_timeout_s)

    async def _drop_blocked_submissions(self) -> int:
        """Settle every queued order the gate now blocks: it is cancelled, never sent."""
        blocked = {
            job.client_order_id: reason
            for job in self._jobs.submits
            if (reason := self._blocked(job)) is not None
        }
        dropped = self._jobs.take_submits(lambda job: job.client_order_id in blocked)
        for job in dropped:
            await self._settle(job, "cancelled", blocked[job.client_order_id])
        return len(dropped)

    async def _cancel_open_of(self, strategy_id: str) -> None:
        for coid, tracked in list(self._orders.tracked.items()):
            if tracked.strategy_id == strategy_id and tracked.status not in FINAL:
                self._orders.cancel_requested.add(coid)
                await self._cancel(CancelOrder(strategy_id=strategy_id, client_order_id=coid))
        await self._cancel_legs_of(strategy_id)

    async def _cancel_legs_of(self, strategy_id: str) -> None:
        """Cancel the open legs of the strategy's brackets whose entry has (partly) filled.

        An entry cancelled without fills takes its legs with it at the broker; once it
        has fills, the legs protect a position and are cancelled by their own ids; a
        flatten that follows waits until they have ended.
        """
        cancelling: list[str] = []
        for leg_id, leg in self._orders.legs.cancellable(strategy_id, self._orders.tracked):
            result = await self._link.call(self._adapter.cancel(leg_id), urgent=True)
            log.info(
                "kill.leg_cancel", order_id=leg_id, parent=leg.parent, outcome=result.outcome.value
            )
            cancelling.append(leg_id)
        await self._orders.legs_ended(cancelling, self._timing.request_timeout_s)

    # ------------------------------------------------------------------ expiry and admission

    async def _expire_queued(self) -> None:
        """Orders still queued at their deadline end ``expired``: never sent late."""
        while True:
            await anyio.sleep(EXPIRY_SWEEP_S)
            for job in self._jobs.take_late(time.time(), self._timing.submit_deadline_s):
                await self._expire(job)

    async def _expire(self, job: SubmitOrder) -> None:
        self.expired += 1
        log.warning("order.expired_unsent", client_order_id=job.client_order_id)
        await self._settle(
            job,
            "expired",
            f"BROKER_BUSY: not sent within broker.submit_deadline_s "
            f"({self._timing.submit_deadline_s:g} s); never sent",
        )

    def expected_submit_wait_s(self, extra: int = 0) -> float:
        """When a new order would leave for the broker, in seconds from now (estimate).

        Counts the orders and cancels queued ahead, ``extra`` more (accepted but not yet
        handed over), the tokens in the bucket and its refill rate less a share kept for
        polls and reconciles. The order managers refuse an order with ``BROKER_BUSY`` when
        this passes the deadline.
        """
        ahead = len(self._jobs) + extra + 1
        return self.bucket.expected_wait_s(ahead)

    # ------------------------------------------------------------------ stream and reconcile

    async def _run_stream(self) -> None:
        def connected() -> None:
            self.stream_connects += 1
            self._link.set_connected(connected=True)
            log.info("broker.stream_connected", connects=self.stream_connects)
            self._reconcile_now.set()

        async def on_event(order: BrokerOrder | None) -> None:
            self._last_stream_event = time.monotonic()
            if order is not None:
                await self._orders.from_stream(order)

        await self._adapter.run_trade_stream(on_connect=connected, on_event=on_event)

    async def _reconcile_loop(self) -> None:
        last_full = time.monotonic()
        while True:
            with anyio.move_on_after(1.0):
                await self._reconcile_now.wait()
            now = time.monotonic()
            due_full = now - last_full >= self._timing.reconcile_interval_s
            quiet = now - self._last_stream_event >= self._timing.quiet_reconcile_s
            if self._reconcile_now.is_set() or due_full or (quiet and self._orders.has_open()):
                self._reconcile_now = anyio.Event()
                await self._sync.reconcile()
                last_full = time.monotonic()
                self._last_stream_event = time.monotonic()
                # A stream that keeps reconnecting asks for a reconcile each time; each one
                # costs requests that orders waiting for the rate limit need more.
                await anyio.sleep(RECONCILE_MIN_GAP_S)

    async def _poll_account(self) -> None:
        while True:
            await anyio.sleep(self._timing.account_poll_s)
            await self._sync.poll_account()
