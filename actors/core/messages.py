"""The messages the actors send each other in-process: frozen msgspec types, pure.

The channels that carry them are :mod:`actors.channels`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from protocol.codec import DecodeFailure
from protocol.messages import ApprovalCommand, Intent, KillCommand, OrderIntent, OrderStatus


class Publish(msgspec.Struct, frozen=True, kw_only=True):
    """An MQTT message for the session to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class InboundIntent(msgspec.Struct, frozen=True, kw_only=True):
    """A decoded, well-formed intent for a configured strategy."""

    strategy_id: str
    intent: Intent
    received_at: float


class InboundKillCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A kill command from MQTT, the CLI (through MQTT), a trigger or an internal source."""

    command: KillCommand | ApprovalCommand | DecodeFailure
    origin: str
    received_at: float
    user: str | None = None
    """The login whose own ``admin/USER/command`` topic carried it (None elsewhere)."""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A strategy's heartbeat (the body is ignored)."""

    strategy_id: str
    received_at: float


class TriggerPress(msgspec.Struct, frozen=True, kw_only=True):
    """A message on a trigger topic or another topic the kill-switch authority watches."""

    topic: str
    payload: bytes
    received_at: float
    retained: bool = False


class KillChanged(msgspec.Struct, frozen=True, kw_only=True):
    """A switch changed. ``strategy_id`` None is the global switch.

    Sent to every order manager and the broker gateway: on engage they cancel
    the scope's open orders, then close its positions when ``flatten`` is set.
    """

    strategy_id: str | None
    engaged: bool
    flatten: bool = False
    reason: str | None = None


class KillSettled(msgspec.Struct, frozen=True, kw_only=True):
    """From the gateway: an engage has settled.

    Every POST that was in flight when the gate closed has returned, and the scope's
    open orders have been cancelled (or the cancel request was sent).
    """

    strategy_id: str | None
    detail: str


class SubmitOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An accepted (journaled) order for the gateway to send.

    ``bypass_gate`` is only for the closing orders of a flatten, which must go
    out while the switch is engaged.
    """

    strategy_id: str
    client_order_id: str
    intent: OrderIntent
    accepted_at: float
    bypass_gate: bool = False


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True):
    """Cancel one order (by our id; the gateway knows the broker's)."""

    strategy_id: str
    client_order_id: str


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """What the broker says about one order, in contract terms.

    ``filled_qty`` and ``filled_avg_price`` are cumulative: the order manager
    derives fills from their increase, so a stream event and a REST lookup of the
    same state are the same update (idempotent).
    """

    client_order_id: str
    status: OrderStatus
    broker_order_id: str | None = None
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    detail: str | None = None
    source: str = "rest"
    parent_client_order_id: str | None = None
    """Set for a bracket leg (whose ids are the broker's): the parent order of ours."""


class FlattenNow(msgspec.Struct, frozen=True, kw_only=True):
    """The scope's cancels are done: close the strategy's positions now.

    ``account``: the account whose gateway sends it (None: the ``[broker]`` account);
    only the positions held there are closed.
    """

    strategy_id: str | None
    account: str | None = None


class BrokerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Connectivity and account figures, from the gateway to the guardian.

    ``positions`` maps symbol to (signed qty, market value) for the whole account;
    ``session`` names the trading session the market is in (None while closed).
    """

    connected: bool
    equity: float | None = None
    cash: float | None = None
    detail: str | None = None
    positions: dict[str, tuple[float, float]] | None = None
    market_open: bool | None = None
    session: str | None = None


class ModeChange(msgspec.Struct, frozen=True, kw_only=True):
    """From the authority to one order manager: move the strategy to ``target``.

    A promotion (``live``) arrives only after its admin code was accepted
    (``authorised`` says how); the manager checks the paper record. A demotion
    (``paper``) needs no code.
    """

    strategy_id: str
    target: Literal["paper", "live"]
    source: str
    operator: str | None = None
    flatten: bool = False
    reason: str | None = None
    authorised: str | None = None


class ApprovalDecision(msgspec.Struct, frozen=True, kw_only=True):
    """An authorised person approved or denied a waiting intent."""

    strategy_id: str
    intent_id: str
    approved: bool
    operator: str | None = None
