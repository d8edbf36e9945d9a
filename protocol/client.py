"""A Python client for strategies: send intents, get decisions, follow orders.

::

    async with StrategyClient("s1", host="127.0.0.1", port=1883) as client:
        decision = await client.submit(
            OrderIntent(intent_id="a-0001", symbol="AAPL", side="buy", qty=10)
        )
        async for event in client.events():
            ...

``submit`` re-sends the same intent (same ``intent_id``, so the daemon never
makes a second order) until a decision arrives, as docs/protocol.md advises.

This module is for strategy processes: it uses aiomqtt directly and knows
nothing of the daemon's internals.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import aiomqtt
import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from protocol.codec import decode_event, encode
from protocol.messages import (
    Accepted,
    CancelAllIntent,
    CancelIntent,
    Event,
    FillEvent,
    OrderEvent,
    OrderIntent,
    Rejected,
)
from protocol.topics import Topics

Decision = Accepted | Rejected


class StrategyClientError(Exception):
    """The daemon did not answer in time, or the connection failed."""


class StrategyClient:
    """One strategy's connection to tradeguard.

    Args:
        strategy_id: the strategy id (the topic decides which strategy an intent is for).
        host: MQTT broker host.
        port: MQTT broker port.
        prefix: ``mqtt.topic_prefix`` of the daemon.
        username: optional MQTT user.
        password: optional MQTT password.
        resend_after_s: re-send an unanswered intent after this long.
        heartbeat_s: publish a heartbeat this often (None: never).
    """

    def __init__(
        self,
        strategy_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "tradeguard",
        username: str | None = None,
        password: str | None = None,
        resend_after_s: float = 1.0,
        heartbeat_s: float | None = None,
    ) -> None:
        """Prepare; connect with ``async with``."""
        self.strategy_id = strategy_id
        self._topics = Topics(prefix)
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=f"strategy-{strategy_id}-{secrets.token_hex(4)}",
            username=username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        self._resend_after_s = resend_after_s
        self._heartbeat_s = heartbeat_s
        self._waiting: dict[str, MemoryObjectSendStream[Decision]] = {}
        send, receive = anyio.create_memory_object_stream[Event](1024)
        self._events_in: MemoryObjectSendStream[Event] = send
        self._events_out: MemoryObjectReceiveStream[Event] = receive
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        """Connect, subscribe to this strategy's events, start the reader."""
        await self._client.__aenter__()
        await self._client.subscribe(self._topics.event(self.strategy_id), qos=1)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read)
        if self._heartbeat_s is not None:
            self._tg.start_soon(self._beat, self._heartbeat_s)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the reader and disconnect."""
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        await self._client.__aexit__(exc_type, exc, tb)

    async def _read(self) -> None:
        async for message in self._client.messages:
            try:
                event = decode_event(message.payload)
            except (ValueError, TypeError):  # msgspec errors are ValueErrors; garbage is skipped
                continue
            if isinstance(event, Accepted | Rejected) and event.intent_id in self._waiting:
                self._waiting[event.intent_id].send_nowait(event)
            try:
                self._events_in.send_nowait(event)
            except anyio.WouldBlock:
                # Nobody reads events(): the oldest matter least to a strategy that only submits.
                self._events_out.receive_nowait()
                self._events_in.send_nowait(event)

    async def _beat(self, every_s: float) -> None:
        while True:
            await self._client.publish(self._topics.heartbeat(self.strategy_id), b"{}", qos=0)
            await anyio.sleep(every_s)

    async def submit(self, intent: OrderIntent, *, timeout: float = 10.0) -> Decision:  # noqa: ASYNC109  # per-call deadline is the API
        """Send an order intent and return its decision, re-sending until it comes.

        Raises:
            StrategyClientError: no decision within ``timeout``.
        """
        payload = encode(intent)
        send, receive = anyio.create_memory_object_stream[Decision](4)
        self._waiting[intent.intent_id] = send
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                await self._client.publish(self._topics.intent(self.strategy_id), payload, qos=1)
                with anyio.move_on_after(min(self._resend_after_s, deadline - time.monotonic())):
                    return await receive.receive()
        finally:
            del self._waiting[intent.intent_id]
            send.close()
            receive.close()
        raise StrategyClientError(f"no decision for {intent.intent_id} within {timeout} s")

    async def cancel(self, intent_id: str) -> None:
        """Ask to cancel the order of one intent (answered with order events)."""
        await self._client.publish(
            self._topics.intent(self.strategy_id), encode(CancelIntent(intent_id=intent_id)), qos=1
        )

    async def cancel_all(self) -> None:
        """Ask to cancel every open order of this strategy."""
        await self._client.publish(
            self._topics.intent(self.strategy_id), encode(CancelAllIntent()), qos=1
        )

    async def events(self) -> AsyncIterator[Event]:
        """Every event for this strategy (decisions, order updates, fills) as it arrives."""
        async for event in self._events_out:
            yield event

    async def wait_order(
        self,
        intent_id: str,
        *,
        final: bool = True,
        timeout: float = 30.0,  # noqa: ASYNC109  # per-call deadline is the API
    ) -> OrderEvent:
        """Wait for the order of ``intent_id`` to reach a final status (or any status)."""
        with anyio.fail_after(timeout):
            async for event in self.events():
                if (
                    isinstance(event, OrderEvent)
                    and event.intent_id == intent_id
                    and (
                        not final or event.status in ("filled", "cancelled", "rejected", "expired")
                    )
                ):
                    return event
        raise StrategyClientError("event stream ended")


__all__ = ["Decision", "FillEvent", "OrderEvent", "StrategyClient", "StrategyClientError"]
