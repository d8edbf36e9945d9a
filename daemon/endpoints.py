"""Where the daemon and its command line find the MQTT broker, and as whom.

Kept apart from the wiring so that client commands (``kill``, ``status``...) start
without importing the actors and alpaca-py: they answer in a fraction of a second.
"""

from __future__ import annotations

import os
import secrets
import ssl
from pathlib import Path

from actors.core.errors import ConfigError
from daemon.config import Config, read_secret, resolve_path
from daemon.error_reasons import reason_of
from daemon.mqtt_endpoint import MqttEndpoint, make_tls_context

GENERATED_CODE_FILE = "admin-code"
"""The admin code made when the config names no release method, in the state folder."""


def control_endpoint(config: Config, data: MqttEndpoint) -> MqttEndpoint:
    """The control plane's identity: its own client id and (with a secured broker) login.

    Brokers that derive client ids from logins (the shipped mosquitto) need a second
    login for the second connection: ``mqtt.control_username``, by default
    ``<username>-control``, with ``mqtt.control_password_file`` or the same password.
    """
    mqtt = config.mqtt
    username = mqtt.control_username or (f"{mqtt.username}-control" if mqtt.username else None)
    password = (
        read_secret(config, mqtt.control_password_file, key="mqtt.control_password_file")
        if mqtt.control_password_file
        else data.password
    )
    return data.with_identity(
        client_id=f"{data.client_id}-control", username=username, password=password
    )


def mqtt_endpoint(
    config: Config, *, port: int | None = None, client_id: str | None = None
) -> MqttEndpoint:
    """The MQTT endpoint described by the config (the CLI uses it too)."""
    mqtt = config.mqtt
    password = (
        read_secret(config, mqtt.password_file, key="mqtt.password_file")
        if mqtt.password_file
        else None
    )
    tls = (
        make_tls_context(
            str(resolve_path(config, mqtt.ca_file)) if mqtt.ca_file else None,
            str(resolve_path(config, mqtt.cert_file)) if mqtt.cert_file else None,
            str(resolve_path(config, mqtt.key_file)) if mqtt.key_file else None,
        )
        if mqtt.tls
        else None
    )
    return MqttEndpoint(
        host="127.0.0.1" if mqtt.is_embedded else (mqtt.host or "127.0.0.1"),
        port=mqtt.port if port is None else port,
        client_id=client_id or mqtt.client_id,
        keepalive_s=mqtt.keepalive_s,
        session_expiry_s=mqtt.session_expiry_s,
        username=mqtt.username,
        password=password,
        tls_context=tls,
    )


def check_mqtt_login(config: Config) -> None:
    """Check what any MQTT client of this config needs: the password and TLS files.

    The CLI's client commands call this before connecting, so that an unreadable
    certificate is one line naming the key.

    Raises:
        ConfigError: naming the key whose file is unusable.
    """
    mqtt = config.mqtt
    if mqtt.password_file:
        read_secret(config, mqtt.password_file, key="mqtt.password_file")
    if mqtt.tls:
        _check_tls(config)


def _check_tls(config: Config) -> None:
    mqtt = config.mqtt
    ca = str(resolve_path(config, mqtt.ca_file)) if mqtt.ca_file else None
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load {ca}: {reason_of(exc)}") from exc
    if mqtt.key_file and not mqtt.cert_file:
        raise ConfigError("mqtt.key_file: needs mqtt.cert_file (the client certificate)")
    if mqtt.cert_file:
        cert = str(resolve_path(config, mqtt.cert_file))
        key = str(resolve_path(config, mqtt.key_file)) if mqtt.key_file else None
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            keys = "mqtt.cert_file / mqtt.key_file" if key else "mqtt.cert_file"
            raise ConfigError(
                f"{keys}: cannot load the client certificate: {reason_of(exc)}"
            ) from exc


def demo_code(path: Path) -> str:
    """The admin code of the built-in paper set-up: made once, kept in the state folder (0600)."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(4) + "\n")
    return path.read_text(encoding="utf-8").strip()
