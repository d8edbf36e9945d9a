"""Configuration: TOML decoded into frozen msgspec types (docs/protocol.md).

Every error names the key that is wrong, e.g.
``risk.max_notional: expected a number > 0``. Secrets are never in the file:
only paths to files holding them (or names inside ``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from actors.core.errors import ConfigError, SecretError
from actors.core.settings import (
    HomeAssistantConfig,
    KillConfig,
    PositiveFloat,
    PromotionConfig,
    RiskConfig,
    StrategyConfig,
    StrategyId,
    TriggerConfig,
)
from protocol.messages import STRATEGY_ID_PATTERN

PortOrZero = Annotated[int, Meta(ge=0, le=65535)]
__all__ = [
    "Config",
    "HomeAssistantConfig",
    "KillConfig",
    "LiveAccountConfig",
    "PromotionConfig",
    "RiskConfig",
    "StrategyConfig",
    "TriggerConfig",
]

TopicPrefix = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_./-]{1,64}$")]


class MqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[mqtt]``: where the daemon's MQTT broker is and how to log in."""

    host: str | None = None
    port: PortOrZero = 1883
    embedded: bool | None = None
    topic_prefix: TopicPrefix = "tradeguard"
    username: str | None = None
    password_file: str | None = None
    client_id: Annotated[str, Meta(min_length=1, max_length=64)] = "tradeguard-daemon"
    control_username: str | None = None
    """The control plane's login; default ``<username>-control`` (when ``username`` is set)."""
    control_password_file: str | None = None
    """The control plane's password; default ``password_file``."""
    keepalive_s: Annotated[int, Meta(ge=2, le=600)] = 10
    session_expiry_s: Annotated[int, Meta(ge=0)] = 3600
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_min_s: PositiveFloat = 0.1
    reconnect_max_s: PositiveFloat = 5.0
    mosquitto_binary: str | None = None

    @property
    def is_embedded(self) -> bool:
        """Whether the daemon runs its own loopback mosquitto."""
        return self.host is None or self.embedded is True


class SimSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[broker.sim]``: the embedded paper venue (``broker.kind = "sim"``)."""

    host: str = "127.0.0.1"
    port: PortOrZero = 8790
    seed: int = 0
    clock: Literal["always-open", "us-equities"] = "us-equities"
    starting_cash: PositiveFloat = 100_000.0


class LiveSimSettings(SimSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[broker.live.sim]``: the embedded venue standing in for the live account.

    Only in a rehearsal (``broker.live.rehearsal = true``); its own port by default.
    """

    port: PortOrZero = 8791


class LiveAccountConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[broker.live]``: the live account, traded beside the ``[broker]`` (paper) one.

    With it, ``[broker]`` is the paper account (``broker.mode = "paper"``) and each
    strategy trades on the account of its mode (``strategies.SID.mode``). Keys, URL and
    rate limit are the live account's own (Alpaca's limit is per account).
    ``rehearsal = true`` makes it a paper stand-in: never the live host, and the only
    way the embedded venue (``kind = "sim"``, on ``[broker.live.sim]``) may stand in.
    """

    kind: Literal["sim", "alpaca"] = "alpaca"
    url: str | None = None
    stream_url: str | None = None
    data_url: str | None = None
    key_id_file: str | None = None
    secret_key_file: str | None = None
    request_timeout_s: PositiveFloat = 10.0
    rate_limit_per_min: PositiveFloat = 190.0
    sim: LiveSimSettings = msgspec.field(default_factory=LiveSimSettings)
    rehearsal: bool = False
    """A paper stand-in for the live account (tests, rehearsals): never the live host."""
    on_circuit_open: Literal["demote", "kill"] = "demote"
    """What the live account's circuit breaker does to every live strategy when it trips."""


class BrokerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[broker]``: the Alpaca-compatible endpoint (or the embedded paper venue).

    With ``[broker.live]`` set, this is the paper account and that one the live account.
    """

    kind: Literal["sim", "alpaca"] = "sim"
    mode: Literal["paper", "live"] = "paper"
    url: str | None = None
    stream_url: str | None = None
    data_url: str | None = None
    key_id_file: str | None = None
    secret_key_file: str | None = None
    request_timeout_s: PositiveFloat = 10.0
    rate_limit_per_min: PositiveFloat = 190.0
    reconcile_interval_s: PositiveFloat = 60.0
    submit_deadline_s: PositiveFloat = 30.0
    account_poll_s: PositiveFloat = 5.0
    sim: SimSettings = msgspec.field(default_factory=SimSettings)
    live: LiveAccountConfig | None = None


class StateConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[state]``: where the journal lives."""

    path: str = "./tradeguard-state/state.db"


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[log]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool | None = None


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[metrics]``: Prometheus exposition (keep it on loopback)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: PortOrZero = 9464


class DaemonConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[daemon]``: host-level settings."""

    shutdown_timeout_s: PositiveFloat = 10.0
    inbox_size: Annotated[int, Meta(ge=1, le=100_000)] = 1024


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration. ``source`` is the file it came from (None: defaults)."""

    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    kill: KillConfig = msgspec.field(default_factory=KillConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    strategies: dict[StrategyId, StrategyConfig] = msgspec.field(default_factory=dict)
    homeassistant: HomeAssistantConfig = msgspec.field(default_factory=HomeAssistantConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    promotion: PromotionConfig = msgspec.field(default_factory=PromotionConfig)
    source: str | None = None


_TYPE_WORDS = (
    ("`float`", "a number"),
    ("`int`", "an integer"),
    ("`str`", "a string"),
    ("`bool`", "a boolean"),
    ("`object`", "a table"),
    ("`array`", "an array"),
)


def _explain(error: msgspec.ValidationError) -> str:
    text = str(error)
    detail, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    path = re.sub(r"\[(\d+)\]", r"[\1]", path)
    unknown = re.match(r"Object contains unknown field `(.+)`", detail)
    if unknown:
        key = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return f"{key}: unknown key"
    missing = re.match(r"Object missing required field `(.+)`", detail)
    if missing:
        key = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return f"{key}: required key is missing"
    for typename, words in _TYPE_WORDS:
        detail = detail.replace(typename, words)
    detail = detail.replace(" | null", "").replace("Expected", "expected", 1)
    detail = re.sub(r"(\d+)\.0\b", r"\1", detail)
    return f"{path or 'config'}: {detail}"


def _check_semantics(config: Config) -> None:
    """Rules across keys that types cannot say."""
    risk = config.risk
    if risk.warn_daily_drawdown > risk.max_daily_drawdown:
        raise ConfigError(
            "risk.warn_daily_drawdown: must not exceed risk.max_daily_drawdown "
            f"({risk.warn_daily_drawdown} > {risk.max_daily_drawdown})"
        )
    if config.mqtt.reconnect_min_s > config.mqtt.reconnect_max_s:
        raise ConfigError("mqtt.reconnect_min_s: must not exceed mqtt.reconnect_max_s")
    if config.broker.kind == "alpaca":
        for key in ("url", "stream_url", "key_id_file", "secret_key_file"):
            if getattr(config.broker, key) is None:
                raise ConfigError(f"broker.{key}: required when broker.kind is 'alpaca'")
    for index, trigger in enumerate(config.kill.triggers):
        _check_trigger(trigger, key=f"kill.triggers[{index}]")
    ha = config.homeassistant
    _check_topic_name(ha.discovery_prefix, key="homeassistant.discovery_prefix")
    _check_topic_name(ha.node_id, key="homeassistant.node_id", levels=False)
    total = sum(s.allocation for s in config.strategies.values())
    if total > 1.0 + 1e-9:
        raise ConfigError(f"strategies: allocations add up to {total:.2f}, more than 1.0")
    if config.broker.live is not None:
        _check_live_account(config.broker, config.broker.live)
        _check_live_allocations(config)
    for sid, strategy in config.strategies.items():
        _check_strategy_mode(config, sid, strategy)


def has_live_account(config: Config) -> bool:
    """Whether the daemon has a live account: ``broker.mode = "live"`` or ``[broker.live]``."""
    return config.broker.mode == "live" or config.broker.live is not None


def strategy_mode(config: Config, strategy_id: str) -> Literal["paper", "live"]:
    """The mode a strategy starts in: ``strategies.SID.mode``, else ``broker.mode``.

    After a promotion or a demotion the journal's mode wins over this (the daemon's).
    """
    strategy = config.strategies.get(strategy_id)
    if strategy is not None and strategy.mode is not None:
        return strategy.mode
    return config.broker.mode


def _check_live_account(broker: BrokerConfig, live: LiveAccountConfig) -> None:
    """``[broker.live]``: beside a paper ``[broker]``, complete, the venue a stand-in only."""
    if broker.mode != "paper":
        raise ConfigError(
            "broker.live: the [broker] account is then the paper one: set broker.mode = 'paper'"
        )
    if live.kind == "alpaca":
        for key in ("url", "stream_url", "key_id_file", "secret_key_file"):
            if getattr(live, key) is None:
                raise ConfigError(f"broker.live.{key}: required when broker.live.kind is 'alpaca'")
    elif not live.rehearsal:
        raise ConfigError(
            "broker.live.kind: the embedded paper venue ('sim') can only stand in for the "
            "live account in a rehearsal: set broker.live.rehearsal = true"
        )
    elif broker.kind == "sim" and broker.sim.port != 0 and broker.sim.port == live.sim.port:
        raise ConfigError(
            f"broker.live.sim.port: {live.sim.port} is broker.sim.port too: "
            "give each embedded venue its own port (or 0 for any free one)"
        )


def _check_live_allocations(config: Config) -> None:
    """Every strategy may be promoted: their shares of the live account add up to 1 at most."""
    live = sum(
        s.allocation if s.live_allocation is None else s.live_allocation
        for s in config.strategies.values()
    )
    if live > 1.0 + 1e-9:
        raise ConfigError(
            f"strategies: live allocations (live_allocation, else allocation) add up to "
            f"{live:.2f} of the live account, more than 1.0"
        )


def _check_strategy_mode(config: Config, sid: str, strategy: StrategyConfig) -> None:
    """A strategy's mode names an account the daemon has; live needs an admin code."""
    live_account = "a live account ([broker.live], or broker.mode = 'live')"
    if strategy.mode == "live":
        if not has_live_account(config):
            raise ConfigError(f"strategies.{sid}.mode: 'live' needs {live_account}")
        if config.kill.admin_code_hash is None and config.kill.totp_secret_file is None:
            raise ConfigError(
                f"strategies.{sid}.mode: 'live' needs an admin code on record "
                "(kill.admin_code_hash or kill.totp_secret_file)"
            )
    if strategy.mode == "paper" and config.broker.mode != "paper":
        raise ConfigError(
            f"strategies.{sid}.mode: 'paper' needs a paper account (broker.mode = 'paper', "
            "with the live account in [broker.live])"
        )
    if strategy.live_allocation is not None and not has_live_account(config):
        raise ConfigError(
            f"strategies.{sid}.live_allocation: there is no live account: it needs {live_account}"
        )


def _check_trigger(trigger: TriggerConfig, *, key: str) -> None:
    """A trigger names its scope, one topic, and exactly one way to match a press.

    Without ``payload`` or a non-empty ``match`` a trigger would engage on any
    message of its topic (a battery report, ``double``, an empty payload): refused.
    """
    if trigger.scope == "strategy" and trigger.strategy_id is None:
        raise ConfigError(f"{key}.strategy_id: required for scope 'strategy'")
    _check_topic_filter(trigger.topic, key=f"{key}.topic")
    if set("+#") & set(trigger.topic):
        # The session hands a trigger only messages on exactly its topic.
        raise ConfigError(
            f"{key}.topic: {trigger.topic!r}: name one topic; with + or # it would never engage"
        )
    if trigger.payload is not None and trigger.match:
        raise ConfigError(f"{key}: set payload or match, not both")
    if trigger.payload is None and not trigger.match:
        raise ConfigError(
            f"{key}.payload: required (or a non-empty match): "
            "a trigger without one would engage on any message"
        )
    if trigger.payload is not None and trigger.payload != trigger.payload.strip():
        raise ConfigError(f"{key}.payload: no leading or trailing white space")


def _check_topic_filter(topic: str, *, key: str) -> None:
    """An MQTT topic filter: ``+`` and ``#`` only as whole levels, ``#`` only last."""
    levels = topic.split("/")
    for position, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise ConfigError(f"{key}: {topic!r}: + and # must be a whole topic level")
        if level == "#" and position != len(levels) - 1:
            raise ConfigError(f"{key}: {topic!r}: # is only allowed as the last level")
    if "\0" in topic:
        raise ConfigError(f"{key}: a topic cannot contain a NUL character")


def _check_topic_name(value: str, *, key: str, levels: bool = True) -> None:
    """Part of a topic the daemon publishes to: no wildcards (and no ``/`` where one level)."""
    forbidden = "+#\0" if levels else "+#/\0"
    if not value or any(char in value for char in forbidden):
        shown = " ".join(repr(c) for c in forbidden if c != "\0")
        raise ConfigError(f"{key}: {value!r} must be non-empty, without {shown}")


def parse_config(text: str | bytes, *, source: str | None = None) -> Config:
    """Decode and validate TOML text.

    Raises:
        ConfigError: naming the key that is wrong.
    """
    try:
        raw = tomllib.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}") from exc
    if "source" in raw:
        raise ConfigError("source: unknown key")
    strategies = raw.get("strategies", {})
    if isinstance(strategies, dict):
        # Checked one by one so that an error names the strategy, not `strategies[...]`.
        for sid, table in strategies.items():
            if re.fullmatch(STRATEGY_ID_PATTERN, sid) is None:
                raise ConfigError(
                    f"strategies.{sid}: a strategy id is 1-32 characters of [A-Za-z0-9_-]"
                )
            try:
                msgspec.convert(table, StrategyConfig)
            except msgspec.ValidationError as exc:
                raise ConfigError(
                    f"strategies.{sid}.{_explain(exc)}".replace(".config:", ":")
                ) from exc
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc
    config = msgspec.structs.replace(config, source=source)
    _check_semantics(config)
    return config


def builtin_defaults() -> Config:
    """The configuration of ``make run``: embedded mosquitto, paper venue, one ``demo`` strategy."""
    return Config(strategies={"demo": StrategyConfig()})


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load the configuration from ``path``, ``$TRADEGUARD_CONFIG``, or the built-in defaults.

    Relative paths inside the file (state, secrets) are resolved against the file's folder.
    """
    if path is None:
        path = os.environ.get("TRADEGUARD_CONFIG") or None
    if path is None:
        return builtin_defaults()
    file = Path(path)
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
    return parse_config(text, source=str(file.resolve()))


def resolve_path(config: Config, value: str) -> Path:
    """A path from the config, relative to the config file's folder (or the cwd)."""
    path = Path(value).expanduser()
    if path.is_absolute() or config.source is None:
        return path
    return Path(config.source).parent / path


def read_secret(config: Config, value: str, *, key: str) -> str:
    """Read a secret from a file named in the config.

    A bare file name is looked up first in ``$CREDENTIALS_DIRECTORY`` (systemd
    ``LoadCredential=``), then as a path. The secret is never logged.

    Raises:
        SecretError: naming the config key whose file cannot be read.
    """
    candidates: list[Path] = []
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and "/" not in value:
        candidates.append(Path(credentials) / value)
    candidates.append(resolve_path(config, value))
    for candidate in candidates:
        try:
            secret = candidate.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise SecretError(f"{key}: cannot read {candidate}: {exc.strerror}") from exc
        if not secret:
            raise SecretError(f"{key}: {candidate} is empty")
        return secret
    raise SecretError(f"{key}: file {value!r} not found")
