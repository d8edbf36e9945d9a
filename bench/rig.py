"""What the benches share: the daemon's config, and the venue and daemon as processes.

``make bench``, ``make soak`` and ``bench.ready`` each run ``tradeguard run`` against
a paper venue on a loopback mosquitto; they differ only in the tables after
``[broker]`` (risk limits, admin code, strategies) and a few settings named here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from daemon.embedded_broker import EmbeddedMosquitto

BIN = Path(sys.executable).parent
"""The venv's scripts (``tradeguard``)."""
UNLIMITED_PER_MIN = 1_000_000
"""The broker's and the venue's request limits, lifted for figures of the daemon's capacity."""


def local_url(port: int) -> str:
    """The REST address of a venue listening on ``port`` on loopback."""
    return f"http://127.0.0.1:{port}"


def daemon_config(
    workdir: Path,
    *,
    mqtt_port: int,
    venue_url: str,
    topic_prefix: str,
    tables: str,
    client_id: str | None = None,
    log_level: str = "warning",
    rate_limit_per_min: float | None = None,
) -> str:
    """A daemon config: the broker at ``mqtt_port``, the venue at ``venue_url``.

    Args:
        workdir: holds the journal (``state.db``) and the key file (``key``).
        mqtt_port: the loopback mosquitto's port.
        venue_url: the venue's REST address (its stream is at ``/stream``).
        topic_prefix: ``mqtt.topic_prefix``.
        tables: the TOML after ``[broker]`` (``[risk]``, ``[kill]``, strategies).
        client_id: ``mqtt.client_id`` (the default when None).
        log_level: ``log.level``.
        rate_limit_per_min: ``broker.rate_limit_per_min`` (Alpaca's when None).
    """
    own_client_id = f'client_id = "{client_id}"\n' if client_id is not None else ""
    rate_limit = (
        f"rate_limit_per_min = {rate_limit_per_min}\n" if rate_limit_per_min is not None else ""
    )
    return (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\ntopic_prefix = "{topic_prefix}"\n'
        f"{own_client_id}"
        f'[state]\npath = "{workdir}/state.db"\n[log]\nlevel = "{log_level}"\n'
        f'[broker]\nkind = "alpaca"\nurl = "{venue_url}"\n'
        f'stream_url = "{venue_url.replace("http", "ws", 1)}/stream"\ndata_url = "{venue_url}"\n'
        f'key_id_file = "{workdir}/key"\nsecret_key_file = "{workdir}/key"\n'
        f"{rate_limit}"
        f"{tables}"
    )


def write_daemon_config(workdir: Path, name: str, *, key_id: str, config: str) -> Path:
    """Write the key file ``config`` names and ``config`` itself; the config's path."""
    (workdir / "key").write_text(f"{key_id}\n")
    path = workdir / f"{name}.toml"
    path.write_text(config)
    return path


def start(args: list[str], *, quiet: bool = False) -> subprocess.Popen[str]:
    """Start a process whose stdout we read (its stderr dropped when ``quiet``)."""
    stderr = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True)


async def first_line(process: subprocess.Popen[str]) -> str:
    """The process's first line on stdout (the venue's address, the daemon's READY)."""
    assert process.stdout is not None
    return await anyio.to_thread.run_sync(process.stdout.readline)


async def start_venue(
    port: int, *, rate_limit: int | None = None, quiet: bool = False, cash: int = 10_000_000
) -> subprocess.Popen[str]:
    """``tradeguard sim`` with ``cash`` ($10M) on ``port``, once it listens.

    Args:
        port: the venue's port.
        rate_limit: requests a minute (the venue's default, Alpaca's, when None).
        quiet: drop its stderr.
        cash: the account's starting cash.
    """
    args = [str(BIN / "tradeguard"), "sim", "--port", str(port)]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    venue = start([*args, "--cash", str(cash)], quiet=quiet)
    await first_line(venue)
    return venue


@asynccontextmanager
async def own_broker(name: str, base_port: int) -> AsyncIterator[int]:
    """A loopback mosquitto of a bench's own (``base_port`` + up to 999); its port."""
    with tempfile.TemporaryDirectory(prefix=f"tg-{name}-mqtt-") as workdir:
        port = base_port + os.getpid() % 1000
        broker = EmbeddedMosquitto(state_dir=Path(workdir), port=port)
        async with anyio.create_task_group() as tg:
            await tg.start(broker.run)
            yield port
            tg.cancel_scope.cancel()


@asynccontextmanager
async def lifted_daemon(
    workdir: Path,
    *,
    mqtt_port: int,
    venue_port: int,
    prefix: str,
    tables: str,
    cash: int = 10_000_000,
) -> AsyncIterator[None]:
    """A venue and a daemon on an empty journal in ``workdir``, both stopped on exit.

    The broker's and the venue's request limits are lifted (``UNLIMITED_PER_MIN``); the
    daemon's topic prefix and client id are its own (``prefix``): an earlier daemon's
    persistent session may still hold intents it never took, and must not hand them on.
    """
    venue = await start_venue(venue_port, rate_limit=UNLIMITED_PER_MIN, quiet=True, cash=cash)
    try:
        config = daemon_config(
            workdir,
            mqtt_port=mqtt_port,
            venue_url=local_url(venue_port),
            topic_prefix=prefix,
            tables=tables,
            client_id=f"tradeguard-{prefix}",
            rate_limit_per_min=float(UNLIMITED_PER_MIN),
        )
        path = write_daemon_config(workdir, prefix, key_id=f"PK{prefix.upper()}", config=config)
        daemon = await start_daemon(path, quiet=True)
        try:
            yield
        finally:
            stop(daemon)
    finally:
        stop(venue)


async def start_daemon(config: Path, *, quiet: bool = False) -> subprocess.Popen[str]:
    """``tradeguard run`` with ``config``, once it says READY."""
    daemon = start([str(BIN / "tradeguard"), "run", "--config", str(config)], quiet=quiet)
    await first_line(daemon)
    return daemon


def stop(*processes: subprocess.Popen[str]) -> None:
    """Terminate each process and wait for it (10 s each at most)."""
    for process in processes:
        process.terminate()
        process.wait(10)
