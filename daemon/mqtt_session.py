"""The MQTT session: the only module that imports aiomqtt.

One aiomqtt client at a time, MQTT 5, ``TCP_NODELAY``, a persistent session, the
Last Will ``offline`` retained on ``P/v1/daemon/status`` and ``online`` once
subscribed. aiomqtt 2 does not reconnect by itself, so ``_run`` is the
documented loop: a new client per attempt, capped jittered back-off,
re-subscribe, and re-publish of the retained state it has published before.

Inbound payloads are decoded here. What can be answered without any trading
state is answered here: a malformed intent or one for an unknown strategy gets
its ``rejected`` event at once. Everything else goes to the actor that owns it
through a bounded channel; a full strategy inbox is a ``RATE_LIMIT`` answer,
never a silent drop.
"""

from __future__ import annotations

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

from daemon.actor import Actor, TradingHalt
from daemon.channels import Heartbeat, InboundIntent, InboundKillCommand, Publish, TriggerPress
from daemon.errors import BrokerConnectionError
from daemon.metrics import Metrics
from protocol.codec import (
    DecodeFailure,
    decode_approval_command,
    decode_intent,
    decode_kill_command,
    encode,
)
from protocol.messages import (
    CancelAllIntent,
    CancelIntent,
    Intent,
    OrderIntent,
    Reason,
    Rejected,
)
from protocol.reasons import ReasonCode
from protocol.topics import TopicKind, Topics

log = structlog.get_logger(__name__)

NODELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
PUBLISH_WINDOW: Final = 32
"""QoS 1 publishes awaiting their PUBACK at once. Beyond the broker's receive maximum
(mosquitto: 20) paho queues them itself, in order."""
"""Without it a QoS 1 round trip on loopback costs ~88 ms (Nagle + delayed ACK)."""


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

    def client(
        self, *, will: aiomqtt.Will | None = None, clean_start: bool = False
    ) -> aiomqtt.Client:
        """A new, unconnected aiomqtt client with TCP_NODELAY and MQTT 5."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
        properties.SessionExpiryInterval = self.session_expiry_s
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
        for topic_filter in topic_filters:
            await self._client.subscribe(topic_filter, qos=1)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish (waits for PUBACK at QoS 1)."""
        assert self._client is not None
        await self._client.publish(topic, payload, qos=qos, retain=retain)

    async def messages(self) -> AsyncIterator[Received]:
        """Every message received, until the connection ends."""
        assert self._client is not None
        async for message in self._client.messages:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload or "").encode()
            yield Received(str(message.topic), body, bool(message.retain))


class MqttSession(Actor):
    """The daemon's MQTT client.

    Inputs: ``outbound`` (messages to publish, from every actor) and the MQTT broker.
    Outputs: one intent channel per configured strategy, the kill-command channel,
    heartbeats and trigger presses; ``rejected`` events it can decide alone go back
    through its own publisher.

    Edge cases: retained intents are refused (a retained intent would replay on
    every restart); retained trigger messages are ignored for the same reason;
    a full strategy inbox answers ``RATE_LIMIT``; heartbeats are dropped when their
    channel is full (a fresher one is already queued); after ``close_intake()``
    intents are neither answered nor forwarded, so the strategy re-sends after
    the restart.
    """

    def __init__(
        self,
        *,
        endpoint: MqttEndpoint,
        topics: Topics,
        strategies: frozenset[str],
        outbound: MemoryObjectReceiveStream[Publish],
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
        self._endpoint = endpoint
        self._topics = topics
        self._strategies = strategies
        self._outbound = outbound
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
        self._retained: dict[str, Publish] = {}
        self._unacked: dict[int, Publish] = {}
        self._seq = 0
        self._intake_open = True
        self._client: aiomqtt.Client | None = None
        self.connected = anyio.Event()
        self.connections = 0
        self.reconnects = 0

    @property
    def is_connected(self) -> bool:
        """Whether a client is connected right now."""
        return self._client is not None

    def close_intake(self) -> None:
        """Stop taking intents (shutdown): they are neither answered nor forwarded."""
        self._intake_open = False

    async def _run(self) -> None:
        attempt = 0
        while True:
            client = self._endpoint.client(
                will=aiomqtt.Will(self._topics.daemon_status, b"offline", qos=1, retain=True)
            )
            failure: BaseException | None = None
            try:
                async with client:
                    attempt = 0
                    await self._serve(client)
            except* aiomqtt.MqttError as group:
                # The receive and publish tasks run in a task group, so errors come grouped.
                failure = group.exceptions[0]
            if failure is None:
                return
            self._client = None
            self.connected = anyio.Event()
            cap = min(self._reconnect_max_s, self._reconnect_min_s * 2**attempt)
            delay = cap * random.uniform(0.5, 1.0)  # noqa: S311  # jitter, not crypto
            attempt += 1
            self.reconnects += 1
            log.warning("mqtt.disconnected", error=str(failure), retry_in_s=round(delay, 3))
            await anyio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection: subscribe, announce, then pump both ways until it drops."""
        filters = [
            *self._topics.subscriptions(),
            *sorted(self._trigger_topics),
            *sorted(self._extra),
        ]
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        for message in list(self._retained.values()):
            await client.publish(message.topic, message.payload, qos=1, retain=True)
        await client.publish(self._topics.daemon_status, b"online", qos=1, retain=True)
        self._client = client
        self.connections += 1
        self.connected.set()
        log.info(
            "mqtt.connected",
            host=self._endpoint.host,
            port=self._endpoint.port,
            subscriptions=len(filters),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._receive, client)
            await self._publish_outbound(client)
            # Outbound ended: the daemon is shutting down. Say so, then leave cleanly.
            await client.publish(self._topics.daemon_status, b"offline", qos=1, retain=True)
            tg.cancel_scope.cancel()
        self._client = None

    async def _publish_outbound(self, client: aiomqtt.Client) -> None:
        """Publish what the actors send, in order, with up to ``PUBLISH_WINDOW`` awaiting PUBACK.

        Waiting for each PUBACK before the next publish would cap the daemon at one
        round trip per event. Tasks start in FIFO order and each hands its message to
        paho before its first await, so order on the wire is the order received here.
        Messages not yet acknowledged when the connection drops are published again,
        in order, on the next connection (at-least-once, as QoS 1 promises).
        """
        window = anyio.Semaphore(PUBLISH_WINDOW)
        async with anyio.create_task_group() as tg:
            for seq, message in sorted(self._unacked.items()):
                await window.acquire()
                tg.start_soon(self._publish_one, client, seq, message, window)
            while True:
                try:
                    message = await self._outbound.receive()
                except anyio.EndOfStream:
                    return  # the task group waits for what is in flight
                await window.acquire()
                self._seq += 1
                self._unacked[self._seq] = message
                tg.start_soon(self._publish_one, client, self._seq, message, window)

    async def _publish_one(
        self, client: aiomqtt.Client, seq: int, message: Publish, window: anyio.Semaphore
    ) -> None:
        try:
            await client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
            self._unacked.pop(seq, None)
            if message.retain:
                self._retained[message.topic] = message
        finally:
            window.release()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload or "").encode()
            await self._dispatch(str(message.topic), body, retained=bool(message.retain))

    async def _dispatch(self, topic: str, payload: bytes, *, retained: bool) -> None:
        """Route one inbound message. Never raises on input."""
        now = time.time()
        if topic in self._trigger_topics or topic in self._extra:
            # The authority decides; it ignores retained presses so a restart never replays one.
            await self._triggers.send(
                TriggerPress(topic=topic, payload=payload, received_at=now, retained=retained)
            )
            return
        parsed = self._topics.parse(topic)
        if parsed is None:
            return
        if parsed.kind is TopicKind.KILL_COMMAND:
            if retained:
                # A retained command would replay on every restart; only live presses count.
                log.warning("kill.retained_command_ignored")
                return
            command = decode_kill_command(payload)
            await self._kill_commands.send(
                InboundKillCommand(command=command, origin="mqtt", received_at=now)
            )
            return
        if parsed.kind is TopicKind.APPROVAL_COMMAND:
            if retained:
                log.warning("approval.retained_command_ignored")
                return
            await self._kill_commands.send(
                InboundKillCommand(
                    command=decode_approval_command(payload), origin="mqtt", received_at=now
                )
            )
            return
        sid = parsed.strategy_id
        assert sid is not None
        if parsed.kind is TopicKind.HEARTBEAT:
            if sid in self._strategies:
                try:
                    self._heartbeats.send_nowait(Heartbeat(strategy_id=sid, received_at=now))
                except anyio.WouldBlock:
                    log.debug("heartbeat.channel_full", strategy_id=sid)
            return
        await self._take_intent(sid, payload, retained=retained, now=now)

    async def _take_intent(self, sid: str, payload: bytes, *, retained: bool, now: float) -> None:
        if not self._intake_open:
            log.info("intent.ignored_shutting_down", strategy_id=sid)
            return
        if sid not in self._strategies:
            await self._reject(
                sid,
                _intent_id_of(decode_intent(payload)),
                ReasonCode.UNKNOWN_STRATEGY,
                f"strategy {sid!r} is not configured (add [strategies.{sid}] to the config)",
            )
            return
        decoded = decode_intent(payload)
        if isinstance(decoded, DecodeFailure):
            await self._reject(sid, decoded.intent_id, ReasonCode.INVALID_INTENT, decoded.message)
            return
        if retained:
            await self._reject(
                sid,
                _intent_id_of(decoded),
                ReasonCode.INVALID_INTENT,
                "retained intents are refused: publish intents with retain off",
            )
            return
        try:
            self._intents[sid].send_nowait(
                InboundIntent(strategy_id=sid, intent=decoded, received_at=now)
            )
        except anyio.WouldBlock:
            await self._reject(
                sid,
                _intent_id_of(decoded),
                ReasonCode.RATE_LIMIT,
                "strategy inbox is full: the daemon is behind, re-send later",
            )

    async def _reject(
        self, sid: str, intent_id: str | None, code: ReasonCode, message: str
    ) -> None:
        """Answer an intent that never reaches a strategy actor."""
        log.info(
            "intent.rejected", strategy_id=sid, intent_id=intent_id, code=code.value, detail=message
        )
        if self._metrics is not None:
            self._metrics.intent(sid, "rejected", [code.value])
        event = Rejected(
            intent_id=intent_id, reasons=[Reason(code=code, message=message)], ts=time.time()
        )
        await self._loopback.send(Publish(topic=self._topics.event(sid), payload=encode(event)))


def _intent_id_of(decoded: Intent | DecodeFailure) -> str | None:
    """The intent id of a decoded intent or failure, if it has one."""
    match decoded:
        case DecodeFailure() | OrderIntent() | CancelIntent():
            return decoded.intent_id
        case CancelAllIntent():
            return None
        case _:
            assert_never(decoded)
