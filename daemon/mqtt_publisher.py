"""QoS 1 publishing without a task per message: a window of PUBACKs tracked by message id.

aiomqtt's ``publish`` awaits each PUBACK on an event of its own, through
``asyncio.wait_for`` (a second task on Python 3.11), so a publisher that keeps many in
flight needs a task per message: three tasks, an event and a timer for every event a
strategy is sent. Here the message goes straight to paho, which queues it for the
connection's next write (one write per loop turn for everything queued meanwhile), and
paho's PUBACK callback, which runs on the event loop, settles it by its message id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import aiomqtt
import anyio
import paho.mqtt.client as mqtt

from actors.channels import Publish

Settled = Callable[[int, Publish], None]
"""Called with a message's sequence number once the broker has it (PUBACK, or QoS 0 sent)."""


class PubackWindow:
    """At most ``size`` QoS 1 messages awaiting their PUBACK on one aiomqtt connection.

    Messages go to paho in the order :meth:`send` is called, so they reach the broker in
    that order. Use as a context manager around the connection's publishing: it hooks
    paho's ``on_publish`` (keeping aiomqtt's own, which its ``publish`` needs) and puts it
    back at exit.
    """

    def __init__(self, client: aiomqtt.Client, size: int, settled: Settled) -> None:
        """``settled`` is called once per message, on the event loop."""
        self._paho = client._client  # noqa: SLF001  # aiomqtt exposes no lower publish
        self._space = anyio.Semaphore(size)
        self._pending: dict[int, tuple[int, Publish]] = {}
        self._settled = settled
        self._previous: Any = None
        self._idle = anyio.Event()
        self._idle.set()

    def __enter__(self) -> Self:
        """Hook paho's PUBACK callback."""
        self._previous = self._paho.on_publish
        self._paho.on_publish = self._on_publish
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Give paho its callback back (messages still pending are re-sent by the caller)."""
        self._paho.on_publish = self._previous

    async def send(self, seq: int, message: Publish) -> None:
        """Hand ``message`` to paho once the window has room.

        Raises:
            aiomqtt.MqttCodeError: paho refused it (the connection is gone).
        """
        await self._space.acquire()
        info = self._paho.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._space.release()
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if message.qos == 0 or info.is_published():
            self._space.release()
            self._settled(seq, message)
            return
        self._pending[info.mid] = (seq, message)
        self._idle = anyio.Event()

    async def drained(self) -> None:
        """Return once every message sent so far has its PUBACK."""
        await self._idle.wait()

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        if self._previous is not None:
            self._previous(client, userdata, mid, *rest)  # aiomqtt's own publishes
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        self._space.release()
        self._settled(*entry)
        if not self._pending:
            self._idle.set()
