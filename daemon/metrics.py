"""Prometheus metrics, served on loopback (``[metrics]``), scraped by ``/metrics``.

The endpoint answers with ``prometheus_client``'s own encoders: the text format
(``text/plain; version=0.0.4``) by default, OpenMetrics when the scraper asks for it.

Families (all prefixed ``tradeguard_``):

=================================  =========  ==============================================
name                               type       labels / meaning
=================================  =========  ==============================================
build_info                         gauge      version; always 1
intents_total                      counter    strategy, outcome (accepted, rejected,
                                              duplicate, awaiting_approval); once per intent
intent_reasons_total               counter    strategy, code; once per reason code of a
                                              rejection (an intent rejected for three
                                              reasons counts once in each of three codes)
intents_received_total             counter    intent messages the MQTT session took in
intents_overloaded_total           counter    intents answered ``OVERLOADED`` at the door
decision_latency_seconds           histogram  intent received -> decision journaled
order_updates_total                counter    strategy, status
orders_open                        gauge      strategy
kill_engaged                       gauge      scope (global or a strategy id)
circuit_state                      gauge      state (1 for the current one)
equity_dollars                     gauge      account equity (NaN before the first figure)
daily_drawdown_ratio               gauge      drawdown from start-of-day equity, 0..1
total_drawdown_ratio               gauge      drawdown from peak equity, 0..1
broker_connected                   gauge      1 when the broker answers
mqtt_reconnects_total              counter    reconnects of the daemon's MQTT session
broker_errors_total                counter    timeouts, 5xx, 429 and dropped connections
rate_limit_waits_total             counter    broker calls that waited for a token
journal_commits_total              counter    group commits
journal_commit_seconds_total       counter    time spent committing (fsync included)
=================================  =========  ==============================================

Label values stay bounded: ``strategy`` is a configured strategy id, or ``?`` for an
intent on an unknown strategy's topic; ``code`` is a protocol reason code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from actors.core.errors import ConfigError
from daemon.version import tradeguard_version

if TYPE_CHECKING:
    from actors.risk_guardian import RiskGuardian
    from daemon.mqtt_session import MqttSession
    from daemon.wiring import Daemon

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The daemon's metrics: counters fed by the actors, gauges read at scrape time."""

    def __init__(self) -> None:
        """Create the registry and the instruments."""
        self.registry = CollectorRegistry()
        Info("tradeguard_build", "The running tradeguard's version", registry=self.registry).info(
            {"version": tradeguard_version()}
        )
        self._intents = Counter(
            "tradeguard_intents",
            "Intents decided, once per intent, by outcome",
            ["strategy", "outcome"],
            registry=self.registry,
        )
        self._reasons = Counter(
            "tradeguard_intent_reasons",
            "Reason codes of rejected intents, once per code per intent",
            ["strategy", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "tradeguard_decision_latency_seconds",
            "Intent received to decision journaled",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._orders = Counter(
            "tradeguard_order_updates",
            "Order status changes",
            ["strategy", "status"],
            registry=self.registry,
        )
        self._daemon: Daemon | None = None
        self.registry.register(_StateCollector(self))

    def bind(self, daemon: Daemon) -> None:
        """Read gauges and the actors' own counters from this daemon."""
        self._daemon = daemon

    def intent(self, strategy_id: str, outcome: str, codes: Sequence[str] = ()) -> None:
        """Count one decided intent, and each distinct reason code it carries.

        Args:
            strategy_id: a configured strategy id, or ``?`` for an unknown one (the
                caller keeps the label set bounded).
            outcome: ``accepted``, ``rejected``, ``duplicate`` or ``awaiting_approval``.
            codes: the reason codes of a rejection; a code listed twice counts once.
        """
        self._intents.labels(strategy_id, outcome).inc()
        for code in dict.fromkeys(codes):
            self._reasons.labels(strategy_id, code).inc()

    def decision_latency(self, seconds: float) -> None:
        """Time from receipt to journaled decision."""
        self._latency.observe(max(seconds, 0.0))

    def order_status(self, strategy_id: str, status: str) -> None:
        """Count one order status change."""
        self._orders.labels(strategy_id, status).inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the ``Accept`` header asks for, and its content type.

        Args:
            accept: the scraper's ``Accept`` header; empty gives the text format 0.0.4.

        Returns:
            The body and its ``Content-Type`` (with the format version).
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``GET /metrics`` until cancelled; reports the bound port."""

        async def handler(request: web.Request) -> web.Response:
            body, content_type = self.exposition(request.headers.get("Accept", ""))
            # The content type carries the format version, which aiohttp's
            # content_type= argument would drop: set the header as it is.
            return web.Response(
                body=body,
                headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"},
            )

        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ConfigError(
                    f"metrics.port: cannot listen on {host}:{port}: {reason}"
                ) from exc
            bound = runner.addresses[0][1]
            log.info("metrics.listening", host=host, port=bound)
            task_status.started(bound)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    @property
    def daemon(self) -> Daemon | None:
        """The daemon the gauges read."""
        return self._daemon


class _StateCollector(Collector):
    """Gauges and counters read from the actors at scrape time (no double bookkeeping)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        daemon = self._metrics.daemon
        if daemon is None:
            return
        yield _kill_engaged(daemon)
        if daemon.guardian is not None:
            yield from _guardian_families(daemon.guardian)
        open_orders = GaugeMetricFamily(
            "tradeguard_orders_open", "Unfinished orders", labels=["strategy"]
        )
        for sid, manager in sorted(daemon.managers.items()):
            open_orders.add_metric([sid], float(manager.open_orders))
        yield open_orders
        if daemon.session is not None:
            yield from _session_families(daemon.session)
        gateway = daemon.gateway
        if gateway is not None:
            yield _counter(
                "tradeguard_broker_errors",
                "Broker timeouts, 5xx, 429, drops",
                gateway.broker_errors,
            )
            yield _counter(
                "tradeguard_rate_limit_waits",
                "Broker calls that waited for a token",
                gateway.bucket.waits,
            )
        writer = daemon.journal_writer
        if writer is not None:
            yield _counter("tradeguard_journal_commits", "Journal group commits", writer.commits)
            yield _counter(
                "tradeguard_journal_commit_seconds",
                "Time spent committing",
                writer.commit_seconds_total,
            )


def _kill_engaged(daemon: Daemon) -> Metric:
    """The kill switch, globally and per strategy."""
    kill = GaugeMetricFamily("tradeguard_kill_engaged", "Kill switch engaged", labels=["scope"])
    kill.add_metric(["global"], float(daemon.gate.engaged(None)))
    for sid in sorted(daemon.config.strategies):
        kill.add_metric([sid], float(daemon.gate.engaged(sid)))
    return kill


def _guardian_families(guardian: RiskGuardian) -> Iterable[Metric]:
    """The circuit breaker, equity, drawdowns and broker reachability."""
    circuit = GaugeMetricFamily(
        "tradeguard_circuit_state", "Circuit breaker state", labels=["state"]
    )
    for state in ("closed", "half_open", "open"):
        circuit.add_metric([state], float(guardian.circuit == state))
    yield circuit
    for name, value, doc, unit in (
        ("tradeguard_equity_dollars", guardian.equity, "Account equity", "dollars"),
        (
            "tradeguard_daily_drawdown_ratio",
            guardian.breaker.daily_drawdown,
            "Drawdown from start-of-day equity",
            "ratio",
        ),
        (
            "tradeguard_total_drawdown_ratio",
            guardian.breaker.total_drawdown,
            "Drawdown from peak equity",
            "ratio",
        ),
    ):
        gauge = GaugeMetricFamily(name, doc, unit=unit)
        gauge.add_metric([], float(value) if value is not None else float("nan"))
        yield gauge
    connected = GaugeMetricFamily("tradeguard_broker_connected", "Broker reachable")
    connected.add_metric([], float(guardian.broker_connected))
    yield connected


def _session_families(session: MqttSession) -> Iterable[Metric]:
    """The MQTT session's own counters."""
    yield _counter("tradeguard_mqtt_reconnects", "MQTT session reconnects", session.reconnects)
    yield _counter(
        "tradeguard_intents_received",
        "Intent messages the MQTT session took in",
        session.received_intents,
    )
    yield _counter(
        "tradeguard_intents_overloaded",
        "Intents answered OVERLOADED because the queue was full",
        session.overloaded,
    )


def _counter(name: str, documentation: str, value: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], float(value))
    return family
