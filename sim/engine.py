"""The matching engine: orders, fills, positions and the account, per Alpaca's paper rules.

Inputs are method calls (:meth:`MatchingEngine.submit`, :meth:`~MatchingEngine.cancel`,
:meth:`~MatchingEngine.replace`, :meth:`~MatchingEngine.match` on every price tick, ...);
outputs are the return values and one :class:`TradeEvent` per order state change,
handed to the ``on_event`` callback in the order they happen.

Rules (see ``docs/sim.md``):

* Only symbols of the asset list trade (``sim/assets.csv``); unlisted ones are
  refused (``asset "X" not found``), inactive ones too.
* Orders are accepted as ``pending_new``, then ``new`` when they can trade now or
  ``accepted`` while they wait for a session (``new`` follows at the open). They
  trade in the regular session; ``extended_hours`` limit orders also in the
  pre-market (04:00-09:30) and after-hours (16:00-20:00) sessions. With the
  ``us-equities`` clock ``opg`` orders trade only at the opening auction and
  ``cls`` orders only at the closing auction (in full, or canceled).
* Market orders fill at the ask (buy) or bid (sell). Limit orders fill when
  marketable (buy: ask <= limit, sell: bid >= limit) at that ask/bid. Stop orders
  trigger when the ask rises to (buy) or the bid falls to (sell) the stop, then
  behave as market (``stop``) or limit (``stop_limit``) orders. Trailing stops
  keep a high-water mark (best bid for sells, best ask for buys) and a stop
  ``trail_price`` or ``trail_percent`` away from it.
* Order classes: ``bracket`` (entry plus take-profit and stop-loss legs, held
  until the entry fills, then one-cancels-other), ``oto`` (entry plus one leg)
  and ``oco`` (a take-profit limit and a stop-loss, both live).
* With ``partial_fill_probability`` a fill covers only a random part of the
  remaining quantity; the rest is evaluated again at the next pass.
* ``ioc``: whatever fills at the first pass fills, the rest is canceled.
  ``fok``: fills completely at the first pass or is canceled. ``day`` orders
  expire at the session close; ``gtc`` orders after 90 days.
* A margin account by default: ``buying_power`` is ``multiplier * equity -
  gross position value - open buy holds``, the multiplier 2, or 4 at or above
  $25,000 of last equity. A cash account (``cash_account``) has multiplier 1:
  ``equity - long_market_value - |short_market_value| - open buy holds``.
  Positions are marked at the mid. ``cash + sum(qty * mid) == equity`` always holds.
* Short sales need a margin account with shorting on and a shortable,
  easy-to-borrow asset.
* Protective rejections as Alpaca words them: wash trades, sub-penny prices,
  stops on the wrong side of the market, orders worth under $1.
* A fill the account cannot pay for any more (the price moved after acceptance)
  rejects the order, or cancels its remainder if it already has fills.
* No event ever follows a final state (filled, canceled, expired, rejected, replaced).

The engine is built in layers, each a module: :mod:`sim.engine_state` (account,
orders, persistence, events) <- :mod:`sim.order_entry` (submit) <-
:mod:`sim.cancel_replace` (cancel, replace, order groups) <- :mod:`sim.matching`
(fills). The pure parts live beside them: :mod:`sim.orders` (the order record),
:mod:`sim.order_rules` (request rules) and :mod:`sim.account` (margin, positions).
"""

from __future__ import annotations

from sim.account import AccountView, SimPosition
from sim.matching import Matcher
from sim.orders import (
    CENT,
    FINAL_STATUSES,
    OPEN_STATUSES,
    PRICE_STEP,
    QTY_STEP,
    ZERO,
    EventName,
    SimOrder,
    TradeEvent,
)

__all__ = [
    "CENT",
    "FINAL_STATUSES",
    "OPEN_STATUSES",
    "PRICE_STEP",
    "QTY_STEP",
    "ZERO",
    "AccountView",
    "EventName",
    "MatchingEngine",
    "SimOrder",
    "SimPosition",
    "TradeEvent",
]


class MatchingEngine(Matcher):
    """Alpaca paper-trading rules over a price model and a market clock.

    Args:
        config: Venue configuration (seed, cash, partial fill probability, account type).
        clock: Market clock (sessions, time).
        prices: Price model providing quotes.
        on_event: Called synchronously with every trade event, in order.
        store: Where to persist every change (None: nothing persists). A store that
            already holds an account is resumed instead of opening a fresh one.
    """
