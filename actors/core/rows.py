"""What the actors journal, as typed rows: the journal (:mod:`daemon.journal`) owns the SQL.

An actor builds rows and awaits the journal's ``write``; a row is durable when that
returns. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

import msgspec

from protocol.messages import AuditRecord, OrderStatus, Side


class DecisionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A decision on an intent: the event sent back, kept to answer re-sends."""

    strategy_id: str
    intent_id: str
    accepted: bool
    event: bytes
    ts: float


class OrderRow(msgspec.Struct, frozen=True, kw_only=True):
    """A new order (an accepted intent, or a flattening order of the kill switch)."""

    client_order_id: str
    strategy_id: str
    intent_id: str
    intent: bytes
    status: OrderStatus
    ts: float
    account: str | None = None
    """The broker account: None for the ``[broker]`` account, ``live`` for ``[broker.live]``."""


class OrderChangeRow(msgspec.Struct, frozen=True, kw_only=True):
    """An order's new status and fill figures (``detail`` kept when None)."""

    client_order_id: str
    status: OrderStatus
    broker_order_id: str | None
    filled_qty: float
    filled_avg_price: float | None
    ts: float
    detail: str | None = None


class FillRow(msgspec.Struct, frozen=True, kw_only=True):
    """One fill; ``cum_qty`` makes a fill reported twice (stream and look-up) count once."""

    client_order_id: str
    strategy_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    ts: float
    cum_qty: float
    account: str | None = None
    """As :attr:`OrderRow.account`."""


class SwitchRow(msgspec.Struct, frozen=True, kw_only=True):
    """A kill switch's state (``scope_key``: ``global`` or the strategy id)."""

    scope_key: str
    engaged: bool
    since: float | None
    reason: str | None
    source: str | None


class MetaRow(msgspec.Struct, frozen=True, kw_only=True):
    """A value of the key-value store (circuit breaker, session, last TOTP step)."""

    key: str
    value: str


class AuditRow(msgspec.Struct, frozen=True, kw_only=True):
    """An audit record."""

    record: AuditRecord


Row = DecisionRow | OrderRow | OrderChangeRow | FillRow | SwitchRow | MetaRow | AuditRow

CIRCUIT_KEY: Final = "risk.circuit"
"""Meta key of the circuit breaker's state."""
SESSION_KEY: Final = "risk.session"
"""Meta key of the trading session's baselines."""
TOTP_KEY: Final = "kill.last_totp_step"
"""Meta key of the last TOTP step accepted (a restart must not accept it again)."""
MODE_PREFIX: Final = "mode."
"""Meta key prefix of a strategy's trading mode: ``mode.SID`` holds ``paper`` or ``live``."""


def risk_keys(account: str | None) -> tuple[str, str]:
    """The meta keys of an account's circuit breaker and session.

    Args:
        account: None for the ``[broker]`` account (the keys every journal already has),
            ``live`` for ``[broker.live]``.

    Returns:
        ``(circuit key, session key)``: :data:`CIRCUIT_KEY` and :data:`SESSION_KEY`,
        suffixed with ``.ACCOUNT`` for an account other than the primary.
    """
    if account is None:
        return CIRCUIT_KEY, SESSION_KEY
    return f"{CIRCUIT_KEY}.{account}", f"{SESSION_KEY}.{account}"
