"""Open-loop load: intents at a fixed rate, each one's latency to its decision event.

A client is its own process (``python -m bench.open_loop ...``): one MQTT link, one or
more strategies served round robin. It prints ``ready`` once subscribed, reads the start
time (epoch seconds) on stdin, then sends intent ``i`` at ``start + (i * clients + k) /
rate`` whether or not earlier ones were answered (open loop: a slow daemon meets the same
load, it does not slow the sender down). Each intent's latency runs from the moment it is
handed to the MQTT client to the moment its decision event arrives. Intents sent during
the warm-up are answered but not counted. At the end it prints one JSON line
(:class:`Outcome`).

Two kinds of intent:

- ``stale``: ``ts`` a minute old, so every check runs and the answer is ``STALE_INTENT``.
- ``rest``: a limit buy 2-5 % under the market (the bench venue's AAPL starts at 190)
  that passes every limit and rests at the venue; price and quantity cycle through
  2,000 combinations per strategy, so the duplicate check (2 s) has nothing to say up
  to 1,000 intents/s per strategy.

:func:`run_clients` starts the clients, starts them together and merges what they saw.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import anyio
import msgspec
from anyio.abc import TaskGroup

from daemon.mqtt_session import MqttEndpoint, MqttLink, Received

DRAIN_S = 3.0
"""How long a client waits, after its last send, for answers still on their way (an
intent answered later is far past any latency goal; it counts as unanswered)."""
REST_PRICES = 500
REST_QUANTITIES = 4


class LoadPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What every client of one run sends (each sends ``rate / clients`` a second).

    Attributes:
        port: the loopback mosquitto's port.
        prefix: the daemon's ``mqtt.topic_prefix``.
        strategies: the strategies the intents go to, spread over the clients.
        kind: ``stale`` (answered ``STALE_INTENT``) or ``rest`` (accepted).
        rate: intents a second, all clients together.
        seconds: how long the counted load lasts.
        warmup_s: load before it, at the same rate, not counted.
        clients: how many client processes share the load.
    """

    port: int
    prefix: str
    strategies: tuple[str, ...]
    kind: str
    rate: float
    seconds: float
    warmup_s: float = 1.0
    clients: int = 2


class Outcome(msgspec.Struct, kw_only=True):
    """What one client saw: latencies (ms) of the counted intents, epoch times."""

    sent: int = 0
    latencies_ms: list[float] = msgspec.field(default_factory=list)
    others: dict[str, int] = msgspec.field(default_factory=dict)
    first_send: float = math.inf
    last_send: float = 0.0
    last_answer: float = 0.0
    late_max_ms: float = 0.0


class _Code(msgspec.Struct):
    code: str


class _Answer(msgspec.Struct):
    """The part of a strategy event this client reads (order and fill events too)."""

    type: str
    intent_id: str | None = None
    reasons: list[_Code] = msgspec.field(default_factory=list)


def _codes(answer: _Answer) -> str:
    return "+".join(reason.code for reason in answer.reasons)


def intent(kind: str, intent_id: str, n: int) -> bytes:
    """The ``n``-th intent of a strategy, of ``kind``, under ``intent_id``."""
    price = round(181.0 + (n % REST_PRICES) * 0.01, 2)
    body = {
        "type": "order",
        "intent_id": intent_id,
        "symbol": "AAPL",
        "side": "buy",
        "qty": 1 + (n // REST_PRICES) % REST_QUANTITIES,
        "order_type": "limit",
        "limit_price": price,
        "stop_loss": round(price * 0.98, 2),
        "ts": time.time() - (60 if kind == "stale" else 0),
    }
    return msgspec.json.encode(body)


class Client:
    """One client process's sending and receiving, over one link."""

    def __init__(self, plan: LoadPlan, index: int) -> None:
        self.plan = plan
        self.index = index
        self.id_prefix = f"L{index}-{time.time_ns()}-"
        self.total = int((plan.warmup_s + plan.seconds) * plan.rate / plan.clients)
        self.counted_from = int(plan.warmup_s * plan.rate / plan.clients)
        self.strategies = plan.strategies[index :: plan.clients]
        self.sent_at: dict[int, float] = {}
        self.answered = 0
        self.all_answered = anyio.Event()
        self.outcome = Outcome()

    def topic(self, i: int, leaf: str) -> str:
        return f"{self.plan.prefix}/v1/strategy/{self.strategies[i % len(self.strategies)]}/{leaf}"

    async def send_all(self, link: MqttLink, start: float, tg: TaskGroup) -> None:
        """Send every intent at its time; never wait for an answer."""
        plan, out = self.plan, self.outcome
        start_perf = time.perf_counter() + (start - time.time())
        for i in range(self.total):
            due = start_perf + (i * plan.clients + self.index) / plan.rate
            if (wait := due - time.perf_counter()) > 0:
                await anyio.sleep(wait)
            body = intent(plan.kind, f"{self.id_prefix}{i}", i // len(self.strategies))
            now = time.perf_counter()
            self.sent_at[i] = now
            if i >= self.counted_from:
                out.late_max_ms = max(out.late_max_ms, (now - due) * 1000)
                out.first_send = min(out.first_send, time.time())
                out.sent += 1
            tg.start_soon(link.publish, self.topic(i, "intent"), body)
        self.outcome.last_send = time.time()

    def expected(self, answer: _Answer) -> bool:
        if self.plan.kind == "stale":
            return answer.type == "rejected" and _codes(answer) == "STALE_INTENT"
        return answer.type == "accepted"

    def on_message(self, message: Received, decode: Callable[[bytes], _Answer]) -> None:
        received = time.perf_counter()
        answer = decode(message.payload)
        if answer.type not in ("accepted", "rejected") or answer.intent_id is None:
            return
        if not answer.intent_id.startswith(self.id_prefix):
            return
        i = int(answer.intent_id.removeprefix(self.id_prefix))
        sent = self.sent_at.pop(i, None)
        if sent is None:
            return  # a second answer to the same intent: the first one counted
        if i >= self.counted_from:
            if self.expected(answer):
                self.outcome.latencies_ms.append((received - sent) * 1000)
                self.outcome.last_answer = time.time()
            else:
                label = f"{answer.type}:{_codes(answer)}".rstrip(":")
                self.outcome.others[label] = self.outcome.others.get(label, 0) + 1
        self.answered += 1
        if self.answered == self.total:
            self.all_answered.set()

    async def run(self, link: MqttLink, start: float) -> Outcome:
        """Send the whole plan from ``start``; collect answers until all came or the drain."""
        decode = msgspec.json.Decoder(_Answer).decode
        async with anyio.create_task_group() as tg:

            async def receive() -> None:
                async for message in link.messages():
                    self.on_message(message, decode)

            tg.start_soon(receive)
            async with anyio.create_task_group() as sends:
                await self.send_all(link, start, sends)
            with anyio.move_on_after(DRAIN_S):
                await self.all_answered.wait()
            tg.cancel_scope.cancel()
        return self.outcome


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One run of :func:`run_clients`: every client's counted intents together.

    Attributes:
        rate: the intents a second asked for.
        sent: counted intents sent.
        latencies_ms: latency of each expected answer.
        others: unexpected answers by type and reason codes (``rejected:OVERLOADED``).
        sent_per_s: counted intents over the span of their sending.
        decided_per_s: expected answers over the span from the first counted send to
            the last expected answer.
        late_max_ms: how far behind its schedule a client sent, at worst.
        runs: how many runs at this rate this one is the best of (set by the caller).
    """

    rate: float
    sent: int
    latencies_ms: list[float]
    others: dict[str, int]
    sent_per_s: float
    decided_per_s: float
    late_max_ms: float
    runs: int = 1

    @property
    def unanswered(self) -> int:
        """Counted intents with no answer at all within the drain."""
        return self.sent - len(self.latencies_ms) - sum(self.others.values())

    def latency(self, q: float) -> float:
        """The ``q`` quantile (ms); an intent answered otherwise or not at all counts as inf."""
        ordered = sorted(self.latencies_ms)
        ordered += [math.inf] * (self.sent - len(ordered))
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.inf


def merge(rate: float, outcomes: list[Outcome]) -> Step:
    """One step from what each client saw."""
    first = min(o.first_send for o in outcomes)
    latencies = [ms for o in outcomes for ms in o.latencies_ms]
    others: dict[str, int] = {}
    for o in outcomes:
        for label, n in o.others.items():
            others[label] = others.get(label, 0) + n
    sent = sum(o.sent for o in outcomes)
    send_span = max(o.last_send for o in outcomes) - first
    decide_span = max(o.last_answer for o in outcomes) - first
    return Step(
        rate=rate,
        sent=sent,
        latencies_ms=latencies,
        others=others,
        sent_per_s=sent / send_span if send_span > 0 else 0.0,
        decided_per_s=len(latencies) / decide_span if decide_span > 0 else 0.0,
        late_max_ms=max(o.late_max_ms for o in outcomes),
    )


async def run_clients(plan: LoadPlan, started: Callable[[float], None] | None = None) -> Step:
    """Start ``plan.clients`` client processes, start their load together, merge the outcomes.

    ``started`` is told when the load starts (epoch seconds; the counted load
    ``plan.warmup_s`` later).
    """
    encoded = msgspec.json.encode(plan).decode()
    clients = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.open_loop", "--plan", encoded, "--index", str(k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(plan.clients)
    ]
    try:
        for client in clients:
            assert client.stdout is not None
            line = await anyio.to_thread.run_sync(client.stdout.readline)
            if line.strip() != "ready":
                raise SystemExit(f"load client did not start: {line!r}")
        start = time.time() + 0.2
        outputs = []
        for client in clients:
            assert client.stdin is not None
            client.stdin.write(f"{start}\n")
            client.stdin.flush()
        if started is not None:
            started(start)
        limit = 0.2 + plan.warmup_s + plan.seconds + DRAIN_S + 30
        for client in clients:
            out, _ = await anyio.to_thread.run_sync(partial(client.communicate, timeout=limit))
            outputs.append(msgspec.json.decode(out, type=Outcome))
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    return merge(plan.rate, outputs)


async def serve(plan: LoadPlan, index: int) -> None:
    """A client process: connect, subscribe, say ``ready``, read the start, run, print."""
    # aiomqtt warns once more than 10 publishes await their PUBACK: here that is the load.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    client = Client(plan, index)
    endpoint = MqttEndpoint(host="127.0.0.1", port=plan.port, client_id="load")
    async with MqttLink(endpoint) as link:
        await link.subscribe(*(client.topic(i, "event") for i in range(len(client.strategies))))
        print("ready", flush=True)
        start = float(await anyio.to_thread.run_sync(sys.stdin.readline))
        # The client measures the daemon: a collector pass here would count as its latency.
        # A run is seconds long; what it allocates is freed when the process exits.
        gc.disable()
        outcome = await client.run(link, start)
    print(msgspec.json.encode(outcome).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plan", required=True, help="a LoadPlan as JSON")
    parser.add_argument("--index", type=int, required=True, help="this client's number, from 0")
    args = parser.parse_args()
    anyio.run(serve, msgspec.json.decode(args.plan, type=LoadPlan), args.index, backend="asyncio")
