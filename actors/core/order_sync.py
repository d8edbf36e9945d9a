"""Our orders against the broker's: reconciliation as pure functions, no I/O, no anyio.

The gateway follows every unfinished order of ours (:class:`TrackedOrder`, from the
journal at start). The broker's trade stream does not replay what was missed, so at
start and after every (re)connect the broker's listings are compared with what we
follow, and each difference becomes an action for the gateway to carry out:

- :class:`Update`: the broker knows more than we do (or the order is ours by name but
  not in the journal: reported as external);
- :class:`Adopt`: the broker has ended an order we thought open (its legs are learnt);
- :class:`LookUp`: not in the listing: ask the broker for that one order;
- :class:`Cancel`: open at the broker while its strategy's kill switch is engaged;
- :class:`Resubmit`: never reached the broker and still within its deadline;
- :class:`ReportMissing`: never reached the broker and past its deadline.

The functions that walk a listing are generators: the gateway acts on each action
before the next is decided, so each decision reads the orders as they are by then
(a stream report can end an order while an earlier action is being carried out).
(NautilusTrader keeps its reconciliation the same way, in ``live/reconciliation.py``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from protocol.messages import OrderIntent, OrderStatus

FINAL: Final = frozenset({"filled", "cancelled", "rejected", "expired"})
"""Contract statuses after which the broker never changes an order again."""
LOOKUPS_BEFORE_LISTING: Final = 3
"""Beyond this many orders to settle, a closed-orders listing beats one look-up each."""
LIST_PAGE: Final = 500
"""Orders per listing page (Alpaca's maximum)."""
LIST_OVERLAP: Final = timedelta(milliseconds=1)
"""Each page starts this much before the last one's newest order (``after`` is exclusive)."""
CLOCK_SKEW_S: Final = 60.0
"""Margin between our clock and the broker's when listing orders by submission time."""


@dataclass(frozen=True)
class BrokerOrder:
    """One order as the broker reports it, in contract terms (the adapter parses it)."""

    client_order_id: str
    """Empty when the broker's object had none."""
    broker_order_id: str | None
    status: OrderStatus
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    detail: str | None = None
    """Set when the broker's status is not one the contract knows (then ``accepted``)."""
    created_at: datetime | None = None
    bracket: bool = False
    """Whether it is the parent of a bracket."""
    legs: tuple[BrokerOrder, ...] | None = None
    """A bracket parent's legs, when the object carried any (None: it did not say)."""


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


@dataclass(frozen=True)
class Update:
    """Report the broker's state of the order to its strategy."""

    order: BrokerOrder


@dataclass(frozen=True)
class Adopt:
    """The broker has ended the order: learn its legs, then report it."""

    order: BrokerOrder


@dataclass(frozen=True)
class LookUp:
    """Not listed: look the order up by ``client_order_id`` and adopt what the broker has."""

    client_order_id: str
    order: TrackedOrder

    @property
    def warn_if_absent(self) -> bool:
        """Whether its absence is worth a warning (read when the answer is in).

        A ``submitted`` order may still be in its POST: its absence is no news.
        """
        return self.order.status != "submitted"


@dataclass(frozen=True)
class Cancel:
    """Open at the broker while the strategy's kill switch is engaged."""

    strategy_id: str
    client_order_id: str


@dataclass(frozen=True)
class Resubmit:
    """Never reached the broker, and still within its deadline: send it again."""

    client_order_id: str
    order: TrackedOrder


@dataclass(frozen=True)
class ReportMissing:
    """Never reached the broker, and past its deadline: it ends rejected."""

    client_order_id: str
    detail: str


def same_state(tracked: TrackedOrder, order: BrokerOrder) -> bool:
    """Whether a listed order says nothing new: acknowledged, unfilled, as we know it."""
    return (
        tracked.status == "accepted"
        and tracked.broker_order_id == order.broker_order_id
        and order.status == "accepted"
        and order.detail is None
        and not order.filled_qty
    )


class OrderListing:
    """The orders of a listing, gathered page by page, by ``client_order_id``.

    Pages come oldest first, each starting just before the last one's newest
    timestamp (``after`` is exclusive, so orders sharing that timestamp come again
    and are de-duplicated here).
    """

    def __init__(self, page_size: int = LIST_PAGE) -> None:
        """Nothing listed yet."""
        self.page_size = page_size
        self.orders: dict[str, BrokerOrder] = {}

    def add(self, page: Sequence[BrokerOrder]) -> datetime | None:
        """Take one page; returns where the next page starts, or None if this was the last.

        A short page is the last; so is a page of nothing new (it would not progress).
        """
        fresh = 0
        for order in page:
            coid = order.client_order_id
            if coid and coid not in self.orders:
                self.orders[coid] = order
                fresh += 1
        stamps = [order.created_at for order in page if order.created_at is not None]
        if len(page) < self.page_size or not stamps or fresh == 0:
            return None
        return max(stamps) - LIST_OVERLAP


def listed_since(orders: Sequence[TrackedOrder]) -> datetime:
    """Where a listing must start to include every one of ``orders`` (not empty)."""
    return datetime.fromtimestamp(min(t.accepted_at for t in orders) - CLOCK_SKEW_S, tz=UTC)


def changed_at_start(
    tracked: Mapping[str, TrackedOrder], opened: Mapping[str, BrokerOrder]
) -> Iterator[Update]:
    """At start: the journal's orders the open listing shows changed."""
    for coid, order in opened.items():
        known = tracked.get(coid)
        if known is not None and not same_state(known, order):
            yield Update(order)


def reconcile_open(
    tracked: Mapping[str, TrackedOrder],
    opened: Mapping[str, BrokerOrder],
    owners: OrderOwners,
    engaged: Callable[[str], bool],
) -> Iterator[Update | Cancel]:
    """The open listing against what we follow; ``engaged(sid)``: its kill switch is on.

    Orders ours by name but unknown to the journal are reported too (as external);
    every open order of an engaged strategy is to be cancelled.
    """
    for coid, order in opened.items():
        sid = owners.owner(coid)
        known = tracked.get(coid)
        if (known is not None and not same_state(known, order)) or (
            known is None and sid is not None
        ):
            yield Update(order)
        if sid is not None and engaged(sid):
            yield Cancel(sid, coid)


def gone_from_listing(
    tracked: Mapping[str, TrackedOrder], opened: Mapping[str, BrokerOrder]
) -> dict[str, TrackedOrder]:
    """Orders we follow, sent to the broker, that its open listing no longer shows."""
    return {
        coid: known
        for coid, known in tracked.items()
        if coid not in opened and known.status != "pending"
    }


def needs_closed_listing(gone: Mapping[str, TrackedOrder]) -> bool:
    """Whether one closed-orders listing is cheaper than looking each order up."""
    return len(gone) > LOOKUPS_BEFORE_LISTING


def settle_gone(
    gone: Mapping[str, TrackedOrder], closed: Mapping[str, BrokerOrder]
) -> list[Adopt | LookUp]:
    """Orders no longer open: adopt those the closed listing has, look the others up."""
    found: list[Adopt | LookUp] = [Adopt(closed[c]) for c in gone if c in closed]
    found.extend(LookUp(coid, known) for coid, known in gone.items() if coid not in closed)
    return found


def missing_at_start(
    tracked: Mapping[str, TrackedOrder], opened: Mapping[str, BrokerOrder]
) -> dict[str, TrackedOrder]:
    """The journal's unfinished orders the open listing did not show."""
    return {coid: known for coid, known in tracked.items() if coid not in opened}


def settle_missing(
    missing: Mapping[str, TrackedOrder],
    closed: Mapping[str, BrokerOrder],
    *,
    now: float,
    deadline_s: float,
) -> Iterator[Adopt | Resubmit | ReportMissing]:
    """At start, the journal's unfinished orders that were not open.

    Every one that closed since the oldest of them was accepted is in ``closed``. An
    order in neither listing never reached the broker: it is sent again within its
    deadline, else reported. (A POST of the previous process still on the wire would
    be refused as a duplicate ``client_order_id`` and then adopted.)
    """
    for coid, known in missing.items():
        order = closed.get(coid)
        if order is not None:
            yield Adopt(order)
        elif now - known.accepted_at < deadline_s:
            yield Resubmit(coid, known)
        else:
            yield ReportMissing(
                coid,
                "BROKER_UNAVAILABLE: never reached the broker within "
                f"{deadline_s:g} s (the daemon was down; was {known.status})",
            )
