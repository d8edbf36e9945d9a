"""``tradeguard doctor``: check a set-up before trading and say how to fix what is wrong.

Every check yields one :class:`CheckResult` (PASS, WARN, FAIL or SKIP), and every
FAIL and WARN carries a fix. The checks look, they never change anything: the
journal is opened read-only, ports are probed by binding and releasing them,
the MQTT login is a clean session that publishes nothing, and the broker gets
two GETs. Secrets are read to test them but never printed: every value read is
also redacted from the output, whatever message it might have slipped into.

A broker endpoint whose mode disagrees with the config (paper keys, live URL)
is not contacted at all: sending keys to the wrong venue is what the check
exists to prevent.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sqlite3
import stat
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, Literal

import anyio
import msgspec
import requests

from actors.admin_code import check_hash_format
from actors.core.errors import (
    BrokerConnectionError,
    BrokerError,
    ConfigError,
    EmbeddedBrokerError,
    TradeguardError,
)
from daemon.broker_mode import LIVE_HOST, check_mode
from daemon.config import Config, read_secret, resolve_path
from daemon.embedded_broker import client_config, find_mosquitto, login_folder
from daemon.endpoints import GENERATED_CODE_FILE, mqtt_endpoint
from daemon.mqtt_session import MqttEndpoint, MqttLink
from daemon.preflight import check_setup
from daemon.state_lock import LOCK_FILE_NAME

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]

EXIT_OK: Final = 0
EXIT_FAIL: Final = 1

MQTT_TIMEOUT_S: Final = 5.0
HTTP_TIMEOUT_S: Final = 5.0
SKEW_WARN_S: Final = 1.0
SKEW_FAIL_S: Final = 5.0

JOURNAL_TABLES: Final = ("meta", "kill_switch", "audit", "decisions", "orders", "fills")
SECRET_KEYS: Final = (
    ("mqtt", "password_file"),
    ("broker", "key_id_file"),
    ("broker", "secret_key_file"),
    ("kill", "totp_secret_file"),
)
CREDENTIAL_SOURCE_DIR: Final = Path("/etc/tradeguard/credentials")
"""Where systemd/tradeguard.service loads its ``LoadCredential=`` files from: bare secret
names are looked up here too when ``$CREDENTIALS_DIRECTORY`` is unset (a shell)."""

LOGIN_REFUSED_CODES: Final = frozenset({4, 5, 134, 135, 140})
"""CONNACK codes meaning "who you are" was refused: MQTT 3 (4, 5), MQTT 5 (0x86 bad user
name or password, 0x87 not authorized, 0x8C bad authentication method)."""

NTP_FIX: Final = "enable NTP (timedatectl set-ntp true) and check `timedatectl status`"
REDACTED: Final = "[redacted]"


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one check (one line of output, one object of ``--json``).

    Attributes:
        check: what was checked, e.g. ``mqtt`` or ``secret mqtt.password_file``.
        status: PASS, WARN, FAIL, or SKIP (not checked because an earlier check failed).
        detail: what was found.
        fix: how to fix it (None when there is nothing to fix).
    """

    check: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class _Secret:
    """One configured secret file: where it was found and its value (never printed)."""

    key: str
    value: str
    path: Path | None
    secret: str | None
    error: str | None


def run_doctor(config: Config, *, as_json: bool) -> int:
    """Run every check, print the results, and return the exit code.

    Args:
        config: the validated configuration (a bad file never gets here).
        as_json: print a JSON list of ``{check, status, detail, fix}`` instead of a table.

    Returns:
        0 when no check failed (warnings allowed), 1 when any failed.
    """
    results = diagnose(config)
    if as_json:
        sys.stdout.write(json.dumps(msgspec.to_builtins(results), indent=2) + "\n")
    else:
        _print_table(results)
    return EXIT_FAIL if any(r.status == "FAIL" for r in results) else EXIT_OK


def diagnose(config: Config) -> list[CheckResult]:
    """Run every check and return the results in output order (secrets redacted)."""
    secrets = {
        s.key: s
        for s in (
            _load_secret(config, section, name) for section, name in _configured_secrets(config)
        )
    }
    results = [_check_config(config)]
    results += _check_state(config)
    results += [_check_secret_file(s) for s in secrets.values()]
    results += _check_kill(config)
    results += _check_mqtt(config, secrets)
    results += _check_broker(config, secrets)
    return _redact(results, [s.secret for s in secrets.values() if s.secret])


# ---------------------------------------------------------------------------- config


def _check_config(config: Config) -> CheckResult:
    try:
        check_setup(config)  # what `run` refuses at start, the doctor names too
    except TradeguardError as exc:
        return CheckResult(
            check="config",
            status="FAIL",
            detail=f"`tradeguard run` would refuse it: {exc}",
            fix="fix the key named (`tradeguard check-config` checks the file as `run` does)",
        )
    if config.source is None:
        return CheckResult(
            check="config",
            status="PASS",
            detail="built-in defaults (no --config and no $TRADEGUARD_CONFIG)",
        )
    mode = _mode_of(Path(config.source))
    if mode is not None and mode & (stat.S_IWGRP | stat.S_IWOTH):
        return CheckResult(
            check="config",
            status="WARN",
            detail=f"loaded and valid: {config.source}, but group/others may write it "
            f"(mode {mode:04o}) and so change the risk limits",
            fix=f"chmod go-w {config.source}",
        )
    return CheckResult(check="config", status="PASS", detail=f"loaded and valid: {config.source}")


# ---------------------------------------------------------------------------- state


def _check_state(config: Config) -> list[CheckResult]:
    journal = resolve_path(config, config.state.path).absolute()
    folder = journal.parent
    as_root = " (checked as root: the daemon's own user may differ)" if os.geteuid() == 0 else ""
    create = (
        f"mkdir -p {folder} && chmod 700 {folder} as the daemon's user "
        "(under systemd, StateDirectory=tradeguard creates it), or set state.path"
    )
    if not folder.exists():
        ancestor = _nearest_existing(folder)
        if ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK):
            # Nothing to fix: the first start makes it (a fresh `make run` looks like this).
            return [
                CheckResult(
                    check="state folder",
                    status="PASS",
                    detail=f"{folder} does not exist yet; the daemon will create it (mode 700)"
                    + as_root,
                ),
                CheckResult(check="journal", status="PASS", detail="no journal yet (first run)"),
            ]
        why = "is not a folder" if not ancestor.is_dir() else "is not writable"
        return [
            CheckResult(
                check="state folder",
                status="FAIL",
                detail=f"{folder} does not exist and cannot be created ({ancestor} {why})"
                + as_root,
                fix=create,
            ),
            _skip("journal", "state folder missing"),
        ]
    if not folder.is_dir():
        return [
            CheckResult(
                check="state folder",
                status="FAIL",
                detail=f"{folder} exists but is not a folder",
                fix=f"move {folder} aside, or set state.path to a file in a folder",
            ),
            _skip("journal", "state folder unusable"),
        ]
    results: list[CheckResult] = []
    mode = _mode_of(folder) or 0
    if not os.access(folder, os.W_OK | os.X_OK):
        results.append(
            CheckResult(
                check="state folder",
                status="FAIL",
                detail=f"{folder} is not writable by this user (uid {os.geteuid()})",
                fix=f"chown the folder to the daemon's user and chmod 700 {folder}",
            )
        )
    elif mode & (stat.S_IWGRP | stat.S_IWOTH):
        results.append(
            CheckResult(
                check="state folder",
                status="WARN",
                detail=f"{folder} is writable by group/others (mode {mode:04o}): "
                "anyone could replace the journal",
                fix=f"chmod 700 {folder}",
            )
        )
    else:
        results.append(
            CheckResult(
                check="state folder",
                status="PASS",
                detail=f"{folder} is writable (mode {mode:04o})" + as_root,
            )
        )
    results.append(_check_journal(journal))
    return results


def _check_journal(path: Path) -> CheckResult:
    if not path.exists():
        return CheckResult(
            check="journal", status="PASS", detail=f"no journal yet at {path} (first run)"
        )
    aside = (
        f"point state.path at tradeguard's journal, or move {path} aside (the daemon then "
        "starts a fresh journal: no kill switch engaged, no open orders known)"
    )
    try:
        with closing(sqlite3.connect(_read_only_uri(path), uri=True)) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            missing = [t for t in JOURNAL_TABLES if t not in names]
            if missing:
                return CheckResult(
                    check="journal",
                    status="FAIL",
                    detail=f"{path} is not a tradeguard journal: missing tables "
                    + ", ".join(missing),
                    fix=aside,
                )
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            engaged = [
                row[0] for row in db.execute("SELECT scope_key FROM kill_switch WHERE engaged")
            ]
    except sqlite3.Error as exc:
        return CheckResult(
            check="journal", status="FAIL", detail=f"cannot read {path}: {exc}", fix=aside
        )
    if not os.access(path, os.W_OK):
        return CheckResult(
            check="journal",
            status="FAIL",
            detail=f"{path} is not writable by this user",
            fix=f"chown {path} to the daemon's user and chmod 600 {path}",
        )
    detail = f"{path}: schema {version[0] if version else '?'}, every table present"
    if engaged:
        detail += "; kill switch engaged: " + ", ".join(engaged)
    return CheckResult(check="journal", status="PASS", detail=detail)


def _read_only_uri(path: Path) -> str:
    """A URI that reads the journal without creating any file next to it.

    A read-only open of a WAL database creates ``-wal``/``-shm`` when they are
    missing; made by root they would lock the daemon's own user out of its journal.
    Without them every row is in the main file, which ``immutable=1`` reads as is.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    if wal.exists() and shm.exists():
        return uri  # a daemon is running (or died): read through its WAL index
    return uri + "&immutable=1"


# ---------------------------------------------------------------------------- secrets


def _configured_secrets(config: Config) -> list[tuple[str, str]]:
    return [
        (section, name)
        for section, name in SECRET_KEYS
        if getattr(getattr(config, section), name) is not None
    ]


def _load_secret(config: Config, section: str, name: str) -> _Secret:
    key = f"{section}.{name}"
    value: str = getattr(getattr(config, section), name)
    path = _locate_secret(config, value)
    try:
        secret = read_secret(config, str(path) if path is not None else value, key=key)
    except ConfigError as exc:
        return _Secret(key=key, value=value, path=path, secret=None, error=str(exc))
    return _Secret(key=key, value=value, path=path, secret=secret, error=None)


def _locate_secret(config: Config, value: str) -> Path | None:
    """The file :func:`read_secret` would read, or the unit's credential source in a shell."""
    bare = "/" not in value
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates: list[Path] = []
    if bare and credentials:
        candidates.append(Path(credentials) / value)
    candidates.append(resolve_path(config, value))
    if bare and not credentials:
        candidates.append(CREDENTIAL_SOURCE_DIR / value)
    for candidate in candidates:
        try:
            if candidate.exists():
                return candidate
        except OSError:
            return candidate  # read_secret will say why it cannot be read
    return None


def _check_secret_file(secret: _Secret) -> CheckResult:
    check = f"secret {secret.key}"
    if secret.error is not None:
        if secret.path is None:
            where = (
                f"create it holding only the secret (chmod 600), or set {secret.key} "
                "to the right path"
            )
            if "/" not in secret.value:
                where += (
                    f"; under systemd a bare name is a LoadCredential= name "
                    f"({CREDENTIAL_SOURCE_DIR}/{secret.value})"
                )
            return CheckResult(check=check, status="FAIL", detail=secret.error, fix=where)
        return CheckResult(
            check=check,
            status="FAIL",
            detail=secret.error,
            fix=f"write the secret into {secret.path} and make it readable by the daemon's "
            f"user only (chown; chmod 600 {secret.path})",
        )
    assert secret.path is not None
    detail = f"readable: {secret.path}"
    if secret.path.is_relative_to(CREDENTIAL_SOURCE_DIR) and not os.environ.get(
        "CREDENTIALS_DIRECTORY"
    ):
        detail += " (the unit's LoadCredential= source; $CREDENTIALS_DIRECTORY is unset)"
    mode = _mode_of(secret.path)
    if mode is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return CheckResult(
            check=check,
            status="WARN",
            detail=f"{detail}, but group/others may read it (mode {mode:04o})",
            fix=f"chmod 600 {secret.path}",
        )
    return CheckResult(check=check, status="PASS", detail=detail)


def _check_kill(config: Config) -> list[CheckResult]:
    kill = config.kill
    results: list[CheckResult] = []
    if kill.totp_secret_file is None and kill.admin_code_hash is None:
        code = resolve_path(config, config.state.path).absolute().parent / GENERATED_CODE_FILE
        made = "present" if code.exists() else "made at the first start"
        results.append(
            CheckResult(
                check="kill release",
                status="PASS",
                detail="released with the admin code the daemon generates when neither "
                f"kill.totp_secret_file nor kill.admin_code_hash is set: {code} (mode 0600, "
                f"{made})",
            )
        )
    else:
        ways = [
            name
            for name, value in (
                ("TOTP", kill.totp_secret_file),
                ("admin code", kill.admin_code_hash),
            )
            if value is not None
        ]
        results.append(
            CheckResult(
                check="kill release", status="PASS", detail="released with " + " or ".join(ways)
            )
        )
    if kill.admin_code_hash is not None:
        try:
            check_hash_format(kill.admin_code_hash)
        except ConfigError as exc:
            results.append(
                CheckResult(
                    check="admin code hash",
                    status="FAIL",
                    detail=str(exc),
                    fix="set kill.admin_code_hash to the output of `tradeguard hash-code`",
                )
            )
        else:
            results.append(
                CheckResult(check="admin code hash", status="PASS", detail="a usable scrypt hash")
            )
    return results


# ---------------------------------------------------------------------------- MQTT


def _check_mqtt(config: Config, secrets: dict[str, _Secret]) -> list[CheckResult]:
    mqtt = config.mqtt
    if mqtt.is_embedded:
        results: list[CheckResult] = []
        try:
            binary = find_mosquitto(mqtt.mosquitto_binary)
        except EmbeddedBrokerError as exc:
            results.append(
                CheckResult(
                    check="mosquitto",
                    status="FAIL",
                    detail=str(exc),
                    fix="apt-get install -y mosquitto, or set mqtt.mosquitto_binary",
                )
            )
        else:
            results.append(
                CheckResult(
                    check="mosquitto",
                    status="PASS",
                    detail=f"embedded broker: {binary}, started by the daemon",
                )
            )
        owner = _running_daemon(config)
        results.append(
            _check_port(
                "mqtt port",
                "127.0.0.1",
                mqtt.port,
                user="the embedded mosquitto",
                busy="another broker or a running tradeguard daemon uses it",
                fix="stop whatever listens there, or set mqtt.port",
                owner=owner,
            )
        )
        if owner is not None and mqtt.port != 0:
            results.append(_check_embedded_login(config))
        return results
    password = secrets.get("mqtt.password_file")
    if password is not None and password.secret is None:
        return [_skip("mqtt", "mqtt.password_file cannot be read")]
    located = config
    if password is not None and password.path is not None:
        located = msgspec.structs.replace(
            config, mqtt=msgspec.structs.replace(mqtt, password_file=str(password.path))
        )
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        endpoint = mqtt_endpoint(located)
    except (OSError, ConfigError) as exc:  # ssl.SSLError is an OSError
        return [
            CheckResult(
                check="mqtt",
                status="FAIL",
                detail=f"TLS settings unusable: {_tls_files_problem(config) or exc}",
                fix="check that mqtt.ca_file, mqtt.cert_file and mqtt.key_file name "
                "readable PEM files",
            )
        ]
    try:
        anyio.run(_mqtt_login, endpoint, backend="asyncio")
    except TimeoutError:
        return [
            CheckResult(
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
        ]
    except (BrokerConnectionError, OSError) as exc:
        return [_mqtt_failure(exc, where=where, config=config)]
    tls = "TLS" if mqtt.tls else "no TLS"
    user = f"as {mqtt.username}" if mqtt.username else "anonymously"
    return [CheckResult(check="mqtt", status="PASS", detail=f"logged in to {where} {user} ({tls})")]


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
            f"at start); the logins are in {login_folder(_state_folder(config))}",
        )
    return CheckResult(
        check="mqtt",
        status="PASS",
        detail=f"logged in to the daemon's mosquitto at {where} as {endpoint.username} "
        "(anonymous clients are refused)",
    )


def _running_daemon(config: Config) -> int | None:
    """The PID of the daemon holding this config's state folder, or None when none runs.

    A shared ``flock`` probe, dropped at once: it fails while a daemon holds its
    exclusive lock. Opened read-only, never created.
    """
    path = _state_folder(config) / LOCK_FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            first = os.pread(fd, 32, 0).split(b"\n", 1)[0].strip()
            return int(first) if first.isdigit() else 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _state_folder(config: Config) -> Path:
    return resolve_path(config, config.state.path).absolute().parent


async def _mqtt_login(endpoint: MqttEndpoint) -> None:
    with anyio.fail_after(MQTT_TIMEOUT_S):
        async with MqttLink(endpoint):
            pass


def _mqtt_failure(exc: Exception, *, where: str, config: Config) -> CheckResult:
    """Explain why the MQTT login failed: refused login, nobody listening, or TLS."""
    # MqttLink's message repeats host:port; the cause has the broker's or the OS's words.
    text = str(exc.__cause__ or exc)
    code = _reason_code(exc)
    mqtt = config.mqtt
    if code in LOGIN_REFUSED_CODES:
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"MQTT at {where} refused the login: {text}",
            fix="MQTT refused the login: check mqtt.username and the password file "
            "(mqtt.password_file) against the broker's password file (mosquitto_passwd)",
        )
    lowered = text.lower()
    if "ssl" in lowered or "certificate" in lowered:
        if "wrong version number" in lowered or "record layer" in lowered:
            fix = f"{where} does not speak TLS: use the broker's TLS port or set mqtt.tls = false"
        else:
            fix = (
                "set mqtt.ca_file to the CA certificate that signed the broker's certificate, "
                "and make mqtt.host the name (or address) the certificate was issued for"
            )
        return CheckResult(
            check="mqtt", status="FAIL", detail=f"TLS with {where} failed: {text}", fix=fix
        )
    if mqtt.tls and ("reset by peer" in lowered or "eof" in lowered):
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"{where} dropped the TLS handshake: {text}",
            fix=f"{where} may not speak TLS: use the broker's TLS port or set mqtt.tls = false",
        )
    if "connection refused" in lowered:
        return CheckResult(
            check="mqtt",
            status="FAIL",
            detail=f"nothing accepts MQTT connections at {where} (connection refused)",
            fix=f"start mosquitto (systemctl start mosquitto), or fix mqtt.host / mqtt.port "
            f"(now {where})",
        )
    if "name or service not known" in lowered or "name resolution" in lowered:
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


def _tls_files_problem(config: Config) -> str | None:
    """Name the TLS file that does not exist (ssl's own message names none)."""
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(config.mqtt, name)
        if value is not None and not resolve_path(config, value).is_file():
            return f"mqtt.{name}: {resolve_path(config, value)} does not exist"
    return None


def _reason_code(exc: BaseException) -> int | None:
    """The MQTT reason code carried by ``exc`` or its causes (aiomqtt's ``rc``)."""
    current: BaseException | None = exc
    while current is not None:
        rc = getattr(current, "rc", None)
        if isinstance(rc, int):
            return rc
        value = getattr(rc, "value", None)
        if isinstance(value, int):
            return value
        current = current.__cause__
    return None


# ---------------------------------------------------------------------------- broker


def _check_broker(config: Config, secrets: dict[str, _Secret]) -> list[CheckResult]:
    broker = config.broker
    if broker.kind == "sim":
        settings = broker.sim
        url = f"http://{settings.host}:{settings.port}"
        return [
            _mode_result(config, url=url, key_id="tradeguard-sim"),
            CheckResult(
                check="broker",
                status="PASS",
                detail="built-in paper venue (started by the daemon)",
            ),
            _check_port(
                "broker port",
                settings.host,
                settings.port,
                user="the built-in paper venue",
                busy="another paper venue or a running tradeguard daemon uses it",
                fix="stop whatever listens there, or set broker.sim.port (0 picks a free port)",
                owner=_running_daemon(config),
            ),
            CheckResult(
                check="clock",
                status="PASS",
                detail="the built-in paper venue runs on this machine's clock",
            ),
        ]
    assert broker.url is not None
    url = broker.url.rstrip("/")
    key_id = secrets["broker.key_id_file"].secret
    secret_key = secrets["broker.secret_key_file"].secret
    # An unreadable key id must not be blamed for a mode mismatch: check the URL rule
    # with a placeholder live-looking key; the secret line already names the file.
    mode = _mode_result(config, url=url, key_id=key_id if key_id is not None else "AK")
    if mode.status == "FAIL":
        why = "broker.mode disagrees with broker.url: keys are not sent there"
        return [mode, _skip("broker", why), _skip("clock", why)]
    if key_id is None or secret_key is None:
        why = "the broker keys cannot be read"
        return [mode, _skip("broker", why), _skip("clock", why)]
    headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key}
    timeout = min(broker.request_timeout_s, HTTP_TIMEOUT_S)
    with requests.Session() as session:
        try:
            sent = time.time()
            clock = session.get(f"{url}/v2/clock", headers=headers, timeout=timeout)
            received = time.time()
            account = (
                session.get(f"{url}/v2/account", headers=headers, timeout=timeout)
                if clock.ok
                else clock
            )
        except requests.RequestException as exc:
            return [mode, _http_failure(exc, url), _skip("clock", "broker unreachable")]
    if not clock.ok or not account.ok:
        return [
            mode,
            _http_refusal(clock if not clock.ok else account, url),
            _skip("clock", "the broker refused the request"),
        ]
    return [mode, _account_result(url, clock, account), _clock_result(clock, sent, received)]


def _mode_result(config: Config, *, url: str, key_id: str) -> CheckResult:
    broker = config.broker
    try:
        check_mode(mode=broker.mode, url=url, key_id=key_id, kind=broker.kind)
    except BrokerError as exc:
        return CheckResult(
            check="broker mode", status="FAIL", detail=str(exc), fix=_mode_fix(config, url)
        )
    return CheckResult(
        check="broker mode",
        status="PASS",
        detail=f"{broker.mode} mode agrees with {url}"
        + (" and the key id" if broker.kind == "alpaca" else ""),
    )


def _mode_fix(config: Config, url: str) -> str:
    mode = config.broker.mode
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    if config.broker.kind == "sim":
        return 'the built-in venue is paper only: set broker.mode = "paper"'
    if mode == "paper":
        return (
            "for paper trading set broker.url = https://paper-api.alpaca.markets (and "
            "stream_url wss://paper-api.alpaca.markets/stream); only if you mean to trade "
            'real money set broker.mode = "live" with live (AK...) keys'
        )
    if host != LIVE_HOST:
        return (
            f"live trading needs broker.url = https://{LIVE_HOST}; "
            'for paper set broker.mode = "paper"'
        )
    return (
        "put a live key pair (key id AK...) in broker.key_id_file / broker.secret_key_file, "
        'or set broker.mode = "paper" with the paper URL'
    )


def _http_failure(exc: requests.RequestException, url: str) -> CheckResult:
    if isinstance(exc, requests.exceptions.SSLError):
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"TLS with {url} failed: {exc}",
            fix="check broker.url (https for Alpaca) and the system CA certificates "
            "(apt-get install ca-certificates)",
        )
    if isinstance(exc, requests.Timeout):
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"no answer from {url} within {HTTP_TIMEOUT_S:g} s",
            fix="check broker.url, the network and any proxy ($HTTPS_PROXY)",
        )
    return CheckResult(
        check="broker",
        status="FAIL",
        detail=f"cannot reach {url}: {_short(exc)}",
        fix="check broker.url (the Alpaca base URL, without /v2) and that the venue is running",
    )


def _http_refusal(response: requests.Response, url: str) -> CheckResult:
    path = response.request.path_url if response.request is not None else "?"
    if response.status_code in {401, 403}:
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"the broker refused the keys (HTTP {response.status_code} on {path})",
            fix="put a key pair for this endpoint in broker.key_id_file / "
            "broker.secret_key_file (paper keys PK... for paper-api, live keys AK... for api)",
        )
    if response.status_code == 404:
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"no Alpaca trading API at {url} (HTTP 404 on {path})",
            fix="set broker.url to the base URL without /v2, e.g. https://paper-api.alpaca.markets",
        )
    return CheckResult(
        check="broker",
        status="FAIL",
        detail=f"{url} answered HTTP {response.status_code} on {path}",
        fix="check the broker's status page, then broker.url",
    )


def _account_result(url: str, clock: requests.Response, account: requests.Response) -> CheckResult:
    clock_body = _json_object(clock)
    body = _json_object(account)
    market = "open" if clock_body.get("is_open") else "closed"
    status = body.get("status", "?")
    blocked = [k for k in ("account_blocked", "trading_blocked") if body.get(k)]
    detail = f"{url} answered /v2/clock (market {market}) and /v2/account (status {status})"
    if blocked or status != "ACTIVE":
        return CheckResult(
            check="broker",
            status="WARN",
            detail=detail + ("; " + ", ".join(blocked) if blocked else ""),
            fix="the account cannot trade: see the broker's dashboard",
        )
    return CheckResult(check="broker", status="PASS", detail=detail)


def _clock_result(clock: requests.Response, sent: float, received: float) -> CheckResult:
    """Compare the broker's clock with ours (the request's midpoint, +- half the round trip)."""
    local = (sent + received) / 2
    uncertainty = (received - sent) / 2
    server: float | None = None
    source = "/v2/clock timestamp"
    stamp = _json_object(clock).get("timestamp")
    if isinstance(stamp, str):
        try:
            server = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            server = None
    if server is None and "Date" in clock.headers:
        try:
            # Date has whole seconds: the true time lies within the following second.
            server = parsedate_to_datetime(clock.headers["Date"]).timestamp() + 0.5
        except (TypeError, ValueError):
            server = None
        uncertainty += 0.5
        source = "HTTP Date header"
    if server is None:
        return CheckResult(
            check="clock",
            status="WARN",
            detail="the broker sent no time to compare with",
            fix="compare by hand; " + NTP_FIX,
        )
    return classify_skew(server - local, uncertainty=uncertainty, source=source)


def classify_skew(skew_s: float, *, uncertainty: float = 0.0, source: str) -> CheckResult:
    """Judge a clock difference (broker minus local): WARN above 1 s, FAIL above 5 s.

    Intents older than ``risk.max_intent_age_s`` are refused, so a wrong clock
    turns into refused or wrongly accepted intents.
    """
    beyond = abs(skew_s) - uncertainty
    direction = "behind" if skew_s > 0 else "ahead of"
    detail = (
        f"this machine's clock is {abs(skew_s):.2f} s (±{uncertainty:.2f} s) {direction} "
        f"the broker's ({source})"
    )
    if beyond > SKEW_FAIL_S:
        return CheckResult(
            check="clock",
            status="FAIL",
            detail=detail + f"; more than {SKEW_FAIL_S:g} s breaks the intent age checks",
            fix=NTP_FIX,
        )
    if beyond > SKEW_WARN_S:
        return CheckResult(check="clock", status="WARN", detail=detail, fix=NTP_FIX)
    return CheckResult(check="clock", status="PASS", detail=detail)


# ---------------------------------------------------------------------------- helpers


def _check_port(
    check: str, host: str, port: int, *, user: str, busy: str, fix: str, owner: int | None = None
) -> CheckResult:
    """Whether ``user`` will be able to listen on ``host:port`` (bind, then release).

    ``owner`` is the PID of the daemon that holds this config's state folder: a port
    in use is then most likely that daemon's own listener, not a conflict.
    """
    if port == 0:
        return CheckResult(check=check, status="PASS", detail=f"{user} picks a free port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and owner is not None:
                return CheckResult(
                    check=check,
                    status="PASS",
                    detail=f"{host}:{port} is in use: the running daemon of this state folder "
                    f"(pid {owner}) holds the folder, and {user} is its own",
                )
            if exc.errno == errno.EADDRINUSE:
                return CheckResult(
                    check=check,
                    status="WARN",
                    detail=f"something already listens on {host}:{port}: {busy}",
                    fix=fix,
                )
            return CheckResult(
                check=check,
                status="FAIL",
                detail=f"{user} cannot listen on {host}:{port}: {exc.strerror}",
                fix=fix,
            )
    return CheckResult(check=check, status="PASS", detail=f"{host}:{port} is free for {user}")


def _skip(check: str, why: str) -> CheckResult:
    return CheckResult(check=check, status="SKIP", detail=f"not checked: {why}")


def _mode_of(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _short(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the retry boilerplate."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    return text


def _redact(results: list[CheckResult], secrets: list[str]) -> list[CheckResult]:
    """Remove every secret value from the output, wherever a message may have quoted it."""
    values = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def scrub(text: str | None) -> str | None:
        if text is None:
            return None
        for value in values:
            text = text.replace(value, REDACTED)
        return text

    return [
        msgspec.structs.replace(r, detail=scrub(r.detail) or "", fix=scrub(r.fix)) for r in results
    ]


_STYLES: Final[dict[Status, str]] = {
    "PASS": "green",
    "WARN": "yellow",
    "FAIL": "bold red",
    "SKIP": "dim",
}


def _print_table(results: list[CheckResult]) -> None:
    from rich.console import Console  # noqa: PLC0415  # only for the table view
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table("check", "status", "detail and fix", show_lines=True)
    for r in results:
        # Text, not markup: details quote paths and error messages with brackets.
        text = Text(r.detail)
        if r.fix:
            text.append("\nfix: ", style="bold cyan")
            text.append(r.fix)
        table.add_row(Text(r.check), Text(r.status, style=_STYLES[r.status]), text)
    console = Console()
    console.print(table)
    counts = {s: sum(r.status == s for r in results) for s in _STYLES}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    console.print(Text(f"{len(results)} checks: {summary}"))


__all__ = ["CheckResult", "classify_skew", "diagnose", "run_doctor"]
