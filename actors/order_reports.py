"""The orders the broker gateway follows, and each change of theirs sent to its strategy.

Part of the gateway (not an actor of its own): the gateway hands it what the broker
says of an order (the POST's answer, a look-up, a listing, the trade stream) and its
own verdicts (submitted, cancelled unsent, expired, rejected); this keeps the
followed orders and their bracket legs up to date and reports to each strategy's
order manager.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from actors.channels import FlattenNow, OrderUpdate, SubmitOrder
from actors.core.bracket_legs import Leg, LegBook, LegRoute
from actors.core.order_sync import FINAL, BrokerOrder, OrderOwners, TrackedOrder

RECENTLY_FINISHED: Final = 4096
"""Final orders remembered so that a late report of one (the stream after a look-up, or
the reverse) is known as ours, not reported as an external order."""


def order_update(order: BrokerOrder, source: str) -> OrderUpdate:
    """The broker's view of an order as an update for its strategy."""
    return OrderUpdate(
        client_order_id=order.client_order_id,
        status=order.status,
        broker_order_id=order.broker_order_id,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
        detail=order.detail,
        source=source,
    )


class OrderReports:
    """Our unfinished orders (and their brackets' legs), reported as they change.

    Edge cases: an order ours by name (``SID-...``) but not in the journal is reported
    once through ``on_external``, never adopted silently; a late report of an order
    that has just ended is dropped; a leg event that beats its parent's POST answer
    is kept until the parent's legs are known.

    Args:
        strategies: the configured strategies (they name our orders).
        tracked: the journal's unfinished orders, by ``client_order_id``.
        updates: each strategy's order manager.
        on_external: called with (strategy, ``client_order_id``) of an external order.
        fetch_legs: reads a bracket's legs by the broker's order id (None: no answer).
    """

    def __init__(
        self,
        strategies: frozenset[str],
        tracked: Mapping[str, TrackedOrder],
        updates: Mapping[str, MemoryObjectSendStream[OrderUpdate | FlattenNow]],
        on_external: Callable[[str, str], None],
        *,
        fetch_legs: Callable[[str], Awaitable[tuple[BrokerOrder, ...] | None]],
    ) -> None:
        """Start from the journal's unfinished orders."""
        self.tracked: dict[str, TrackedOrder] = dict(tracked)
        self.owners = OrderOwners(strategies)
        self._updates = updates
        self._on_external = on_external
        self._fetch_legs = fetch_legs
        self.external: set[str] = set()
        """Orders reported as external."""
        self.cancel_requested: set[str] = set()
        """Unfinished orders a cancel was asked for (an unsent one is then never sent)."""
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.legs = LegBook()
        self._leg_ended = anyio.Event()

    def track(self, job: SubmitOrder) -> None:
        """Follow a new order, not sent yet."""
        self.tracked[job.client_order_id] = TrackedOrder(
            job.strategy_id, None, "pending", job.intent, job.accepted_at
        )

    def has_open(self) -> bool:
        """Whether any order we follow is unfinished."""
        return any(t.status not in FINAL for t in self.tracked.values())

    async def emit(self, update: OrderUpdate) -> None:
        """Apply ``update`` to the order it is about and send it to its strategy."""
        tracked = self.tracked.get(update.client_order_id)
        sid = tracked.strategy_id if tracked else self.owners.owner(update.client_order_id)
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
            del self.tracked[update.client_order_id]
            self.cancel_requested.discard(update.client_order_id)
            self._finished[update.client_order_id] = None
            while len(self._finished) > RECENTLY_FINISHED:
                self._finished.popitem(last=False)
        await self._updates[sid].send(update)

    async def report(self, order: BrokerOrder, source: str) -> None:
        """Send the broker's view of an order."""
        await self.emit(order_update(order, source))

    async def adopt(self, order: BrokerOrder, source: str) -> None:
        """Take what the broker has of an order of ours: its legs, then its state."""
        await self.learn_legs(order, source)
        await self.report(order, source)

    async def from_stream(self, order: BrokerOrder) -> None:
        """An order event from the trade stream: a leg of ours, or any other order."""
        coid = order.client_order_id
        tracked = self.tracked.get(coid)
        route = self.legs.route(order, tracked, ours=self.owners.owner(coid) is not None)
        match route:
            case LegRoute.LEG:
                await self._emit_leg(order, "stream")
            case LegRoute.PARENT:
                await self.adopt(order, "stream")
            case LegRoute.ORDER:
                await self.report(order, "stream")
            case LegRoute.HELD:
                pass

    async def learn_legs(self, order: BrokerOrder, source: str) -> None:
        """Follow the legs of one of our brackets, from its order object.

        The order object of a POST has its legs; a look-up by ``client_order_id`` may
        not, and then the parent is read again with its legs (``fetch_legs``).
        """
        parent = order.client_order_id
        tracked = self.tracked.get(parent)
        if tracked is None or not self.legs.wants_legs(order, tracked):
            return
        legs = order.legs
        if legs is None and order.broker_order_id:
            legs = await self._fetch_legs(order.broker_order_id)
        if legs is None:
            return
        self.legs.know_parent(parent)
        for leg in legs:
            assert leg.broker_order_id is not None  # parse_order keeps legs with ids only
            early = self.legs.add(
                leg.broker_order_id, Leg(strategy_id=tracked.strategy_id, parent=parent)
            )
            await self._emit_leg(leg, source)
            if early is not None:
                await self._emit_leg(early, "stream")

    async def _emit_leg(self, order: BrokerOrder, source: str) -> None:
        """Report a leg's state to its strategy, marked with its parent."""
        leg_id = order.broker_order_id or ""
        leg = self.legs.legs.get(leg_id)
        if leg is None or leg.strategy_id not in self._updates:
            return
        update = msgspec.structs.replace(
            order_update(order, source), parent_client_order_id=leg.parent
        )
        if update.status in FINAL:
            self.legs.end(leg_id)
            self._leg_ended.set()
            self._leg_ended = anyio.Event()
        await self._updates[leg.strategy_id].send(update)

    async def legs_ended(self, leg_ids: list[str], timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until the stream reports these legs ended.

        Legs hold the position's shares until they are cancelled: a flatten sent before
        would be refused for want of available shares.
        """
        with anyio.move_on_after(timeout_s):
            while any(leg_id in self.legs for leg_id in leg_ids):
                await self._leg_ended.wait()
