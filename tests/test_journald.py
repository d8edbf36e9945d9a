"""journald: priority prefixes when stderr is the journal stream, and no raw log line."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import DaemonProcess, Mosquitto, base_tables, probe, write_config

from protocol.topics import Topics

pytestmark = pytest.mark.anyio

PREFIX = re.compile(r"<([0-7])>(.*)")
PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def journal_lines(text: str) -> list[tuple[int, dict[str, Any]]]:
    """Each stderr line as (priority, JSON event); fails on a line that is not both."""
    lines: list[tuple[int, dict[str, Any]]] = []
    for line in text.splitlines():
        match = PREFIX.fullmatch(line)
        assert match is not None, f"no journald priority prefix: {line!r}"
        event = json.loads(match.group(2))  # a raw line fails here
        assert isinstance(event, dict), line
        lines.append((int(match.group(1)), event))
    return lines


def json_lines(text: str) -> list[tuple[int, dict[str, Any]]]:
    """Each stderr line as a JSON event with no prefix (priority taken from its level)."""
    lines: list[tuple[int, dict[str, Any]]] = []
    for line in text.splitlines():
        event = json.loads(line)  # a raw or prefixed line fails here
        assert isinstance(event, dict), line
        lines.append((PRIORITY[event["level"]], event))
    return lines


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "file"])
async def test_daemon_stderr_is_json_with_journald_priorities_on_the_journal(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path, journal: bool
) -> None:
    t = Topics(prefix)
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    # Python warnings on: a library's warnings.warn() must come out as a JSON event too.
    daemon = DaemonProcess(config, journal_stream=journal, extra_env={"PYTHONWARNINGS": "default"})
    try:
        async with probe(mosquitto, t.event("s1"), t.kill_state) as p:
            daemon.start()
            # A burst that the MQTT library answers with "There are N pending publish
            # calls." warnings, then a kill engage, which the daemon logs as a warning.
            for n in range(200):
                await p.publish(
                    t.intent("s1"),
                    {
                        "type": "order",
                        "intent_id": f"j{n}",
                        "symbol": "AAPL",
                        "side": "buy",
                        "qty": 1,
                    },
                )
            await p.wait_until(
                lambda: (
                    sum(
                        1
                        for b in p.bodies(t.event("s1"))
                        if b.get("type") in ("accepted", "rejected")
                    )
                    >= 200
                ),
                timeout=30,
            )
            await p.publish(t.kill_command, "ENGAGE")
            await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            code = await anyio.to_thread.run_sync(daemon.terminate)
            assert code == 0, daemon.log_text()
    finally:
        daemon.stop_quietly()
    lines = (journal_lines if journal else json_lines)(daemon.log_text())
    for priority, event in lines:
        assert priority == PRIORITY[event["level"]], (priority, event)
    events = {event["event"]: priority for priority, event in lines}
    assert events["daemon.ready"] == 6
    # `tradeguard run` runs on uvloop (a dependency on Linux) when it is installed.
    ready = next(event for _priority, event in lines if event["event"] == "daemon.ready")
    assert ready["loop"] == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    assert events["kill.gate_closed"] == 4
    assert events["daemon.stopped"] == 6
    # alpaca-py imports websockets.legacy, which warns at import: a JSON warning, not raw text.
    assert any(
        priority == 4 and event.get("logger") == "py.warnings" and "websockets" in event["event"]
        for priority, event in lines
    )


def test_foreign_records_and_python_warnings_are_json_events(tmp_path: Path) -> None:
    # The exact calls aiomqtt, asyncio and warnings.warn() make, in a process of its own
    # whose stderr is a file named by JOURNAL_STREAM.
    script = """
import asyncio, logging, warnings
from daemon.logs import configure_logging
configure_logging("info")
logging.getLogger("mqtt").warning("There are %d pending publish calls.", 11)
logging.getLogger("mqtt").debug("Sending PUBLISH")
logging.getLogger("alpaca").info("connected")
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("asyncio").exception("Task exception was never retrieved")
warnings.warn("old API", DeprecationWarning, stacklevel=1)
"""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        stat = (log.stat().st_dev, log.stat().st_ino)
        done = subprocess.run(
            [sys.executable, "-W", "default", "-c", script],
            stderr=stderr,
            env={"JOURNAL_STREAM": f"{stat[0]}:{stat[1]}", "PATH": "/usr/bin:/bin"},
            check=False,
            timeout=30,
        )
    assert done.returncode == 0, log.read_text()
    lines = journal_lines(log.read_text())
    assert [(priority, event["logger"], event["event"]) for priority, event in lines] == [
        (4, "mqtt", "There are 11 pending publish calls."),
        (3, "asyncio", "Task exception was never retrieved"),
        (4, "py.warnings", lines[2][1]["event"]),
    ]
    assert "ValueError: boom" in lines[1][1]["exception"]
    assert "DeprecationWarning: old API" in lines[2][1]["event"]


def test_no_prefix_when_stderr_is_not_the_journal_stream(tmp_path: Path) -> None:
    # systemd's variable inherited by a child whose stderr went elsewhere: no prefixes.
    script = """
import structlog
from daemon.logs import configure_logging
configure_logging("info")
structlog.get_logger().warning("plain")
"""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        subprocess.run(
            [sys.executable, "-c", script],
            stderr=stderr,
            env={"JOURNAL_STREAM": "1:1", "PATH": "/usr/bin:/bin"},
            check=True,
            timeout=30,
        )
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["event"] == "plain"


def test_an_uncaught_exception_is_a_critical_event(tmp_path: Path) -> None:
    script = """
import threading
from daemon.logs import configure_logging
configure_logging("info")
worker = threading.Thread(target=lambda: 1 / 0, name="worker")
worker.start()
worker.join()
raise RuntimeError("crash")
"""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        stat = (log.stat().st_dev, log.stat().st_ino)
        done = subprocess.run(
            [sys.executable, "-c", script],
            stderr=stderr,
            env={"JOURNAL_STREAM": f"{stat[0]}:{stat[1]}", "PATH": "/usr/bin:/bin"},
            check=False,
            timeout=30,
        )
    assert done.returncode == 1
    (thread, crash) = journal_lines(log.read_text())
    assert (thread[0], thread[1]["event"], thread[1]["thread"]) == (
        2,
        "thread.uncaught_exception",
        "worker",
    )
    assert "ZeroDivisionError" in thread[1]["exception"]
    assert (crash[0], crash[1]["event"]) == (2, "process.uncaught_exception")
    assert "RuntimeError: crash" in crash[1]["exception"]
