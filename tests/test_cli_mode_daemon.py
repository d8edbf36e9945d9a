"""``tradeguard promote`` / ``demote`` / ``status`` against a running daemon with two accounts.

Two paper venues stand in for the paper and the live account (``[broker.live]`` with
``rehearsal = true``), as in ``test_modes``; real mosquitto, a real daemon, and the
command line run as the process an operator runs.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    VENV_BIN,
    Mosquitto,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from actors.admin_code import hash_code
from protocol.topics import Topics
from sim.venue import PaperVenue

pytestmark = pytest.mark.anyio

TG = str(VENV_BIN / "tradeguard")
CODE = "mode-cli-code-7"
EASY = {"min_sessions": 1, "min_filled_orders": 1, "max_drawdown": 0.5, "quiet_sessions": 1}


def two_accounts(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, live: PaperVenue, url: str
) -> Path:
    """The paper account at ``url``, the live stand-in at ``live``; s1 and s2 on paper."""
    tables = trading_tables(mosquitto, prefix, tmp_path, url, s1={}, s2={})
    (tmp_path / "live_key_id").write_text("PKLIVESTANDIN\n")
    (tmp_path / "live_secret").write_text("live-secret\n")
    tables["broker.live"] = {
        "kind": "alpaca",
        "rehearsal": True,
        "url": live.base_url,
        "stream_url": live.base_url.replace("http", "ws", 1) + "/stream",
        "data_url": live.base_url,
        "key_id_file": str(tmp_path / "live_key_id"),
        "secret_key_file": str(tmp_path / "live_secret"),
        "request_timeout_s": 2.0,
    }
    tables["kill"] = {"admin_code_hash": hash_code(CODE)}
    tables["promotion"] = EASY
    tables["log"] = {"level": "error"}
    return write_config(tmp_path, tables)


def order(intent_id: str) -> dict[str, Any]:
    return {"type": "order", "intent_id": intent_id, "symbol": "AAPL", "side": "buy", "qty": 1}


async def test_promote_demote_and_status_against_a_daemon(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    code_file = tmp_path / "code"
    code_file.write_text(f"{CODE}\n")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-code-1\n")
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}

    async with (
        running_venue(realistic_venue()) as paper,
        running_venue(realistic_venue()) as live,
    ):
        config = two_accounts(tmp_path, mosquitto, prefix, live, paper.base_url)

        async def tg(*argv: str) -> subprocess.CompletedProcess[str]:
            run = functools.partial(
                subprocess.run,
                [TG, "--config", str(config), *argv],
                input="",
                capture_output=True,
                text=True,
                check=False,
                timeout=90,
                env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
            )
            return await anyio.to_thread.run_sync(run)

        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.event("s1"), t.event("s2"), t.daemon_state) as p,
        ):
            await poll_until(lambda: daemon.guardians["paper"].equity is not None)
            # s1's paper record: one filled order. s2: nothing filled, one order open.
            await p.publish(t.intent("s1"), order("p-1"))
            await p.expect(t.event("s1"), lambda b: b.get("status") == "filled", timeout=20)
            await p.publish(
                t.intent("s2"), order("open-1") | {"order_type": "limit", "limit_price": 1.0}
            )
            await p.expect(t.event("s2"), lambda b: b.get("status") == "accepted", timeout=20)

            short = await tg("promote", "s2", "--code-file", str(code_file))
            assert short.returncode == 2, short.stdout + short.stderr
            lines = short.stderr.splitlines()
            assert lines[0] == "tradeguard: error: strategy s2: promotion refused:"
            assert len(lines) >= 3
            assert all(line.startswith("  - ") for line in lines[1:])
            assert any("open paper order" in line for line in lines[1:]), lines
            assert any("filled" in line for line in lines[1:]), lines

            wrong = await tg("promote", "s1", "--code-file", str(wrong_file))
            assert wrong.returncode == 3, wrong.stdout + wrong.stderr
            assert wrong.stdout.startswith("denied: ")
            unknown = await tg("promote", "nosuch", "--code-file", str(code_file))
            assert (unknown.returncode, unknown.stderr) == (
                2,
                "tradeguard: error: unknown strategy 'nosuch'\n",
            )
            assert daemon.managers["s1"].mode == "paper"

            done = await tg("promote", "s1", "--code-file", str(code_file), "--operator", "alice")
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.startswith("strategy s1: promoted to live"), done.stdout
            assert daemon.managers["s1"].mode == "live"
            again = await tg("promote", "s1", "--code-file", str(code_file))
            assert again.returncode == 2, again.stdout + again.stderr
            assert "already live" in again.stderr

            await p.expect(
                t.daemon_state,
                lambda s: (s.get("accounts") or {}).get("live", {}).get("strategies") == ["s1"],
                timeout=20,
            )
            status = await tg("status")
            assert status.returncode == 0, status.stderr
            out = status.stdout.splitlines()
            accounts = [line for line in out if line.startswith("account ")]
            assert accounts[0].startswith("account paper: broker alpaca (connected)  equity ")
            assert accounts[0].endswith("strategies s2")
            assert accounts[1].endswith("strategies s1")
            rows = {
                w[1]: w[3] for w in (line.split() for line in out) if w[1:2] in (["s1"], ["s2"])
            }
            assert rows == {"s1": "live", "s2": "paper"}
            as_json = json.loads((await tg("status", "--json")).stdout)
            assert as_json["strategies"]["s1"]["mode"] == "live"
            assert set(as_json["daemon"]["accounts"]) == {"paper", "live"}

            demoted = await tg("demote", "s1", "--flatten", "--reason", "drill")
            assert demoted.returncode == 0, demoted.stdout + demoted.stderr
            assert demoted.stdout.startswith("strategy s1: demoted to paper"), demoted.stdout
            assert daemon.managers["s1"].mode == "paper"
            twice = await tg("demote", "s1")
            assert twice.returncode == 2, twice.stdout + twice.stderr
            assert "already paper" in twice.stderr
            nosuch = await tg("demote", "nosuch")
            assert (nosuch.returncode, nosuch.stderr) == (
                2,
                "tradeguard: error: unknown strategy 'nosuch'\n",
            )
