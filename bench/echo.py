"""The MQTT floor: decode a JSON payload and publish it back (run as its own process)."""

from __future__ import annotations

import sys

import anyio
import msgspec

from daemon.mqtt_session import MqttEndpoint, MqttLink


async def serve(port: int) -> None:
    async with MqttLink(MqttEndpoint(host="127.0.0.1", port=port, client_id="echo")) as link:
        await link.subscribe("bench/echo/in")
        async for message in link.messages():
            body = msgspec.json.decode(message.payload)
            await link.publish("bench/echo/out", msgspec.json.encode(body))


if __name__ == "__main__":
    anyio.run(serve, int(sys.argv[1]), backend="asyncio")
