"""The broker gateway's link to the broker, and its reconciliation of our orders.

Part of the gateway (neither is an actor of its own):

- :class:`BrokerLink` makes every call through the Alpaca adapter, follows the
  connectivity it shows (reported to the guardian) and counts the failures;
- :class:`BrokerSync` brings the orders we follow to the broker's state: at start,
  before READY (:meth:`BrokerSync.recover`), right after it
  (:meth:`BrokerSync.settle_unfinished`), and on every reconcile. What each
  difference means is decided by :mod:`actors.core.order_sync`; this carries the
  decisions out. It also reads the account for the guardian.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import structlog

from actors.alpaca_adapter import AlpacaAdapter, BrokerRequest, ListedStatus, account_status
from actors.channels import BrokerStatus, CancelOrder, OrderUpdate, SubmitOrder
from actors.core import order_sync
from actors.core.broker_outcome import CallResult, Ok, Outcome, Refusal
from actors.core.errors import BrokerError
from actors.core.order_sync import (
    Adopt,
    BrokerOrder,
    Cancel,
    LookUp,
    ReportMissing,
    Resubmit,
    Update,
)
from actors.core.trading_state import KillGate
from actors.order_reports import OrderReports

log = structlog.get_logger(__name__)

T = TypeVar("T")


class BrokerLink:
    """Every call to the broker, with its connectivity followed and its failures counted.

    Args:
        adapter: the Alpaca adapter.
        on_status: gets a ``BrokerStatus`` when the connectivity changes, and the
            account's (:meth:`publish_account`).
    """

    def __init__(self, adapter: AlpacaAdapter, on_status: Callable[[BrokerStatus], None]) -> None:
        """Not connected yet."""
        self.adapter = adapter
        self._on_status = on_status
        self.connected = False
        self.errors = 0
        """Calls that ended :attr:`Outcome.UNKNOWN` (timeouts, 5xx, 429, dropped connections)."""

    async def call(
        self,
        request: BrokerRequest[T],
        *,
        urgent: bool = False,
        borrow: bool = False,
        precheck: Callable[[], Refusal | None] | None = None,
        order: bool = False,
    ) -> CallResult[T]:
        """One call through the adapter (:meth:`AlpacaAdapter.perform`)."""
        result = await self.adapter.perform(
            request, urgent=urgent, borrow=borrow, precheck=precheck, order=order
        )
        if isinstance(result, Ok):
            self.set_connected(connected=True)
        elif result.outcome is Outcome.UNKNOWN:
            self.errors += 1
        return result

    def set_connected(self, *, connected: bool, detail: str | None = None) -> None:
        """Report a change of connectivity (a repeat is not reported)."""
        if connected != self.connected:
            self.connected = connected
            log.info("broker.connectivity", connected=connected, detail=detail)
            self._on_status(BrokerStatus(connected=connected, detail=detail))

    def publish_account(
        self,
        account: Mapping[str, Any],
        positions: Sequence[Mapping[str, Any]] | None = None,
        clock: Mapping[str, Any] | None = None,
    ) -> None:
        """The account (with positions and clock when known) for the guardian."""
        self.set_connected(connected=True)
        self._on_status(account_status(account, positions, clock))

    async def fetch_legs(self, order_id: str) -> tuple[BrokerOrder, ...] | None:
        """A bracket's legs, read from the broker (None when it did not answer)."""
        result = await self.call(self.adapter.order_with_legs(order_id))
        return result.value.legs if isinstance(result, Ok) else None


class BrokerSync:
    """Brings the orders we follow to the broker's state; reads the account.

    Args:
        link: the calls.
        orders: the orders we follow.
        gate: the kill switches (an engaged strategy's open orders are cancelled).
        enqueue: queues a submission (sent again) or a cancel for the workers.
        deadline_s: ``broker.submit_deadline_s``.
    """

    def __init__(
        self,
        link: BrokerLink,
        orders: OrderReports,
        *,
        gate: KillGate,
        enqueue: Callable[[SubmitOrder | CancelOrder], None],
        deadline_s: float,
    ) -> None:
        """Wire it."""
        self._link = link
        self._adapter = link.adapter
        self._orders = orders
        self._gate = gate
        self._enqueue = enqueue
        self._deadline_s = deadline_s

    async def adopt_if_present(self, client_order_id: str, *, until: float | None = None) -> bool:
        """Look the order up until the broker answers; adopt it if it exists."""
        request = self._adapter.order_by_client_id(client_order_id)
        backoff = 0.1
        while True:
            result = await self._link.call(request)
            if isinstance(result, Ok):
                await self._orders.adopt(result.value, "lookup")
                return True
            if result.outcome in {Outcome.NOT_FOUND, Outcome.REJECTED}:
                return False
            if until is not None and time.time() > until:
                return False
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def list_orders(
        self, status: ListedStatus, after: datetime | None = None, *, borrow: bool = False
    ) -> dict[str, BrokerOrder] | None:
        """Every order of ``status`` submitted after ``after``, by ``client_order_id``.

        Pages of 500, oldest first (:class:`~actors.core.order_sync.OrderListing`): one
        request per 500 orders, where looking each order up would cost one request per
        order. None if the broker did not answer. ``borrow``: the pages may borrow from
        the bucket (:meth:`~actors.alpaca_adapter.TokenBucket.acquire`).
        """
        listing = order_sync.OrderListing()
        cursor = after
        while True:
            page = self._adapter.orders_page(status, cursor)
            result = await self._link.call(page, borrow=borrow)
            if not isinstance(result, Ok):
                self._link.set_connected(connected=False, detail=result.detail)
                return None
            cursor = listing.add(result.value)
            if cursor is None:
                return listing.orders

    async def _list_until_answered(
        self, status: ListedStatus, after: datetime | None = None, *, borrow: bool = False
    ) -> dict[str, BrokerOrder]:
        """:meth:`list_orders`, again every second until the broker answers."""
        while True:
            listed = await self.list_orders(status, after, borrow=borrow)
            if listed is not None:
                return listed
            await anyio.sleep(1.0)

    async def reconcile(self) -> None:
        """Bring every unfinished order up to the broker's state; enforce engaged scopes."""
        opened = await self.list_orders("open")
        if opened is None:
            return
        orders = self._orders

        def engaged(sid: str) -> bool:
            return self._gate.blocked(sid) is not None

        for action in order_sync.reconcile_open(orders.tracked, opened, orders.owners, engaged):
            match action:
                case Update(order=order):
                    await orders.report(order, "reconcile")
                case Cancel(strategy_id=sid, client_order_id=coid):
                    orders.cancel_requested.add(coid)
                    if coid in orders.tracked:
                        self._enqueue(CancelOrder(strategy_id=sid, client_order_id=coid))
        await self._look_up_closed(opened)

    async def _look_up_closed(self, opened: Mapping[str, BrokerOrder]) -> None:
        """Orders we follow that are no longer open at the broker: ask for their end state.

        Few, normally: the stream reports most ends as they happen. Many at once (events
        lost while the stream was down): one closed-orders listing settles them.
        """
        gone = order_sync.gone_from_listing(self._orders.tracked, opened)
        closed: Mapping[str, BrokerOrder] = {}
        if order_sync.needs_closed_listing(gone):
            since = order_sync.listed_since(list(gone.values()))
            closed = await self.list_orders("closed", after=since) or {}
        for action in order_sync.settle_gone(gone, closed):
            match action:
                case Adopt(order=order):
                    await self._orders.adopt(order, "reconcile")
                case LookUp(client_order_id=coid) if coid in self._orders.tracked:
                    if not await self.adopt_if_present(coid) and action.warn_if_absent:
                        log.warning("order.missing_at_broker", client_order_id=coid)

    async def recover(self) -> dict[str, BrokerOrder]:
        """At start, before READY: the account, and which of our orders are open.

        Two kinds of request only: the account (equity for the limits) and the open
        orders, listed 500 at a time. READY follows at once; what the journal left
        unfinished and the listing did not show open is settled right after
        (:meth:`settle_unfinished`), counted as open until then.

        Returns:
            The open orders at the broker, by ``client_order_id``.

        Raises:
            BrokerError: the broker refused the account request (bad keys, say).
        """
        backoff = 0.2
        while not isinstance(result := await self._link.call(self._adapter.account()), Ok):
            if result.outcome is Outcome.REJECTED:
                raise BrokerError(
                    f"broker refused the account request: {result.detail}"
                ) from result.error
            log.warning("broker.unreachable_at_start", detail=result.detail)
            self._link.set_connected(connected=False, detail=result.detail)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        self._link.publish_account(result.value)
        # READY waits for this listing: it may borrow against the broker's window.
        opened = await self._list_until_answered("open", borrow=True)
        for update in order_sync.changed_at_start(self._orders.tracked, opened):
            await self._orders.report(update.order, "reconcile")
        log.info(
            "broker.open_orders_known",
            open=len(opened),
            unfinished=len(self._orders.tracked),
            borrowed=self._adapter.bucket.borrowed,
        )
        return opened

    async def settle_unfinished(self, opened: Mapping[str, BrokerOrder]) -> None:
        """Settle the journal's unfinished orders that were not open: one more listing.

        What each becomes is :func:`~actors.core.order_sync.settle_missing`'s decision.
        """
        missing = order_sync.missing_at_start(self._orders.tracked, opened)
        if missing:
            since = order_sync.listed_since(list(missing.values()))
            closed = await self._list_until_answered("closed", after=since)
            decided = order_sync.settle_missing(
                missing, closed, now=time.time(), deadline_s=self._deadline_s
            )
            for action in decided:
                match action:
                    case Adopt(order=order):
                        await self._orders.adopt(order, "reconcile")
                    case Resubmit(client_order_id=coid, order=tracked):
                        self._enqueue(
                            SubmitOrder(
                                strategy_id=tracked.strategy_id,
                                client_order_id=coid,
                                intent=tracked.intent,
                                accepted_at=tracked.accepted_at,
                            )
                        )
                    case ReportMissing(client_order_id=coid, detail=detail):
                        await self._orders.emit(
                            OrderUpdate(client_order_id=coid, status="rejected", detail=detail)
                        )
        await self.poll_account()
        log.info(
            "broker.recovered",
            unfinished=len(self._orders.tracked),
            external=len(self._orders.external),
        )

    async def poll_account(self) -> None:
        """Account, positions and clock, reported to the guardian as one status."""
        account = await self._link.call(self._adapter.account())
        if not isinstance(account, Ok):
            return
        positions = await self._link.call(self._adapter.positions())
        clock = await self._link.call(self._adapter.clock())
        self._link.publish_account(
            account.value,
            positions.value if isinstance(positions, Ok) else None,
            clock.value if isinstance(clock, Ok) else None,
        )
