"""The configuration sections the actors and cores read (decoded by :mod:`daemon.config`).

Frozen msgspec types: the file's ``[risk]``, ``[strategies.SID]``, ``[kill]`` and
``[homeassistant]`` tables. The daemon decodes the whole file; the actors get only
their sections.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol.messages import STRATEGY_ID_PATTERN

Fraction = Annotated[float, Meta(ge=0, le=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
StrategyId = Annotated[str, Meta(pattern=STRATEGY_ID_PATTERN)]


class TriggerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[[kill.triggers]]``: an IoT button topic that engages a switch.

    Exactly one of ``payload`` (the whole plain-text payload, e.g. zigbee2mqtt's
    ``.../action`` topic carrying ``single``) and ``match`` (fields of a JSON object)
    says which message is the press; a trigger with neither is refused.
    """

    topic: Annotated[str, Meta(min_length=1, max_length=256)]
    payload: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    match: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)
    scope: Literal["global", "strategy"] = "global"
    strategy_id: StrategyId | None = None
    flatten: bool = False
    name: str | None = None


class KillConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[kill]``: how releases are authorised and which buttons engage."""

    totp_secret_file: str | None = None
    admin_code_hash: str | None = None
    triggers: list[TriggerConfig] = msgspec.field(default_factory=list)
    max_failures: Annotated[int, Meta(ge=1)] = 5
    failure_window_s: PositiveFloat = 60.0
    lockout_s: PositiveFloat = 60.0


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[risk]``: portfolio and order limits, seed defaults of docs/protocol.md."""

    max_daily_drawdown: Fraction = 0.03
    max_total_drawdown: Fraction = 0.10
    warn_daily_drawdown: Fraction = 0.02
    max_capital_deployed: Fraction = 0.80
    max_positions: Annotated[int, Meta(ge=0)] = 20
    max_risk_per_trade: Fraction = 0.02
    max_notional: PositiveFloat = 25_000.0
    min_price: NonNegativeFloat = 5.0
    max_price_deviation: Fraction = 0.05
    max_intent_age_s: PositiveFloat = 5.0
    max_intents_per_second: PositiveFloat = 20.0
    duplicate_window_s: NonNegativeFloat = 2.0
    reduce_only_on_warn: bool = True
    quote_max_age_s: PositiveFloat = 10.0
    restricted_symbols: list[str] = msgspec.field(default_factory=list)


class StrategyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[strategies.SID]``: a strategy allowed to trade, and its own limits.

    Any risk key may be set here to override ``[risk]`` for this strategy.
    """

    allocation: Fraction = 0.25
    max_daily_loss: PositiveFloat = 1_000.0
    heartbeat_timeout_s: PositiveFloat | None = None
    min_confidence: Fraction | None = None
    approval_above_notional: PositiveFloat | None = None
    approval_timeout_s: PositiveFloat = 120.0
    max_notional: PositiveFloat | None = None
    min_price: NonNegativeFloat | None = None
    max_price_deviation: Fraction | None = None
    max_risk_per_trade: Fraction | None = None
    max_intent_age_s: PositiveFloat | None = None
    max_intents_per_second: PositiveFloat | None = None
    duplicate_window_s: NonNegativeFloat | None = None
    restricted_symbols: list[str] | None = None
    mode: Literal["paper", "live"] | None = None
    """The account the strategy starts on (None: the ``[broker]`` account's mode). Only
    ``paper`` may be set without an admin code on record; after a promotion or a demotion
    the journal's mode wins over this key."""
    live_allocation: Fraction | None = None
    """Share of the live account's equity once live (None: ``allocation``)."""


class PromotionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[promotion]``: the paper record a strategy needs before it may trade live.

    Read from the journal at the time of the ``promote`` command; every unmet
    criterion is listed in the refusal (``MODE_CHANGE_REFUSED``).
    """

    min_sessions: Annotated[int, Meta(ge=0)] = 5
    """Trading sessions (New York dates) with paper orders of the strategy."""
    min_filled_orders: Annotated[int, Meta(ge=0)] = 20
    """Paper orders of the strategy that ended ``filled``."""
    max_drawdown: Fraction = 0.05
    """Largest fall of the strategy's paper realized P&L from its peak, as a share of
    its paper capital (``allocation`` x the paper account's equity); must stay under."""
    quiet_sessions: Annotated[int, Meta(ge=0)] = 3
    """No kill switch engaged on the strategy (or global) and no circuit trip in the
    strategy's last this many paper sessions."""


class HomeAssistantConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[homeassistant]``: MQTT discovery of the kill switch in Home Assistant."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    node_id: str = "tradeguard"
