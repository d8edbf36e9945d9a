"""``python -m sim`` (what ``tradeguard sim`` runs): listens, serves, exits 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from alpaca.common.exceptions import APIError
from sim_harness import Broker

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(rb"tradeguard sim listening on (http://\S+) \(stream (ws://\S+/stream)\)\n")


async def _start(*args: str) -> tuple[anyio.abc.Process, str, str]:
    process = await anyio.open_process(
        [sys.executable, "-m", "sim", "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = b""
    with anyio.fail_after(20):
        while (match := LISTENING.search(output)) is None:
            output += await process.stdout.receive()
    return process, match.group(1).decode(), match.group(2).decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_alpaca_and_exits_zero_on_signal(signum: signal.Signals) -> None:
    process, base_url, stream_url = await _start(
        "--seed", "3", "--key-id", "cli-key", "--secret-key", "cli-secret", "--control"
    )
    async with process:
        assert stream_url == base_url.replace("http", "ws") + "/stream"
        broker = Broker(base_url, "cli-key", "cli-secret")
        account = await broker.account()
        assert account.cash == "100000"
        with pytest.raises(APIError) as denied:
            await Broker(base_url, "cli-key", "other").account()
        assert denied.value.status_code == 401
        process.send_signal(signum)
        with anyio.fail_after(20):
            assert await process.wait() == 0


async def test_cli_rejects_bad_arguments() -> None:
    result = await anyio.run_process(
        [sys.executable, "-m", "sim", "--clock", "sometimes"], cwd=REPO, check=False
    )
    assert result.returncode == 2
    assert b"--clock" in result.stderr
    result = await anyio.run_process(
        [sys.executable, "-m", "sim", "--port", "0", "--key-id", "lonely"], cwd=REPO, check=False
    )
    assert result.returncode == 2
    assert b"--secret-key" in result.stderr
