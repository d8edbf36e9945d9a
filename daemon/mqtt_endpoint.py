"""Part of the MQTT session: where and how to connect, and a short-lived client for tools.

:class:`MqttEndpoint` holds a broker's address, identity and TLS settings and makes
aiomqtt clients from them (MQTT 5, ``TCP_NODELAY``, a persistent session). The
daemon's :class:`~daemon.mqtt_session.MqttSession` connects both planes with it;
:class:`MqttLink` is the clean-session client of the CLI, the tests and the benches.
Only the MQTT session's modules (``daemon/mqtt_*.py``) import aiomqtt.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Final, Self

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.core.errors import BrokerConnectionError

NODELAY: Final = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Without it a QoS 1 round trip on loopback costs ~88 ms (Nagle + delayed ACK)."""
MAX_QUEUED_INCOMING: Final = 4096
"""aiomqtt's own inbound queue, for QoS 0 messages that flow control cannot hold back."""


class InboundQueue(asyncio.Queue[aiomqtt.Message]):
    """aiomqtt's inbound queue: bounded for QoS 0, never full for QoS 1 and 2.

    A QoS 1 message is acknowledged once routed and the broker holds the rest back
    (Receive Maximum), so those are bounded by the broker's queue for the connection.
    But mosquitto 2.0.11 was seen sending far past Receive Maximum while PUBACKs flow,
    and aiomqtt drops what overflows its queue: unacknowledged, not redelivered in the
    session; an engage behind a flood of commands was lost that way. Nothing holds
    QoS 0 back, so only QoS 0 is dropped beyond ``MAX_QUEUED_INCOMING``.
    """

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Queue ``item``; a QoS 0 message beyond the bound raises ``QueueFull``."""
        if item.qos == 0 and self.qsize() >= MAX_QUEUED_INCOMING:
            raise asyncio.QueueFull
        super().put_nowait(item)


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

    def limited(self, receive_maximum: int) -> MqttEndpoint:
        """The same endpoint and identity, announcing ``receive_maximum`` (MQTT 5)."""
        return self.with_identity(
            client_id=self.client_id,
            username=self.username,
            password=self.password,
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
            queue_type=InboundQueue,  # unbounded but for QoS 0: see InboundQueue
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
