"""Engage under load: kill-switch latency while intents arrive at a sustained rate.

The goal compared against (reported, not asserted): engage to retained state p99
<= 5 ms idle and <= 20 ms during a flood at the highest sustained rate. ``make bench``
also floods at the clients' own top speed (three ``mosquitto_pub -l``), which is more
than the daemon sustains; this measures the goal as written, with enough engages for
a p99 (one every ~0.1 s: each release checks the admin code, scrypt in a thread).

One daemon (limits lifted for the stream: ``max_intents_per_second`` and the broker's
and venue's request limits) takes an open-loop stream of intents that every check
refuses (``stale``: :mod:`bench.open_loop`, two client processes) at ``--rate``,
1,500/s by default: the highest rate ``bench.throughput`` held at p99 <= 25 ms on this
machine. A third client (this process, its own MQTT connection) engages the global
switch, waits for the retained engaged state, releases it with the admin code and
waits again, first with no load (``--idle`` engages) and then for as long as the
stream's counted load lasts.

    python -m bench.engage_load --seconds 10 --rate 1500
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import msgspec

from actors.admin_code import hash_code
from bench.open_loop import LoadPlan, Step, run_clients
from bench.rig import lifted_daemon, own_broker
from daemon.mqtt_session import MqttEndpoint, MqttLink, Received

PREFIX = "engage"
RATE = 1500.0
SECONDS = 10.0
IDLE = 40
CODE = "engage-bench-admin-code"
TABLES = (
    # Every check stays on; the stream is faster than a strategy may by default.
    "[risk]\nmax_intents_per_second = 100000.0\n"
    f'[kill]\nadmin_code_hash = "{hash_code(CODE)}"\n'
    "[strategies.s1]\nallocation = 0.5\n"
    "[strategies.s2]\nallocation = 0.5\n"
)


async def engage_once(
    link: MqttLink, messages: AsyncIterator[Received], prefix: str, code: str
) -> float:
    """Engage, wait for the retained engaged state, release; the engage's latency in ms."""
    command, state = f"{prefix}/v1/kill/command", f"{prefix}/v1/kill/state"
    started = time.perf_counter()
    await link.publish(command, b'{"type":"engage","scope":"global","source":"bench"}')
    while True:
        message = await anext(messages)
        if message.topic == state and b'"global":{"engaged":true' in message.payload:
            break
    took = (time.perf_counter() - started) * 1000
    release = {"type": "disengage", "scope": "global", "code": code}
    await link.publish(command, msgspec.json.encode(release))
    while True:
        message = await anext(messages)
        if message.topic == state and b'"global":{"engaged":false' in message.payload:
            return took


class Engager:
    """Engages and releases, one after the other, from :meth:`begin`'s time until stopped."""

    def __init__(self, link: MqttLink, messages: AsyncIterator[Received]) -> None:
        self.link, self.messages = link, messages
        self.latencies_ms: list[float] = []
        self._begin = anyio.Event()
        self.begin_at = 0.0

    def begin(self, epoch: float) -> None:
        """Start engaging at ``epoch`` (seconds)."""
        self.begin_at = epoch
        self._begin.set()

    async def run(self, until: float) -> None:
        """Engage and release from :meth:`begin`'s time for ``until`` seconds."""
        await self._begin.wait()
        await anyio.sleep(max(0.0, self.begin_at - time.time()))
        end = self.begin_at + until
        while time.time() < end:
            self.latencies_ms.append(await engage_once(self.link, self.messages, PREFIX, CODE))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(name: str, samples: list[float]) -> str:
    p50 = statistics.median(samples) if samples else float("nan")
    return (
        f"| {name:<34} | {len(samples):7d} | {p50:8.2f} | {percentile(samples, 0.99):8.2f} | "
        f"{max(samples, default=float('nan')):8.2f} |"
    )


def report(idle: list[float], loaded: list[float], step: Step, seconds: float) -> str:
    """Engage latency idle and under the stream, and what the stream was."""
    others = sum(step.others.values())
    return "\n".join(
        [
            (
                f"engage under load: s1 and s2 send intents every check refuses at "
                f"{step.rate:g}/s (open loop) for {seconds:g} s; a third client engages "
                "and releases the global switch throughout"
            ),
            (
                "(limits lifted for the stream: risk.max_intents_per_second, "
                "broker.rate_limit_per_min and the venue's limit)"
            ),
            "",
            (
                f"| {'engage -> retained state':<34} | engages | {'p50 ms':>8} | "
                f"{'p99 ms':>8} | {'max ms':>8} |"
            ),
            f"|{'-' * 36}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 10}|",
            row("idle", idle),
            row(f"stream at {step.rate:g}/s", loaded),
            "",
            (
                f"stream: {step.sent} intents sent ({step.sent_per_s:.0f}/s), "
                f"{len(step.latencies_ms)} answered STALE_INTENT (p99 "
                f"{percentile(step.latencies_ms, 0.99):.2f} ms), {others} answered otherwise "
                "(KILL_SWITCH while engaged) or not at all"
            ),
            "(goal to compare against: p99 <= 5 ms idle, <= 20 ms at the highest sustained rate)",
        ]
    )


async def measure(port: int, venue_port: int, seconds: float, rate: float) -> str:
    """A venue and a daemon on ``port``'s broker; idle engages, then under the stream."""
    endpoint = MqttEndpoint(host="127.0.0.1", port=port, client_id="engager")
    plan = LoadPlan(
        port=port, prefix=PREFIX, strategies=("s1", "s2"), kind="stale", rate=rate, seconds=seconds
    )
    with tempfile.TemporaryDirectory(prefix="tg-engage-") as workdir:
        async with (
            lifted_daemon(
                Path(workdir), mqtt_port=port, venue_port=venue_port, prefix=PREFIX, tables=TABLES
            ),
            MqttLink(endpoint) as link,
            anyio.create_task_group() as tg,
        ):
            await link.subscribe(f"{PREFIX}/v1/kill/state")
            messages = link.messages()
            idle = [await engage_once(link, messages, PREFIX, CODE) for _ in range(IDLE)]
            engager = Engager(link, messages)
            tg.start_soon(engager.run, seconds)
            step = await run_clients(plan, lambda at: engager.begin(at + plan.warmup_s))
    return report(idle, engager.latencies_ms, step, seconds)


async def main(seconds: float, rate: float) -> str:
    """A loopback mosquitto of its own, the measurement; the report."""
    async with own_broker("engage", 28000) as port:
        return await measure(port, port + 1000, seconds, rate)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=SECONDS, help="the stream's counted load (default: 10)"
    )
    parser.add_argument(
        "--rate", type=float, default=RATE, help="the stream's intents a second (default: 1500)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    print(anyio.run(main, args.seconds, args.rate, backend="asyncio"))
