"""The doctor's MQTT checks: the embedded mosquitto and its port, or a login to the broker.

The login is a clean session that publishes nothing. Why a login failed is read from
the errors' structure, never their wording: the MQTT reason code (aiomqtt's
``MqttCodeError.rc``) and the ``OSError`` under it (its type, an ``ssl.SSLError``'s
OpenSSL reason), which aiomqtt keeps as the context of its own error.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

import anyio
import msgspec

from actors.core.errors import (
    BrokerConnectionError,
    ConfigError,
    EmbeddedBrokerError,
    TradeguardError,
)
from daemon.config import Config, MqttConfig, resolve_path
from daemon.doctor.configuration import SecretFile
from daemon.doctor.probes import check_port, running_daemon, state_folder
from daemon.doctor.results import CheckResult, skip
from daemon.embedded_broker import client_config, find_mosquitto, login_folder
from daemon.endpoints import mqtt_endpoint
from daemon.error_reasons import error_chain
from daemon.mqtt_endpoint import MqttEndpoint, MqttLink

MQTT_TIMEOUT_S: Final = 5.0

LOGIN_REFUSED_CODES: Final = frozenset({4, 5, 134, 135, 140})
"""CONNACK codes meaning "who you are" was refused: MQTT 3 (4, 5), MQTT 5 (0x86 bad user
name or password, 0x87 not authorized, 0x8C bad authentication method)."""

NOT_TLS_REASONS: Final = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})
"""OpenSSL's reasons when what came back is no TLS record: the port does not speak TLS."""


def check_mqtt(config: Config, secrets: dict[str, SecretFile]) -> list[CheckResult]:
    """The embedded mosquitto (binary, port, the daemon's logins), or a login to the broker."""
    if config.mqtt.is_embedded:
        return _check_embedded(config)
    return [_check_login(config, secrets.get("mqtt.password_file"))]


def _check_embedded(config: Config) -> list[CheckResult]:
    mqtt = config.mqtt
    try:
        binary = find_mosquitto(mqtt.mosquitto_binary)
    except EmbeddedBrokerError as exc:
        found = CheckResult(
            check="mosquitto",
            status="FAIL",
            detail=str(exc),
            fix="apt-get install -y mosquitto, or set mqtt.mosquitto_binary",
        )
    else:
        found = CheckResult(
            check="mosquitto",
            status="PASS",
            detail=f"embedded broker: {binary}, started by the daemon",
        )
    owner = running_daemon(config)
    results = [
        found,
        check_port(
            "mqtt port",
            "127.0.0.1",
            mqtt.port,
            user="the embedded mosquitto",
            busy="another broker or a running tradeguard daemon uses it",
            fix="stop whatever listens there, or set mqtt.port",
            owner=owner,
        ),
    ]
    if owner is not None and mqtt.port != 0:
        results.append(_check_embedded_login(config))
    return results


def _check_embedded_login(config: Config) -> CheckResult:
    """Log in to the running daemon's own mosquitto as the CLI does (``operator``)."""
    where = f"127.0.0.1:{config.mqtt.port}"
    try:
        endpoint = mqtt_endpoint(client_config(config))
        anyio.run(_mqtt_login, endpoint, backend="asyncio")
    except (TimeoutError, TradeguardError, OSError) as exc:
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"the CLI cannot log in to the daemon's mosquitto at {where}: "
            f"{exc.__cause__ or exc or 'no answer'}",
            fix="restart the daemon (it writes the logins and the broker's password file "
            f"at start); the logins are in {login_folder(state_folder(config))}",
        )
    return CheckResult(
        check="mqtt",
        status="PASS",
        detail=f"logged in to the daemon's mosquitto at {where} as {endpoint.username} "
        "(anonymous clients are refused)",
    )


def _check_login(config: Config, password: SecretFile | None) -> CheckResult:
    """Log in to the configured broker as the daemon would (its password file as found)."""
    mqtt = config.mqtt
    if password is not None and password.secret is None:
        return skip("mqtt", "mqtt.password_file cannot be read")
    located = config
    if password is not None and password.path is not None:
        located = msgspec.structs.replace(
            config, mqtt=msgspec.structs.replace(mqtt, password_file=str(password.path))
        )
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        endpoint = mqtt_endpoint(located)
    except (OSError, ConfigError) as exc:  # ssl.SSLError is an OSError
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"TLS settings unusable: {_tls_files_problem(config) or exc}",
            fix="check that mqtt.ca_file, mqtt.cert_file and mqtt.key_file name readable PEM files",
        )
    try:
        anyio.run(_mqtt_login, endpoint, backend="asyncio")
    except TimeoutError:
        return _no_answer(where, mqtt)
    except (BrokerConnectionError, OSError) as exc:
        return _mqtt_failure(exc, where=where, mqtt=mqtt)
    tls = "TLS" if mqtt.tls else "no TLS"
    user = f"as {mqtt.username}" if mqtt.username else "anonymously"
    return CheckResult(check="mqtt", status="PASS", detail=f"logged in to {where} {user} ({tls})")


async def _mqtt_login(endpoint: MqttEndpoint) -> None:
    with anyio.fail_after(MQTT_TIMEOUT_S):
        async with MqttLink(endpoint):
            pass


def _no_answer(where: str, mqtt: MqttConfig) -> CheckResult:
    return CheckResult(
        check="mqtt",
        status="FAIL",
        detail=f"no answer from {where} within {MQTT_TIMEOUT_S:g} s",
        fix="check mqtt.host, mqtt.port and the firewall; "
        + (
            "if the port expects TLS (often 8883) set mqtt.tls = true"
            if not mqtt.tls
            else "is it the broker's TLS port?"
        ),
    )


def _mqtt_failure(exc: Exception, *, where: str, mqtt: MqttConfig) -> CheckResult:
    """Explain why the MQTT login failed: refused login, nobody listening, or TLS."""
    # MqttLink's message repeats host:port; the cause has the broker's or the OS's words.
    text = str(exc.__cause__ or exc)
    cause = _os_error(exc)
    if _reason_code(exc) in LOGIN_REFUSED_CODES:
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"MQTT at {where} refused the login: {text}",
            fix="MQTT refused the login: check mqtt.username and the password file "
            "(mqtt.password_file) against the broker's password file (mosquitto_passwd)",
        )
    if isinstance(cause, ssl.SSLError):
        return _tls_failure(cause, text, where=where)
    if mqtt.tls and isinstance(cause, ConnectionResetError):
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"{where} dropped the TLS handshake: {text}",
            fix=f"{where} may not speak TLS: use the broker's TLS port or set mqtt.tls = false",
        )
    if isinstance(cause, ConnectionRefusedError):
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"nothing accepts MQTT connections at {where} (connection refused)",
            fix=f"start mosquitto (systemctl start mosquitto), or fix mqtt.host / mqtt.port "
            f"(now {where})",
        )
    if isinstance(cause, socket.gaierror):
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"cannot resolve mqtt.host {mqtt.host!r}",
            fix="fix mqtt.host (a host name this machine resolves, or an address)",
        )
    hint = "" if mqtt.tls else "; if the port expects TLS set mqtt.tls = true"
    return CheckResult(
        check="mqtt",
        status="FAIL",
        detail=f"cannot log in to MQTT at {where}: {text}",
        fix=f"check mqtt.host, mqtt.port and the broker's log{hint}",
    )


def _tls_failure(cause: ssl.SSLError, text: str, *, where: str) -> CheckResult:
    if cause.reason in NOT_TLS_REASONS:
        fix = f"{where} does not speak TLS: use the broker's TLS port or set mqtt.tls = false"
    else:
        fix = (
            "set mqtt.ca_file to the CA certificate that signed the broker's certificate, "
            "and make mqtt.host the name (or address) the certificate was issued for"
        )
    return CheckResult(
        check="mqtt", status="FAIL", detail=f"TLS with {where} failed: {text}", fix=fix
    )


def _tls_files_problem(config: Config) -> str | None:
    """Name the TLS file that does not exist (ssl's own message names none)."""
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(config.mqtt, name)
        if value is not None and not resolve_path(config, value).is_file():
            return f"mqtt.{name}: {resolve_path(config, value)} does not exist"
    return None


def _os_error(exc: BaseException) -> OSError | None:
    """The socket or TLS error under ``exc`` (or ``exc`` itself), if any."""
    return next((e for e in error_chain(exc) if isinstance(e, OSError)), None)


def _reason_code(exc: BaseException) -> int | None:
    """The MQTT reason code carried by ``exc`` or its causes (aiomqtt's ``rc``)."""
    for current in error_chain(exc):
        rc = getattr(current, "rc", None)
        if isinstance(rc, int):
            return rc
        value = getattr(rc, "value", None)
        if isinstance(value, int):
            return value
    return None
