"""Throughput: decisions a second under open-loop load, and the highest rate held at p99 <= 25 ms.

For each rate (intents a second, all strategies together) a fresh venue and daemon
(empty journal, no open orders) take ``--seconds`` of open-loop load after a warm-up,
from ``--clients`` client processes over strategies t1-t4 (:mod:`bench.open_loop`).
Two kinds, searched separately for the highest rate whose p99 stays <= 25 ms (up the
rates until one misses; halving down if even the first misses; then ``--bisect``
rates between the highest held and the lowest missed):

- rejections: stale intents (``ts`` a minute old): every check runs, the answer is
  ``STALE_INTENT``, journaled;
- acceptances: resting limit buys under the market that pass every limit: journaled
  and durable before the ``accepted`` event, then posted to the venue.

Each intent's latency runs from its send to its decision event. An intent answered
otherwise (``OVERLOADED``, say) or not at all within the drain counts as infinitely
late. The goal compared against (reported, not asserted): >= 2,000 decisions/s at
p99 <= 25 ms.

    python -m bench.throughput --seconds 10 --rates 250,500,1000,2000,3000
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from bench.open_loop import LoadPlan, Step, run_clients
from bench.rig import UNLIMITED_PER_MIN, lifted_daemon, own_broker

RATES = (250, 500, 1000, 2000, 3000)
SECONDS = 10.0
CLIENTS = 2
P99_GOAL_MS = 25.0
RATE_GOAL = 2000
STRATEGIES = ("t1", "t2", "t3", "t4")
PREFIX = "tp"
CASH = 1_000_000_000
"""Room for every resting order of the fastest step under the exposure limits."""
TABLES = (
    # Every check stays on; only the intent rate limit is lifted (and, below, the
    # broker's and the venue's request limits).
    "[risk]\nmax_intents_per_second = 100000.0\n"
    + "".join(f"[strategies.{sid}]\nallocation = 0.2\n" for sid in STRATEGIES)
)
LIMITS_LIFTED = (
    "limits lifted for this figure only: risk.max_intents_per_second 100,000/s per "
    f"strategy, broker.rate_limit_per_min and the venue's limit {UNLIMITED_PER_MIN:,}/min"
)
KINDS = {"stale": "rejection (STALE_INTENT)", "rest": "acceptance (resting buy)"}


def held(step: Step) -> bool:
    """Whether a step met the latency goal (every intent answered as expected in it)."""
    return step.latency(0.99) <= P99_GOAL_MS


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What a search tries: rates (intents/s, ascending), seconds and clients per rate."""

    rates: tuple[int, ...] = RATES
    seconds: float = SECONDS
    clients: int = CLIENTS
    bisect: int = 1
    retries: int = 1


class RateSearch:
    """One kind's search; each rate tried on a fresh daemon, its journal under ``workdir``."""

    def __init__(self, mqtt_port: int, kind: str, settings: Settings, workdir: Path) -> None:
        self.mqtt_port = mqtt_port
        self.kind = kind
        self.settings = settings
        self.workdir = workdir
        self.steps: dict[int, Step] = {}
        self.runs: dict[int, int] = {}
        """How many runs each step is the best of."""

    async def run(self, rate: int) -> bool:
        """Load fresh daemons at ``rate``, up to ``1 + retries`` times until one holds the goal.

        On a shared machine one stall of the whole box (a 100 ms pause is 1 % of 10 s)
        is enough to miss a p99: a rate counts as missed only once every run missed,
        and the step kept is the run with the lowest p99.
        """
        for attempt in range(1 + self.settings.retries):
            step = await self.load(rate, attempt)
            kept = self.steps.get(rate)
            if kept is None or step.latency(0.99) < kept.latency(0.99):
                self.steps[rate] = step
            self.runs[rate] = attempt + 1
            if held(step):
                return True
        return False

    async def load(self, rate: int, attempt: int) -> Step:
        """One run at ``rate`` on a fresh venue and daemon."""
        prefix = f"{PREFIX}-{self.kind}-{rate}-{attempt}"
        async with lifted_daemon(
            Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir)),
            mqtt_port=self.mqtt_port,
            venue_port=self.mqtt_port + 1000,
            prefix=prefix,
            tables=TABLES,
            cash=CASH,
        ):
            plan = LoadPlan(
                port=self.mqtt_port,
                prefix=prefix,
                strategies=STRATEGIES,
                kind=self.kind,
                rate=rate,
                seconds=self.settings.seconds,
                clients=self.settings.clients,
            )
            return await run_clients(plan)

    async def climb(self) -> list[Step]:
        """Up the rates until one misses the goal; if even the first misses, halving down to
        an eighth of it; then ``bisect`` times between the highest held and the lowest missed.
        """
        rates = self.settings.rates
        for rate in rates:
            if not await self.run(rate):
                break
        rate = rates[0]
        while not any(held(step) for step in self.steps.values()) and rate // 2 >= rates[0] // 8:
            rate //= 2
            await self.run(rate)
        for _ in range(self.settings.bisect):
            low = max((r for r, step in self.steps.items() if held(step)), default=None)
            high = min((r for r, step in self.steps.items() if not held(step)), default=None)
            if low is None or high is None or (middle := midpoint(low, high)) in {low, high}:
                break
            await self.run(middle)
        return [
            msgspec.structs.replace(self.steps[rate], runs=self.runs[rate])
            for rate in sorted(self.steps)
        ]


async def search(mqtt_port: int, kind: str, settings: Settings) -> list[Step]:
    """The steps of one kind's search, ascending by rate (see :meth:`RateSearch.climb`)."""
    with tempfile.TemporaryDirectory(prefix="tg-throughput-") as workdir:
        return await RateSearch(mqtt_port, kind, settings, Path(workdir)).climb()


def midpoint(low: int, high: int) -> int:
    """A round rate half-way between ``low`` and ``high`` (tens below 500, else hundreds)."""
    middle = (low + high) / 2
    return int(round(middle, -1 if middle < 500 else -2))


def ms(value: float) -> str:
    return f"{value:8.2f}" if math.isfinite(value) else f"{'inf':>8}"


def step_row(kind: str, step: Step) -> str:
    others = ", ".join(f"{n} {label}" for label, n in sorted(step.others.items()))
    if step.unanswered:
        others = ", ".join(filter(None, [others, f"{step.unanswered} unanswered"]))
    return (
        f"| {KINDS[kind]:<26} | {step.rate:6.0f} | {step.runs:4d} | {step.sent_per_s:7.0f} | "
        f"{step.decided_per_s:9.0f} | {ms(step.latency(0.5))} | {ms(step.latency(0.99))} | "
        f"{ms(max(step.latencies_ms, default=math.inf))} | {step.late_max_ms:7.1f} | "
        f"{others or '-'} |"
    )


def best(steps: list[Step]) -> str:
    passed = [step for step in steps if held(step)]
    if not passed:
        return "none of the rates tried"
    top = max(passed, key=lambda step: step.rate)
    return f"{top.rate:.0f}/s ({top.decided_per_s:.0f} decisions/s, p99 {top.latency(0.99):.2f} ms)"


def report(results: dict[str, list[Step]], settings: Settings) -> str:
    """The table of every step, and the highest rate held for each kind."""
    lines = [
        (
            f"open-loop throughput: {settings.seconds:g} s per rate after 1 s of warm-up, a "
            f"fresh daemon per rate, {settings.clients} client processes over strategies "
            f"{', '.join(STRATEGIES)}"
        ),
        LIMITS_LIFTED,
        "",
        (
            f"| {'decision':<26} | {'rate/s':>6} | runs | {'sent/s':>7} | {'decided/s':>9} | "
            f"{'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} | {'late ms':>7} | other answers |"
        ),
        (
            f"|{'-' * 28}|{'-' * 8}|{'-' * 6}|{'-' * 9}|{'-' * 11}|{'-' * 10}|{'-' * 10}|"
            f"{'-' * 10}|"
            f"{'-' * 9}|{'-' * 15}|"
        ),
    ]
    lines += [step_row(kind, step) for kind, steps in results.items() for step in steps]
    lines.append(
        f"\n(late ms: how far behind its schedule a client sent at worst; other answers and "
        f"unanswered intents count as infinitely late; the search climbs the rates until "
        f"one's p99 passes {P99_GOAL_MS:g} ms, halves down if the first does, then bisects "
        f"{settings.bisect} time(s); a rate that misses is run again, up to "
        f"{settings.retries} time(s), and the run with the lowest p99 is shown)"
    )
    lines += [
        f"highest rate at p99 <= {P99_GOAL_MS:g} ms, {KINDS[kind]}: {best(steps)}"
        for kind, steps in results.items()
    ]
    lines.append(
        f"goal to compare against: >= {RATE_GOAL:,} decisions/s at p99 <= {P99_GOAL_MS:g} ms"
    )
    return "\n".join(lines)


async def measure(mqtt_port: int, settings: Settings) -> dict[str, list[Step]]:
    """Both searches against a broker on ``mqtt_port`` (venues on ``mqtt_port + 1000``)."""
    return {kind: await search(mqtt_port, kind, settings) for kind in KINDS}


async def main(settings: Settings) -> str:
    """A loopback mosquitto of its own, both searches; the report."""
    async with own_broker("throughput", 24000) as port:
        results = await measure(port, settings)
    return report(results, settings)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=SECONDS,
        help="counted load per rate (default: %(default)s)",
    )
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",")],
        default=list(RATES),
        help="intents a second to try, ascending, comma-separated (default: 250,...,3000)",
    )
    parser.add_argument(
        "--clients", type=int, default=CLIENTS, help="load client processes (default: %(default)s)"
    )
    parser.add_argument(
        "--bisect",
        type=int,
        default=1,
        help="rates tried between the highest held and the lowest missed (default: 1)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="runs again at a rate that missed before calling it missed (default: 1)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    settings = Settings(
        rates=tuple(args.rates),
        seconds=args.seconds,
        clients=args.clients,
        bisect=args.bisect,
        retries=args.retries,
    )
    print(anyio.run(main, settings, backend="asyncio"))
