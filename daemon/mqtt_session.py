"""The MQTT session: the daemon's two MQTT connections.

The session's modules (``daemon/mqtt_*.py``) are the only ones that import aiomqtt.
Two connections, because the broker queues per connection: the **data plane**
carries intents and their events; the **control plane** carries kill, approval
and admin commands, heartbeats, the kill state and audit records. A backlog of
intents therefore never delays a kill command, in the broker or in here.

Each connection is MQTT 5 with ``TCP_NODELAY`` and a persistent session; the data
plane holds the Last Will ``offline`` retained on ``P/v1/daemon/status``.
aiomqtt 2 does not reconnect by itself, so each plane runs the documented loop: a
new client per attempt, capped jittered back-off, re-subscribe, and re-publish of
the retained state it has published before.

Flow control on both planes: a message is acknowledged (PUBACK) only once it has
been routed, and the CONNECT packet sets Receive Maximum, so the broker has at most
that many unacknowledged messages on their way to us. A flood waits in the broker
(bounded by its ``max_queued_messages``), not in our memory, and nothing is
acknowledged that was not taken: an engage behind a flood of commands is late, never
lost.

Inbound payloads are decoded and routed by :class:`~daemon.mqtt_inbound.InboundRouter`
(which answers on its own what needs no trading state); where and how to connect is
:mod:`daemon.mqtt_endpoint`, whose names are importable from here too.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from typing import Final

import aiomqtt
import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.base import Actor, TradingHalt
from actors.channels import Heartbeat, InboundIntent, InboundKillCommand, Publish, TriggerPress
from daemon.metrics import Metrics
from daemon.mqtt_endpoint import (
    MAX_QUEUED_INCOMING,
    NODELAY,
    MqttEndpoint,
    MqttLink,
    Received,
    make_tls_context,
)
from daemon.mqtt_inbound import InboundRouter
from daemon.mqtt_publisher import PubackWindow
from protocol.topics import Topics

__all__ = [
    "MAX_QUEUED_INCOMING",
    "NODELAY",
    "PUBLISH_WINDOW",
    "RECEIVE_MAXIMUM",
    "InboundRouter",
    "MqttEndpoint",
    "MqttLink",
    "MqttSession",
    "Plane",
    "Received",
    "make_tls_context",
]

log = structlog.get_logger(__name__)

PUBLISH_WINDOW: Final = 32
"""QoS 1 publishes awaiting their PUBACK at once. Beyond the broker's receive maximum
(mosquitto: 20) paho queues them itself, in order."""
RECEIVE_MAXIMUM: Final = 128
"""Unacknowledged QoS 1 intents the broker may send us at once (MQTT 5 Receive Maximum)."""


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
    heartbeats and trigger presses, routed by its :class:`InboundRouter`; ``rejected``
    events it can decide alone go back through its own publisher.

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
        # Both planes: at most this many unacknowledged, so the broker holds a flood.
        data_endpoint = endpoint.limited(RECEIVE_MAXIMUM)
        control = control_endpoint or endpoint.with_identity(
            client_id=f"{endpoint.client_id}-control",
            username=endpoint.username,
            password=endpoint.password,
        )
        control = control.limited(RECEIVE_MAXIMUM)
        self._data = _Connection(Plane.DATA, data_endpoint, outbound)
        self._control = _Connection(Plane.CONTROL, control, control_outbound)
        self._topics = topics
        self._loopback = loopback
        self._trigger_topics = trigger_topics
        self._extra = extra_subscriptions
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._ready = False
        self._inbound = InboundRouter(
            topics=topics,
            strategies=strategies,
            loopback=loopback,
            intents=intents,
            kill_commands=kill_commands,
            heartbeats=heartbeats,
            triggers=triggers,
            trigger_topics=trigger_topics | extra_subscriptions,
            metrics=metrics,
        )

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

    @property
    def received_intents(self) -> int:
        """Intent messages taken in (answered here or forwarded to a strategy)."""
        return self._inbound.received_intents

    @property
    def overloaded(self) -> int:
        """Intents answered ``OVERLOADED`` because their strategy's inbox was full."""
        return self._inbound.overloaded

    def mark_ready(self) -> None:
        """The daemon is READY: ``daemon/status`` goes from ``starting`` to ``online``."""
        self._ready = True
        self._loopback.send_nowait(
            Publish(topic=self._topics.daemon_status, payload=b"online", retain=True)
        )

    def close_intake(self) -> None:
        """Stop taking intents (shutdown): they are neither answered nor forwarded."""
        self._inbound.close_intake()

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
            # PUBACK once routed: with Receive Maximum this is end-to-end flow control. On
            # arrival, a flood beyond aiomqtt's queue would be acknowledged, then discarded.
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
            tg.start_soon(self._receive, client)
            await self._publish_outbound(conn, client)
            if conn.plane is Plane.DATA:
                # Outbound ended: the daemon is shutting down. Say so, then leave cleanly.
                await client.publish(self._topics.daemon_status, b"offline", qos=1, retain=True)
            tg.cancel_scope.cancel()
        conn.client = None

    async def _publish_outbound(self, conn: _Connection, client: aiomqtt.Client) -> None:
        """Publish what the actors send, in order, with up to ``PUBLISH_WINDOW`` awaiting PUBACK.

        Waiting for each PUBACK before the next publish would cap the daemon at one
        round trip per event; a task per message would cost more than the message
        (:class:`~daemon.mqtt_publisher.PubackWindow`). Messages reach paho, and the
        wire, in the order received here. Messages not yet acknowledged when the
        connection drops are published again, in order, on the next connection
        (at-least-once, as QoS 1 promises).
        """

        def settled(seq: int, message: Publish) -> None:
            conn.unacked.pop(seq, None)
            if message.retain:
                conn.retained[message.topic] = message

        with PubackWindow(client, PUBLISH_WINDOW, settled) as window:
            for seq, message in sorted(conn.unacked.items()):
                await window.send(seq, message)
            while True:
                try:
                    message = await conn.outbound.receive()
                except anyio.EndOfStream:
                    await window.drained()  # what is in flight, before ``offline``
                    return
                conn.seq += 1
                conn.unacked[conn.seq] = message
                await window.send(conn.seq, message)

    async def _receive(self, client: aiomqtt.Client) -> None:
        paho = client._client  # noqa: SLF001  # manual PUBACKs: aiomqtt exposes no ack()
        async for message in client.messages:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload or "").encode()
            taken = await self._inbound.route(
                str(message.topic), body, retained=bool(message.retain)
            )
            if taken and message.qos > 0:
                # Not taken (shutting down): no PUBACK, so the broker keeps the intent in our
                # persistent session and delivers it again after the restart.
                paho.ack(message.mid, message.qos)
