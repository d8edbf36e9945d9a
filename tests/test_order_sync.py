"""Our orders against the broker's listings: each difference becomes one action, no venue needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from actors.core.order_sync import (
    CLOCK_SKEW_S,
    LIST_OVERLAP,
    Adopt,
    BrokerOrder,
    Cancel,
    LookUp,
    OrderListing,
    OrderOwners,
    ReportMissing,
    Resubmit,
    TrackedOrder,
    Update,
    changed_at_start,
    gone_from_listing,
    listed_since,
    missing_at_start,
    needs_closed_listing,
    reconcile_open,
    same_state,
    settle_gone,
    settle_missing,
)
from protocol.messages import OrderIntent, OrderStatus

INTENT = OrderIntent(intent_id="i1", symbol="AAPL", side="buy", qty=1.0)
OWNERS = OrderOwners(frozenset({"s1", "s1-x"}))
T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def tracked(status: OrderStatus = "accepted", broker_id: str | None = "b1") -> TrackedOrder:
    return TrackedOrder("s1", broker_id, status, INTENT, accepted_at=1_000.0)


def listed(
    coid: str,
    status: OrderStatus = "accepted",
    broker_id: str | None = "b1",
    *,
    filled: float = 0.0,
    created: datetime | None = None,
) -> BrokerOrder:
    return BrokerOrder(coid, broker_id, status, filled_qty=filled, created_at=created)


def never_engaged(_sid: str) -> bool:
    return False


def test_the_longest_strategy_id_owns_an_order() -> None:
    assert OWNERS.owner("s1-x-7") == "s1-x"
    assert OWNERS.owner("s1-7") == "s1"
    assert OWNERS.owner("other-7") is None


def test_only_an_unfilled_acknowledged_order_as_we_know_it_says_nothing_new() -> None:
    assert same_state(tracked(), listed("s1-a"))
    assert not same_state(tracked("submitted"), listed("s1-a"))
    assert not same_state(tracked(broker_id=None), listed("s1-a"))
    assert not same_state(tracked(), listed("s1-a", "partially_filled", filled=1.0))
    assert not same_state(tracked(), listed("s1-a", filled=0.5))
    unknown = BrokerOrder("s1-a", "b1", "accepted", detail="alpaca status new_status")
    assert not same_state(tracked(), unknown)


def test_the_open_listing_reports_changes_and_external_orders_of_ours() -> None:
    followed = {"s1-same": tracked(), "s1-moved": tracked()}
    opened = {
        "s1-same": listed("s1-same"),
        "s1-moved": listed("s1-moved", "partially_filled", filled=2.0),
        "s1-unknown": listed("s1-unknown", broker_id="b9"),
        "manual-1": listed("manual-1", broker_id="b8"),
    }
    actions = list(reconcile_open(followed, opened, OWNERS, never_engaged))
    assert actions == [Update(opened["s1-moved"]), Update(opened["s1-unknown"])]


def test_an_engaged_strategys_open_orders_are_cancelled_ours_or_not() -> None:
    followed = {"s1-a": tracked()}
    opened = {"s1-a": listed("s1-a"), "s1-b": listed("s1-b"), "manual-1": listed("manual-1")}
    actions = list(reconcile_open(followed, opened, OWNERS, lambda sid: sid == "s1"))
    assert actions == [Cancel("s1", "s1-a"), Update(opened["s1-b"]), Cancel("s1", "s1-b")]


def test_each_decision_reads_the_orders_as_they_are_when_its_turn_comes() -> None:
    followed = {"s1-a": tracked(), "s1-b": tracked()}
    opened = {"s1-a": listed("s1-a", filled=1.0), "s1-b": listed("s1-b", filled=1.0)}
    walk = reconcile_open(followed, opened, OWNERS, never_engaged)
    assert next(walk) == Update(opened["s1-a"])
    del followed["s1-b"]  # the stream ended it while the first update was being sent
    # Gone from the journal's orders, it is ours by name: reported (and then dropped as late).
    assert list(walk) == [Update(opened["s1-b"])]


def test_at_start_only_the_journals_orders_that_changed_are_reported() -> None:
    followed = {"s1-a": tracked(), "s1-b": tracked("submitted", None)}
    opened = {"s1-a": listed("s1-a"), "s1-b": listed("s1-b"), "s1-c": listed("s1-c")}
    assert list(changed_at_start(followed, opened)) == [Update(opened["s1-b"])]


def test_orders_gone_from_the_open_listing_are_adopted_from_the_closed_one_or_looked_up() -> None:
    followed = {
        "s1-open": tracked(),
        "s1-filled": tracked(),
        "s1-vanished": tracked(),
        "s1-posting": tracked("submitted", None),
        "s1-queued": tracked("pending", None),
    }
    gone = gone_from_listing(followed, {"s1-open": listed("s1-open")})
    assert list(gone) == ["s1-filled", "s1-vanished", "s1-posting"]
    assert not needs_closed_listing(gone)
    filled = listed("s1-filled", "filled", filled=1.0)
    actions = settle_gone(gone, {"s1-filled": filled})
    assert actions == [
        Adopt(filled),
        LookUp("s1-vanished", followed["s1-vanished"]),
        LookUp("s1-posting", followed["s1-posting"]),
    ]
    lookups = [a for a in actions if isinstance(a, LookUp)]
    # A POST still on its way explains an absence; anything else is worth a warning.
    assert [a.warn_if_absent for a in lookups] == [True, False]
    followed["s1-posting"].status = "accepted"  # the POST's answer came in meanwhile
    assert lookups[1].warn_if_absent


def test_more_than_three_gone_cost_one_listing_from_the_oldest_acceptance() -> None:
    gone = {f"s1-{n}": TrackedOrder("s1", "b", "accepted", INTENT, 1_000.0 + n) for n in range(4)}
    assert needs_closed_listing(gone)
    since = listed_since(list(gone.values()))
    assert since == datetime.fromtimestamp(1_000.0 - CLOCK_SKEW_S, tz=UTC)


def test_at_start_the_unfinished_not_open_are_adopted_resent_or_reported() -> None:
    followed = {
        "s1-open": tracked(),
        "s1-closed": tracked(),
        "s1-recent": TrackedOrder("s1", None, "pending", INTENT, accepted_at=1_000.0),
        "s1-old": TrackedOrder("s1", None, "submitted", INTENT, accepted_at=900.0),
    }
    missing = missing_at_start(followed, {"s1-open": listed("s1-open")})
    assert list(missing) == ["s1-closed", "s1-recent", "s1-old"]
    closed = {"s1-closed": listed("s1-closed", "cancelled")}
    actions = list(settle_missing(missing, closed, now=1_010.0, deadline_s=30.0))
    assert actions[:2] == [Adopt(closed["s1-closed"]), Resubmit("s1-recent", followed["s1-recent"])]
    assert isinstance(actions[2], ReportMissing)
    assert actions[2].client_order_id == "s1-old"
    assert actions[2].detail.startswith("BROKER_UNAVAILABLE: never reached the broker within 30 s")
    assert "was submitted" in actions[2].detail


def test_a_listing_pages_from_just_before_the_newest_and_drops_repeats() -> None:
    listing = OrderListing(page_size=3)
    first = [listed(f"s1-{n}", created=T0 + timedelta(seconds=n)) for n in range(3)]
    assert listing.add(first) == T0 + timedelta(seconds=2) - LIST_OVERLAP
    # The next page repeats the order sharing the cursor's timestamp.
    second = [first[2], *(listed(f"s1-{n}", created=T0 + timedelta(seconds=n)) for n in (3, 4))]
    assert listing.add(second) == T0 + timedelta(seconds=4) - LIST_OVERLAP
    assert listing.add([listed("s1-5", created=T0 + timedelta(seconds=5))]) is None  # short
    assert list(listing.orders) == [f"s1-{n}" for n in range(6)]


def test_a_full_page_of_nothing_new_or_without_timestamps_ends_the_listing() -> None:
    listing = OrderListing(page_size=2)
    page = [listed("s1-a", created=T0), listed("s1-b", created=T0)]
    assert listing.add(page) is not None
    assert listing.add(page) is None  # nothing new: it would never progress
    assert OrderListing(page_size=1).add([listed("s1-c")]) is None  # no timestamp
    assert OrderListing(page_size=1).add([listed("", created=T0)]) is None  # no id: not kept
