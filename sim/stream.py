"""The ``/stream`` websocket: Alpaca's trade_updates stream.

Protocol (JSON, every server message in a **binary** frame, as paper Alpaca does):

* client ``{"action":"authenticate","data":{"key_id":K,"secret_key":S}}`` ->
  ``{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}``
  or ``"status":"unauthorized"``.
* client ``{"action":"listen","data":{"streams":["trade_updates"]}}`` ->
  ``{"stream":"listening","data":{"streams":["trade_updates"]}}`` (unknown stream
  names are left out; before authentication the answer is
  ``{"stream":"authorization","data":{"status":"unauthorized","action":"listen"}}``).
* then ``{"stream":"trade_updates","data":{"event":...,"order":{...},...}}`` per event.

One connection per key: when a key that already has an authenticated connection
authenticates on a second one, that second connection gets
``{"stream":"authorization","data":{"status":"unauthorized","action":"authenticate",
"code":429,"message":"connection limit exceeded"}}`` and is closed (1008); the
first one is unaffected. alpaca-py treats this as a failed authentication and
reconnects with backoff.

A connection that cannot keep up (``stream_queue_size`` events queued) is
closed with 1011 rather than buffering without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from sim.faults import FaultPlan
    from sim.orders import TradeEvent

log = structlog.get_logger(__name__)

KNOWN_STREAMS = frozenset({"trade_updates"})


@dataclass(eq=False, slots=True)
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    outbox: MemoryObjectSendStream[bytes]
    key_id: str | None = None
    streams: frozenset[str] = field(default_factory=frozenset)


class StreamHub:
    """Every open trade stream connection and the fan-out of trade events.

    Args:
        authorize: Whether a key pair is accepted.
        faults: The venue's fault plan (mute).
        queue_size: Messages buffered per connection.
    """

    def __init__(
        self, authorize: Callable[[str, str], bool], faults: FaultPlan, queue_size: int
    ) -> None:
        """Start with no connections."""
        self._authorize = authorize
        self._faults = faults
        self._queue_size = queue_size
        self._connections: set[_Connection] = set()
        self._by_key: dict[str, _Connection] = {}
        self._changed: anyio.Event | None = None
        self.sessions = 0

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for_listener(self, key_id: str, *, min_sessions: int = 0) -> None:
        """Return once ``key_id`` listens to trade_updates.

        Args:
            key_id: The key.
            min_sessions: Also wait until :attr:`sessions` (successful
                authentications so far, all keys) reaches this, e.g. to wait for a
                reconnect after a drop.
        """
        while key_id not in self.listening_keys() or self.sessions < min_sessions:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    @property
    def connection_count(self) -> int:
        """Open websocket connections (authenticated or not)."""
        return len(self._connections)

    def listening_keys(self) -> list[str]:
        """Keys with an authenticated connection listening to trade_updates."""
        return sorted(key for key, conn in self._by_key.items() if "trade_updates" in conn.streams)

    def _send(self, conn: _Connection, message: dict[str, Any]) -> None:
        if self._faults.stream_mute:
            return
        try:
            conn.outbox.send_nowait(msgspec.json.encode(message))
        except anyio.WouldBlock:
            log.warning("sim.stream.slow_consumer", key_id=conn.key_id)
            conn.outbox.close()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    def publish(self, event: TradeEvent) -> None:
        """Send ``event`` to every connection listening to trade_updates."""
        message = {"stream": "trade_updates", "data": event.to_json()}
        for conn in list(self._by_key.values()):
            if "trade_updates" in conn.streams:
                self._send(conn, message)

    def drop_all(self) -> int:
        """Cut every connection abruptly (no close frame), as a network failure would.

        Returns:
            How many connections were cut.
        """
        dropped = 0
        for conn in list(self._connections):
            transport = conn.request.transport
            if transport is not None and not transport.is_closing():
                transport.abort()
                dropped += 1
        if dropped:
            log.info("sim.stream.dropped", connections=dropped)
        return dropped

    async def close_all(self) -> None:
        """Close every connection cleanly (venue shutdown)."""
        for conn in list(self._connections):
            with anyio.move_on_after(1):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"venue shutting down")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one websocket connection until either side closes it."""
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        outbox, inbox = anyio.create_memory_object_stream[bytes](self._queue_size)
        conn = _Connection(ws=ws, request=request, outbox=outbox)
        self._connections.add(conn)
        log.info("sim.stream.connected", remote=request.remote)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, conn, inbox)
                await self._read(conn)
                tg.cancel_scope.cancel()
        finally:
            self._connections.discard(conn)
            if conn.key_id is not None and self._by_key.get(conn.key_id) is conn:
                del self._by_key[conn.key_id]
            outbox.close()
            self._notify()
            log.info("sim.stream.disconnected", key_id=conn.key_id)
        return ws

    async def _write(self, conn: _Connection, inbox: MemoryObjectReceiveStream[bytes]) -> None:
        async with inbox:
            async for payload in inbox:
                try:
                    await conn.ws.send_bytes(payload)
                except ConnectionError:
                    return
        # The outbox was closed: slow consumer (or the connection is ending anyway).
        if not conn.ws.closed:
            await conn.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"slow consumer")

    async def _read(self, conn: _Connection) -> None:
        async for msg in conn.ws:
            if msg.type == WSMsgType.PING:
                if not self._faults.stream_mute:
                    await conn.ws.pong(msg.data)
                continue
            if msg.type not in {WSMsgType.TEXT, WSMsgType.BINARY}:
                continue
            try:
                request = msgspec.json.decode(msg.data)
            except msgspec.DecodeError:
                self._send(conn, {"stream": "error", "data": {"error_message": "invalid JSON"}})
                continue
            if not await self._on_message(conn, request):
                return

    async def _on_message(self, conn: _Connection, request: Any) -> bool:
        action = request.get("action") if isinstance(request, dict) else None
        data = request.get("data") if isinstance(request, dict) else None
        data = data if isinstance(data, dict) else {}
        if action == "authenticate":
            return await self._authenticate(conn, data)
        if action == "listen":
            if conn.key_id is None:
                self._send(
                    conn,
                    {
                        "stream": "authorization",
                        "data": {"status": "unauthorized", "action": "listen"},
                    },
                )
                return True
            raw = data.get("streams")
            names = raw if isinstance(raw, list) else []
            conn.streams = frozenset(n for n in names if isinstance(n, str) and n in KNOWN_STREAMS)
            self._notify()
            self._send(conn, {"stream": "listening", "data": {"streams": sorted(conn.streams)}})
            return True
        self._send(
            conn, {"stream": "error", "data": {"error_message": f"unknown action: {action!r}"}}
        )
        return True

    async def _authenticate(self, conn: _Connection, data: dict[str, Any]) -> bool:
        key_id, secret = data.get("key_id"), data.get("secret_key")
        if not (
            isinstance(key_id, str) and isinstance(secret, str) and self._authorize(key_id, secret)
        ):
            self._send(
                conn,
                {
                    "stream": "authorization",
                    "data": {"status": "unauthorized", "action": "authenticate"},
                },
            )
            return True
        holder = self._by_key.get(key_id)
        if holder is not None and holder is not conn:
            log.warning("sim.stream.connection_limit", key_id=key_id)
            refusal = {
                "stream": "authorization",
                "data": {
                    "status": "unauthorized",
                    "action": "authenticate",
                    "code": 429,
                    "message": "connection limit exceeded",
                },
            }
            if not self._faults.stream_mute:
                await conn.ws.send_bytes(msgspec.json.encode(refusal))
            await conn.ws.close(
                code=WSCloseCode.POLICY_VIOLATION, message=b"connection limit exceeded"
            )
            return False
        conn.key_id = key_id
        self._by_key[key_id] = conn
        self.sessions += 1
        self._send(
            conn,
            {"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}},
        )
        return True
