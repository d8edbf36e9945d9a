"""Everything ``run`` would refuse at start, checked without starting anything.

``tradeguard check-config`` and ``tradeguard run`` both call :func:`check_setup`,
so a config that ``check-config`` calls valid is one that ``run`` accepts:
beyond the types and cross-key rules of :mod:`daemon.config`, it reads every
file the config names (secrets, certificates), checks the trading mode against
the endpoint and the key (:func:`daemon.broker_mode.check_mode`) and looks at
the state path. It neither connects nor binds, so it also passes while the
daemon it describes is running. Secrets are read, never printed.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from actors.admin_code import AdminCodeVerifier, check_hash_format
from actors.core.errors import ConfigError, EmbeddedBrokerError
from daemon.broker_mode import alpaca_endpoint, check_live_account, check_mode
from daemon.config import BrokerConfig, Config, LiveAccountConfig, read_secret, resolve_path
from daemon.embedded_broker import DAEMON_LOGIN, OPERATOR_LOGIN, find_mosquitto
from daemon.endpoints import check_mqtt_login
from daemon.error_reasons import reason_of

SIM_URL = "http://127.0.0.1"
"""What the mode check sees for the built-in venue: a loopback paper endpoint."""


def check_setup(config: Config) -> None:
    """Check what start-up needs beyond a well-typed config.

    Args:
        config: a config that :func:`daemon.config.parse_config` accepted.

    Raises:
        ConfigError: naming the key whose value or file is unusable.
        BrokerError: the trading mode disagrees with the endpoint or the key id.
    """
    if not config.strategies:
        # The daemon would connect and answer every intent UNKNOWN_STRATEGY: say so at once.
        raise ConfigError(
            "strategies: none listed; add a [strategies.ID] table for each strategy "
            "allowed to trade"
        )
    _check_mqtt(config)
    _check_broker(config)
    _check_live(config)
    _check_kill(config)
    _check_state(config)
    if config.metrics.enabled:
        _check_bind_host(config.metrics.host, key="metrics.host")


def _check_mqtt(config: Config) -> None:
    mqtt = config.mqtt
    check_mqtt_login(config)
    if mqtt.control_password_file:
        # The daemon's second (control-plane) connection; the CLI logs in as the data plane.
        read_secret(config, mqtt.control_password_file, key="mqtt.control_password_file")
    if mqtt.is_embedded:
        _check_embedded_logins(config)
        if mqtt.tls:
            raise ConfigError(
                "mqtt.tls: the embedded mosquitto listens without TLS on loopback; "
                "set mqtt.host to a TLS broker, or tls = false"
            )
        try:
            find_mosquitto(mqtt.mosquitto_binary)  # as the daemon looks it up
        except EmbeddedBrokerError as exc:
            if mqtt.mosquitto_binary is not None:
                raise ConfigError(
                    f"mqtt.mosquitto_binary: {mqtt.mosquitto_binary} is not an executable file"
                ) from exc
            key = "mqtt.embedded" if mqtt.embedded else "mqtt.host"
            raise ConfigError(f"{key}: the daemon runs its own mosquitto, but {exc}") from exc
    elif not (mqtt.host or "").strip():
        raise ConfigError("mqtt.host: empty (omit it for the embedded mosquitto)")
    elif mqtt.port == 0:
        raise ConfigError("mqtt.port: 0 (any free port) only works with the embedded mosquitto")


def _check_embedded_logins(config: Config) -> None:
    """Each login of the embedded broker has one role: a strategy cannot share a name."""
    daemon = config.mqtt.username or DAEMON_LOGIN
    control = config.mqtt.control_username or f"{daemon}-control"
    for sid in config.strategies:
        if sid in (daemon, control, OPERATOR_LOGIN):
            raise ConfigError(
                f"strategies.{sid}: {sid!r} is a login of the embedded mosquitto already "
                "(the daemon's or the CLI's); give the strategy another id"
            )


def _check_broker(config: Config) -> None:
    broker = config.broker
    if broker.kind == "sim":
        check_mode(mode=broker.mode, url=SIM_URL, key_id="", kind="sim")
        _check_bind_host(broker.sim.host, key="broker.sim.host")
        return
    url, key_id = _check_alpaca_account(config, broker, key="broker")
    check_mode(mode=broker.mode, url=url, key_id=key_id, kind=broker.kind)


def _check_live(config: Config) -> None:
    """``[broker.live]`` as ``run`` checks it: the live guard, or a rehearsal never on live."""
    live = config.broker.live
    if live is None:
        return
    if live.kind == "sim":
        check_live_account(url=SIM_URL, key_id="", kind="sim", rehearsal=live.rehearsal)
        _check_bind_host(live.sim.host, key="broker.live.sim.host")
        return
    url, key_id = _check_alpaca_account(config, live, key="broker.live")
    check_live_account(url=url, key_id=key_id, kind=live.kind, rehearsal=live.rehearsal)


def _check_alpaca_account(
    config: Config, account: BrokerConfig | LiveAccountConfig, *, key: str
) -> tuple[str, str]:
    """An Alpaca-compatible account's URLs and secret files; its URL and key id."""
    assert account.url is not None  # parse_config has made sure that kind "alpaca" names all four
    assert account.stream_url is not None
    _check_url(account.url, key=f"{key}.url", schemes=("http", "https"))
    _check_url(account.stream_url, key=f"{key}.stream_url", schemes=("ws", "wss"))
    if account.data_url is not None:
        _check_url(account.data_url, key=f"{key}.data_url", schemes=("http", "https"))
    endpoint = alpaca_endpoint(config, account, key=key)
    return endpoint.url, endpoint.key_id


def _check_url(url: str, *, key: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ConfigError(f"{key}: {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in schemes or not parts.hostname:
        wanted = " or ".join(f"{scheme}://HOST" for scheme in schemes)
        raise ConfigError(f"{key}: {url!r} is not a {wanted} URL")


def _check_kill(config: Config) -> None:
    kill = config.kill
    if kill.admin_code_hash is not None:
        check_hash_format(kill.admin_code_hash)
    if kill.totp_secret_file:
        secret = read_secret(config, kill.totp_secret_file, key="kill.totp_secret_file")
        AdminCodeVerifier(totp_secret=secret, code_hash=None)  # refuses what it cannot use


def _check_state(config: Config) -> None:
    """The journal's file can be created (or opened for writing) by this user."""
    path = resolve_path(config, config.state.path)
    if path.is_dir():
        raise ConfigError(f"state.path: {path} is a folder; name the journal file in it")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"state.path: {path} cannot be read and written by this user")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"state.path: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"state.path: this user cannot write in {folder}")


def _check_bind_host(host: str, *, key: str) -> None:
    """A listening address must resolve (binding itself is left to start-up)."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{key}: cannot listen on {host!r}: {reason_of(exc)}") from exc
