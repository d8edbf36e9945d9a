"""The CLI for operators: codes never on argv, answers from the daemon, output that pipes well.

Every command runs against a real daemon on a real mosquitto, as a process (what an
operator runs) or, where a test times the daemon's answer, in this process (so that
Python's start-up is not what is timed).
"""

from __future__ import annotations

import functools
import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    VENV_BIN,
    Mosquitto,
    base_tables,
    probe,
    running_daemon,
    write_config,
)

from actors.admin_code import hash_code
from daemon import client_commands as cc
from daemon.cli_parser import build_parser
from daemon.client_commands import human_time
from daemon.config import load_config
from daemon.journal import Journal, Write
from protocol.messages import Approve, Deny
from protocol.topics import Topics
from sim.cli import add_options as add_sim_options

pytestmark = pytest.mark.anyio

TG = str(VENV_BIN / "tradeguard")
CODE = "correct-horse-7"
CODE_COMMANDS = [
    ["disengage"],
    ["disengage", "--strategy", "s1"],
    ["reset-circuit"],
    ["resume", "--strategy", "s1"],
    ["approve", "--strategy", "s1", "--intent", "i1"],
    ["deny", "--strategy", "s1", "--intent", "i1"],
    ["promote", "s1"],
]


def run_cli(
    *argv: str, stdin: str | None = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tradeguard ARGV`` as a process; ``stdin`` is what it reads (never a terminal)."""
    base = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    return subprocess.run(
        [TG, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={**base, **(env or {})},
    )


def operator_config(tmp_path: Path, mosquitto: Mosquitto, prefix: str, **mqtt: Any) -> Path:
    tables = base_tables(mosquitto, prefix, tmp_path, s1={}, s2={})
    tables["mqtt"].update(mqtt)
    tables["kill"] = {"admin_code_hash": hash_code(CODE)}
    tables["log"] = {"level": "error"}
    return write_config(tmp_path, tables)


# ---------------------------------------------------------------- codes never on argv


@pytest.mark.parametrize("command", CODE_COMMANDS)
@pytest.mark.parametrize("form", [["--code", "s3cret-99"], ["--code=s3cret-99"], ["--code"]])
def test_a_code_on_argv_is_refused_with_a_pointer(command: list[str], form: list[str]) -> None:
    out = run_cli(*command, *form, stdin=f"{CODE}\n")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("tradeguard: error: argument --code: ")
    for way in ("prompt", "--code-stdin", "--code-file"):
        assert way in out.stderr
    assert "s3cret-99" not in out.stderr


@pytest.mark.parametrize(
    "argv", [["kill", "--code", "s3cret-99"], ["--code", "s3cret-99", "status"]]
)
def test_a_code_on_argv_is_never_echoed_by_any_command(argv: list[str]) -> None:
    out = run_cli(*argv)
    assert out.returncode == 2
    assert out.stderr.startswith("tradeguard: error: argument --code: ")
    assert "s3cret-99" not in out.stderr


def test_a_code_on_argv_is_refused_beside_another_way(tmp_path: Path) -> None:
    out = run_cli("disengage", "--code-stdin", "--code", "s3cret-99", stdin=f"{CODE}\n")
    assert out.returncode == 2
    assert "--code-file" in out.stderr
    assert "s3cret-99" not in out.stderr


def test_help_shows_the_ways_to_give_a_code_and_no_markup() -> None:
    out = run_cli("disengage", "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert out.returncode == 0
    assert "--code-stdin" in out.stdout
    assert "--code-file" in out.stdout
    assert "--code C" not in out.stdout
    top = run_cli("--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "``" not in top.stdout
    assert "CONTRACT" not in top.stdout


def test_every_option_has_help() -> None:
    parser = build_parser(sim_options=add_sim_options)
    subcommands = next(
        action.choices
        for action in parser._actions
        if isinstance(action.choices, dict) and "run" in action.choices
    )
    for name, sub in subcommands.items():
        for action in sub._actions:
            if action.dest == "code":
                continue  # the refused --code is hidden on purpose
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize(
    ("argv", "stdin", "words"),
    [
        (["disengage"], "", "no admin code on stdin"),
        (["disengage", "--code-stdin"], "\n", "no admin code on stdin"),
        (["disengage", "--code-file", "/no/such/code"], None, "--code-file: cannot read"),
        (["approve", "--strategy", "s1", "--intent", "i1"], "x" * 200 + "\n", "at most 128"),
    ],
)
def test_a_missing_code_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], stdin: str | None, words: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[mqtt]\nhost = '127.0.0.1'\nport = 1\n")
    out = run_cli(*argv, "--config", str(config), stdin=stdin)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert words in out.stderr


async def test_code_stdin_and_code_file_release_against_a_real_daemon(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = operator_config(tmp_path, mosquitto, prefix)
    good = tmp_path / "code"
    good.write_text(f"{CODE}\n")
    good.chmod(0o600)
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong-code-1\n")
    t = Topics(prefix)
    tg = functools.partial(run_cli, "--config", str(config))
    async with running_daemon(config) as daemon, probe(mosquitto, t.audit) as p:
        out = await anyio.to_thread.run_sync(tg, "kill", "--reason", "drill")
        assert out.returncode == 0, out.stderr
        assert daemon.gate.engaged(None)
        # A wrong code from a file: denied (3), still engaged.
        out = await anyio.to_thread.run_sync(tg, "disengage", "--code-file", str(wrong))
        assert out.returncode == 3, out.stdout + out.stderr
        assert daemon.gate.engaged(None)
        # The right one from the file.
        out = await anyio.to_thread.run_sync(tg, "disengage", "--code-file", str(good))
        assert out.returncode == 0, out.stdout + out.stderr
        assert not daemon.gate.engaged(None)
        # From stdin, said explicitly.
        out = await anyio.to_thread.run_sync(tg, "kill", "--strategy", "s2")
        assert out.returncode == 0, out.stderr
        out = await anyio.to_thread.run_sync(
            functools.partial(
                tg, "disengage", "--strategy", "s2", "--code-stdin", stdin=f"{CODE}\n"
            )
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert not daemon.gate.engaged("s2")
        # From stdin without saying so (stdin is not a terminal): a pause, then resume.
        out = await anyio.to_thread.run_sync(tg, "pause", "--strategy", "s1")
        assert out.returncode == 0, out.stderr
        assert daemon.gate.paused("s1")
        out = await anyio.to_thread.run_sync(
            functools.partial(tg, "resume", "--strategy", "s1", stdin=f"{CODE}\n")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert not daemon.gate.paused("s1")
    for body in p.bodies(t.audit):
        assert CODE not in str(body)


def on_a_terminal_typing(argv: list[str], typed: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (``script``), type ``typed`` at its prompt.

    Returns:
        The exit code and everything the terminal showed.
    """
    command = " ".join(shlex.quote(a) for a in [TG, *argv])
    with subprocess.Popen(
        ["script", "-qec", command, "/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        shown = b""
        while b"admin code: " not in shown:
            ready, _, _ = select.select([process.stdout], [], [], 20)
            assert ready, f"no prompt: {shown!r}"
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, f"no prompt: {shown!r}"
            shown += chunk
        process.stdin.write(typed.encode() + b"\n")
        process.stdin.flush()
        shown += process.stdout.read()
        return process.wait(30), shown.decode("utf-8", "replace")


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script is not installed")
async def test_on_a_terminal_the_code_is_prompted_for_and_not_echoed(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = operator_config(tmp_path, mosquitto, prefix)
    async with running_daemon(config) as daemon:
        out = await anyio.to_thread.run_sync(run_cli, "--config", str(config), "kill")
        assert out.returncode == 0, out.stderr
        argv = ["disengage", "--config", str(config)]
        code, shown = await anyio.to_thread.run_sync(on_a_terminal_typing, argv, "wrong-code-1")
        assert code == 3, shown
        assert "wrong-code-1" not in shown
        code, shown = await anyio.to_thread.run_sync(on_a_terminal_typing, argv, CODE)
        assert code == 0, shown
        assert CODE not in shown
        assert not daemon.gate.engaged(None)


async def test_with_a_login_codes_go_to_the_login_s_admin_topic(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    # A login means a secured broker (ACL: each login writes only its own admin topic);
    # this broker is open, which is fine for where the CLI publishes.
    config = operator_config(tmp_path, mosquitto, prefix, username="operator")
    t = Topics(prefix)
    tg = functools.partial(run_cli, "--config", str(config))
    async with (
        running_daemon(config) as daemon,
        probe(mosquitto, t.audit, t.kill_command, t.admin_command("operator")) as p,
    ):
        out = await anyio.to_thread.run_sync(tg, "kill")
        assert out.returncode == 0, out.stderr
        # Engaging needs no code: it stays on kill/command, open to buttons.
        await p.expect(t.kill_command, raw=True)
        out = await anyio.to_thread.run_sync(
            functools.partial(tg, "disengage", "--operator", "someone-else", stdin=f"{CODE}\n")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert not daemon.gate.engaged(None)
        command = await p.expect(t.admin_command("operator"))
        assert command["type"] == "disengage"
        released = await p.expect(t.audit, lambda a: a["type"] == "kill.disengage" and a["ok"])
        assert released["operator"] == "operator"
        assert [b for b in p.bodies(t.kill_command) if "disengage" in str(b)] == []


# ---------------------------------------------------------------- answers at once


async def test_unknown_strategy_and_intent_exit_2_at_once(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = operator_config(tmp_path, mosquitto, prefix)
    config = load_config(path)
    waiting = "is waiting for approval"
    calls: list[tuple[Callable[[], int], str]] = [
        (
            functools.partial(cc.kill, config, strategy_id="nosuch", flatten=False, reason="r"),
            "unknown strategy 'nosuch'",
        ),
        (
            functools.partial(
                cc.admin,
                config,
                Approve(strategy_id="s1", intent_id="zzz", code=CODE),
                audit_type="approval.approve",
            ),
            f"no intent zzz of strategy s1 {waiting}",
        ),
        (
            functools.partial(
                cc.admin,
                config,
                Deny(strategy_id="s1", intent_id="zzz", code=CODE),
                audit_type="approval.deny",
            ),
            f"no intent zzz of strategy s1 {waiting}",
        ),
        (
            functools.partial(
                cc.admin,
                config,
                Approve(strategy_id="nosuch", intent_id="i1", code="wrong-code-1"),
                audit_type="approval.approve",
            ),
            f"no intent i1 of strategy nosuch {waiting}",
        ),
    ]

    def timed(call: Callable[[], int]) -> tuple[int, float]:
        start = time.monotonic()
        result = call()
        return result, time.monotonic() - start

    async with running_daemon(path) as daemon:
        # In this process: what is timed is the daemon's answer, not Python's start-up.
        for call, words in calls:
            result, took = await anyio.to_thread.run_sync(timed, call)
            err = capsys.readouterr().err
            assert result == 2, (words, err)
            assert took < 1.0, (words, took)
            assert err == f"tradeguard: error: {words}\n"
        assert not daemon.gate.engaged(None)
        # As processes: the same lines, exit 2.
        code = tmp_path / "code"
        code.write_text(f"{CODE}\n")
        for argv, words in (
            (["kill", "--strategy", "nosuch"], "unknown strategy 'nosuch'"),
            (
                ["approve", "--strategy", "s1", "--intent", "zzz", "--code-file", str(code)],
                f"no intent zzz of strategy s1 {waiting}",
            ),
        ):
            out = await anyio.to_thread.run_sync(
                functools.partial(run_cli, "--config", str(path), *argv)
            )
            assert (out.returncode, out.stderr) == (2, f"tradeguard: error: {words}\n")


async def test_kill_prints_a_human_time(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    config = operator_config(tmp_path, mosquitto, prefix)
    async with running_daemon(config):
        out = await anyio.to_thread.run_sync(run_cli, "--config", str(config), "kill")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("kill switch (global) engaged 20")
        assert " UTC (" in out.stdout
        assert "s ago)" in out.stdout
        again = await anyio.to_thread.run_sync(
            run_cli, "--config", str(config), "kill", "--strategy", "s1"
        )
        assert again.stdout.startswith("kill switch (strategy s1) engaged 20"), again.stdout
        # Piped, status never wraps, whatever the terminal's width says.
        status = await anyio.to_thread.run_sync(
            functools.partial(run_cli, "--config", str(config), "status", env={"COLUMNS": "40"})
        )
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        daemon_line = next(line for line in lines if line.startswith("daemon:"))
        assert "circuit" in daemon_line
        assert len(daemon_line) > 40
        glob = next(line for line in lines if line.startswith("global kill switch:"))
        assert "ENGAGED 20" in glob
        assert " UTC (" in glob


def test_human_time() -> None:
    ts = 1_796_047_387.0  # 2026-11-30 14:03:07 UTC
    assert human_time(ts, ts + 3) == "2026-11-30 14:03:07 UTC (3 s ago)"
    assert human_time(ts, ts + 600) == "2026-11-30 14:03:07 UTC (10 min ago)"
    assert human_time(ts, ts + 7200) == "2026-11-30 14:03:07 UTC (2.0 h ago)"
    assert human_time(ts, ts + 3 * 86400) == "2026-11-30 14:03:07 UTC (3.0 d ago)"
    assert human_time(None) == "-"


async def test_a_broker_lost_mid_command_is_one_line_and_exit_1(
    own_mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    # No daemon: kill waits for an answer; the broker goes away while it waits.
    config = operator_config(tmp_path, own_mosquitto, prefix)
    t = Topics(prefix)
    result: list[subprocess.CompletedProcess[str]] = []

    async def kill() -> None:
        result.append(await anyio.to_thread.run_sync(run_cli, "--config", str(config), "kill"))

    async with anyio.create_task_group() as tg:
        async with probe(own_mosquitto, t.kill_command) as p:
            tg.start_soon(kill)
            # The command is out: the CLI now waits for the daemon's answer.
            await p.expect(t.kill_command, raw=True)
        own_mosquitto.stop()
    out = result[0]
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert "tradeguard: " in out.stderr
    assert "MQTT" in out.stderr


# ---------------------------------------------------------------- version, completion, output


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("tradeguard ")
    assert out.stdout.split()[1][0].isdigit()


def test_completion_for_bash_completes_commands_and_code_options(tmp_path: Path) -> None:
    out = run_cli("completion", "bash")
    assert out.returncode == 0, out.stderr
    script = tmp_path / "tradeguard.bash"
    script.write_text(out.stdout)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    probe_words = (
        f"source {script}; COMP_WORDS=(tradeguard disengage --code); COMP_CWORD=2; "
        "_shtab_tradeguard tradeguard --code disengage; echo ${COMPREPLY[@]}; "
        "COMP_WORDS=(tradeguard dis); COMP_CWORD=1; "
        "_shtab_tradeguard tradeguard dis tradeguard; echo ${COMPREPLY[@]}"
    )
    done = subprocess.run(
        ["bash", "-c", probe_words], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert sorted(done[0].split()) == ["--code-file", "--code-stdin"]
    assert done[1].split() == ["disengage"]


def test_completion_for_zsh() -> None:
    out = run_cli("completion", "zsh")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#compdef tradeguard")
    for word in ("disengage", "--code-stdin", "--code-file", "completion"):
        assert word in out.stdout
    assert "'--code[" not in out.stdout


def test_orders_piped_show_full_ids(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    journal = Journal(state)
    intent_id = "approval-needed-" + "x" * 40 + "-0001"
    journal.commit(
        [
            Write(
                "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
                "created_ts, updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    "tg-s1-" + intent_id,
                    "strategy-with-a-long-name",
                    intent_id,
                    b'{"symbol": "AAPL", "side": "buy", "qty": 1}',
                    "pending_approval",
                    1.0,
                    1.0,
                ),
            )
        ]
    )
    journal.close()
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{state}"\n')
    # Piped, with a terminal width that would cut the id short.
    out = run_cli("orders", "--config", str(config), env={"COLUMNS": "60"})
    assert out.returncode == 0, out.stderr
    assert intent_id in out.stdout
    assert "…" not in out.stdout
    assert max(len(line) for line in out.stdout.splitlines()) > 60
    wide = run_cli("orders", "--wide", "--config", str(config), env={"COLUMNS": "60"})
    assert intent_id in wide.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="a pseudo-terminal of Linux")
def test_orders_on_a_narrow_terminal_fold_the_id_and_wide_keeps_it_whole(
    tmp_path: Path,
) -> None:
    import pty  # noqa: PLC0415

    state = tmp_path / "state.db"
    journal = Journal(state)
    intent_id = "Q" * 64
    journal.commit(
        [
            Write(
                "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
                "created_ts, updated_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    "c1",
                    "s1",
                    intent_id,
                    b'{"symbol": "AAPL", "side": "buy", "qty": 1}',
                    "new",
                    1,
                    1,
                ),
            )
        ]
    )
    journal.close()
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{state}"\n')

    def on_a_terminal(*argv: str) -> str:
        leader, follower = pty.openpty()
        env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
        with subprocess.Popen(
            [TG, *argv, "--config", str(config)], stdout=follower, stderr=follower, env=env
        ) as process:
            os.close(follower)
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            process.wait(30)
        os.close(leader)
        return b"".join(chunks).decode()

    narrow = on_a_terminal("orders")
    # Other columns may be shortened; the id folds over lines, never cut.
    assert narrow.count("Q") == 64
    assert "Q…" not in narrow
    wide = on_a_terminal("orders", "--wide")
    assert intent_id in wide
