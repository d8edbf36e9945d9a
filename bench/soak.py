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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec

from daemon.embedded_broker import EmbeddedMosquitto
from daemon.mqtt_session import MqttEndpoint, MqttLink

BIN = Path(sys.executable).parent
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


async def main(minutes: float, rate: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tg-soak-"))
    port = 21000 + os.getpid() % 2000
    venue_port = port + 2500
    broker = EmbeddedMosquitto(state_dir=workdir, port=port)
    async with anyio.create_task_group() as tg:
        await tg.start(broker.run)
        venue = subprocess.Popen(
            [str(BIN / "tradeguard"), "sim", "--port", str(venue_port), "--cash", "10000000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert venue.stdout is not None
        await anyio.to_thread.run_sync(venue.stdout.readline)
        base_url = f"http://127.0.0.1:{venue_port}"
        (workdir / "key").write_text("PKSOAK\n")
        config = workdir / "soak.toml"
        config.write_text(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ntopic_prefix = "soak"\n'
            f'[state]\npath = "{workdir}/state.db"\n[log]\nlevel = "warning"\n'
            f'[broker]\nkind = "alpaca"\nurl = "{base_url}"\n'
            f'stream_url = "ws://127.0.0.1:{venue_port}/stream"\ndata_url = "{base_url}"\n'
            f'key_id_file = "{workdir}/key"\nsecret_key_file = "{workdir}/key"\n'
            # Every check stays on; the soak sends faster than a strategy may by default.
            "[risk]\nmax_intents_per_second = 100000.0\nduplicate_window_s = 0.0\n"
            "min_price = 0.0\nmax_price_deviation = 1.0\n"
            "[strategies.s1]\nallocation = 1.0\n"
        )
        daemon = subprocess.Popen(
            [str(BIN / "tradeguard"), "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert daemon.stdout is not None
        await anyio.to_thread.run_sync(daemon.stdout.readline)
        samples: list[tuple[float, float]] = []
        answers = 0
        try:
            endpoint = MqttEndpoint(host="127.0.0.1", port=port, client_id="soak")
            async with MqttLink(endpoint) as link, anyio.create_task_group() as counting:
                await link.subscribe("soak/v1/strategy/s1/event")

                async def count() -> None:
                    nonlocal answers
                    async for _ in link.messages():
                        answers += 1

                counting.start_soon(count)
                rng = random.Random(7)
                started = time.monotonic()
                next_sample = started
                n = 0
                while (now := time.monotonic()) - started < minutes * 60:
                    if now >= next_sample:
                        samples.append((now - started, rss_mb(daemon.pid)))
                        print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1]:7.1f} MB", flush=True)
                        next_sample += SAMPLE_S
                    await link.publish("soak/v1/strategy/s1/intent", intent(n, rng))
                    n += 1
                    await anyio.sleep(max(0.0, started + n / rate - time.monotonic()))
                samples.append((time.monotonic() - started, rss_mb(daemon.pid)))
                counting.cancel_scope.cancel()
        finally:
            for process in (daemon, venue):
                process.terminate()
                process.wait(10)
        after_first_minute = [mb for t, mb in samples if t >= 60]
        growth = after_first_minute[-1] - after_first_minute[0] if after_first_minute else 0.0
        print(
            f"\nsoak: {n} intents in {minutes:g} min ({n / (minutes * 60):.0f}/s), "
            f"{answers} events; RSS {samples[0][1]:.1f} MB at start, "
            f"{after_first_minute[0] if after_first_minute else float('nan'):.1f} MB at 1 min, "
            f"{samples[-1][1]:.1f} MB at the end: growth after the first minute {growth:+.1f} MB"
        )
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    anyio.run(main, args.minutes, args.rate, backend="asyncio")
