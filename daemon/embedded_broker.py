"""The built-in loopback mosquitto, for ``make run`` and a config without ``mqtt.host``.

The daemon writes a mosquitto config (``set_tcp_nodelay true``, persistence in
the state folder, loopback only), starts mosquitto as a child process, waits for
it to listen, restarts it if it dies, and stops it on exit.

The daemon's broker is secured like the production one (``systemd/mosquitto/``):
no anonymous clients, a password file, and the ACL of ``acl.template`` with the
same rules. The logins are made on first start, one file a login holding only its
password (mode 0600) in ``<state folder>/mqtt-logins/``: the daemon's
(``tradeguard``; ``tradeguard-control`` has the same password), the CLI's
(``operator``) and one per strategy (username = strategy id). The password file
and the ACL are written anew at every start, so a strategy added to the config
gets its login. The CLI finds the ``operator`` login there by itself
(:func:`client_config`).

Unlike the production broker, this one does not take client ids from logins
(``use_username_as_clientid``): a login may hold several connections at once
(a ``mosquitto_sub`` beside the CLI, as in the README's tour). So that no other
client can take over the daemon's sessions by connecting with its client id, the
daemon's default id gets a suffix derived from its password (stable across
restarts, unknown to the other logins). Only the daemon's own Unix user can read
the login files.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import msgspec
import structlog

from actors.core.errors import EmbeddedBrokerError, SecretError
from daemon.config import Config, MqttConfig, read_secret, resolve_path

log = structlog.get_logger(__name__)

LOGIN_FOLDER: Final = "mqtt-logins"
"""The folder, inside the state folder, of the generated logins (one file each)."""
DAEMON_LOGIN: Final = "tradeguard"
OPERATOR_LOGIN: Final = "operator"
PBKDF2_ITERATIONS: Final = 101
"""What ``mosquitto_passwd`` of mosquitto 2 writes by default."""


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    """A password-file entry (after ``user:``) in mosquitto 2's ``$7$`` format.

    The format ``mosquitto_passwd`` writes: ``$7$ITERATIONS$SALT$HASH`` where HASH
    is PBKDF2-HMAC-SHA512 of the password with the 12-byte SALT, 64 bytes long,
    both base64 with padding. Written here so that no password goes through a
    command line (``mosquitto_passwd -b`` shows it in ``ps``).
    """
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    encoded = [base64.b64encode(part).decode("ascii") for part in (salt, digest)]
    return f"$7${PBKDF2_ITERATIONS}${encoded[0]}${encoded[1]}"


@dataclass(frozen=True)
class BrokerAccess:
    """Who may log in to the embedded mosquitto, and what each login may do.

    Attributes:
        prefix: ``mqtt.topic_prefix``.
        discovery_prefix: Home Assistant's discovery prefix (the daemon's too).
        daemon: the daemon's logins (data plane, control plane).
        operators: logins of the CLI (and ``mosquitto_sub``).
        strategies: one login a strategy, username = strategy id.
        trigger_topics: button topics the daemon reads.
        passwords: every login's password.
    """

    prefix: str
    discovery_prefix: str
    daemon: tuple[str, ...]
    operators: tuple[str, ...]
    strategies: tuple[str, ...]
    trigger_topics: tuple[str, ...]
    passwords: dict[str, str]

    def password_file(self) -> str:
        """The mosquitto password file (salted hashes, fresh salts each time)."""
        return "".join(f"{user}:{password_hash(pw)}\n" for user, pw in self.passwords.items())

    def acl(self) -> str:
        """The ACL: the rules of ``systemd/mosquitto/acl.template`` for these logins.

        Mosquitto denies whatever no line grants: nobody but the daemon reads the
        command topics (codes travel there) or writes the state topics.
        """
        p = f"{self.prefix}/v1"
        lines = ["# written by tradeguard: the rules of systemd/mosquitto/acl.template", ""]
        for user in self.daemon:
            lines += [
                f"user {user}",
                f"topic readwrite {self.prefix}/#",
                f"topic readwrite {self.discovery_prefix}/#",
                *(f"topic read {topic}" for topic in self.trigger_topics),
                "",
            ]
        for user in self.operators:
            lines += [
                f"user {user}",
                f"topic write {p}/admin/{user}/command",
                f"topic write {p}/kill/command",
                f"topic write {p}/approval/command",
                f"topic read {p}/approval/pending",
                f"topic read {p}/kill/state",
                f"topic read {p}/daemon/#",
                f"topic read {p}/audit",
                f"topic read {p}/strategy/+/state",
                "",
            ]
        for sid in self.strategies:
            lines += [
                f"user {sid}",
                f"topic write {p}/strategy/{sid}/intent",
                f"topic write {p}/strategy/{sid}/heartbeat",
                f"topic read {p}/strategy/{sid}/event",
                f"topic read {p}/strategy/{sid}/state",
                "",
            ]
        return "\n".join(lines)


def login_folder(state_dir: Path) -> Path:
    """Where the generated logins of a state folder are."""
    return state_dir / LOGIN_FOLDER


def _login_password(folder: Path, user: str) -> str:
    """The password of a generated login, made (mode 0600) on first use."""
    path = folder / user
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    password = path.read_text(encoding="utf-8").strip()
    if not password:
        raise SecretError(f"{path} is empty: delete it and start again to make a new login")
    return password


def prepare_logins(config: Config, state_dir: Path) -> tuple[Config, BrokerAccess]:
    """Make the embedded broker's logins; the config the daemon then runs with.

    The daemon logs in with ``mqtt.username`` / ``mqtt.password_file`` when the
    config names them, else with the generated ``tradeguard`` login (and its
    control plane with ``<username>-control``, same password unless
    ``mqtt.control_password_file`` says otherwise).

    Raises:
        SecretError: a login file or a password file named in the config is unusable.
    """
    mqtt = config.mqtt
    folder = login_folder(state_dir)
    generated = _generated_passwords(
        folder, (DAEMON_LOGIN, OPERATOR_LOGIN, *sorted(config.strategies))
    )
    daemon_config, password = _daemon_login(config, folder, generated[DAEMON_LOGIN])
    username = daemon_config.mqtt.username
    assert username is not None
    control = mqtt.control_username or f"{username}-control"
    control_password = (
        read_secret(config, mqtt.control_password_file, key="mqtt.control_password_file")
        if mqtt.control_password_file
        else password
    )
    if mqtt.client_id == MqttConfig().client_id:
        daemon_config = _with_private_client_id(daemon_config, password)
    passwords = {username: password, control: control_password}
    passwords[OPERATOR_LOGIN] = generated[OPERATOR_LOGIN]
    passwords.update({sid: generated[sid] for sid in sorted(config.strategies)})
    access = BrokerAccess(
        prefix=mqtt.topic_prefix,
        discovery_prefix=config.homeassistant.discovery_prefix,
        daemon=(username, control),
        operators=(OPERATOR_LOGIN,),
        strategies=tuple(sorted(config.strategies)),
        trigger_topics=tuple(sorted({t.topic for t in config.kill.triggers})),
        passwords=passwords,
    )
    return daemon_config, access


def _generated_passwords(folder: Path, users: tuple[str, ...]) -> dict[str, str]:
    """Each generated login's password, made on first use.

    Raises:
        SecretError: the login folder cannot be written, or a login file is empty.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return {user: _login_password(folder, user) for user in users}
    except OSError as exc:
        raise SecretError(f"cannot write the MQTT logins in {folder}: {exc.strerror}") from exc


def _daemon_login(config: Config, folder: Path, generated: str) -> tuple[Config, str]:
    """The config naming the daemon's login, and that login's password.

    Args:
        config: the daemon's config.
        folder: the generated logins' folder.
        generated: the generated ``tradeguard`` login's password.
    """
    mqtt = config.mqtt
    if mqtt.username is None:
        daemon_config = msgspec.structs.replace(
            config,
            mqtt=msgspec.structs.replace(
                mqtt, username=DAEMON_LOGIN, password_file=str(folder.absolute() / DAEMON_LOGIN)
            ),
        )
        return daemon_config, generated
    if mqtt.password_file:
        return config, read_secret(config, mqtt.password_file, key="mqtt.password_file")
    return config, generated


def _with_private_client_id(config: Config, password: str) -> Config:
    """The daemon's default client id with a suffix only its own login can know.

    This broker does not take client ids from logins, and a client that connects with
    the daemon's id takes over its session. Derived from the daemon's password: stable
    across restarts (the persistent session survives), unknown to the other logins.
    """
    suffix = hashlib.sha256(f"tradeguard client id\0{password}".encode()).hexdigest()[:16]
    mqtt = msgspec.structs.replace(config.mqtt, client_id=f"{config.mqtt.client_id}-{suffix}")
    return msgspec.structs.replace(config, mqtt=mqtt)


def client_config(config: Config, login: str = OPERATOR_LOGIN) -> Config:
    """The config a client logs in with: on the embedded broker, a generated login.

    A config whose broker is not the embedded one is returned as it is. On the
    embedded broker the CLI is ``operator`` and a strategy its own id, read from
    the state folder the config names.

    Args:
        config: the CLI's config.
        login: ``operator`` (the CLI) or a strategy id.

    Raises:
        SecretError: the daemon has not made that login yet (not started since the
            strategy was added), and the config names no login of its own.
    """
    if not config.mqtt.is_embedded:
        return config
    folder = login_folder(resolve_path(config, config.state.path).parent).absolute()
    if config.mqtt.password_file and Path(config.mqtt.password_file).parent == folder:
        return config  # a generated login already
    path = folder / login
    if not path.is_file():
        if config.mqtt.username is not None:
            return config
        whose = "the CLI's login" if login == OPERATOR_LOGIN else f"strategy {login}'s login"
        raise SecretError(
            f"no MQTT login {login!r} in {path.parent} ({whose}): the daemon makes it when "
            "it starts; start it first (tradeguard run)"
            + ("" if login == OPERATOR_LOGIN else f" with strategies.{login} in its config")
        )
    mqtt = msgspec.structs.replace(config.mqtt, username=login, password_file=str(path))
    return msgspec.structs.replace(config, mqtt=mqtt)


def find_mosquitto(binary: str | None = None) -> str:
    """The mosquitto executable, or an error saying what to install."""
    candidates = [binary] if binary else [shutil.which("mosquitto"), "/usr/sbin/mosquitto"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedBrokerError(
        "mosquitto not found: install it with 'apt-get install -y mosquitto mosquitto-clients'"
    )


def mosquitto_config(
    *,
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    password_file: Path | None = None,
    acl_file: Path | None = None,
) -> str:
    """A mosquitto 2 config for a loopback broker with Nagle off and persistence on.

    With ``password_file`` (and ``acl_file``) anonymous clients are refused; without,
    it is an open broker (tests and benchmarks).
    """
    secured = [f"password_file {password_file}"] if password_file else []
    if acl_file:
        secured.append(f"acl_file {acl_file}")
    lines = [
        "# written by tradeguard: a loopback broker for local use",
        "per_listener_settings false",
        f"listener {port} {host}",
        "allow_anonymous false" if password_file else "allow_anonymous true",
        *secured,
        "set_tcp_nodelay true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 30",
        "max_queued_messages 10000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp false",
        "connection_messages false",
    ]
    if os.geteuid() == 0:
        # As root mosquitto would switch to the 'mosquitto' user and lose the state folder.
        lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


class EmbeddedMosquitto:
    """Runs and supervises a loopback mosquitto.

    Args:
        state_dir: the daemon's state folder; mosquitto's files go in ``mosquitto/``.
        port: TCP port on 127.0.0.1.
        binary: path of the mosquitto executable (found on PATH when None).
        access: the logins and their rights (the daemon's broker always has them);
            None: an open broker, for benchmarks.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        port: int,
        binary: str | None = None,
        access: BrokerAccess | None = None,
    ) -> None:
        """Prepare paths; nothing starts yet."""
        self.port = port
        self._dir = state_dir / "mosquitto"
        self._binary = binary
        self._access = access
        self.restarts = 0
        self._running = False
        self._last_error: str | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start mosquitto, report ready with the port, restart it if it dies, stop it on cancel."""
        binary = find_mosquitto(self._binary)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self._dir / "mosquitto.conf"
        password_file = acl_file = None
        if self._access is not None:
            password_file, acl_file = self._dir / "passwd", self._dir / "acl"
            _write_private(password_file, self._access.password_file())
            _write_private(acl_file, self._access.acl())
        conf.write_text(
            mosquitto_config(
                port=self.port, data_dir=self._dir, password_file=password_file, acl_file=acl_file
            ),
            encoding="utf-8",
        )
        started = False
        while True:
            self._running = False
            process = await anyio.open_process(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                ready = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read_log, process, ready)
                    with anyio.fail_after(10):
                        await ready.wait()
                    if not self._running:
                        raise EmbeddedBrokerError(
                            f"mosquitto failed to start on 127.0.0.1:{self.port}: "
                            f"{self._last_error or 'no output'} (is the port in use? set mqtt.port)"
                        )
                    if not started:
                        started = True
                        task_status.started(self.port)
                    log.info("mosquitto.running", port=self.port, pid=process.pid)
                    code = await process.wait()
                    tg.cancel_scope.cancel()
            except TimeoutError as exc:
                raise EmbeddedBrokerError(
                    f"mosquitto did not start listening on 127.0.0.1:{self.port} "
                    "(is the port in use? set mqtt.port)"
                ) from exc
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process)
            if not started:
                raise EmbeddedBrokerError(f"mosquitto exited at start with code {code}")
            self.restarts += 1
            log.error("mosquitto.exited", code=code, restarting=True)
            await anyio.sleep(0.5)

    async def _read_log(self, process: anyio.abc.Process, ready: anyio.Event) -> None:
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                if " running" in line:
                    self._running = True
                    ready.set()
                if "rror" in line:
                    self._last_error = line
                    log.error("mosquitto.log", line=line)
                else:
                    log.debug("mosquitto.log", line=line)
        ready.set()  # end of output: mosquitto exited; the caller checks _running


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from the start (mosquitto reads it as is)."""
    partial = path.with_name(f".{path.name}.new")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    partial.replace(path)


async def _stop(process: anyio.abc.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(5):
        await process.wait()
        return
    process.kill()
    await process.wait()
