"""Reason codes of docs/protocol.md: every denial is a value with one of these."""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    """Why an intent was rejected. The set only grows (docs/protocol.md)."""

    INVALID_INTENT = "INVALID_INTENT"
    UNKNOWN_STRATEGY = "UNKNOWN_STRATEGY"
    DUPLICATE_INTENT = "DUPLICATE_INTENT"
    KILL_SWITCH_GLOBAL = "KILL_SWITCH_GLOBAL"
    KILL_SWITCH_STRATEGY = "KILL_SWITCH_STRATEGY"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    REDUCE_ONLY = "REDUCE_ONLY"
    MAX_NOTIONAL = "MAX_NOTIONAL"
    MIN_PRICE = "MIN_PRICE"
    PRICE_DEVIATION = "PRICE_DEVIATION"
    RISK_PER_TRADE = "RISK_PER_TRADE"
    STRATEGY_ALLOCATION = "STRATEGY_ALLOCATION"
    STRATEGY_DAILY_LOSS = "STRATEGY_DAILY_LOSS"
    STRATEGY_PAUSED = "STRATEGY_PAUSED"
    DAILY_DRAWDOWN = "DAILY_DRAWDOWN"
    TOTAL_DRAWDOWN = "TOTAL_DRAWDOWN"
    CAPITAL_DEPLOYED = "CAPITAL_DEPLOYED"
    MAX_POSITIONS = "MAX_POSITIONS"
    RATE_LIMIT = "RATE_LIMIT"
    RESTRICTED_SYMBOL = "RESTRICTED_SYMBOL"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    APPROVAL_DENIED = "APPROVAL_DENIED"
    APPROVAL_TIMEOUT = "APPROVAL_TIMEOUT"
    BROKER_REJECTED = "BROKER_REJECTED"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    STALE_INTENT = "STALE_INTENT"
    # Added to the contract's set (extension, docs/protocol.md allows new codes):
    TRADING_HALTED = "TRADING_HALTED"
    """A fail-closed actor (kill switch, risk, journal) died: nothing trades until restart."""
    OVERLOADED = "OVERLOADED"
    """The strategy's intake is full (docs/protocol.md): nothing was decided, re-send later."""
    BROKER_BUSY = "BROKER_BUSY"
    """The order could not reach the broker within ``broker.submit_deadline_s`` (§11)."""
    MODE_CHANGE_REFUSED = "MODE_CHANGE_REFUSED"
    """A promotion refused: one reason per unmet criterion of ``[promotion]`` (§11)."""
