"""The shipped broker setup (systemd/mosquitto/) enforces who may publish and read what.

A real mosquitto runs the shipped ``tradeguard.conf``, with the password file, ACL and
certificates that the shipped ``install.sh`` creates (staged with ``--root`` in a
temporary folder; only paths and ports are rewritten). MQTT 5 clients connect over
TLS and verify the broker's certificate against the generated CA.

Every denied publish must get PUBACK 0x87 (mosquitto 2.0 sends it to MQTT 5
clients) and must never reach the daemon: after each one the same client publishes
an allowed marker, and the daemon must see the marker without having seen the
denied message first (one connection's messages are handled in order, so a leak
would have arrived before the marker).

The broker derives every client id from the login, so no user can take over the
daemon's connections by sending the daemon's client id. Test clients never
reconnect on their own: a dropped connection stays dropped and shows.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as paho
import pytest
from harness import REPO, VENV_BIN, free_port
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from daemon.embedded_broker import find_mosquitto

INSTALL = REPO / "systemd" / "mosquitto" / "install.sh"
P = "tradeguard"  # the default prefix: the broker is this module's own
TRIGGER = "zigbee2mqtt/panic_button"
NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10
# mosquitto 2.0's ACL file does not check SUBSCRIBE (2.0.11 grants QoS 1 for any
# filter) and filters on delivery instead; a newer broker may answer 0x87. Either
# way the tests prove that nothing forbidden is delivered.
REFUSED_OR_FILTERED = {0, 1, NOT_AUTHORIZED}
TIMEOUT = 5.0

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None,
    reason="needs the openssl and mosquitto_passwd commands (apt-get install openssl mosquitto)",
)


@dataclass
class SecuredBroker:
    """The shipped broker config, running."""

    root: Path
    tls_port: int
    plain_port: int
    ca_file: Path
    process: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)

    def password(self, user: str) -> str:
        """The password install.sh generated for ``user``."""
        path = self.root / "etc/mosquitto/tradeguard/passwords" / user
        return path.read_text(encoding="utf-8").strip()


def _render_conf(text: str, *, root: Path, tls_port: int, plain_port: int) -> str:
    """The shipped tradeguard.conf with paths under ``root`` and free ports."""
    replacements = {
        "/etc/mosquitto/": f"{root}/etc/mosquitto/",
        "\nlistener 8883\n": f"\nlistener {tls_port} 127.0.0.1\n",
        "\nlistener 1883 127.0.0.1\n": f"\nlistener {plain_port} 127.0.0.1\n",
    }
    for old, new in replacements.items():
        assert old in text, f"tradeguard.conf no longer contains {old.strip()!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    base = tmp_path_factory.mktemp("secured-mosquitto")
    root = base / "root"
    subprocess.run(
        [
            "bash",
            str(INSTALL),
            "--root",
            str(root),
            "--make-certs",
            "broker.test",
            "--trigger",
            f"button={TRIGGER}",
            "s1",
            "s2",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    tls_port, plain_port = free_port(), free_port()
    conf_d = base / "conf.d"
    conf_d.mkdir()
    shipped = (root / "etc/mosquitto/conf.d/tradeguard.conf").read_text(encoding="utf-8")
    rendered = _render_conf(shipped, root=root, tls_port=tls_port, plain_port=plain_port)
    (conf_d / "tradeguard.conf").write_text(rendered, encoding="utf-8")
    # What Debian's /etc/mosquitto/mosquitto.conf adds around conf.d.
    main = [
        "persistence true",
        f"persistence_location {base}/",
        "log_dest stderr",
        f"include_dir {conf_d}",
    ]
    if os.geteuid() == 0:
        main.append(f"user {getpass.getuser()}")  # else mosquitto drops to 'mosquitto'
    (base / "mosquitto.conf").write_text("\n".join(main) + "\n", encoding="utf-8")
    process = subprocess.Popen(
        [find_mosquitto(), "-c", str(base / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    for raw in process.stderr:
        log.append(raw.decode(errors="replace").rstrip())
        if " running" in log[-1]:
            break
    else:
        pytest.fail("mosquitto did not start with the shipped config:\n" + "\n".join(log))
    stream = process.stderr
    drain = threading.Thread(target=lambda: log.extend(r.decode() for r in stream), daemon=True)
    drain.start()
    running = SecuredBroker(
        root=root,
        tls_port=tls_port,
        plain_port=plain_port,
        ca_file=root / "etc/mosquitto/ca_certificates/tradeguard-ca.crt",
        process=process,
        log=log,
    )
    yield running
    process.terminate()
    process.wait(10)


@dataclass
class Received:
    topic: str
    payload: bytes


class Client:
    """A blocking MQTT client: every call waits for the broker's answer, with a timeout."""

    def __init__(
        self,
        broker: SecuredBroker,
        user: str | None,
        password: str | None = None,
        *,
        tls: bool = True,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.port = broker.tls_port if tls else broker.plain_port
        self.user = user
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{user or 'anonymous'}-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
            reconnect_on_failure=False,
        )
        if tls:
            self._client.tls_set(ca_certs=str(broker.ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if user is not None:
            self._client.username_pw_set(user, password)
        self._lock = threading.Condition()
        self.connack: ReasonCode | None = None
        self.connects = 0
        self.disconnects: list[ReasonCode] = []
        self.received: list[Received] = []
        self._pubacks: dict[int, ReasonCode] = {}
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: paho.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            self.connack = reason
            self.connects += 1
            self._lock.notify_all()

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: paho.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            self.disconnects.append(reason)
            self._lock.notify_all()

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        reason: ReasonCode,
        _properties: Properties,
    ) -> None:
        with self._lock:
            self._pubacks[mid] = reason
            self._lock.notify_all()

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            self._subacks[mid] = reasons
            self._lock.notify_all()

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(Received(msg.topic, bytes(msg.payload)))
            self._lock.notify_all()

    def connect(self) -> ReasonCode:
        """Connect and return the CONNACK reason code; the network thread runs if accepted."""
        self._client.connect("127.0.0.1", self.port, keepalive=30)
        # Driven by hand until the CONNACK, so that a refused client never starts
        # paho's thread (which would wait to reconnect).
        deadline = time.monotonic() + TIMEOUT
        while self.connack is None:
            assert time.monotonic() < deadline, "no CONNACK"
            self._client.loop(timeout=0.05)
        if not self.connack.is_failure:
            self._client.loop_start()
        return self.connack

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK reason code."""
        info = self._client.publish(topic, payload.encode(), qos=1, retain=retain)
        with self._lock:
            assert self._lock.wait_for(lambda: info.mid in self._pubacks, TIMEOUT), "no PUBACK"
            return self._pubacks.pop(info.mid).value

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe at QoS 1 and return the SUBACK reason code."""
        _result, mid = self._client.subscribe(topic_filter, qos=1)
        assert mid is not None
        with self._lock:
            assert self._lock.wait_for(lambda: mid in self._subacks, TIMEOUT), "no SUBACK"
            (reason,) = self._subacks.pop(mid)
            return reason.value

    def wait_for(self, topic: str, payload: str) -> list[Received]:
        """Wait for one message and return everything received before it."""
        wanted = Received(topic, payload.encode())
        with self._lock:
            assert self._lock.wait_for(lambda: wanted in self.received, TIMEOUT), (
                f"{self.user} never received {payload!r} on {topic}"
                f" (disconnected: {self.disconnects})"
            )
            return self.received[: self.received.index(wanted)]

    def wait_disconnected(self) -> None:
        """Wait until the broker has dropped this connection."""
        with self._lock:
            assert self._lock.wait_for(lambda: self.disconnects, TIMEOUT), (
                f"{self.user}'s connection was never dropped"
            )

    def socket(self) -> object:
        """The connection's socket (a reconnect would make a new one)."""
        return self._client.socket()

    def close(self) -> None:
        if self.connack is not None and not self.connack.is_failure:
            self._client.disconnect()
            self._client.loop_stop()


class Login(Protocol):
    def __call__(
        self,
        user: str,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
    ) -> Client: ...


@pytest.fixture
def connect(broker: SecuredBroker) -> Iterator[Login]:
    """Log in as a user with the password install.sh made; every client is closed at the end."""
    clients: list[Client] = []

    def login(
        user: str,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
    ) -> Client:
        client = Client(broker, user, broker.password(user), protocol=protocol, client_id=client_id)
        clients.append(client)
        reason = client.connect()
        assert not reason.is_failure, f"{user} could not log in: {reason}"
        return client

    yield login
    for client in clients:
        client.close()


# The daemon's two logins (install.sh --daemon USER: USER and USER-control), one
# connection each: data plane and control plane. Both have the same rights.
DAEMON_LOGINS = ("tradeguard", "tradeguard-control")


@pytest.fixture(params=DAEMON_LOGINS)
def daemon(connect: Login, request: pytest.FixtureRequest) -> Client:
    """One of the daemon's logins, subscribed to everything the daemon listens to."""
    client = connect(request.param)
    for topic_filter in (f"{P}/#", TRIGGER, "homeassistant/#"):
        assert client.subscribe(topic_filter) < 0x80
    return client


def token() -> str:
    return uuid.uuid4().hex


# Each user's allowed publish, used as the in-order marker after a denied one.
MARKERS = {
    "s1": f"{P}/v1/strategy/s1/heartbeat",
    "s2": f"{P}/v1/strategy/s2/heartbeat",
    "phone": f"{P}/v1/kill/command",
    "operator": f"{P}/v1/kill/command",
    "homeassistant": f"{P}/v1/kill/command",
    "button": TRIGGER,
}

SPOOFS = [
    ("s1", f"{P}/v1/strategy/s2/intent"),
    ("s1", f"{P}/v1/strategy/s2/heartbeat"),
    ("s1", f"{P}/v1/strategy/s1/event"),
    ("s1", f"{P}/v1/strategy/s1/state"),
    ("s1", f"{P}/v1/kill/command"),
    ("s1", f"{P}/v1/kill/state"),
    ("s1", f"{P}/v1/daemon/status"),
    ("s1", f"{P}/v1/ha/release"),
    ("s1", f"{P}/v1/approval/command"),
    ("s1", f"{P}/v1/ha/approve"),
    ("s1", TRIGGER),
    ("s2", f"{P}/v1/strategy/s1/intent"),
    ("phone", f"{P}/v1/strategy/s1/intent"),
    ("phone", f"{P}/v1/kill/state"),
    ("phone", f"{P}/v1/daemon/state"),
    ("phone", f"{P}/v1/ha/release"),
    ("operator", f"{P}/v1/strategy/s1/intent"),
    ("operator", f"{P}/v1/kill/state"),
    ("operator", f"{P}/v1/daemon/status"),
    ("operator", f"{P}/v1/audit"),
    ("button", f"{P}/v1/strategy/s1/intent"),
    ("button", f"{P}/v1/kill/command"),
    ("button", f"{P}/v1/approval/command"),
    ("button", "zigbee2mqtt/other_button"),
    ("homeassistant", f"{P}/v1/strategy/s1/intent"),
    ("homeassistant", f"{P}/v1/kill/state"),
    ("homeassistant", f"{P}/v1/daemon/status"),
    ("homeassistant", "homeassistant/button/tradeguard/kill_engage/config"),
    # Privileged commands name their login in the topic: nobody may write another's.
    ("phone", f"{P}/v1/admin/operator/command"),
    ("operator", f"{P}/v1/admin/phone/command"),
    ("s1", f"{P}/v1/admin/s1/command"),
    ("s1", f"{P}/v1/admin/operator/command"),
    ("button", f"{P}/v1/admin/button/command"),
    ("homeassistant", f"{P}/v1/admin/operator/command"),
]


@pytest.mark.parametrize(("user", "topic"), SPOOFS, ids=[f"{u}->{t}" for u, t in SPOOFS])
def test_a_spoofed_publish_is_refused_and_never_reaches_the_daemon(
    connect: Login, daemon: Client, user: str, topic: str
) -> None:
    client = connect(user)
    spoof, marker = token(), token()
    assert client.publish(topic, spoof, retain=topic.endswith("state")) == NOT_AUTHORIZED
    assert client.publish(MARKERS[user], marker) == 0
    before_marker = daemon.wait_for(MARKERS[user], marker)
    assert spoof.encode() not in {m.payload for m in before_marker}


ALLOWED = [
    ("phone", f"{P}/v1/admin/phone/command"),
    ("operator", f"{P}/v1/admin/operator/command"),
    ("s1", f"{P}/v1/strategy/s1/intent"),
    ("s1", f"{P}/v1/strategy/s1/heartbeat"),
    ("s2", f"{P}/v1/strategy/s2/intent"),
    ("phone", f"{P}/v1/kill/command"),
    ("phone", f"{P}/v1/approval/command"),
    ("operator", f"{P}/v1/kill/command"),
    ("operator", f"{P}/v1/approval/command"),
    ("button", TRIGGER),
    ("homeassistant", f"{P}/v1/kill/command"),
    ("homeassistant", f"{P}/v1/ha/release"),
    ("homeassistant", f"{P}/v1/ha/approve"),
    ("homeassistant", f"{P}/v1/ha/deny"),
    ("homeassistant", "homeassistant/status"),
]


@pytest.mark.parametrize(("user", "topic"), ALLOWED, ids=[f"{u}->{t}" for u, t in ALLOWED])
def test_an_allowed_publish_reaches_the_daemon(
    connect: Login, daemon: Client, user: str, topic: str
) -> None:
    client = connect(user)
    body = token()
    assert client.publish(topic, body) == 0
    daemon.wait_for(topic, body)


def test_a_strategy_reads_only_its_own_event_and_state(connect: Login, daemon: Client) -> None:
    s1, button = connect("s1"), connect("button")
    for forbidden in (
        f"{P}/v1/strategy/s2/event",
        f"{P}/v1/strategy/s2/state",
        f"{P}/v1/strategy/s2/intent",
        f"{P}/v1/kill/command",
        TRIGGER,
        "#",
    ):
        assert s1.subscribe(forbidden) in REFUSED_OR_FILTERED, forbidden
    assert s1.subscribe(f"{P}/v1/strategy/s1/event") < 0x80
    leaked = {
        f"{P}/v1/strategy/s2/event": token(),
        f"{P}/v1/strategy/s2/state": token(),
        f"{P}/v1/strategy/s2/intent": token(),
        f"{P}/v1/kill/state": token(),
        f"{P}/v1/audit": token(),
    }
    for topic, body in leaked.items():
        assert daemon.publish(topic, body) == 0
    leaked[TRIGGER] = token()
    assert button.publish(TRIGGER, leaked[TRIGGER]) == 0
    own_state, own_event = token(), token()
    assert daemon.publish(f"{P}/v1/strategy/s1/state", own_state, retain=True) == 0
    assert daemon.publish(f"{P}/v1/strategy/s1/event", own_event) == 0
    before = s1.wait_for(f"{P}/v1/strategy/s1/event", own_event)
    assert {m.payload.decode() for m in before}.isdisjoint(leaked.values())
    assert Received(f"{P}/v1/strategy/s1/state", own_state.encode()) in before


@pytest.mark.parametrize("user", ["phone", "operator"])
def test_the_phone_and_the_cli_read_state_and_audit_but_no_strategy_traffic(
    connect: Login, daemon: Client, user: str
) -> None:
    watcher = connect(user)
    for topic_filter in (
        f"{P}/v1/kill/state",
        f"{P}/v1/daemon/#",
        f"{P}/v1/audit",
        f"{P}/v1/strategy/+/state",
    ):
        assert watcher.subscribe(topic_filter) < 0x80, topic_filter
    for forbidden in (f"{P}/v1/strategy/s1/event", f"{P}/v1/strategy/+/intent", "#"):
        assert watcher.subscribe(forbidden) in REFUSED_OR_FILTERED, forbidden
    secret = {f"{P}/v1/strategy/s1/event": token(), f"{P}/v1/strategy/s1/intent": token()}
    for topic, body in secret.items():
        assert daemon.publish(topic, body) == 0
    visible = {
        f"{P}/v1/kill/state": token(),
        f"{P}/v1/daemon/status": token(),
        f"{P}/v1/audit": token(),
        f"{P}/v1/strategy/s2/state": token(),
    }
    for topic, body in visible.items():
        assert daemon.publish(topic, body) == 0
    for topic, body in visible.items():
        before = watcher.wait_for(topic, body)
        assert {m.payload.decode() for m in before}.isdisjoint(secret.values())


def test_home_assistant_reads_discovery_and_kill_state(connect: Login, daemon: Client) -> None:
    ha = connect("homeassistant")
    assert ha.subscribe("homeassistant/#") < 0x80
    assert ha.subscribe(f"{P}/v1/kill/state") < 0x80
    assert ha.subscribe(f"{P}/v1/daemon/status") < 0x80
    assert ha.subscribe(f"{P}/v1/strategy/s1/event") in REFUSED_OR_FILTERED
    event, discovery, state = token(), token(), token()
    assert daemon.publish(f"{P}/v1/strategy/s1/event", event) == 0
    assert daemon.publish("homeassistant/button/tradeguard/kill_engage/config", discovery) == 0
    assert daemon.publish(f"{P}/v1/kill/state", state) == 0
    before = ha.wait_for("homeassistant/button/tradeguard/kill_engage/config", discovery)
    before += ha.wait_for(f"{P}/v1/kill/state", state)
    assert event.encode() not in {m.payload for m in before}


def test_mqtt_311_clients_get_no_reason_code_but_the_publish_is_still_dropped(
    connect: Login, daemon: Client
) -> None:
    s1 = connect("s1", protocol=MQTTProtocolVersion.MQTTv311)
    spoof, marker = token(), token()
    s1.publish(f"{P}/v1/strategy/s2/intent", spoof)  # PUBACK without a reason code
    assert s1.publish(MARKERS["s1"], marker) == 0
    before = daemon.wait_for(MARKERS["s1"], marker)
    assert spoof.encode() not in {m.payload for m in before}


# The daemon's client ids in the config (mqtt.client_id and its control plane's),
# and the ids the broker gives the daemon's connections (their logins).
DAEMON_CLIENT_IDS = ("tradeguard-daemon", "tradeguard-daemon-control", *DAEMON_LOGINS)


def test_no_login_can_take_over_the_daemons_connections(connect: Login) -> None:
    # The daemon's two connections, with the client ids the daemon sends.
    daemon = connect("tradeguard", client_id="tradeguard-daemon")
    control = connect("tradeguard-control", client_id="tradeguard-daemon-control")
    for client in (daemon, control):
        assert client.subscribe(f"{P}/#") < 0x80
    sockets = [daemon.socket(), control.socket()]

    # s1 logs in again and again with the daemon's client ids, and stays connected.
    # MQTT 5 last, for PUBACK reason codes below.
    spoofers = [
        connect("s1", protocol=protocol, client_id=client_id)
        for protocol in (MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5)
        for _attempt in range(2)
        for client_id in DAEMON_CLIENT_IDS
    ]

    # Both daemon connections are the ones from before: a command sent now
    # arrives on each, and neither was ever dropped.
    phone, command = connect("phone"), token()
    subscribers = phone.publish(f"{P}/v1/kill/command", command)
    assert subscribers != NO_MATCHING_SUBSCRIBERS, "the daemon's connections are gone"
    assert subscribers == 0
    for client, sock in zip((daemon, control), sockets, strict=True):
        client.wait_for(f"{P}/v1/kill/command", command)
        assert client.disconnects == [], f"{client.user} was disconnected"
        assert client.connects == 1
        assert client.socket() is sock

    # The broker named every spoofer s1, whatever id it sent: each one took over
    # the one before it, and nothing else.
    for taken_over in spoofers[:-1]:
        taken_over.wait_disconnected()
    s1 = spoofers[-1]
    assert s1.disconnects == []

    # The last one has s1's rights and no more: the daemon's topics are refused,
    # and it never reads the command (sent before the daemon's event below).
    for topic in (f"{P}/v1/kill/state", f"{P}/v1/daemon/status", f"{P}/v1/strategy/s2/intent"):
        assert s1.publish(topic, token()) == NOT_AUTHORIZED, topic
    assert s1.subscribe(f"{P}/v1/kill/command") in REFUSED_OR_FILTERED
    assert s1.subscribe(f"{P}/v1/strategy/s1/event") < 0x80
    assert phone.publish(f"{P}/v1/kill/command", command) == 0
    own_event = token()
    assert daemon.publish(f"{P}/v1/strategy/s1/event", own_event) == 0
    before_event = s1.wait_for(f"{P}/v1/strategy/s1/event", own_event)
    assert command.encode() not in {m.payload for m in before_event}


def test_the_cli_logged_in_as_operator_leaves_the_daemon_connected(
    broker: SecuredBroker, connect: Login, tmp_path: Path
) -> None:
    # docs/deployment.md's config for the CLI on the broker's host.
    config = tmp_path / "cli.toml"
    config.write_text(
        "[mqtt]\n"
        'host = "127.0.0.1"\n'
        f"port = {broker.plain_port}\n"
        f'topic_prefix = "{P}"\n'
        'username = "operator"\n'
        f'password_file = "{broker.root}/etc/mosquitto/tradeguard/passwords/operator"\n'
        "[state]\n"
        f'path = "{tmp_path}/state/state.db"\n',
        encoding="utf-8",
    )
    daemon = connect("tradeguard", client_id="tradeguard-daemon")
    assert daemon.subscribe(f"{P}/#") < 0x80
    status = subprocess.run(
        [str(VENV_BIN / "tradeguard"), "--config", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    command = token()
    assert connect("phone").publish(f"{P}/v1/kill/command", command) == 0
    daemon.wait_for(f"{P}/v1/kill/command", command)
    assert daemon.disconnects == []


@pytest.mark.parametrize(
    ("user", "password", "tls"),
    [
        (None, None, True),
        (None, None, False),
        ("s1", "wrong-password", True),
        ("s1", "wrong-password", False),
        ("nobody", "whatever", True),
        ("", "", True),
    ],
    ids=[
        "anonymous-tls",
        "anonymous-loopback",
        "wrong-password-tls",
        "wrong-password-loopback",
        "unknown-user",
        "empty-user",
    ],
)
def test_anonymous_and_wrong_password_clients_are_refused(
    broker: SecuredBroker, user: str | None, password: str | None, tls: bool
) -> None:
    client = Client(broker, user, password, tls=tls)
    try:
        reason = client.connect()
    finally:
        client.close()
    assert reason.value in {0x86, 0x87}, f"CONNACK {reason} ({reason.value:#x})"


def test_the_tls_listener_refuses_plain_mqtt_and_untrusted_certificates(
    broker: SecuredBroker,
) -> None:
    # An MQTT CONNECT in clear text: the broker hangs up without a CONNACK.
    connect_packet = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=TIMEOUT) as sock:
        sock.sendall(connect_packet)
        try:
            answer = sock.recv(16)
        except ConnectionResetError:
            answer = b""
    assert answer == b""
    # A client that trusts only the system CAs refuses the broker's certificate.
    strict = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    strict.tls_set(tls_version=ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLCertVerificationError):
        strict.connect("127.0.0.1", broker.tls_port, keepalive=5)


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_install_sh_is_idempotent_and_prunes(tmp_path: Path) -> None:
    first = _install(tmp_path, "--make-certs", "broker.test", "s1", "s2")
    assert first.returncode == 0, first.stderr
    before = _snapshot(tmp_path)
    again = _install(tmp_path, "--make-certs", "broker.test", "s1", "s2")
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert again.stderr == ""
    assert _snapshot(tmp_path) == before
    credential = tmp_path / "etc/tradeguard/credentials/mqtt-password"
    passwords = tmp_path / "etc/mosquitto/tradeguard/passwords"
    # The one credential file serves both of the daemon's logins.
    assert credential.read_bytes() == (passwords / "tradeguard").read_bytes()
    assert credential.read_bytes() == (passwords / "tradeguard-control").read_bytes()
    assert credential.stat().st_mode & 0o777 == 0o600

    pruned = _install(tmp_path, "--prune", "--rotate", "s1", "s1")
    assert pruned.returncode == 0, pruned.stderr
    passwd = (tmp_path / "etc/mosquitto/tradeguard/passwd").read_text(encoding="utf-8")
    users = {line.split(":", 1)[0] for line in passwd.splitlines()}
    assert users == {
        "tradeguard",
        "tradeguard-control",
        "operator",
        "phone",
        "homeassistant",
        "button",
        "s1",
    }
    acl = (tmp_path / "etc/mosquitto/tradeguard/acl").read_text(encoding="utf-8")
    assert "user s2" not in acl
    assert "@" not in acl.replace("#@", "")  # no placeholder left
    rotated = tmp_path / "etc/mosquitto/tradeguard/passwords/s1"
    assert rotated.read_bytes() != before["etc/mosquitto/tradeguard/passwords/s1"]


def _acl_lines(acl: str, user: str) -> list[str]:
    """The ACL lines of ``user``: from its ``user`` line to the next blank line."""
    lines = acl.splitlines()
    start = lines.index(f"user {user}")
    return lines[start + 1 : lines.index("", start)]


@pytest.mark.parametrize("rotate", DAEMON_LOGINS)
def test_install_sh_gives_the_daemons_two_logins_one_password_and_the_same_acl(
    tmp_path: Path, rotate: str
) -> None:
    first = _install(tmp_path, "--trigger", f"button={TRIGGER}", "s1")
    assert first.returncode == 0, first.stderr
    acl = (tmp_path / "etc/mosquitto/tradeguard/acl").read_text(encoding="utf-8")
    data_plane = _acl_lines(acl, "tradeguard")
    assert f"topic read {TRIGGER}" in data_plane
    assert _acl_lines(acl, "tradeguard-control") == data_plane
    credential = tmp_path / "etc/tradeguard/credentials/mqtt-password"
    passwords = tmp_path / "etc/mosquitto/tradeguard/passwords"
    old = credential.read_bytes()

    # Rotating either login rotates both, and the credential file with them.
    rotated = _install(tmp_path, "--rotate", rotate, "--trigger", f"button={TRIGGER}", "s1")
    assert rotated.returncode == 0, rotated.stderr
    new = credential.read_bytes()
    assert new != old
    assert (passwords / "tradeguard").read_bytes() == new
    assert (passwords / "tradeguard-control").read_bytes() == new

    # An install from before the control login: it gets the daemon's password,
    # from the credential file when the broker's copy was deleted.
    passwd = tmp_path / "etc/mosquitto/tradeguard/passwd"
    subprocess.run(["mosquitto_passwd", "-D", str(passwd), "tradeguard-control"], check=True)
    (passwords / "tradeguard-control").unlink()
    (passwords / "tradeguard").unlink()
    upgraded = _install(tmp_path, "--trigger", f"button={TRIGGER}", "s1")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "differs" not in upgraded.stderr
    assert (passwords / "tradeguard-control").read_bytes() == new
    assert "\ntradeguard-control:" in passwd.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["phone"], "used for both phone and strategy"),
        (["tradeguard-control"], "used for both daemon control plane and strategy"),
        (["--operator", "phone", "s1"], "used for both operator and phone"),
        (["--daemon", "d" * 25, "s1"], "at most 24 characters"),
        (["bad/id"], "a username is 1-32 characters"),
        (["--trigger", "b=tradeguard/v1/strategy/s1/intent", "s1"], "may only publish"),
        (["--trigger", "b=zigbee2mqtt/#", "s1"], "must not be empty or hold"),
        ([], "name at least one strategy id"),
    ],
)
def test_install_sh_refuses_dangerous_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = _install(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "etc").exists()
