"""``make bench``: latency ratios against a baseline measured in the same run.

1. MQTT floor: a bare aiomqtt echo (decode JSON, publish back) in its own process.
2. tradeguard: intent -> decision event through the daemon in its own process.
Both over the same loopback mosquitto with TCP_NODELAY on both sides.
Later stages add: intent -> order at the venue vs a direct alpaca-py submit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec

from daemon.embedded_broker import EmbeddedMosquitto
from daemon.mqtt_session import MqttEndpoint, MqttLink

ROUNDS = 300
WARMUP = 30


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    link: MqttLink, send: Callable[[int], Awaitable[None]], reply_topic: str, rounds: int
) -> list[float]:
    """Round trips in milliseconds: send i, wait for the reply on ``reply_topic``."""
    samples: list[float] = []
    messages = link.messages()
    for i in range(rounds + WARMUP):
        started = time.perf_counter()
        await send(i)
        while True:
            message = await anext(messages)
            if message.topic == reply_topic:
                break
        if i >= WARMUP:
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, samples: list[float], base: list[float] | None) -> str:
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    if base is None:
        return f"| {name:<34} | {p50:8.3f} | {p99:8.3f} | {'1.00':>8} | {'1.00':>8} |"
    b50, b99 = statistics.median(base), percentile(base, 0.99)
    return f"| {name:<34} | {p50:8.3f} | {p99:8.3f} | {p50 / b50:8.2f} | {p99 / b99:8.2f} |"


async def main(rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    port = 18000 + os.getpid() % 2000
    broker = EmbeddedMosquitto(state_dir=workdir, port=port)
    async with anyio.create_task_group() as tg:
        await tg.start(broker.run)
        endpoint = MqttEndpoint(host="127.0.0.1", port=port, client_id="bench")
        echo = subprocess.Popen([sys.executable, "-m", "bench.echo", str(port)])
        config = workdir / "bench.toml"
        config.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_prefix = "bench"\n'
            f'[state]\npath = "{workdir}/state.db"\n[log]\nlevel = "warning"\n'
            "[strategies.b1]\nallocation = 0.5\n[risk]\nmax_intents_per_second = 100000.0\n"
        )
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "tradeguard"), "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert daemon.stdout is not None
        await anyio.to_thread.run_sync(daemon.stdout.readline)
        try:
            async with MqttLink(endpoint) as link:
                await link.subscribe("bench/echo/out", "bench/v1/strategy/b1/event")
                await link.publish("bench/echo/in", b'{"ping":0}')  # wait for the echo to be up
                async for message in link.messages():
                    if message.topic == "bench/echo/out":
                        break

                async def echo_send(i: int) -> None:
                    await link.publish("bench/echo/in", msgspec.json.encode({"i": i}))

                async def intent_send(i: int) -> None:
                    body = {
                        "type": "order",
                        "intent_id": f"bench-{time.time_ns()}-{i}",
                        "symbol": "AAPL",
                        "side": "buy",
                        "qty": 1,
                    }
                    await link.publish("bench/v1/strategy/b1/intent", msgspec.json.encode(body))

                floor = await measure(link, echo_send, "bench/echo/out", rounds)
                decision = await measure(link, intent_send, "bench/v1/strategy/b1/event", rounds)
        finally:
            daemon.terminate()
            echo.terminate()
            daemon.wait(10)
            echo.wait(10)
        print(f"round trips over loopback mosquitto, {rounds} samples each (ms)\n")
        print(f"| {'path':<34} | {'p50':>8} | {'p99':>8} | {'p50 x':>8} | {'p99 x':>8} |")
        print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
        print(row("MQTT echo floor (aiomqtt)", floor, None))
        print(row("intent -> decision (tradeguard)", decision, floor))
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    anyio.run(main, parser.parse_args().rounds, backend="asyncio")
