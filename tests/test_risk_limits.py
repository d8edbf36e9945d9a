"""Pre-trade limits: each limit at, inside and beyond its bound; a reference model; buckets."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core.risk_limits import (
    DuplicateDetector,
    EffectiveLimits,
    IntentBucket,
    IntentRateLimit,
    PortfolioView,
    PositionView,
    Quote,
    StrategyView,
    check_order,
    effective_limits,
    order_terms,
    usable_quote,
)
from daemon.config import RiskConfig, StrategyConfig
from protocol.messages import CircuitState, OrderIntent, OrderType, Reason, Side
from protocol.reasons import ReasonCode as C

NOW = 1_700_000_000.0
# Seed defaults: max_notional 25000, min_price 5, deviation 5 %, risk 2 %, allocation 25 %,
# daily loss 1000, daily drawdown 3 %, total 10 %, capital 80 %, 20 positions, quote age 10 s.
LIMITS = effective_limits(RiskConfig(), StrategyConfig())
QUOTE = Quote(bid=99.5, ask=100.5, ts=NOW)  # mid 100
PORTFOLIO = PortfolioView(
    equity=100_000.0, start_of_day_equity=100_000.0, peak_equity=100_000.0, gross_exposure=0.0
)
STRATEGY = StrategyView(gross_exposure=0.0, session_pnl=0.0)
# A clean order: notional 1000, risk 10.
BASE_INTENT: dict[str, Any] = {
    "intent_id": "t-1",
    "symbol": "AAPL",
    "side": "buy",
    "qty": 10.0,
    "order_type": "limit",
    "limit_price": 100.0,
    "stop_loss": 99.0,
}


def _long(qty: float, **pending: float) -> StrategyView:
    position = PositionView(qty=qty, avg_price=100.0, market_price=100.0, **pending)
    return StrategyView(
        gross_exposure=abs(qty) * 100.0, session_pnl=0.0, positions={"AAPL": position}
    )


def _run(spec: dict[str, Any]) -> list[Reason]:
    intent_fields = {**BASE_INTENT, **spec.get("intent", {})}
    intent = OrderIntent(**{k: v for k, v in intent_fields.items() if v is not None})
    return check_order(
        intent,
        limits=msgspec.structs.replace(LIMITS, **spec.get("limits", {})),
        strategy_view=spec.get("strategy", STRATEGY),
        portfolio=msgspec.structs.replace(PORTFOLIO, **spec.get("portfolio", {})),
        quote=spec.get("quote", QUOTE),
        now=NOW,
        circuit=spec.get("circuit", "closed"),
        reduce_only=spec.get("reduce_only", False),
    )


def _equity(value: float) -> dict[str, float]:
    return {"equity": value, "start_of_day_equity": value, "peak_equity": value}


WIDE = {"allocation": 1.0, "max_capital_deployed": 1.0}
SELL_TO_CLOSE = {"side": "sell", "stop_loss": None}

# (id, scenario, the only reason code expected, or None for a clean pass)
CASES: list[tuple[str, dict[str, Any], C | None]] = [
    ("clean", {}, None),
    # MAX_NOTIONAL: qty x limit price <= 25000, for every order.
    ("notional-at", {"intent": {"qty": 250.0}, "limits": WIDE}, None),
    ("notional-under", {"intent": {"qty": 249.99}, "limits": WIDE}, None),
    ("notional-over", {"intent": {"qty": 250.01}, "limits": WIDE}, C.MAX_NOTIONAL),
    (
        "notional-intent-over",
        {
            "intent": {
                "order_type": "market",
                "limit_price": None,
                "qty": None,
                "notional": 25_001,
            },
            "limits": WIDE,
        },
        C.MAX_NOTIONAL,
    ),
    (
        "notional-reducing-over",
        {"intent": {**SELL_TO_CLOSE, "qty": 300.0}, "strategy": _long(300.0)},
        C.MAX_NOTIONAL,
    ),
    # MIN_PRICE: reference price >= 5, opening orders only.
    (
        "min-price-at",
        {
            "intent": {"limit_price": 5.0, "stop_loss": 4.9},
            "quote": Quote(bid=4.99, ask=5.01, ts=NOW),
        },
        None,
    ),
    (
        "min-price-inside",
        {
            "intent": {"limit_price": 5.01, "stop_loss": 4.9},
            "quote": Quote(bid=4.99, ask=5.01, ts=NOW),
        },
        None,
    ),
    (
        "min-price-below",
        {
            "intent": {"limit_price": 4.99, "stop_loss": 4.9},
            "quote": Quote(bid=4.99, ask=5.01, ts=NOW),
        },
        C.MIN_PRICE,
    ),
    (
        "min-price-reducing",
        {
            "intent": {**SELL_TO_CLOSE, "limit_price": 4.0},
            "quote": Quote(bid=3.99, ask=4.01, ts=NOW),
            "strategy": _long(10.0),
        },
        None,
    ),
    # PRICE_DEVIATION: limit/stop within 5 % of mid 100; a usable quote for every order.
    ("deviation-at", {"intent": {"limit_price": 105.0}}, None),
    ("deviation-inside", {"intent": {"limit_price": 104.99}}, None),
    ("deviation-over", {"intent": {"limit_price": 105.01}}, C.PRICE_DEVIATION),
    ("deviation-under", {"intent": {"limit_price": 94.99, "stop_loss": 90.0}}, C.PRICE_DEVIATION),
    (
        "deviation-stop",
        {"intent": {"order_type": "stop", "limit_price": None, "stop_price": 105.01}},
        C.PRICE_DEVIATION,
    ),
    ("no-quote", {"quote": None}, C.PRICE_DEVIATION),
    ("quote-age-at", {"quote": Quote(bid=99.5, ask=100.5, ts=NOW - 10.0)}, None),
    ("quote-stale", {"quote": Quote(bid=99.5, ask=100.5, ts=NOW - 10.01)}, C.PRICE_DEVIATION),
    ("quote-crossed", {"quote": Quote(bid=100.5, ask=99.5, ts=NOW)}, C.PRICE_DEVIATION),
    (
        "no-quote-market",
        {"intent": {"order_type": "market", "limit_price": None}, "quote": None},
        C.PRICE_DEVIATION,
    ),
    (
        "no-quote-reducing",
        {"intent": SELL_TO_CLOSE, "quote": None, "strategy": _long(10.0)},
        C.PRICE_DEVIATION,
    ),
    # RISK_PER_TRADE: qty x |entry - stop_loss| <= 2 % of equity 100000 = 2000.
    ("risk-at", {"intent": {"qty": 200.0, "stop_loss": 90.0}}, None),
    ("risk-inside", {"intent": {"qty": 200.0, "stop_loss": 90.01}}, None),
    ("risk-over", {"intent": {"qty": 200.0, "stop_loss": 89.99}}, C.RISK_PER_TRADE),
    ("risk-no-stop-at", {"intent": {"qty": 20.0, "stop_loss": None}}, None),
    ("risk-no-stop-over", {"intent": {"qty": 20.01, "stop_loss": None}}, C.RISK_PER_TRADE),
    ("risk-stop-at-entry", {"intent": {"stop_loss": 100.0}}, C.RISK_PER_TRADE),
    ("risk-short-stop-below", {"intent": {"side": "sell", "stop_loss": 99.0}}, C.RISK_PER_TRADE),
    ("risk-short-ok", {"intent": {"side": "sell", "stop_loss": 101.0}}, None),
    (
        "risk-reducing-exempt",
        {"intent": {**SELL_TO_CLOSE, "qty": 200.0}, "strategy": _long(200.0)},
        None,
    ),
    # STRATEGY_ALLOCATION: strategy exposure + 1000 <= 25000.
    ("allocation-at", {"strategy": StrategyView(gross_exposure=24_000.0, session_pnl=0)}, None),
    ("allocation-inside", {"strategy": StrategyView(gross_exposure=23_999.0, session_pnl=0)}, None),
    (
        "allocation-over",
        {"strategy": StrategyView(gross_exposure=24_000.01, session_pnl=0)},
        C.STRATEGY_ALLOCATION,
    ),
    # STRATEGY_DAILY_LOSS: loss must stay below 1000; reducing is allowed.
    ("daily-loss-inside", {"strategy": StrategyView(gross_exposure=0, session_pnl=-999.99)}, None),
    (
        "daily-loss-at",
        {"strategy": StrategyView(gross_exposure=0, session_pnl=-1000.0)},
        C.STRATEGY_DAILY_LOSS,
    ),
    (
        "daily-loss-over",
        {"strategy": StrategyView(gross_exposure=0, session_pnl=-1000.01)},
        C.STRATEGY_DAILY_LOSS,
    ),
    (
        "daily-loss-reducing",
        {
            "intent": SELL_TO_CLOSE,
            "strategy": msgspec.structs.replace(_long(10.0), session_pnl=-5000.0),
        },
        None,
    ),
    # STRATEGY_PAUSED: opening orders only.
    (
        "paused",
        {"strategy": StrategyView(gross_exposure=0, session_pnl=0, paused=True)},
        C.STRATEGY_PAUSED,
    ),
    (
        "paused-reducing",
        {"intent": SELL_TO_CLOSE, "strategy": msgspec.structs.replace(_long(10.0), paused=True)},
        None,
    ),
    # LOW_CONFIDENCE: >= min_confidence when set.
    ("confidence-at", {"intent": {"confidence": 0.6}, "limits": {"min_confidence": 0.6}}, None),
    (
        "confidence-inside",
        {"intent": {"confidence": 0.61}, "limits": {"min_confidence": 0.6}},
        None,
    ),
    (
        "confidence-below",
        {"intent": {"confidence": 0.59}, "limits": {"min_confidence": 0.6}},
        C.LOW_CONFIDENCE,
    ),
    ("confidence-missing", {"limits": {"min_confidence": 0.6}}, C.LOW_CONFIDENCE),
    ("confidence-not-required", {}, None),
    # RESTRICTED_SYMBOL: every order.
    ("restricted", {"limits": {"restricted_symbols": frozenset({"AAPL"})}}, C.RESTRICTED_SYMBOL),
    (
        "restricted-reducing",
        {
            "intent": SELL_TO_CLOSE,
            "strategy": _long(10.0),
            "limits": {"restricted_symbols": frozenset({"AAPL"})},
        },
        C.RESTRICTED_SYMBOL,
    ),
    ("restricted-other", {"limits": {"restricted_symbols": frozenset({"MSFT"})}}, None),
    # DAILY_DRAWDOWN: (start of day - equity) / start of day must stay below 3 %.
    ("daily-dd-inside", {"portfolio": {"equity": 97_000.01}}, None),
    ("daily-dd-at", {"portfolio": {"equity": 97_000.0}}, C.DAILY_DRAWDOWN),
    ("daily-dd-over", {"portfolio": {"equity": 96_999.99}}, C.DAILY_DRAWDOWN),
    (
        "daily-dd-reducing",
        {"portfolio": {"equity": 96_000.0}, "intent": SELL_TO_CLOSE, "strategy": _long(10.0)},
        None,
    ),
    # TOTAL_DRAWDOWN: (peak - equity) / peak must stay below 10 %.
    ("total-dd-inside", {"portfolio": {**_equity(90_000.01), "peak_equity": 100_000.0}}, None),
    (
        "total-dd-at",
        {"portfolio": {**_equity(90_000.0), "peak_equity": 100_000.0}},
        C.TOTAL_DRAWDOWN,
    ),
    (
        "total-dd-over",
        {"portfolio": {**_equity(89_999.99), "peak_equity": 100_000.0}},
        C.TOTAL_DRAWDOWN,
    ),
    # CAPITAL_DEPLOYED: account exposure + pending opening + 1000 <= 80 % of 100000.
    ("capital-at", {"portfolio": {"gross_exposure": 79_000.0}}, None),
    ("capital-inside", {"portfolio": {"gross_exposure": 78_999.0}}, None),
    ("capital-over", {"portfolio": {"gross_exposure": 79_000.01}}, C.CAPITAL_DEPLOYED),
    (
        "capital-pending-at",
        {"portfolio": {"gross_exposure": 78_500.0, "pending_opening": {"AAPL": 500.0}}},
        None,
    ),
    (
        "capital-pending-over",
        {"portfolio": {"gross_exposure": 78_500.01, "pending_opening": {"AAPL": 500.0}}},
        C.CAPITAL_DEPLOYED,
    ),
    (
        "capital-reducing",
        {
            "portfolio": {"gross_exposure": 95_000.0},
            "intent": SELL_TO_CLOSE,
            "strategy": _long(10.0),
        },
        None,
    ),
    # MAX_POSITIONS: held + pending new symbols + this new one <= 20.
    ("positions-at", {"portfolio": {"held_symbols": frozenset(f"S{i}" for i in range(19))}}, None),
    (
        "positions-inside",
        {"portfolio": {"held_symbols": frozenset(f"S{i}" for i in range(18))}},
        None,
    ),
    (
        "positions-over",
        {"portfolio": {"held_symbols": frozenset(f"S{i}" for i in range(20))}},
        C.MAX_POSITIONS,
    ),
    (
        "positions-pending-over",
        {
            "portfolio": {
                "held_symbols": frozenset(f"S{i}" for i in range(19)),
                "pending_opening": {"P": 0.0},
            }
        },
        C.MAX_POSITIONS,
    ),
    (
        "positions-held-symbol",
        {"portfolio": {"held_symbols": frozenset({"AAPL", *(f"S{i}" for i in range(19))})}},
        None,
    ),
    (
        "positions-pending-symbol",
        {
            "portfolio": {
                "held_symbols": frozenset(f"S{i}" for i in range(20)),
                "pending_opening": {"AAPL": 0.0},
            }
        },
        None,
    ),
    # CIRCUIT_OPEN: every order.
    ("circuit-open", {"circuit": "open"}, C.CIRCUIT_OPEN),
    (
        "circuit-open-reducing",
        {"circuit": "open", "intent": SELL_TO_CLOSE, "strategy": _long(10.0)},
        C.CIRCUIT_OPEN,
    ),
    ("circuit-half-open", {"circuit": "half_open"}, None),
    # REDUCE_ONLY: only orders that shrink the strategy's own position.
    ("reduce-only-buy", {"reduce_only": True}, C.REDUCE_ONLY),
    (
        "reduce-only-close-long",
        {"reduce_only": True, "intent": SELL_TO_CLOSE, "strategy": _long(10.0)},
        None,
    ),
    (
        "reduce-only-flip",
        {"reduce_only": True, "intent": {**SELL_TO_CLOSE, "qty": 10.01}, "strategy": _long(10.0)},
        C.REDUCE_ONLY,
    ),
    (
        "reduce-only-pending-sells",
        {
            "reduce_only": True,
            "intent": {**SELL_TO_CLOSE, "qty": 6.0},
            "strategy": _long(10.0, pending_sell_qty=5.0),
        },
        C.REDUCE_ONLY,
    ),
    (
        "reduce-only-pending-sells-fit",
        {
            "reduce_only": True,
            "intent": {**SELL_TO_CLOSE, "qty": 5.0},
            "strategy": _long(10.0, pending_sell_qty=5.0),
        },
        None,
    ),
    (
        "reduce-only-cover-short",
        {"reduce_only": True, "intent": {"stop_loss": None}, "strategy": _long(-10.0)},
        None,
    ),
    (
        "reduce-only-over-cover",
        {"reduce_only": True, "intent": {"qty": 11.0}, "strategy": _long(-10.0)},
        C.REDUCE_ONLY,
    ),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_limit_at_inside_and_beyond_its_bound(
    spec: dict[str, Any], expected: C | None
) -> None:
    reasons = _run(spec)
    assert [r.code for r in reasons] == ([] if expected is None else [expected]), reasons


def test_three_broken_limits_are_all_listed_in_order() -> None:
    reasons = _run(
        {
            "intent": {"qty": 300.0, "confidence": 0.1},
            "limits": {**WIDE, "min_confidence": 0.5, "restricted_symbols": frozenset({"AAPL"})},
        }
    )
    assert [r.code for r in reasons] == [C.LOW_CONFIDENCE, C.RESTRICTED_SYMBOL, C.MAX_NOTIONAL]


def test_messages_carry_the_numbers() -> None:
    reasons = _run({"intent": {"qty": 300.0}, "limits": WIDE})
    assert reasons == [Reason(code=C.MAX_NOTIONAL, message="notional 30000.00 > limit 25000.00")]
    (no_quote,) = _run({"quote": None})
    assert no_quote.message == "no quote for AAPL within 10 s"
    (stale,) = _run({"quote": Quote(bid=99.5, ask=100.5, ts=NOW - 12.5)})
    assert stale.message == "no quote for AAPL within 10 s (latest is 12.5 s old)"
    (deviation,) = _run({"intent": {"limit_price": 106.0}})
    assert deviation.message == "limit_price 106.00 is 6.00% from mid 100.00 (limit 5.00%)"
    (risk,) = _run({"intent": {"qty": 25.0, "stop_loss": None}})
    assert risk.message == (
        "no stop_loss: whole notional 2500.00 at risk > limit 2000.00 (2.00% of equity 100000.00)"
    )
    (wrong_side,) = _run({"intent": {"stop_loss": 101.0}})
    assert wrong_side.message == "stop_loss 101.00 is not below entry 100.00 for a buy"


def test_reference_price_rules() -> None:
    sell_market = OrderIntent(intent_id="a", symbol="AAPL", side="sell", qty=2)
    buy_market = msgspec.structs.replace(sell_market, side="buy")
    stop = OrderIntent(
        intent_id="b", symbol="AAPL", side="buy", qty=2, order_type="stop", stop_price=101
    )
    stop_limit = msgspec.structs.replace(
        stop, order_type="stop_limit", limit_price=102, stop_price=101
    )
    prices = [
        order_terms(i, strategy_view=STRATEGY, quote=QUOTE).reference_price
        for i in (buy_market, sell_market, stop, stop_limit)
    ]
    assert prices == [100.5, 99.5, 101, 102]
    assert order_terms(buy_market, strategy_view=STRATEGY, quote=None).notional is None


def test_notional_intent_is_sized_at_the_reference_price() -> None:
    intent = OrderIntent(intent_id="a", symbol="AAPL", side="sell", notional=995.0)
    terms = order_terms(intent, strategy_view=_long(10.0), quote=QUOTE)
    assert terms.qty == pytest.approx(10.0)
    assert not terms.opening
    # Without a quote its size is unknown, so it cannot count as reducing.
    unknown = order_terms(intent, strategy_view=_long(10.0), quote=None)
    assert unknown.opening
    assert unknown.added_exposure == 995.0


def test_a_flip_adds_only_the_part_beyond_the_position() -> None:
    intent = OrderIntent(
        intent_id="a", symbol="AAPL", side="sell", qty=150, order_type="limit", limit_price=100
    )
    terms = order_terms(intent, strategy_view=_long(100.0), quote=QUOTE)
    assert terms.opening
    assert terms.opening_qty == 50
    assert terms.added_exposure == 5000
    # Risk per trade counts only the opening 50 shares: 50 x (140 - 100) = 2000, at the limit.
    flip = {"side": "sell", "qty": 150.0, "stop_loss": 140.0}
    assert _run({"intent": flip, "strategy": _long(100.0)}) == []
    assert [
        r.code for r in _run({"intent": {**flip, "stop_loss": 140.01}, "strategy": _long(100.0)})
    ] == [C.RISK_PER_TRADE]


def test_equity_at_or_below_zero_breaks_every_equity_relative_limit() -> None:
    codes = {r.code for r in _run({"portfolio": {"equity": 0.0}})}
    assert {C.RISK_PER_TRADE, C.STRATEGY_ALLOCATION, C.CAPITAL_DEPLOYED, C.DAILY_DRAWDOWN} <= codes


def test_usable_quote() -> None:
    assert usable_quote(QUOTE, NOW + 10, 10) is QUOTE
    assert usable_quote(QUOTE, NOW + 10.001, 10) is None
    assert usable_quote(Quote(bid=0, ask=1, ts=NOW), NOW, 10) is None
    assert usable_quote(None, NOW, 10) is None


# --------------------------------------------------------------------------- effective limits


def test_effective_limits_merge_overrides() -> None:
    risk = RiskConfig(max_notional=10_000, restricted_symbols=["gme"], max_positions=3)
    strategy = StrategyConfig(
        max_notional=5_000,
        max_intents_per_second=2,
        duplicate_window_s=0,
        restricted_symbols=["AMC"],
        min_confidence=0.7,
        allocation=0.1,
    )
    limits = effective_limits(risk, strategy)
    assert limits.max_notional == 5_000
    assert limits.max_intents_per_second == 2
    assert limits.duplicate_window_s == 0
    assert limits.min_price == risk.min_price
    assert limits.restricted_symbols == {"GME", "AMC"}
    assert limits.min_confidence == 0.7
    assert limits.allocation == 0.1
    assert limits.max_positions == 3
    assert effective_limits(risk, StrategyConfig()).max_notional == 10_000


# --------------------------------------------------------------------------- reference model

_TOL = 1e-9


def _le(a: float, b: float) -> bool:
    return a <= b or math.isclose(a, b, rel_tol=_TOL, abs_tol=_TOL)


def _ge(a: float, b: float) -> bool:
    return a >= b or math.isclose(a, b, rel_tol=_TOL, abs_tol=_TOL)


def reference_codes(
    intent: OrderIntent,
    *,
    limits: EffectiveLimits,
    strategy: StrategyView,
    portfolio: PortfolioView,
    quote: Quote | None,
    circuit: CircuitState,
    reduce_only: bool,
) -> set[C]:
    """The module doc's rules, written out plainly and independently of the implementation."""
    codes: set[C] = set()
    fresh = (
        quote is not None
        and quote.bid > 0
        and quote.ask >= quote.bid
        and NOW - quote.ts <= limits.quote_max_age_s
    )
    if intent.order_type in ("limit", "stop_limit"):
        price: float | None = intent.limit_price
    elif intent.order_type == "stop":
        price = intent.stop_price
    elif fresh and quote is not None:
        price = quote.ask if intent.side == "buy" else quote.bid
    else:
        price = None
    if intent.qty is not None:
        qty: float | None = intent.qty
        notional = None if price is None else intent.qty * price
    else:
        notional = intent.notional
        qty = None if price is None or notional is None else notional / price

    held = 0.0
    room = 0.0
    position = strategy.positions.get(intent.symbol)
    if position is not None:
        held = position.qty
        if intent.side == "sell" and held > 0:
            room = held - position.pending_sell_qty
        if intent.side == "buy" and held < 0:
            room = -held - position.pending_buy_qty
    reducing = qty is not None and room > 0 and _le(qty, room)
    opening = not reducing
    new_qty = None if qty is None else (0.0 if reducing else qty - max(room, 0.0))

    equity = portfolio.equity
    if circuit == "open":
        codes.add(C.CIRCUIT_OPEN)
    if intent.symbol in limits.restricted_symbols:
        codes.add(C.RESTRICTED_SYMBOL)
    if not fresh:
        codes.add(C.PRICE_DEVIATION)
    else:
        assert quote is not None
        mid = (quote.bid + quote.ask) / 2
        for p in (intent.limit_price, intent.stop_price):
            if p is not None and not _le(abs(p - mid) / mid, limits.max_price_deviation):
                codes.add(C.PRICE_DEVIATION)
    if notional is not None and not _le(notional, limits.max_notional):
        codes.add(C.MAX_NOTIONAL)
    if not opening:
        return codes

    if reduce_only:
        codes.add(C.REDUCE_ONLY)
    daily = (portfolio.start_of_day_equity - equity) / portfolio.start_of_day_equity
    if daily > 0 and _ge(daily, limits.max_daily_drawdown):
        codes.add(C.DAILY_DRAWDOWN)
    total = (portfolio.peak_equity - equity) / portfolio.peak_equity
    if total > 0 and _ge(total, limits.max_total_drawdown):
        codes.add(C.TOTAL_DRAWDOWN)
    if strategy.paused:
        codes.add(C.STRATEGY_PAUSED)
    if _ge(-strategy.session_pnl, limits.max_daily_loss):
        codes.add(C.STRATEGY_DAILY_LOSS)
    if limits.min_confidence is not None and (
        intent.confidence is None or not _ge(intent.confidence, limits.min_confidence)
    ):
        codes.add(C.LOW_CONFIDENCE)
    if price is not None and not _ge(price, limits.min_price):
        codes.add(C.MIN_PRICE)
    if price is not None and new_qty is not None:
        budget = limits.max_risk_per_trade * equity
        if intent.stop_loss is None:
            risk = new_qty * price
        elif (intent.side == "buy" and intent.stop_loss >= price) or (
            intent.side == "sell" and intent.stop_loss <= price
        ):
            risk = math.inf
        else:
            risk = new_qty * abs(price - intent.stop_loss)
        if equity <= 0 or not _le(risk, budget):
            codes.add(C.RISK_PER_TRADE)
    added = notional if new_qty is None else (None if price is None else new_qty * price)
    if added is not None:
        if equity <= 0 or not _le(strategy.gross_exposure + added, limits.allocation * equity):
            codes.add(C.STRATEGY_ALLOCATION)
        deployed = portfolio.gross_exposure + sum(portfolio.pending_opening.values()) + added
        if equity <= 0 or not _le(deployed / equity, limits.max_capital_deployed):
            codes.add(C.CAPITAL_DEPLOYED)
    in_use = set(portfolio.held_symbols) | set(portfolio.pending_opening)
    if intent.symbol not in in_use and len(in_use) + 1 > limits.max_positions:
        codes.add(C.MAX_POSITIONS)
    return codes


HAZARDS = (
    "symbols",
    "max_positions",
    "mid",
    "quote",
    "price",
    "size",
    "notional",
    "stop_loss",
    "min_confidence",
    "restricted",
    "max_positions",
    "strategy_exposure",
    "pnl",
    "paused",
    "equity",
    "peak",
    "gross",
    "symbols",
    "circuit",
    "reduce_only",
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Any, ...]:
    """A benign scenario with a few chosen hazards, so accepts and rejects both occur often.

    Side, symbol, order type and the strategy's position always vary: opening
    vs reducing is what most rules turn on.
    """
    count = draw(st.integers(0, 6))
    hazards = set(draw(st.lists(st.sampled_from(HAZARDS), min_size=count, max_size=count)))

    def pick(name: str, benign: Any, wild: list[Any]) -> Any:
        return draw(st.sampled_from(wild)) if name in hazards else benign

    mid = pick("mid", 100.0, [4.0, 5.0, 187.5])
    half_spread = draw(st.sampled_from([0.0, 0.01, 0.25]))
    quote = pick(
        "quote",
        Quote(bid=mid - half_spread, ask=mid + half_spread, ts=NOW - 1),
        [
            Quote(bid=mid - half_spread, ask=mid + half_spread, ts=NOW - 11),
            None,
            Quote(bid=mid + 1, ask=mid - 1, ts=NOW),
        ],
    )
    side: Side = draw(st.sampled_from(["buy", "sell"]))
    order_type: OrderType = draw(st.sampled_from(["market", "limit", "stop", "stop_limit"]))
    factors = [0.9, 0.95, 0.97, 1.0, 1.03, 1.05, 1.06]
    limit_price = (
        mid * pick("price", 1.0, factors) if order_type in ("limit", "stop_limit") else None
    )
    stop_price = mid * pick("price", 1.0, factors) if order_type in ("stop", "stop_limit") else None
    use_notional = order_type == "market" and pick("notional", False, [True])  # noqa: FBT003
    size = pick("size", 10.0, [1.0, 15.0, 30.0, 50.0, 100.0, 250.0, 251.0, 1000.0])
    # Without a stop_loss the default 10 shares risk 1000 of the 2000 allowed: benign too.
    benign_stop = draw(st.sampled_from([None, 0.99 if side == "buy" else 1.01]))
    stop_loss_factor = pick("stop_loss", benign_stop, [None, 0.8, 0.9, 1.0, 1.0, 1.1, 1.2])
    intent = OrderIntent(
        intent_id="h",
        symbol=draw(st.sampled_from(["AAPL", "MSFT"])),
        side=side,
        qty=None if use_notional else size,
        notional=size * 100 if use_notional else None,
        order_type=order_type,
        limit_price=limit_price,
        stop_price=stop_price,
        stop_loss=None if stop_loss_factor is None else mid * stop_loss_factor,
        confidence=draw(st.sampled_from([None, 0.3, 0.6, 0.9])),
    )
    limits = msgspec.structs.replace(
        LIMITS,
        min_confidence=pick("min_confidence", None, [0.6]),
        restricted_symbols=pick("restricted", frozenset(), [frozenset({"AAPL"})]),
        max_positions=pick("max_positions", 20, [0, 1, 2, 3]),
    )
    position_qty = draw(st.sampled_from([-100.0, -10.0, 0.0, 10.0, 100.0]))
    positions = {}
    if position_qty:
        positions["AAPL"] = PositionView(
            qty=position_qty,
            avg_price=mid,
            market_price=mid,
            pending_buy_qty=draw(st.sampled_from([0.0, 5.0, 10.0])),
            pending_sell_qty=draw(st.sampled_from([0.0, 5.0, 10.0])),
        )
    strategy = StrategyView(
        gross_exposure=pick("strategy_exposure", 0.0, [10_000.0, 24_000.0, 30_000.0]),
        session_pnl=pick("pnl", 0.0, [-500.0, -1000.0, -2000.0]),
        paused=pick("paused", False, [True]),  # noqa: FBT003
        positions=positions,
    )
    portfolio = PortfolioView(
        equity=pick("equity", 100_000.0, [0.0, 50_000.0, 90_000.0, 97_000.0]),
        start_of_day_equity=100_000.0,
        peak_equity=pick("peak", 100_000.0, [110_000.0]),
        gross_exposure=pick("gross", 0.0, [50_000.0, 79_000.0, 90_000.0]),
        held_symbols=pick("symbols", frozenset(), [frozenset({"AAPL"}), frozenset({"X"})]),
        pending_opening=pick("symbols", {}, [{"MSFT": 1000.0}, {"Y": 500.0}, {"Y": 1.0, "Z": 1.0}]),
    )
    circuit: CircuitState = pick("circuit", "closed", ["half_open", "open"])
    reduce_only = pick("reduce_only", False, [True])  # noqa: FBT003
    return intent, limits, strategy, portfolio, quote, circuit, reduce_only


@settings(max_examples=1000, deadline=None)
@given(scenarios())
def test_checker_matches_an_independent_reference(scenario: tuple[Any, ...]) -> None:
    intent, limits, strategy, portfolio, quote, circuit, reduce_only = scenario
    reasons = check_order(
        intent,
        limits=limits,
        strategy_view=strategy,
        portfolio=portfolio,
        quote=quote,
        now=NOW,
        circuit=circuit,
        reduce_only=reduce_only,
    )
    expected = reference_codes(
        intent,
        limits=limits,
        strategy=strategy,
        portfolio=portfolio,
        quote=quote,
        circuit=circuit,
        reduce_only=reduce_only,
    )
    assert {r.code for r in reasons} == expected
    # Never accepts what breaks a limit, and every message says something.
    assert bool(reasons) == bool(expected)
    assert all(r.message for r in reasons)


# --------------------------------------------------------------------------- rate limiting


def test_intent_rate_limit_burst_is_one_second_and_refills() -> None:
    limiter = IntentRateLimit({"s1": 2.0})
    assert limiter.check("s1", NOW) is None
    assert limiter.check("s1", NOW) is None
    refused = limiter.check("s1", NOW)
    assert refused is not None
    assert refused.code is C.RATE_LIMIT
    assert refused.message == "more than 2 intents/s from strategy s1 (burst 2)"
    assert limiter.check("s1", NOW + 0.49) is not None  # 0.98 of a token
    assert limiter.check("s1", NOW + 0.5) is None


def test_intent_bucket_exact_refill() -> None:
    bucket = IntentBucket(rate=2.0, burst=2.0)
    assert bucket.take(NOW)
    assert bucket.take(NOW)
    assert not bucket.take(NOW)
    assert not bucket.take(NOW + 0.25)  # half a token
    assert bucket.take(NOW + 0.5)  # one whole token
    assert not bucket.take(NOW + 0.5)
    assert bucket.take(NOW + 10)
    assert bucket.take(NOW + 10)
    assert not bucket.take(NOW + 10)  # never more than the burst


def test_slow_rates_still_allow_one_intent() -> None:
    limiter = IntentRateLimit({"s1": 0.5})
    assert limiter.check("s1", NOW) is None
    assert limiter.check("s1", NOW + 1) is not None
    assert limiter.check("s1", NOW + 2) is None


def test_clock_going_backwards_refills_nothing() -> None:
    bucket = IntentBucket(rate=1.0, burst=1.0)
    assert bucket.take(NOW)
    assert not bucket.take(NOW - 100)
    assert not bucket.take(NOW + 0.5)
    assert bucket.take(NOW + 1)


def test_global_bucket_refusal_keeps_the_strategy_token() -> None:
    limiter = IntentRateLimit({"s1": 1.0, "s2": 1.0}, global_rate=1.0)
    assert limiter.check("s1", NOW) is None
    refused = limiter.check("s2", NOW)
    assert refused is not None
    assert refused.message == "more than 1 intents/s across all strategies (burst 1)"
    assert limiter.check("s2", NOW + 1) is None  # s2's own token was not spent


def test_intent_rate_limit_refuses_unknown_strategies_loudly() -> None:
    with pytest.raises(KeyError):
        IntentRateLimit({"s1": 1.0}).check("nope", NOW)


# --------------------------------------------------------------------------- duplicates

ORDER = OrderIntent(**BASE_INTENT)


def test_same_content_under_a_new_id_is_a_duplicate_inside_the_window() -> None:
    detector = DuplicateDetector()
    detector.record("s1", ORDER, now=NOW, window_s=2)
    again = msgspec.structs.replace(ORDER, intent_id="t-2")
    refused = detector.check("s1", again, now=NOW + 1.99, window_s=2)
    assert refused is not None
    assert refused.code is C.DUPLICATE_INTENT
    assert refused.message.startswith("same order as intent t-1 2.0 s ago (window 2 s)")
    assert detector.check("s1", again, now=NOW + 2, window_s=2) is None  # the window is open-ended


def test_not_duplicates() -> None:
    detector = DuplicateDetector()
    detector.record("s1", ORDER, now=NOW, window_s=2)
    assert detector.check("s1", ORDER, now=NOW, window_s=2) is None  # same id: a re-send
    assert (
        detector.check("s2", msgspec.structs.replace(ORDER, intent_id="x"), now=NOW, window_s=2)
        is None
    )
    for change in (
        {"qty": 11.0},
        {"limit_price": 100.5},
        {"time_in_force": "gtc"},
        {"side": "sell"},
    ):
        other = msgspec.structs.replace(ORDER, intent_id="x", **change)
        assert detector.check("s1", other, now=NOW, window_s=2) is None, change


def test_stop_loss_and_confidence_are_not_part_of_the_content() -> None:
    detector = DuplicateDetector()
    detector.record("s1", ORDER, now=NOW, window_s=2)
    other = msgspec.structs.replace(ORDER, intent_id="x", stop_loss=98.0, confidence=0.9, ts=NOW)
    assert detector.check("s1", other, now=NOW, window_s=2) is not None


def test_window_zero_turns_the_check_off() -> None:
    detector = DuplicateDetector()
    detector.record("s1", ORDER, now=NOW, window_s=0)
    assert len(detector) == 0
    detector.record("s1", ORDER, now=NOW, window_s=2)
    assert (
        detector.check("s1", msgspec.structs.replace(ORDER, intent_id="x"), now=NOW, window_s=0)
        is None
    )


def test_duplicate_memory_is_bounded() -> None:
    detector = DuplicateDetector(max_entries=3)
    for i in range(10):
        detector.record(
            "s1", msgspec.structs.replace(ORDER, qty=float(i + 1)), now=NOW, window_s=60
        )
        assert len(detector) <= 3
    # Expired entries go as time passes.
    detector.record("s1", ORDER, now=NOW + 120, window_s=1)
    assert len(detector) == 1
