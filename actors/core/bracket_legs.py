"""The legs of our brackets: which broker orders they are, and whose. Pure, no anyio.

A bracket's take-profit and stop-loss legs are made by the broker, so they carry the
broker's ids, not ours: the gateway learns them from the parent's order object and
then knows each leg's events (marked with the parent) by its broker order id. The
stream can report a leg before the POST's answer has told its id; such events are
kept, a bounded number, until the parent's legs are known.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from actors.core.order_sync import BrokerOrder, TrackedOrder

EARLY_LEGS: Final = 1024
"""Leg events kept while their parent's legs are not known yet (the stream can beat the
POST's answer); the oldest go first. Legs of other programs' brackets never match."""


@dataclass(frozen=True)
class Leg:
    """A leg of one of our brackets: the broker made it, so its ids are the broker's."""

    strategy_id: str
    parent: str
    """The parent's ``client_order_id`` (``SID-intent_id``)."""


class LegRoute(enum.Enum):
    """What an order event from the broker is, as far as brackets go."""

    LEG = "leg"
    """A leg of one of our brackets: report it, marked with its parent."""
    PARENT = "parent"
    """One of our orders, past its POST: if it is a bracket, learn its legs; report it."""
    HELD = "held"
    """Perhaps a leg whose parent's legs are not known yet: kept until they are."""
    ORDER = "order"
    """Any other order: report it the usual way."""


class LegBook:
    """The open legs of our brackets, by the broker's order id."""

    def __init__(self) -> None:
        """No legs known."""
        self.legs: dict[str, Leg] = {}
        self._known: set[str] = set()
        """Parents (``client_order_id``) whose open legs are in ``legs``."""
        self._early: OrderedDict[str, BrokerOrder] = OrderedDict()

    def __contains__(self, leg_id: object) -> bool:
        """Whether ``leg_id`` is an open leg of ours."""
        return leg_id in self.legs

    def wants_legs(self, order: BrokerOrder, tracked: TrackedOrder | None) -> bool:
        """Whether ``order`` is a bracket of ours whose legs are not known yet."""
        return tracked is not None and order.bracket and order.client_order_id not in self._known

    def know_parent(self, parent: str) -> None:
        """The legs of ``parent`` are being learnt (they follow with :meth:`add`)."""
        self._known.add(parent)

    def add(self, leg_id: str, leg: Leg) -> BrokerOrder | None:
        """Follow one leg; returns an event of it that came early, if one was kept."""
        self.legs[leg_id] = leg
        return self._early.pop(leg_id, None)

    def end(self, leg_id: str) -> None:
        """The leg reached a final state: no longer followed."""
        leg = self.legs.pop(leg_id, None)
        if leg is not None and not any(o.parent == leg.parent for o in self.legs.values()):
            self._known.discard(leg.parent)

    def route(self, order: BrokerOrder, tracked: TrackedOrder | None, *, ours: bool) -> LegRoute:
        """Say what ``order`` is; an event that may be an early leg is kept (:attr:`HELD`).

        Args:
            order: an order event from the broker.
            tracked: the order we follow under its ``client_order_id``, if any.
            ours: whether its ``client_order_id`` names one of our strategies.
        """
        order_id = order.broker_order_id or ""
        if order_id in self.legs:
            return LegRoute.LEG
        if tracked is not None:
            # A bracket recovered from the journal: its legs are learnt from the broker.
            return LegRoute.ORDER if tracked.status in {"pending", "submitted"} else LegRoute.PARENT
        if not order.bracket or ours:
            return LegRoute.ORDER
        self._early[order_id] = order
        self._early.move_to_end(order_id)
        while len(self._early) > EARLY_LEGS:
            self._early.popitem(last=False)
        return LegRoute.HELD

    def cancellable(
        self, strategy_id: str, tracked: Mapping[str, TrackedOrder]
    ) -> Iterator[tuple[str, Leg]]:
        """The open legs of the strategy's brackets whose entry is no longer just accepted.

        An entry cancelled without fills takes its legs with it at the broker; once it
        has fills, the legs protect a position and are cancelled by their own ids.
        Lazy: each parent is read when its leg's turn comes.
        """
        for leg_id, leg in list(self.legs.items()):
            parent = tracked.get(leg.parent)
            if leg.strategy_id != strategy_id or (
                parent is not None and parent.status == "accepted"
            ):
                continue
            yield leg_id, leg
