"""Test harness: a real mosquitto, a real daemon (in-process or as a process), MQTT probes.

No sleeps for synchronisation: every wait is on the message or line we expect,
with a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec

from daemon.embedded_broker import find_mosquitto, mosquitto_config
from daemon.mqtt_session import MqttEndpoint, MqttLink, Received

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mosquitto:
    """A mosquitto process started for tests with its own generated config."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) on the same port and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(mosquitto_config(port=self.port, data_dir=self.workdir), encoding="utf-8")
        self.process = subprocess.Popen(  # our own binary and config
            [find_mosquitto(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            if b" running" in raw:
                break
        else:
            raise RuntimeError(f"mosquitto did not start on port {self.port}")
        # Keep draining its stderr so that it never blocks on a full pipe.
        stream = self.process.stderr
        import threading  # noqa: PLC0415

        threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()

    def stop(self) -> None:
        """Stop it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def endpoint(self) -> MqttEndpoint:
        """An endpoint for clients."""
        return MqttEndpoint(host="127.0.0.1", port=self.port, client_id="unused")


def unique_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@dataclass
class Probe:
    """An MQTT client that records what it receives and waits for what a test expects."""

    link: MqttLink
    received: list[Received] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def pump(self) -> None:
        """Record every message (run in a task group)."""
        async for message in self.link.messages():
            self.received.append(message)
            self._changed.set()
            self._changed = anyio.Event()

    async def expect(
        self,
        topic: str,
        predicate: Callable[[Any], bool] = lambda _: True,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109  # one knob per wait reads best in tests
        start: int = 0,
        raw: bool = False,
    ) -> Any:
        """The first message on ``topic`` (from index ``start``) whose JSON body matches."""
        seen = start
        with anyio.fail_after(timeout):
            while True:
                for message in self.received[seen:]:
                    seen += 1
                    if message.topic != topic:
                        continue
                    body: Any = message.payload if raw else _loads(message.payload)
                    if body is not None and predicate(body):
                        return body
                await self._changed.wait()

    async def wait_until(
        self,
        condition: Callable[[], bool],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109  # one knob per wait reads best in tests
    ) -> None:
        """Wait (on arriving messages, not on a timer) until ``condition()`` holds."""
        with anyio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    def bodies(self, topic: str) -> list[Any]:
        """Every JSON body received on ``topic`` so far."""
        return [_loads(m.payload) for m in self.received if m.topic == topic]

    async def publish(self, topic: str, payload: bytes | str | dict[str, Any], **kw: Any) -> None:
        """Publish JSON (for dicts) or raw bytes."""
        if isinstance(payload, dict):
            data = msgspec.json.encode(payload)
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = payload
        await self.link.publish(topic, data, **kw)


def _loads(payload: bytes) -> Any:
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return payload.decode("utf-8", "replace")


@asynccontextmanager
async def probe(broker: Mosquitto, *topic_filters: str) -> AsyncIterator[Probe]:
    """A subscribed probe whose pump runs for the duration of the block."""
    async with MqttLink(broker.endpoint()) as link:
        p = Probe(link)
        await link.subscribe(*topic_filters)
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.pump)
            yield p
            tg.cancel_scope.cancel()


def toml_value(value: Any) -> str:
    """A TOML literal for a scalar or a flat list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_config(directory: Path, tables: dict[str, dict[str, Any]], extra: str = "") -> Path:
    """Write a TOML config of ``{table: {key: value}}`` (dotted table names allowed)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    path = directory / "tradeguard.toml"
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path


def base_tables(
    broker: Mosquitto, prefix: str, state_dir: Path, **strategies: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Config tables for a daemon on the test broker with one or more strategies."""
    tables: dict[str, dict[str, Any]] = {
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "topic_prefix": prefix,
            "client_id": f"daemon-{prefix}",
            "keepalive_s": 2,
            "reconnect_max_s": 1.0,
        },
        "state": {"path": str(state_dir / "state.db")},
        "daemon": {"shutdown_timeout_s": 5.0},
        # Daemon tests trade at any hour: hold the embedded venue's market open.
        "broker.sim": {"port": 0, "clock": "always-open"},
    }
    for sid, values in (strategies or {"s1": {}}).items():
        tables[f"strategies.{sid}"] = {"allocation": 0.2, **values}
    return tables


@dataclass
class DaemonProcess:
    """``tradeguard run`` as a child process, so that tests can SIGTERM or SIGKILL it."""

    config: Path
    process: subprocess.Popen[str] | None = None
    ready_line: str | None = None
    log_file: Path | None = None
    journal_stream: bool = False
    """Export JOURNAL_STREAM naming the log file, as systemd does for a journal stream."""
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait for the ready line on stdout."""
        self.log_file = Path(tempfile.mkstemp(prefix="tradeguard-", suffix=".log")[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        env.pop("TRADEGUARD_CONFIG", None)
        env.pop("JOURNAL_STREAM", None)
        with self.log_file.open("w") as log:
            if self.journal_stream:
                stat = os.fstat(log.fileno())
                env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
            self.process = subprocess.Popen(  # our own console script
                [str(VENV_BIN / "tradeguard"), "run", "--config", str(self.config)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        line = _readline_with_timeout(self.process, timeout)
        if line is None or "ready" not in line:
            raise RuntimeError(f"daemon did not become ready: {line!r}\n{self.log_text()}")
        self.ready_line = line

    def log_text(self) -> str:
        """What the daemon logged."""
        return self.log_file.read_text() if self.log_file else ""

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL and reap."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop_quietly(self) -> None:
        """Make sure it is gone (fixture teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _readline_with_timeout(process: subprocess.Popen[str], timeout: float) -> str | None:
    import selectors  # noqa: PLC0415

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        return None
    return process.stdout.readline().strip()


@asynccontextmanager
async def running_daemon(config_path: Path, *, ready_timeout: float = 30.0) -> AsyncIterator[Any]:
    """A daemon in this process (faster than a child process); stopped gracefully at exit."""
    from daemon.config import load_config  # noqa: PLC0415
    from daemon.wiring import Daemon  # noqa: PLC0415

    daemon = Daemon(load_config(config_path))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        with anyio.fail_after(ready_timeout):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.request_stop()


def trading_tables(
    broker: Mosquitto,
    prefix: str,
    state_dir: Path,
    venue_url: str,
    *,
    broker_overrides: dict[str, Any] | None = None,
    risk_overrides: dict[str, Any] | None = None,
    **strategies: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Config tables for a daemon trading against a paper venue started by the test."""
    (state_dir / "key_id").write_text("PKTESTKEY\n")
    (state_dir / "secret_key").write_text("test-secret\n")
    tables = base_tables(broker, prefix, state_dir, **strategies)
    del tables["broker.sim"]
    tables["broker"] = {
        "kind": "alpaca",
        "mode": "paper",
        "url": venue_url,
        "stream_url": venue_url.replace("http", "ws", 1) + "/stream",
        "data_url": venue_url,
        "key_id_file": str(state_dir / "key_id"),
        "secret_key_file": str(state_dir / "secret_key"),
        # Alpaca's real limit (the daemon's default, 190/min): a test that lifts it says why.
        "request_timeout_s": 2.0,
        **(broker_overrides or {}),
    }
    # These tests are about the order path, not about limits: resting orders far from
    # the market and bursts of identical orders must pass the guardian.
    tables["risk"] = {
        "min_price": 0.0,
        "max_price_deviation": 1.0,
        "duplicate_window_s": 0.0,
        "max_intents_per_second": 100_000.0,
        "max_risk_per_trade": 1.0,
        "max_notional": 1_000_000.0,
        "max_capital_deployed": 1.0,
        "max_positions": 1000,
        **(risk_overrides or {}),
    }
    for sid, values in (strategies or {"s1": {}}).items():
        if "allocation" not in values:
            tables[f"strategies.{sid}"]["allocation"] = 1.0 / max(1, len(strategies))
    return tables


VENUE_LATENCY_S = 0.020
VENUE_JITTER_S = 0.060
"""Every venue request waits 20-80 ms, in random order: a trading box's round trip to
Alpaca, and more. Tests run against this unless they say why not."""


def realistic_venue(**overrides: Any) -> Any:
    """A paper venue config with Alpaca's rate limit (200/min) and latency with jitter."""
    from sim_harness import fast_config  # noqa: PLC0415  # sim only where a test wants it

    settings: dict[str, Any] = {
        "clock": "always-open",  # tests run at any hour: the market is held open
        "base_latency_s": VENUE_LATENCY_S,
        "latency_jitter_s": VENUE_JITTER_S,
        "rate_limit_per_min": 200,
        **overrides,
    }
    return fast_config(**settings)


async def poll_until(
    condition: Callable[[], bool],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109  # one knob per wait reads best in tests
) -> None:
    """Wait until ``condition()`` holds for state outside MQTT (a venue, a journal file).

    Those have no event to wait on from here, so this re-checks every 20 ms and fails
    after ``timeout``.
    """
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110  # nothing to wait on: state lives elsewhere
            await anyio.sleep(0.02)
