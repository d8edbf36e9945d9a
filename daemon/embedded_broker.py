"""The built-in loopback mosquitto, for ``make run`` and a config without ``mqtt.host``.

The daemon writes a mosquitto config (``set_tcp_nodelay true``, persistence in
the state folder, loopback only), starts mosquitto as a child process, waits for
it to listen, restarts it if it dies, and stops it on exit.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

import anyio
import anyio.abc
import structlog

from daemon.errors import EmbeddedBrokerError

log = structlog.get_logger(__name__)


def find_mosquitto(binary: str | None = None) -> str:
    """The mosquitto executable, or an error saying what to install."""
    candidates = [binary] if binary else [shutil.which("mosquitto"), "/usr/sbin/mosquitto"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedBrokerError(
        "mosquitto not found: install it with 'apt-get install -y mosquitto mosquitto-clients'"
    )


def mosquitto_config(*, port: int, data_dir: Path, host: str = "127.0.0.1") -> str:
    """A mosquitto 2 config for a loopback broker with Nagle off and persistence on."""
    lines = [
        "# written by tradeguard: a loopback broker for local use",
        "per_listener_settings false",
        f"listener {port} {host}",
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 30",
        "max_queued_messages 10000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp false",
        "connection_messages false",
    ]
    if os.geteuid() == 0:
        # As root mosquitto would switch to the 'mosquitto' user and lose the state folder.
        lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


class EmbeddedMosquitto:
    """Runs and supervises a loopback mosquitto.

    Args:
        state_dir: the daemon's state folder; mosquitto's files go in ``mosquitto/``.
        port: TCP port on 127.0.0.1.
        binary: path of the mosquitto executable (found on PATH when None).
    """

    def __init__(self, *, state_dir: Path, port: int, binary: str | None = None) -> None:
        """Prepare paths; nothing starts yet."""
        self.port = port
        self._dir = state_dir / "mosquitto"
        self._binary = binary
        self.restarts = 0
        self._running = False
        self._last_error: str | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start mosquitto, report ready with the port, restart it if it dies, stop it on cancel."""
        binary = find_mosquitto(self._binary)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self._dir / "mosquitto.conf"
        conf.write_text(mosquitto_config(port=self.port, data_dir=self._dir), encoding="utf-8")
        started = False
        while True:
            self._running = False
            process = await anyio.open_process(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                ready = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read_log, process, ready)
                    with anyio.fail_after(10):
                        await ready.wait()
                    if not self._running:
                        raise EmbeddedBrokerError(
                            f"mosquitto failed to start on 127.0.0.1:{self.port}: "
                            f"{self._last_error or 'no output'} (is the port in use? set mqtt.port)"
                        )
                    if not started:
                        started = True
                        task_status.started(self.port)
                    log.info("mosquitto.running", port=self.port, pid=process.pid)
                    code = await process.wait()
                    tg.cancel_scope.cancel()
            except TimeoutError as exc:
                raise EmbeddedBrokerError(
                    f"mosquitto did not start listening on 127.0.0.1:{self.port} "
                    "(is the port in use? set mqtt.port)"
                ) from exc
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process)
            if not started:
                raise EmbeddedBrokerError(f"mosquitto exited at start with code {code}")
            self.restarts += 1
            log.error("mosquitto.exited", code=code, restarting=True)
            await anyio.sleep(0.5)

    async def _read_log(self, process: anyio.abc.Process, ready: anyio.Event) -> None:
        assert process.stderr is not None
        buffer = b""
        async for chunk in process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                if " running" in line:
                    self._running = True
                    ready.set()
                if "rror" in line:
                    self._last_error = line
                    log.error("mosquitto.log", line=line)
                else:
                    log.debug("mosquitto.log", line=line)
        ready.set()  # end of output: mosquitto exited; the caller checks _running


async def _stop(process: anyio.abc.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(5):
        await process.wait()
        return
    process.kill()
    await process.wait()
