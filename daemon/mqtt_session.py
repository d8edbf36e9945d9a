"""The MQTT session: the only module that imports aiomqtt.

Two connections, because the broker queues per connection: the **data plane**
carries intents and their events; the **control plane** carries kill, approval
and admin commands, heartbeats, the kill state and audit records. A backlog of
intents therefore never delays a kill command, in the broker or in here.

Each connection is MQTT 5 with ``TCP_NODELAY`` and a persistent session; the data
plane holds the Last Will ``offline`` retained on ``P/v1/daemon/status``.
aiomqtt 2 does not reconnect by itself, so each plane runs the documented loop: a
new client per attempt, capped jittered back-off, re-subscribe, and re-publish of
the retained state it has published before.

Flow control on the data plane: intents are acknowledged (PUBACK) only once they
have been routed, and the CONNECT packet sets Receive Maximum, so the broker has at
most that many unacknowledged intents on their way to us. A flood waits in the
broker (bounded by its ``max_queued_messages``), not in our memory.

Inbound payloads are decoded here. What can be answered without any trading
state is answered here: a malformed intent or one for an unknown strategy gets
its ``rejected`` event at once, and a full strategy inbox gets ``OVERLOADED``
at once. Nothing raised while decoding or routing one message can reach the
actor: it becomes that message's answer.
"""

from __future__ import annotations

import enum
import random
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Final, Self, assert_never

import aiomqtt
import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.base import Actor, TradingHalt
from actors.channels import Heartbeat, InboundIntent, InboundKillCommand, Publish, TriggerPress
from actors.core.errors import BrokerConnectionError
from daemon.metrics import Metrics
from protocol.codec import (
    DecodeFailure,
    decode_admin_command,
    decode_approval_command,
    decode_intent,
    decode_kill_command,
    encode,
)
from protocol.messages import (
    ApprovalCommand,
    CancelAllIntent,
    CancelIntent,
    Intent,
    KillCommand,
    OrderIntent,
    Reason,
    Rejected,
)
from protocol.reasons import ReasonCode
from protocol.topics import ParsedTopic, TopicKind, Topics

log = structlog.get_logger(__name__)

NODELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Without it a QoS 1 round trip on loopback costs ~88 ms (Nagle + delayed ACK)."""
PUBLISH_WINDOW: Final = 32
"""QoS 1 publishes awaiting their PUBACK at once. Beyond the broker's receive maximum
(mosquitto: 20) paho queues them itself, in order."""
RECEIVE_MAXIMUM: Final = 128
"""Unacknowledged QoS 1 intents the broker may send us at once (MQTT 5 Receive Maximum)."""
MAX_QUEUED_INCOMING: Final = 4096
"""aiomqtt's own inbound queue, for QoS 0 messages that flow control cannot hold back."""


class MqttEndpoint:
    """Where and how to connect: host, port, credentials, TLS, identity.

    Args:
        host: broker host.
        port: broker port.
        client_id: MQTT client identifier (stable, for the persistent session).
        keepalive_s: MQTT keepalive; the Last Will fires within 1.5 x this.
        session_expiry_s: how long the broker keeps our session while we are away.
        username: optional user name.
        password: optional password (never logged).
        tls_context: optional TLS context.
        receive_maximum: MQTT 5 Receive Maximum to announce (None: the broker default).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int = 10,
        session_expiry_s: int = 3600,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        receive_maximum: int | None = None,
    ) -> None:
        """Keep the settings; nothing connects yet."""
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.receive_maximum = receive_maximum

    def with_identity(
        self,
        *,
        client_id: str,
        username: str | None,
        password: str | None,
        receive_maximum: int | None = None,
    ) -> MqttEndpoint:
        """The same broker under another identity (the control plane's login)."""
        return MqttEndpoint(
            host=self.host,
            port=self.port,
            client_id=client_id,
            keepalive_s=self.keepalive_s,
            session_expiry_s=self.session_expiry_s,
            username=username,
            password=password,
            tls_context=self.tls_context,
            receive_maximum=receive_maximum,
        )

    def client(
        self, *, will: aiomqtt.Will | None = None, clean_start: bool = False
    ) -> aiomqtt.Client:
        """A new, unconnected aiomqtt client with TCP_NODELAY and MQTT 5."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.SessionExpiryInterval = self.session_expiry_s
        if self.receive_maximum is not None:
            properties.ReceiveMaximum = self.receive_maximum
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=clean_start,
            keepalive=self.keepalive_s,
            will=will,
            properties=properties,
            tls_context=self.tls_context,
            socket_options=(NODELAY,),
            timeout=10,
            max_queued_incoming_messages=MAX_QUEUED_INCOMING,
        )


def make_tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A client TLS context verifying the broker (optionally with a client certificate)."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class Received(msgspec.Struct, frozen=True):
    """One message received by an :class:`MqttLink`."""

    topic: str
    payload: bytes
    retained: bool


class MqttLink:
    """A short-lived MQTT 5 client for tools (the CLI, tests, benchmarks).

    A clean session with a random client id, ``TCP_NODELAY`` on. Use as an async
    context manager.
    """

    def __init__(self, endpoint: MqttEndpoint, *, will: tuple[str, bytes] | None = None) -> None:
        """Prepare a client for ``endpoint`` (its client id is replaced by a random one)."""
        self._endpoint = MqttEndpoint(
            host=endpoint.host,
            port=endpoint.port,
            client_id=f"tg-{secrets.token_hex(6)}",
            keepalive_s=endpoint.keepalive_s,
            session_expiry_s=0,
            username=endpoint.username,
            password=endpoint.password,
            tls_context=endpoint.tls_context,
        )
        self._will = aiomqtt.Will(will[0], will[1], qos=1, retain=True) if will else None
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Self:
        """Connect."""
        self._client = self._endpoint.client(will=self._will, clean_start=True)
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerConnectionError(
                f"cannot connect to MQTT at {self._endpoint.host}:{self._endpoint.port}: {exc}"
            ) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Disconnect."""
        assert self._client is not None
        await self._client.__aexit__(None, None, None)

    async def subscribe(self, *topic_filters: str) -> None:
        """Subscribe with QoS 1."""
        assert self._client is not None
        try:
            for topic_filter in topic_filters:
                await self._client.subscribe(topic_filter, qos=1)
        except aiomqtt.MqttError as exc:
            raise self._lost(exc) from exc

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish (waits for PUBACK at QoS 1)."""
        assert self._client is not None
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise self._lost(exc) from exc

    async def messages(self) -> AsyncIterator[Received]:
        """Every message received, until the connection ends."""
        assert self._client is not None
        try:
            async for message in self._client.messages:
                payload = message.payload
                body = payload if isinstance(payload, bytes) else str(payload or "").encode()
                yield Received(str(message.topic), body, bool(message.retain))
        except aiomqtt.MqttError as exc:
            raise self._lost(exc) from exc

    def _lost(self, error: aiomqtt.MqttError) -> BrokerConnectionError:
        """A connection lost mid-command: one line for the CLI, not a library traceback."""
        where = f"{self._endpoint.host}:{self._endpoint.port}"
        return BrokerConnectionError(f"lost the MQTT connection to {where}: {error}")


class Plane(enum.Enum):
    """Which of the daemon's two MQTT connections."""

    DATA = "data"
    CONTROL = "control"


class _Connection:
    """The state one plane keeps across reconnects."""

    def __init__(
        self, plane: Plane, endpoint: MqttEndpoint, outbound: MemoryObjectReceiveStream[Publish]
    ) -> None:
        self.plane = plane
        self.endpoint = endpoint
        self.outbound = outbound
        self.retained: dict[str, Publish] = {}
        self.unacked: dict[int, Publish] = {}
        self.seq = 0
        self.client: aiomqtt.Client | None = None
        self.connected = anyio.Event()
        self.connections = 0
        self.reconnects = 0


class MqttSession(Actor):
    """The daemon's MQTT client: a data-plane and a control-plane connection.

    Inputs: ``outbound`` (events and states, published on the data plane),
    ``control_outbound`` (kill state, audit, Home Assistant: the control plane) and
    the MQTT broker.
    Outputs: one intent channel per configured strategy, the kill-command channel,
    heartbeats and trigger presses; ``rejected`` events it can decide alone go back
    through its own publisher.

    Edge cases: retained intents are refused (a retained intent would replay on
    every restart); retained trigger messages are ignored for the same reason;
    a full strategy inbox answers ``OVERLOADED`` at once; heartbeats are dropped
    when their channel is full (a fresher one is already queued); a payload whose
    decoding or routing raises gets ``INVALID_INTENT`` (or an audited refusal on a
    command topic) and never reaches the actor's restart policy; after
    ``close_intake()`` intents are neither answered nor forwarded, so the strategy
    re-sends after the restart.
    """

    def __init__(
        self,
        *,
        endpoint: MqttEndpoint,
        control_endpoint: MqttEndpoint | None = None,
        topics: Topics,
        strategies: frozenset[str],
        outbound: MemoryObjectReceiveStream[Publish],
        control_outbound: MemoryObjectReceiveStream[Publish],
        loopback: MemoryObjectSendStream[Publish],
        intents: Mapping[str, MemoryObjectSendStream[InboundIntent]],
        kill_commands: MemoryObjectSendStream[InboundKillCommand],
        heartbeats: MemoryObjectSendStream[Heartbeat],
        triggers: MemoryObjectSendStream[TriggerPress],
        trigger_topics: frozenset[str],
        extra_subscriptions: frozenset[str] = frozenset(),
        halt: TradingHalt,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        """Wire the session; see the class docstring for the channels."""
        super().__init__("mqtt_session", halt=halt)
        data_endpoint = endpoint.with_identity(
            client_id=endpoint.client_id,
            username=endpoint.username,
            password=endpoint.password,
            receive_maximum=RECEIVE_MAXIMUM,
        )
        control = control_endpoint or endpoint.with_identity(
            client_id=f"{endpoint.client_id}-control",
            username=endpoint.username,
            password=endpoint.password,
        )
        self._data = _Connection(Plane.DATA, data_endpoint, outbound)
        self._control = _Connection(Plane.CONTROL, control, control_outbound)
        self._topics = topics
        self._strategies = strategies
        self._loopback = loopback
        self._intents = intents
        self._kill_commands = kill_commands
        self._heartbeats = heartbeats
        self._triggers = triggers
        self._trigger_topics = trigger_topics
        self._extra = extra_subscriptions
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._metrics = metrics
        self._intake_open = True
        self._ready = False
        self.received_intents = 0
        self.overloaded = 0

    @property
    def connected(self) -> anyio.Event:
        """Set while the data plane is connected (the control plane has its own)."""
        return self._data.connected

    @property
    def control_connected(self) -> anyio.Event:
        """Set while the control plane is connected."""
        return self._control.connected

    @property
    def is_connected(self) -> bool:
        """Whether both planes are connected right now."""
        return self._data.client is not None and self._control.client is not None

    @property
    def reconnects(self) -> int:
        """Reconnects of both planes."""
        return self._data.reconnects + self._control.reconnects

    @property
    def connections(self) -> int:
        """Successful connections of the data plane."""
        return self._data.connections

    def mark_ready(self) -> None:
        """The daemon is READY: ``daemon/status`` goes from ``starting`` to ``online``."""
        self._ready = True
        self._loopback.send_nowait(
            Publish(topic=self._topics.daemon_status, payload=b"online", retain=True)
        )

    def close_intake(self) -> None:
        """Stop taking intents (shutdown): they are neither answered nor forwarded."""
        self._intake_open = False

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._connection_loop, self._control)
                await self._connection_loop(self._data)
        finally:
            log.info(
                "mqtt.session_stats",
                received_intents=self.received_intents,
                overloaded=self.overloaded,
                reconnects=self.reconnects,
            )

    async def _connection_loop(self, conn: _Connection) -> None:
        attempt = 0
        while True:
            will = (
                aiomqtt.Will(self._topics.daemon_status, b"offline", qos=1, retain=True)
                if conn.plane is Plane.DATA
                else None
            )
            client = conn.endpoint.client(will=will)
            if conn.plane is Plane.DATA:
                # PUBACK once routed: with Receive Maximum this is end-to-end flow control.
                client._client.manual_ack_set(on=True)  # noqa: SLF001  # aiomqtt has no switch
            failure: BaseException | None = None
            try:
                async with client:
                    attempt = 0
                    await self._serve(conn, client)
            except* aiomqtt.MqttError as group:
                # The receive and publish tasks run in a task group, so errors come grouped.
                failure = group.exceptions[0]
            if failure is None:
                return
            conn.client = None
            conn.connected = anyio.Event()
            cap = min(self._reconnect_max_s, self._reconnect_min_s * 2**attempt)
            delay = cap * random.uniform(0.5, 1.0)  # noqa: S311  # jitter, not crypto
            attempt += 1
            conn.reconnects += 1
            log.warning(
                "mqtt.disconnected",
                plane=conn.plane.value,
                error=str(failure),
                retry_in_s=round(delay, 3),
            )
            await anyio.sleep(delay)

    def _filters(self, plane: Plane) -> list[str]:
        if plane is Plane.DATA:
            return self._topics.data_subscriptions()
        return [
            *self._topics.control_subscriptions(),
            *sorted(self._trigger_topics),
            *sorted(self._extra),
        ]

    async def _serve(self, conn: _Connection, client: aiomqtt.Client) -> None:
        """One connection: subscribe, announce, then pump both ways until it drops."""
        filters = self._filters(conn.plane)
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        for message in list(conn.retained.values()):
            await client.publish(message.topic, message.payload, qos=1, retain=True)
        if conn.plane is Plane.DATA:
            status = b"online" if self._ready else b"starting"
            await client.publish(self._topics.daemon_status, status, qos=1, retain=True)
        conn.client = client
        conn.connections += 1
        conn.connected.set()
        log.info(
            "mqtt.connected",
            plane=conn.plane.value,
            host=conn.endpoint.host,
            port=conn.endpoint.port,
            subscriptions=len(filters),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._receive, conn, client)
            await self._publish_outbound(conn, client)
            if conn.plane is Plane.DATA:
                # Outbound ended: the daemon is shutting down. Say so, then leave cleanly.
                await client.publish(self._topics.daemon_status, b"offline", qos=1, retain=True)
            tg.cancel_scope.cancel()
        conn.client = None

    async def _publish_outbound(self, conn: _Connection, client: aiomqtt.Client) -> None:
        """Publish what the actors send, in order, with up to ``PUBLISH_WINDOW`` awaiting PUBACK.

        Waiting for each PUBACK before the next publish would cap the daemon at one
        round trip per event. Tasks start in FIFO order and each hands its message to
        paho before its first await, so order on the wire is the order received here.
        Messages not yet acknowledged when the connection drops are published again,
        in order, on the next connection (at-least-once, as QoS 1 promises).
        """
        window = anyio.Semaphore(PUBLISH_WINDOW)
        async with anyio.create_task_group() as tg:
            for seq, message in sorted(conn.unacked.items()):
                await window.acquire()
                tg.start_soon(self._publish_one, conn, client, seq, message, window)
            while True:
                try:
                    message = await conn.outbound.receive()
                except anyio.EndOfStream:
                    return  # the task group waits for what is in flight
                await window.acquire()
                conn.seq += 1
                conn.unacked[conn.seq] = message
                tg.start_soon(self._publish_one, conn, client, conn.seq, message, window)

    async def _publish_one(
        self,
        conn: _Connection,
        client: aiomqtt.Client,
        seq: int,
        message: Publish,
        window: anyio.Semaphore,
    ) -> None:
        try:
            await client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
            conn.unacked.pop(seq, None)
            if message.retain:
                conn.retained[message.topic] = message
        finally:
            window.release()

    async def _receive(self, conn: _Connection, client: aiomqtt.Client) -> None:
        paho = client._client  # noqa: SLF001  # manual PUBACKs: aiomqtt exposes no ack()
        async for message in client.messages:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload or "").encode()
            taken = await self._dispatch_safely(
                str(message.topic), body, retained=bool(message.retain)
            )
            if taken and conn.plane is Plane.DATA and message.qos > 0:
                # Not taken (shutting down): no PUBACK, so the broker keeps the intent in our
                # persistent session and delivers it again after the restart.
                paho.ack(message.mid, message.qos)

    async def _dispatch_safely(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """Route one message; whatever it raises becomes its answer, never a crash.

        Returns:
            False for an intent left untaken (shutting down), else True.
        """
        try:
            return await self._dispatch(topic, payload, retained=retained)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise  # shutting down: not the payload's fault
        except Exception as exc:  # noqa: BLE001  # one hostile payload must not stop the daemon
            log.warning(
                "mqtt.payload_refused",
                topic=topic[:200],
                size=len(payload),
                error=type(exc).__name__,
            )
            await self._refuse(topic, f"payload could not be processed ({type(exc).__name__})")
            return True

    async def _refuse(self, topic: str, message: str) -> None:
        """Answer a payload that broke routing: INVALID_INTENT, or an audited refusal."""
        parsed = self._topics.parse(topic)
        if parsed is None:
            return
        if parsed.kind in (
            TopicKind.KILL_COMMAND,
            TopicKind.APPROVAL_COMMAND,
            TopicKind.ADMIN_COMMAND,
        ):
            await self._kill_commands.send(
                InboundKillCommand(
                    command=DecodeFailure(intent_id=None, message=message),
                    origin="mqtt",
                    received_at=time.time(),
                )
            )
        elif parsed.kind is TopicKind.INTENT and parsed.strategy_id is not None:
            await self._reject(parsed.strategy_id, None, ReasonCode.INVALID_INTENT, message)

    async def _dispatch(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """Route one inbound message; False for an intent left untaken (shutting down)."""
        now = time.time()
        if topic in self._trigger_topics or topic in self._extra:
            # The authority decides; it ignores retained presses so a restart never replays one.
            await self._triggers.send(
                TriggerPress(topic=topic, payload=payload, received_at=now, retained=retained)
            )
            return True
        parsed = self._topics.parse(topic)
        if parsed is None:
            return True
        if parsed.kind in (
            TopicKind.KILL_COMMAND,
            TopicKind.APPROVAL_COMMAND,
            TopicKind.ADMIN_COMMAND,
        ):
            await self._take_command(parsed, payload, retained=retained, now=now)
            return True
        sid = parsed.strategy_id
        assert sid is not None
        if parsed.kind is TopicKind.HEARTBEAT:
            if sid in self._strategies:
                try:
                    self._heartbeats.send_nowait(Heartbeat(strategy_id=sid, received_at=now))
                except anyio.WouldBlock:
                    log.debug("heartbeat.channel_full", strategy_id=sid)
            return True
        return await self._take_intent(sid, payload, retained=retained, now=now)

    async def _take_command(
        self, parsed: ParsedTopic, payload: bytes, *, retained: bool, now: float
    ) -> None:
        """Kill, approval and admin commands go to the authority, decoded (or not)."""
        if retained:
            # A retained command would replay on every restart; only live presses count.
            log.warning("command.retained_ignored", kind=parsed.kind.value, user=parsed.user)
            return
        command: KillCommand | ApprovalCommand | DecodeFailure
        match parsed.kind:
            case TopicKind.KILL_COMMAND:
                command = decode_kill_command(payload)
            case TopicKind.APPROVAL_COMMAND:
                command = decode_approval_command(payload)
            case _:
                command = decode_admin_command(payload)
        origin = f"admin/{parsed.user}" if parsed.user is not None else "mqtt"
        await self._kill_commands.send(
            InboundKillCommand(command=command, origin=origin, received_at=now, user=parsed.user)
        )

    async def _take_intent(self, sid: str, payload: bytes, *, retained: bool, now: float) -> bool:
        if not self._intake_open:
            log.info("intent.left_for_restart", strategy_id=sid[:64])
            return False
        self.received_intents += 1
        if sid not in self._strategies:
            await self._reject(
                sid,
                _intent_id_of(decode_intent(payload)),
                ReasonCode.UNKNOWN_STRATEGY,
                f"strategy {sid[:64]!r} is not configured (add [strategies.NAME] to the config)",
            )
            return True
        decoded = decode_intent(payload)
        if isinstance(decoded, DecodeFailure):
            await self._reject(sid, decoded.intent_id, ReasonCode.INVALID_INTENT, decoded.message)
            return True
        if retained:
            await self._reject(
                sid,
                _intent_id_of(decoded),
                ReasonCode.INVALID_INTENT,
                "retained intents are refused: publish intents with retain off",
            )
            return True
        try:
            self._intents[sid].send_nowait(
                InboundIntent(strategy_id=sid, intent=decoded, received_at=now)
            )
        except anyio.WouldBlock:
            self.overloaded += 1
            await self._reject(
                sid,
                _intent_id_of(decoded),
                ReasonCode.OVERLOADED,
                "the strategy's intake is full: nothing was decided, re-send later",
                quiet=True,
            )
        return True

    async def _reject(
        self,
        sid: str,
        intent_id: str | None,
        code: ReasonCode,
        message: str,
        *,
        quiet: bool = False,
    ) -> None:
        """Answer an intent that never reaches a strategy actor (nothing is journaled)."""
        if not quiet:
            log.debug(  # per intent: metrics count these
                "intent.rejected",
                strategy_id=sid[:64],
                intent_id=intent_id,
                code=code.value,
                detail=message,
            )
        if self._metrics is not None:
            self._metrics.intent(sid if sid in self._strategies else "?", "rejected", [code.value])
        event = Rejected(
            intent_id=intent_id, reasons=[Reason(code=code, message=message)], ts=time.time()
        )
        await self._loopback.send(Publish(topic=self._topics.event(sid), payload=encode(event)))


def _intent_id_of(decoded: Intent | DecodeFailure) -> str | None:
    """The intent id of a decoded intent or failure, if it has one."""
    match decoded:
        case DecodeFailure() | OrderIntent() | CancelIntent() | CancelAllIntent():
            return decoded.intent_id
        case _:
            assert_never(decoded)
