"""One daemon per state folder: a second daemon is refused at once and names the holder."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from harness import (
    VENV_BIN,
    DaemonProcess,
    Mosquitto,
    base_tables,
    probe,
    running_daemon,
    write_config,
)

from actors.core.errors import StateFolderInUseError
from daemon.config import load_config
from daemon.state_lock import LOCK_FILE_NAME, StateFolderLock
from daemon.wiring import Daemon
from protocol.topics import Topics

TG = str(VENV_BIN / "tradeguard")

HOLD_LOCK = """
import sys
from pathlib import Path
from daemon.state_lock import StateFolderLock
lock = StateFolderLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_lock_names_the_holder_and_waits_for_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    first = StateFolderLock(folder)
    first.acquire()
    assert (folder / LOCK_FILE_NAME).read_text().strip() == str(os.getpid())
    second = StateFolderLock(folder)
    started = time.monotonic()
    with pytest.raises(StateFolderInUseError) as info:
        second.acquire()
    assert time.monotonic() - started < 1.0
    assert info.value.pid == os.getpid()
    assert str(info.value) == (
        f"state folder {folder} is in use by tradeguard PID {os.getpid()} (one daemon per journal)"
    )
    assert not second.held
    first.release()
    first.release()  # twice is harmless
    second.acquire()
    with pytest.raises(StateFolderInUseError):
        StateFolderLock(folder).acquire()
    second.release()


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 20)
        assert ready, "the child never took the lock"
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateFolderInUseError) as info:
            StateFolderLock(folder).acquire()
        assert info.value.pid == holder.pid
        holder.kill()
        holder.wait(10)
        # The kernel dropped the lock with the process; the file (and its PID) stay behind.
        assert (folder / LOCK_FILE_NAME).read_text().strip() == str(holder.pid)
        lock = StateFolderLock(folder)
        lock.acquire()
        assert (folder / LOCK_FILE_NAME).read_text().strip() == str(os.getpid())
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


@pytest.mark.anyio
async def test_a_second_tradeguard_run_exits_2_and_the_first_keeps_answering(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    first = DaemonProcess(config)
    again = DaemonProcess(config)
    try:
        await anyio.to_thread.run_sync(first.start)
        assert first.process is not None
        started = time.monotonic()
        second = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [TG, "run", "--config", str(config)],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
                env=env,
            )
        )
        assert time.monotonic() - started < 5.0
        assert second.returncode == 2, second.stderr
        assert second.stdout == ""
        holder = f"tradeguard PID {first.process.pid}"
        expected = f"state folder {tmp_path} is in use by {holder} (one daemon per journal)"
        assert second.stderr.splitlines() == [f"tradeguard: error: {expected}"]
        assert first.process.poll() is None
        async with probe(mosquitto, topics.event("s1")) as p:
            intent = {"type": "order", "intent_id": "after-second", "symbol": "aapl"}
            await p.publish(topics.intent("s1"), intent)
            body = await p.expect(
                topics.event("s1"), lambda b: b.get("intent_id") == "after-second"
            )
            assert body["type"] == "rejected"  # answered once, by the first daemon
            assert len(p.bodies(topics.event("s1"))) == 1
        # kill -9 leaves no stale lock: a new daemon starts on the folder at once.
        first.kill9()
        await anyio.to_thread.run_sync(again.start)
        assert await anyio.to_thread.run_sync(again.terminate) == 0, again.log_text()
    finally:
        first.stop_quietly()
        again.stop_quietly()


@pytest.mark.anyio
async def test_in_process_daemons_follow_the_rule_and_release_when_stopped(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    async with running_daemon(config) as daemon:
        assert daemon.state_lock.held
        with pytest.raises(StateFolderInUseError) as info:
            Daemon(load_config(config))
        assert info.value.pid == os.getpid()
    assert not daemon.state_lock.held
    async with running_daemon(config) as restarted:  # the same folder, right after
        assert restarted.state_lock.held
    assert not restarted.state_lock.held
