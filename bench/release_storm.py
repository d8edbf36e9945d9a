"""Release storm: intent latency while forged releases arrive as fast as the daemon takes them.

One daemon (limits lifted for the steady stream: ``max_intents_per_second`` and the
broker's and venue's request limits) takes a steady open-loop stream of resting buys
from strategy s1 (``--rate``, 100/s by default, one client process, each intent's
latency to its ``accepted`` event; :mod:`bench.open_loop`) three times for ``--seconds``:
quiet, during a storm, quiet again. The storm comes from a second client (this
process): forged releases with a wrong code, round robin: ``disengage`` of the global
switch on ``P/v1/kill/command``, ``reset_circuit`` and ``resume`` of s1 on
``P/v1/admin/mallory/command``. It keeps ``--window`` of them unanswered, so it sends
as fast as the daemon refuses and audits them (below its 256-command queue for code
checks). After five failures every release is locked out for 60 s: the first five
cost a scrypt check each, the rest are refused at once; every one is journaled and
audited, which is the load.

The goal compared against (reported, not asserted): no intent waits more than 5 ms
because of a release attempt, read as the storm's p99 and max against the quiet runs'.

    python -m bench.release_storm --seconds 10 --rate 100
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import msgspec

from actors.admin_code import hash_code
from bench.open_loop import LoadPlan, Step, run_clients
from bench.rig import lifted_daemon, own_broker
from daemon.mqtt_session import MqttEndpoint, MqttLink

PREFIX = "storm"
RATE = 100.0
SECONDS = 10.0
WINDOW = 200
"""Forged releases sent but not yet audited, at most (the daemon queues 256 for checks)."""
GOAL_MS = 5.0
TABLES = (
    # Every check stays on; the steady stream is faster than a strategy may by default.
    "[risk]\nmax_intents_per_second = 100000.0\n"
    f'[kill]\nadmin_code_hash = "{hash_code("storm-admin-code-never-sent")}"\n'
    "[strategies.s1]\nallocation = 0.5\n"
)
FORGED = (
    ("kill/command", {"type": "disengage", "scope": "global", "code": "000000"}),
    ("admin/mallory/command", {"type": "reset_circuit", "code": "000000"}),
    ("admin/mallory/command", {"type": "resume", "strategy_id": "s1", "code": "000000"}),
)


class _Audit(msgspec.Struct):
    ok: bool
    source: str | None = None


class Storm:
    """Forged releases, ``window`` unanswered at most, until cancelled; counts the refusals."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.sent = 0
        self.refused = 0
        self.granted = 0
        self.started = 0.0
        self.ended = 0.0
        self.begin_at = 0.0
        self._begin = anyio.Event()
        self._answered = anyio.Condition()

    def begin(self, epoch: float) -> None:
        """Start the storm at ``epoch`` (seconds)."""
        self.begin_at = epoch
        self._begin.set()

    async def run(self, link: MqttLink) -> None:
        """From :meth:`begin`'s time, send forged releases and count their audit records.

        Runs until cancelled.
        """
        commands = [
            (f"{PREFIX}/v1/{leaf}", msgspec.json.encode({**body, "source": "storm"}))
            for leaf, body in FORGED
        ]
        await link.subscribe(f"{PREFIX}/v1/audit")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._count, link)
            await self._begin.wait()
            await anyio.sleep(max(0.0, self.begin_at - time.time()))
            self.started = time.perf_counter()
            try:
                while True:
                    async with self._answered:
                        while self.sent - self.refused - self.granted >= self.window:
                            await self._answered.wait()
                    topic, payload = commands[self.sent % len(commands)]
                    await link.publish(topic, payload)
                    self.sent += 1
            finally:
                self.ended = time.perf_counter()

    async def _count(self, link: MqttLink) -> None:
        decode = msgspec.json.Decoder(_Audit).decode
        async for message in link.messages():
            record = decode(message.payload)
            if record.source != "storm":
                continue
            if record.ok:
                self.granted += 1  # a forged code that worked: the report says so
            else:
                self.refused += 1
            async with self._answered:
                self._answered.notify_all()

    def per_s(self) -> float:
        span = self.ended - self.started
        return self.refused / span if span > 0 else 0.0


async def stream(
    port: int, seconds: float, rate: float, started: Callable[[float], None] | None = None
) -> Step:
    """The steady stream of resting buys of s1, as one open-loop client.

    ``started`` is told when its counted intents start (epoch seconds).
    """
    plan = LoadPlan(
        port=port,
        prefix=PREFIX,
        strategies=("s1",),
        kind="rest",
        rate=rate,
        seconds=seconds,
        clients=1,
    )
    if started is None:
        return await run_clients(plan)
    return await run_clients(plan, lambda epoch: started(epoch + plan.warmup_s))


async def stream_under_storm(port: int, seconds: float, rate: float) -> tuple[Step, Storm]:
    """The stream while a storm runs from its first counted intent to its last answer.

    The first five forged codes (before the lockout) are scrypt checks: they fall in
    the counted window too.
    """
    storm = Storm(WINDOW)
    endpoint = MqttEndpoint(host="127.0.0.1", port=port, client_id="storm")
    async with MqttLink(endpoint) as link, anyio.create_task_group() as tg:
        tg.start_soon(storm.run, link)
        step = await stream(port, seconds, rate, storm.begin)
        tg.cancel_scope.cancel()
    return step, storm


class Phases(msgspec.Struct, frozen=True):
    """The stream quiet, under the storm, and quiet again."""

    before: Step
    storm: Step
    after: Step


def row(name: str, step: Step, refused_per_s: float | None) -> str:
    worst = max(step.latencies_ms, default=math.inf)
    storm = f"{refused_per_s:9.0f}" if refused_per_s is not None else f"{'-':>9}"
    return (
        f"| {name:<22} | {len(step.latencies_ms):8d} | {step.sent - len(step.latencies_ms):6d} | "
        f"{step.latency(0.5):8.2f} | {step.latency(0.99):8.2f} | {worst:8.2f} | {storm} |"
    )


def report(phases: Phases, storm: Storm, seconds: float, rate: float) -> str:
    """The three phases, and the storm's cost against the quiet runs."""
    quiet = [*phases.before.latencies_ms, *phases.after.latencies_ms]
    quiet_step = msgspec.structs.replace(
        phases.before, latencies_ms=quiet, sent=phases.before.sent + phases.after.sent
    )
    cost = {
        "p50": phases.storm.latency(0.5) - quiet_step.latency(0.5),
        "p99": phases.storm.latency(0.99) - quiet_step.latency(0.99),
        "max": max(phases.storm.latencies_ms, default=math.inf) - max(quiet, default=math.inf),
    }
    return "\n".join(
        [
            (
                f"release storm: s1 sends resting buys at {rate:g}/s (open loop) for {seconds:g} s "
                f"quiet, {seconds:g} s under a storm of forged releases, {seconds:g} s quiet"
            ),
            (
                "(limits lifted for the stream: risk.max_intents_per_second, "
                "broker.rate_limit_per_min and the venue's limit)"
            ),
            "",
            (
                f"| {'phase':<22} | accepted | others | {'p50 ms':>8} | {'p99 ms':>8} | "
                f"{'max ms':>8} | refused/s |"
            ),
            f"|{'-' * 24}|{'-' * 10}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 11}|",
            row("quiet, before", phases.before, None),
            row("forged-release storm", phases.storm, storm.per_s()),
            row("quiet, after", phases.after, None),
            "",
            "(others: intents answered otherwise or not at all; they count as infinitely late)",
            (
                f"storm: {storm.sent} forged releases sent, {storm.refused} refused and audited "
                f"({storm.per_s():.0f}/s, at most {WINDOW} unanswered), {storm.granted} granted"
            ),
            (
                "storm against both quiet runs together: "
                + ", ".join(f"{name} {ms:+.2f} ms" for name, ms in cost.items())
                + " "
                f"(goal to compare against: no intent waits more than {GOAL_MS:g} ms longer "
                f"because of a release attempt)"
            ),
        ]
    )


async def measure(port: int, venue_port: int, seconds: float, rate: float) -> str:
    """A venue and a daemon on ``port``'s broker; the three phases; the report."""
    with tempfile.TemporaryDirectory(prefix="tg-storm-") as workdir:
        async with lifted_daemon(
            Path(workdir), mqtt_port=port, venue_port=venue_port, prefix=PREFIX, tables=TABLES
        ):
            before = await stream(port, seconds, rate)
            during, storm = await stream_under_storm(port, seconds, rate)
            after = await stream(port, seconds, rate)
    return report(Phases(before, during, after), storm, seconds, rate)


async def main(seconds: float, rate: float) -> str:
    """A loopback mosquitto of its own, the measurement; the report."""
    async with own_broker("storm", 26000) as port:
        return await measure(port, port + 1000, seconds, rate)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=SECONDS, help="each phase's counted load (default: 10)"
    )
    parser.add_argument(
        "--rate", type=float, default=RATE, help="the stream's intents a second (default: 100)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    print(anyio.run(main, args.seconds, args.rate, backend="asyncio"))
