"""Every v1 wire message of docs/protocol.md as a frozen, kw-only msgspec Struct.

Inbound messages (intents, kill commands) forbid unknown fields and carry their
constraints in their types, so that decoding *is* validation. Cross-field rules
live in ``__post_init__``; msgspec turns the ``ValueError`` they raise into a
``ValidationError`` whose message names the rule.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol.reasons import ReasonCode

__all__ = [
    "Accepted",
    "AccountState",
    "ApprovalCommand",
    "ApprovalPending",
    "Approve",
    "AuditRecord",
    "CancelAllIntent",
    "CancelIntent",
    "DaemonState",
    "Demote",
    "Deny",
    "Disengage",
    "Engage",
    "Event",
    "FillEvent",
    "Intent",
    "KillCommand",
    "KillState",
    "OrderClass",
    "OrderEvent",
    "OrderIntent",
    "OrderStatus",
    "Pause",
    "PendingApproval",
    "Promote",
    "Reason",
    "Rejected",
    "ResetCircuit",
    "Resume",
    "Side",
    "StrategyState",
    "SwitchState",
]

# ``(?!\n)$``: a bare ``$`` also matches before a trailing newline in Python, so
# ``"AAPL\n"`` would pass. The lookahead keeps the patterns valid JSON Schema (ECMA 262).
STRATEGY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}(?!\n)$"
TradingMode = Literal["paper", "live"]
BrokerKind = Literal["sim", "alpaca"]
INTENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}(?!\n)$"
SYMBOL_PATTERN = r"^[A-Z0-9./]{1,12}(?!\n)$"
MAX_QTY_DECIMALS = 9
"""Alpaca accepts quantities with at most 9 decimal places."""

StrategyId = Annotated[str, Meta(pattern=STRATEGY_ID_PATTERN, description="1-32 of [A-Za-z0-9_-]")]
IntentId = Annotated[str, Meta(pattern=INTENT_ID_PATTERN, description="1-64 of [A-Za-z0-9._:-]")]
Symbol = Annotated[str, Meta(pattern=SYMBOL_PATTERN, description="1-12 of [A-Z0-9./]")]
PositiveNumber = Annotated[float, Meta(gt=0)]
UnitInterval = Annotated[float, Meta(ge=0, le=1)]
ShortText = Annotated[str, Meta(max_length=200)]

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
OrderClass = Literal["simple", "bracket"]
TrailPercent = Annotated[float, Meta(gt=0, lt=100)]
TimeInForce = Literal["day", "gtc", "ioc", "fok", "opg", "cls"]
Scope = Literal["global", "strategy"]
OrderStatus = Literal[
    "pending",
    "submitted",
    "accepted",
    "partially_filled",
    "filled",
    "pending_cancel",
    "cancelled",
    "rejected",
    "expired",
]
CircuitState = Literal["closed", "half_open", "open"]


class _Inbound(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """Base of every message the daemon receives: strict, tagged by ``type``."""


class _Outbound(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event the daemon sends: tagged by ``type``."""


def _require_finite(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number")


def decimals(value: float) -> int:
    """Decimal places of a float as written (its shortest round-trip form)."""
    exponent = Decimal(repr(value)).as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# --------------------------------------------------------------------------- intents (§3)


class OrderIntent(_Inbound, tag="order", frozen=True):
    """A request to place one order."""

    intent_id: IntentId
    symbol: Symbol
    side: Side
    qty: PositiveNumber | None = None
    notional: PositiveNumber | None = None
    order_type: OrderType = "market"
    limit_price: PositiveNumber | None = None
    stop_price: PositiveNumber | None = None
    time_in_force: TimeInForce = "day"
    extended_hours: bool = False
    stop_loss: PositiveNumber | None = None
    confidence: UnitInterval | None = None
    ts: float | None = None
    trail_percent: TrailPercent | None = None
    trail_price: PositiveNumber | None = None
    order_class: OrderClass = "simple"
    take_profit: PositiveNumber | None = None

    def __post_init__(self) -> None:
        """Apply the cross-field rules of docs/protocol.md."""
        _require_finite(
            qty=self.qty,
            notional=self.notional,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
            stop_loss=self.stop_loss,
            ts=self.ts,
            trail_percent=self.trail_percent,
            trail_price=self.trail_price,
            take_profit=self.take_profit,
        )
        if (self.qty is None) == (self.notional is None):
            raise ValueError("exactly one of `qty` or `notional` is required")
        if self.qty is not None and decimals(self.qty) > MAX_QTY_DECIMALS:
            raise ValueError(f"`qty` has more than {MAX_QTY_DECIMALS} decimal places")
        if self.notional is not None and self.order_type != "market":
            raise ValueError("`notional` is only allowed with order_type `market`")
        if self.order_type in ("limit", "stop_limit") and self.limit_price is None:
            raise ValueError(f"`limit_price` is required for order_type `{self.order_type}`")
        if self.order_type in ("stop", "stop_limit") and self.stop_price is None:
            raise ValueError(f"`stop_price` is required for order_type `{self.order_type}`")
        if self.order_type in ("market", "stop", "trailing_stop") and self.limit_price is not None:
            raise ValueError(f"`limit_price` is not allowed for order_type `{self.order_type}`")
        if self.order_type in ("market", "limit", "trailing_stop") and self.stop_price is not None:
            raise ValueError(f"`stop_price` is not allowed for order_type `{self.order_type}`")
        _check_trail(self)
        _check_bracket(self)


def _check_trail(intent: OrderIntent) -> None:
    """A trailing stop has exactly one trail; no other order type has one."""
    given = [
        name
        for name, value in (
            ("trail_percent", intent.trail_percent),
            ("trail_price", intent.trail_price),
        )
        if value is not None
    ]
    if intent.order_type != "trailing_stop":
        if given:
            raise ValueError(f"`{given[0]}` is only allowed with order_type `trailing_stop`")
        return
    if len(given) != 1:
        raise ValueError(
            "exactly one of `trail_percent` or `trail_price` is required "
            "for order_type `trailing_stop`"
        )


def _check_bracket(intent: OrderIntent) -> None:
    """A bracket (Alpaca ``order_class: bracket``) is checked as far as it can be statically.

    Alpaca takes brackets for whole shares only, with a market or limit entry, ``day``
    or ``gtc``; the take-profit must lie on the profit side of the entry and the stop
    on the loss side. Only the limit price is known here: a market entry's price is
    checked by the risk limits (``stop_loss``) and by the broker.
    """
    if intent.order_class != "bracket":
        if intent.take_profit is not None:
            raise ValueError("`take_profit` is only allowed with order_class `bracket`")
        return
    if intent.take_profit is None:
        raise ValueError("`take_profit` is required with order_class `bracket`")
    if intent.stop_loss is None:
        raise ValueError(
            "`stop_loss` is required with order_class `bracket` (it is the broker-held stop)"
        )
    if intent.order_type not in ("market", "limit"):
        raise ValueError(
            f"`order_type` must be `market` or `limit` with order_class `bracket`, "
            f"not `{intent.order_type}`"
        )
    if intent.qty is None or intent.qty != int(intent.qty):
        raise ValueError("`qty` must be whole shares with order_class `bracket`")
    if intent.time_in_force not in ("day", "gtc"):
        raise ValueError(
            f"`time_in_force` must be `day` or `gtc` with order_class `bracket`, "
            f"not `{intent.time_in_force}`"
        )
    _check_bracket_sides(intent, intent.take_profit, intent.stop_loss)


def _check_bracket_sides(intent: OrderIntent, take_profit: float, stop_loss: float) -> None:
    """Take-profit on the profit side, stop on the loss side (of each other, of the limit)."""
    buy = intent.side == "buy"
    above, below = ("above", "below") if buy else ("below", "above")
    if (take_profit > stop_loss) != buy or take_profit == stop_loss:
        raise ValueError(f"`take_profit` must be {above} `stop_loss` for a {intent.side} bracket")
    entry = intent.limit_price
    if entry is None:
        return
    if (take_profit > entry) != buy or take_profit == entry:
        raise ValueError(f"`take_profit` must be {above} `limit_price` for a {intent.side} bracket")
    if (stop_loss < entry) != buy or stop_loss == entry:
        raise ValueError(f"`stop_loss` must be {below} `limit_price` for a {intent.side} bracket")


class CancelIntent(_Inbound, tag="cancel", frozen=True):
    """Cancel the order made from one earlier intent."""

    intent_id: IntentId
    ts: float | None = None


class CancelAllIntent(_Inbound, tag="cancel_all", frozen=True):
    """Cancel every open order of the strategy.

    ``intent_id`` is optional (an addition): when given, the decision echoes it.
    """

    intent_id: IntentId | None = None
    ts: float | None = None


Intent = OrderIntent | CancelIntent | CancelAllIntent


# --------------------------------------------------------------------------- events (§4)


class Reason(msgspec.Struct, frozen=True, kw_only=True):
    """One broken limit: a reason code and a message a person can act on."""

    code: ReasonCode
    message: str


class Accepted(_Outbound, tag="accepted", frozen=True):
    """The intent passed every check and was journaled.

    For an order ``intent_id`` and ``client_order_id`` are always set. A
    ``cancel_all`` is answered with ``client_order_id`` null, its own optional
    ``intent_id`` and ``cancelling``, the number of open orders it asked the
    broker to cancel (0 when nothing was open).
    """

    intent_id: str | None
    client_order_id: str | None
    ts: float
    duplicate: bool = False
    cancelling: int | None = None


class Rejected(_Outbound, tag="rejected", frozen=True):
    """The intent was refused; ``reasons`` lists every limit it breaks."""

    intent_id: str | None
    reasons: list[Reason]
    ts: float
    duplicate: bool = False


class OrderEvent(_Outbound, tag="order", frozen=True):
    """A change of an order's status."""

    intent_id: str
    client_order_id: str
    broker_order_id: str | None
    status: OrderStatus
    filled_qty: float
    filled_avg_price: float | None
    ts: float
    detail: str | None = None
    leg_of: str | None = None
    """Set on a bracket leg's event: the parent order's ``client_order_id``. The leg's own
    ``client_order_id`` is the broker's; ``intent_id`` is the parent's."""


class FillEvent(_Outbound, tag="fill", frozen=True):
    """One execution; ``position_qty`` is the strategy's position after it."""

    intent_id: str
    client_order_id: str
    qty: float
    price: float
    position_qty: float
    ts: float
    symbol: str | None = None
    side: Side | None = None
    leg_of: str | None = None
    """Set on a bracket leg's fill: the parent order's ``client_order_id``."""


Event = Accepted | Rejected | OrderEvent | FillEvent


# --------------------------------------------------------------------------- kill switch (§5)


class Engage(_Inbound, tag="engage", frozen=True):
    """Engage the global switch or one strategy's. Needs no code."""

    scope: Scope = "global"
    strategy_id: StrategyId | None = None
    reason: ShortText | None = None
    source: ShortText | None = None
    flatten: bool = False

    def __post_init__(self) -> None:
        """A strategy scope names its strategy; a global one does not."""
        _check_scope(self.scope, self.strategy_id)


class Disengage(_Inbound, tag="disengage", frozen=True):
    """Release a switch. Authorised by an admin code (docs/protocol.md)."""

    scope: Scope = "global"
    strategy_id: StrategyId | None = None
    code: Annotated[str, Meta(max_length=128)] | None = None
    operator: ShortText | None = None
    source: ShortText | None = None

    def __post_init__(self) -> None:
        """A strategy scope names its strategy; a global one does not."""
        _check_scope(self.scope, self.strategy_id)


def _check_scope(scope: Scope, strategy_id: str | None) -> None:
    if scope == "strategy" and strategy_id is None:
        raise ValueError("`strategy_id` is required when scope is `strategy`")
    if scope == "global" and strategy_id is not None:
        raise ValueError("`strategy_id` is only allowed when scope is `strategy`")


class ResetCircuit(_Inbound, tag="reset_circuit", frozen=True):
    """Close an open (or half-open) circuit breaker. Authorised by an admin code."""

    code: Annotated[str, Meta(max_length=128)] | None = None
    operator: ShortText | None = None
    source: ShortText | None = None


class Pause(_Inbound, tag="pause", frozen=True):
    """Pause a strategy: only orders that reduce its positions pass. Needs no code."""

    strategy_id: StrategyId
    reason: ShortText | None = None
    source: ShortText | None = None


class Resume(_Inbound, tag="resume", frozen=True):
    """Resume a paused strategy. Authorised by an admin code."""

    strategy_id: StrategyId
    code: Annotated[str, Meta(max_length=128)] | None = None
    operator: ShortText | None = None
    source: ShortText | None = None


class Promote(_Inbound, tag="promote", frozen=True):
    """Move a strategy from paper to live trading. Authorised by an admin code.

    Refused, with every unmet criterion listed (``MODE_CHANGE_REFUSED``), unless the
    strategy's paper record in the journal meets ``[promotion]``.
    """

    strategy_id: StrategyId
    code: Annotated[str, Meta(max_length=128)] | None = None
    operator: ShortText | None = None
    source: ShortText | None = None


class Demote(_Inbound, tag="demote", frozen=True):
    """Move a strategy from live back to paper. Needs no code (a safety action).

    Its live orders are cancelled first; with ``flatten`` its live positions are closed.
    """

    strategy_id: StrategyId
    flatten: bool = False
    reason: ShortText | None = None
    source: ShortText | None = None


KillCommand = Engage | Disengage | ResetCircuit | Pause | Resume | Promote | Demote


class _ApprovalCommand(_Inbound, frozen=True):
    """What approve and deny share (``P/v1/approval/command``)."""

    strategy_id: StrategyId
    intent_id: IntentId
    code: Annotated[str, Meta(max_length=128)] | None = None
    operator: ShortText | None = None
    source: ShortText | None = None


class Approve(_ApprovalCommand, tag="approve", frozen=True):
    """Approve an intent waiting for a person. Authorised by an admin code."""


class Deny(_ApprovalCommand, tag="deny", frozen=True):
    """Deny an intent waiting for a person. Authorised by an admin code."""


ApprovalCommand = Approve | Deny


class PendingApproval(msgspec.Struct, frozen=True, kw_only=True):
    """One intent waiting for a person."""

    strategy_id: str
    intent_id: str
    symbol: str
    side: Side
    qty: float | None
    notional: float | None
    order_type: OrderType
    limit_price: float | None
    requested_at: float
    expires_at: float


class ApprovalPending(msgspec.Struct, frozen=True, kw_only=True):
    """Retained on ``P/v1/approval/pending``: every intent waiting for a person."""

    pending: list[PendingApproval]
    ts: float


class SwitchState(msgspec.Struct, frozen=True, kw_only=True):
    """One switch: whether it is engaged, since when, why and by whom."""

    engaged: bool = False
    since: float | None = None
    reason: str | None = None
    source: str | None = None
    settled: bool | None = None
    """While engaged: False from the engage until every POST that was in flight has
    returned and the scope's open orders are cancelled, then True. None when released
    (or not known since a restart)."""


class KillState(msgspec.Struct, frozen=True, kw_only=True):
    """Retained on ``P/v1/kill/state``."""

    global_: SwitchState = msgspec.field(name="global")
    strategies: dict[str, SwitchState]
    ts: float
    paused: dict[str, bool] = msgspec.field(default_factory=dict)


# --------------------------------------------------------------------------- state topics (§6)


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    """One broker account's figures on ``P/v1/daemon/state`` (``accounts``)."""

    broker: BrokerKind
    broker_connected: bool
    circuit: CircuitState
    equity: float | None
    daily_drawdown: float | None
    total_drawdown: float | None
    strategies: list[str] = msgspec.field(default_factory=list)
    """The strategies trading on this account now."""


class DaemonState(msgspec.Struct, frozen=True, kw_only=True):
    """Retained on ``P/v1/daemon/state``."""

    version: str
    mode: TradingMode
    broker: BrokerKind
    broker_connected: bool
    circuit: CircuitState
    equity: float | None
    daily_drawdown: float | None
    total_drawdown: float | None
    ts: float
    trading_halted: bool = False
    halt_reason: str | None = None
    strategies: list[str] = msgspec.field(default_factory=list)
    start_of_day_equity: float | None = None
    peak_equity: float | None = None
    circuit_reason: str | None = None
    session: str | None = None
    external_orders: list[str] = msgspec.field(default_factory=list)
    accounts: dict[str, AccountState] | None = None
    """With a paper and a live account: each one's own figures, by mode (``paper``,
    ``live``). The top-level figures are the ``[broker]`` account's."""


class StrategyState(msgspec.Struct, frozen=True, kw_only=True):
    """Retained on ``P/v1/strategy/SID/state``."""

    strategy_id: str
    kill_engaged: bool
    open_orders: int
    positions: dict[str, float]
    ts: float
    paused: bool = False
    realized_pnl: float = 0.0
    abstentions: int = 0
    session_pnl: float = 0.0
    pending_approvals: int = 0
    trading: Literal["active", "reduce_only", "paused", "halted"] = "active"
    """What the strategy may do now, the kill switches, its pause, the circuit breaker's
    warning and a halted daemon folded into one: ``halted`` trades nothing; ``paused`` and
    ``reduce_only`` only reduce positions."""
    mode: TradingMode | None = None
    """``paper`` or ``live``: the account the strategy's new orders go to."""


# --------------------------------------------------------------------------- audit (§7)


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audited decision; written to the journal before it takes effect."""

    type: str
    ok: bool
    detail: str
    ts: float
    scope: str | None = None
    strategy_id: str | None = None
    source: str | None = None
    operator: str | None = None
    reasons: list[Reason] | None = None
    """A refused mode change: every unmet criterion (``MODE_CHANGE_REFUSED``)."""
