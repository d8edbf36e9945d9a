"""Client commands start light: ``status``, ``kill`` and ``positions`` import no actor,
no alpaca-py, no pandas and not the paper venue.

Each command runs for real, in a fresh interpreter, against a real daemon on a real
mosquitto; the interpreter then reports what ``sys.modules`` holds. Pure cores
(``actors.core``) may load: they are the domain, not the actors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import Mosquitto, base_tables, running_daemon, write_config

pytestmark = pytest.mark.anyio

WATCHED = frozenset({"alpaca", "pandas", "actors", "sim"})
"""Top-level packages whose modules the report lists."""
CORES = "actors.core"
"""The pure cores, which client commands may use (with the ``actors`` package itself)."""

PROBE = """\
import json, sys
report, *argv = sys.argv[1:]
from daemon.cli import main
code = main(argv)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {watched})
with open(report, "w", encoding="utf-8") as handle:
    json.dump({{"code": code, "modules": loaded}}, handle)
"""


def run_probed(
    tmp_path: Path, *argv: str, stdin: str = ""
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """``tradeguard ARGV`` in a fresh interpreter; its output and its report (exit code,
    modules loaded)."""
    report = tmp_path / f"modules-{argv[0]}.json"
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(watched=sorted(WATCHED)), str(report), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=env,
    )
    assert report.exists(), done.stderr
    return done, json.loads(report.read_text(encoding="utf-8"))


def heavy(modules: list[str]) -> list[str]:
    """The reported modules a client command must not load."""
    return [m for m in modules if m not in {"actors", CORES} and not m.startswith(CORES + ".")]


def test_the_probe_sees_what_a_command_imports(tmp_path: Path) -> None:
    # hash-code uses the admin codes of actors/ (not a core): the report must name them.
    done, report = run_probed(tmp_path, "hash-code", stdin="correct-horse\n")
    assert report["code"] == 0, done.stderr
    assert done.stdout.startswith("scrypt$")
    assert heavy(report["modules"]) == ["actors.admin_code"]


async def test_status_kill_and_positions_import_no_actor_nor_alpaca(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    tables = base_tables(mosquitto, prefix, tmp_path)
    tables["log"] = {"level": "error"}
    config = str(write_config(tmp_path, tables))

    async with running_daemon(Path(config)) as daemon:
        status, status_modules = await anyio.to_thread.run_sync(
            run_probed, tmp_path, "status", "--json", "--config", config
        )
        kill, kill_modules = await anyio.to_thread.run_sync(
            run_probed, tmp_path, "kill", "--reason", "imports", "--config", config
        )
        engaged = daemon.gate.engaged(None)
        positions, positions_modules = await anyio.to_thread.run_sync(
            run_probed, tmp_path, "positions", "--json", "--config", config
        )

    # The commands did their work against the daemon...
    assert status_modules["code"] == 0, status.stderr
    assert json.loads(status.stdout)["daemon_status"] == "online"
    assert kill_modules["code"] == 0, kill.stderr
    assert "kill switch (global) engaged" in kill.stdout
    assert engaged
    assert positions_modules["code"] == 0, positions.stderr
    assert json.loads(positions.stdout) == []
    # ...without loading the actors, alpaca-py, pandas or the paper venue.
    assert heavy(status_modules["modules"]) == []
    assert heavy(kill_modules["modules"]) == []
    assert heavy(positions_modules["modules"]) == []
