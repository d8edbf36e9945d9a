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
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from sim_harness import Broker

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(rb"tradeguard sim listening on (http://\S+) \(stream (ws://\S+/stream)\)\n")


PYTHON_M_SIM = (sys.executable, "-m", "sim")
TRADEGUARD_SIM = (str(Path(sys.executable).with_name("tradeguard")), "sim")
"""What users run: the same venue behind the daemon's command line."""


async def _start(
    *args: str, command: tuple[str, ...] = PYTHON_M_SIM
) -> tuple[anyio.abc.Process, str, str]:
    process = await anyio.open_process(
        [*command, "--port", "0", *args],
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


@pytest.mark.parametrize(
    "command", [PYTHON_M_SIM, TRADEGUARD_SIM], ids=["python-m-sim", "tradeguard-sim"]
)
async def test_state_flag_keeps_the_account_across_restarts(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    state = str(tmp_path / "paper.db")
    order_ids = []
    for expected_qty in ("2", "4"):
        process, base_url, _ = await _start("--state", state, "--control", command=command)
        async with process:
            broker = Broker(base_url)
            order = await broker.submit(
                MarketOrderRequest(
                    symbol="AAPL", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
                )
            )
            order_ids.append(order.id)
            with anyio.fail_after(10):
                # Another process's venue: no event to wait on from here, so re-check.
                while not (positions := await broker.positions()) or (  # noqa: ASYNC110
                    positions[0].qty != expected_qty
                ):
                    await anyio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                assert await process.wait() == 0
    assert order_ids[0] != order_ids[1]


@pytest.mark.parametrize(
    "command", [PYTHON_M_SIM, TRADEGUARD_SIM], ids=["python-m-sim", "tradeguard-sim"]
)
async def test_cash_account_flag(command: tuple[str, ...]) -> None:
    process, base_url, _ = await _start("--cash-account", command=command)
    async with process:
        account = await Broker(base_url).account()
        assert account.multiplier == "1"
        assert not account.shorting_enabled
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
