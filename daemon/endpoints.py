"""Where the daemon and its command line find the MQTT broker, and as whom.

Kept apart from the wiring so that client commands (``kill``, ``status``...) start
without importing the actors and alpaca-py: they answer in a fraction of a second.
"""

from __future__ import annotations

from daemon.config import Config, read_secret, resolve_path
from daemon.mqtt_session import MqttEndpoint, make_tls_context

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
