"""``make soak``: the daemon's memory over a long steady load.

A daemon (its own process) against the paper venue (its own process, Alpaca's 200/min
rate limit), on a loopback mosquitto. One client sends a steady stream of intents,
mixed: market buys and sells (accepted while the broker queue allows, then
``BROKER_BUSY``; they fill, so open orders do not pile up), orders over
``max_notional`` (rejected) and re-sends of earlier intents (duplicates).
Every 10 s the daemon's RSS is read from ``/proc``. The result is the growth after the
first minute, which the issue bounds at 5 MB for 10 minutes at 200 intents/s.

    python -m bench.soak --minutes 10 --rate 200
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from pathlib import Path

import anyio
import msgspec

from bench.rig import daemon_config, local_url, start_daemon, start_venue, stop, write_daemon_config
from daemon.embedded_broker import EmbeddedMosquitto
from daemon.mqtt_session import MqttEndpoint, MqttLink

SAMPLE_S = 10.0


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def intent(n: int, rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1 and n > 100:  # a re-send of an earlier intent: answered from memory/journal
        return intent(rng.randrange(n - 100), random.Random(n))
    body: dict[str, object] = {
        "type": "order",
        "intent_id": f"soak-{n}",
        "symbol": rng.choice(["AAPL", "MSFT", "SPY", "NVDA"]),
        "side": "buy" if n % 2 else "sell",
        "qty": 1 if kind < 0.55 else 10**6,  # the second kind breaks max_notional
    }
    return msgspec.json.encode(body)


SOAK_TABLES = (
    # Every check stays on; the soak sends faster than a strategy may by default.
    "[risk]\nmax_intents_per_second = 100000.0\nduplicate_window_s = 0.0\n"
    "min_price = 0.0\nmax_price_deviation = 1.0\n"
    "[strategies.s1]\nallocation = 1.0\n"
)


class SoakRun:
    """What a soak saw: RSS samples (seconds in, MB), intents sent, events received."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.sent = 0
        self.answers = 0

    def sample(self, seconds: float, pid: int) -> None:
        self.samples.append((seconds, rss_mb(pid)))

    def report(self, minutes: float) -> str:
        samples, n = self.samples, self.sent
        after_first_minute = [mb for t, mb in samples if t >= 60]
        growth = after_first_minute[-1] - after_first_minute[0] if after_first_minute else 0.0
        return (
            f"\nsoak: {n} intents in {minutes:g} min ({n / (minutes * 60):.0f}/s), "
            f"{self.answers} events; RSS {samples[0][1]:.1f} MB at start, "
            f"{after_first_minute[0] if after_first_minute else float('nan'):.1f} MB at 1 min, "
            f"{samples[-1][1]:.1f} MB at the end: growth after the first minute {growth:+.1f} MB"
        )


async def steady_load(link: MqttLink, pid: int, minutes: float, rate: float, soak: SoakRun) -> None:
    """Send intents at ``rate`` for ``minutes``, counting answers and sampling RSS."""
    async with anyio.create_task_group() as counting:
        await link.subscribe("soak/v1/strategy/s1/event")

        async def count() -> None:
            async for _ in link.messages():
                soak.answers += 1

        counting.start_soon(count)
        rng = random.Random(7)
        started = time.monotonic()
        next_sample = started
        while (now := time.monotonic()) - started < minutes * 60:
            if now >= next_sample:
                soak.sample(now - started, pid)
                print(
                    f"{soak.samples[-1][0]:7.0f} s  RSS {soak.samples[-1][1]:7.1f} MB", flush=True
                )
                next_sample += SAMPLE_S
            await link.publish("soak/v1/strategy/s1/intent", intent(soak.sent, rng))
            soak.sent += 1
            await anyio.sleep(max(0.0, started + soak.sent / rate - time.monotonic()))
        soak.sample(time.monotonic() - started, pid)
        counting.cancel_scope.cancel()


async def main(minutes: float, rate: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tg-soak-"))
    port = 21000 + os.getpid() % 2000
    venue_port = port + 2500
    broker = EmbeddedMosquitto(state_dir=workdir, port=port)
    async with anyio.create_task_group() as tg:
        await tg.start(broker.run)
        venue = await start_venue(venue_port, quiet=True)
        config = daemon_config(
            workdir,
            mqtt_port=port,
            venue_url=local_url(venue_port),
            topic_prefix="soak",
            tables=SOAK_TABLES,
        )
        path = write_daemon_config(workdir, "soak", key_id="PKSOAK", config=config)
        daemon = await start_daemon(path, quiet=True)
        soak = SoakRun()
        try:
            endpoint = MqttEndpoint(host="127.0.0.1", port=port, client_id="soak")
            async with MqttLink(endpoint) as link:
                await steady_load(link, daemon.pid, minutes, rate, soak)
        finally:
            stop(daemon, venue)
        print(soak.report(minutes))
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    anyio.run(main, args.minutes, args.rate, backend="asyncio")
