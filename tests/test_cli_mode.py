"""``tradeguard promote`` / ``demote`` and the modes in ``status``.

The command line runs for real (a process, or in this process where a timeout is
shortened) on a real mosquitto. Until the daemon answers promote and demote, the
other end is a peer on the broker that answers each command with the audit record
the daemon sends (docs/protocol.md: ``mode.promote``/``mode.demote``, the command's
``source`` echoed, ``reasons`` on unmet evidence); the tests against a running
daemon come with its side.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import VENV_BIN, Mosquitto, Probe, probe

from daemon import client_commands as cc
from daemon.cli_parser import build_parser
from daemon.config import load_config
from protocol.messages import Demote, Promote
from protocol.topics import Topics

pytestmark = pytest.mark.anyio

TG = str(VENV_BIN / "tradeguard")
CODE = "correct-horse-7"


def run_cli(*argv: str, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    """``tradeguard ARGV`` as a process; ``stdin`` is what it reads (never a terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    return subprocess.run(
        [TG, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**env, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def client_config(tmp_path: Path, mosquitto: Mosquitto, prefix: str, login: bool) -> Path:
    path = tmp_path / "c.toml"
    user = "username = 'operator'\n" if login else ""
    path.write_text(
        f"[mqtt]\nhost = '127.0.0.1'\nport = {mosquitto.port}\ntopic_prefix = '{prefix}'\n"
        f"{user}[strategies.s1]\n[strategies.s2]\n"
    )
    return path


# ---------------------------------------------------------------- the parser


def test_promote_and_demote_parse() -> None:
    parser = build_parser()
    promote = parser.parse_args(["promote", "s1", "--code-stdin", "--operator", "alice"])
    assert (promote.command, promote.strategy, promote.code_stdin) == ("promote", "s1", True)
    assert promote.operator == "alice"
    assert parser.parse_args(["promote", "s1", "--code-file", "f"]).code_file == "f"
    demote = parser.parse_args(["demote", "s1"])
    assert (demote.strategy, demote.flatten, demote.reason) == ("s1", False, "cli")
    demote = parser.parse_args(["demote", "--flatten", "s2", "--reason", "drawdown"])
    assert (demote.strategy, demote.flatten, demote.reason) == ("s2", True, "drawdown")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["promote", "s1", "--code", "s3cret-99"], "argument --code: codes are never taken"),
        (["promote", "--code=s3cret-99", "s1"], "argument --code: codes are never taken"),
        (["promote"], "the following arguments are required: SID"),
        (["promote", "s1/../x"], "argument SID: 's1/../x' is not a strategy id"),
        (["promote", "s1", "--code-stdin", "--code-file", "f"], "not allowed with argument"),
        (["promote", "s1", "--operator", "o" * 201], "argument --operator: at most 200"),
        (["demote"], "the following arguments are required: SID"),
        (["demote", "a b"], "argument SID: 'a b' is not a strategy id"),
        (["demote", "s1", "--reason", "r" * 201], "argument --reason: at most 200"),
        (["demote", "s1", "--code-stdin"], "unrecognized arguments: --code-stdin"),
        (["demote", "s1", "--flatten=yes"], "argument --flatten: ignored explicit argument"),
        (["demote", "s1", "--code", "s3cret-99"], "argument --code: codes are never taken"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], words: str) -> None:
    out = run_cli(*argv, stdin=f"{CODE}\n")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("tradeguard: error: ")
    assert words in out.stderr
    assert "s3cret-99" not in out.stderr


@pytest.mark.parametrize(
    ("argv", "stdin", "words"),
    [
        (["promote", "s1"], "", "no admin code on stdin"),
        (["promote", "s1", "--code-stdin"], "\n", "no admin code on stdin"),
        (["promote", "s1", "--code-file", "/no/such/code"], None, "--code-file: cannot read"),
        (["promote", "s1"], "x" * 200 + "\n", "at most 128"),
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


def test_no_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[mqtt]\nhost = '127.0.0.1'\nport = 1\n")
    for argv in (["demote", "s1", "--flatten"], ["promote", "s1", "--code-stdin"]):
        out = run_cli(*argv, "--config", str(config), stdin=f"{CODE}\n")
        assert out.returncode == 1, out.stderr
        assert out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr
        assert "cannot connect to MQTT" in out.stderr


def test_completion_offers_the_mode_commands(tmp_path: Path) -> None:
    bash = run_cli("completion", "bash")
    assert bash.returncode == 0, bash.stderr
    script = tmp_path / "tradeguard.bash"
    script.write_text(bash.stdout)
    probe_words = (
        f"source {script}; COMP_WORDS=(tradeguard pro); COMP_CWORD=1; "
        "_shtab_tradeguard tradeguard pro tradeguard; echo ${COMPREPLY[@]}; "
        "COMP_WORDS=(tradeguard demote --fl); COMP_CWORD=2; "
        "_shtab_tradeguard tradeguard --fl demote; echo ${COMPREPLY[@]}; "
        "COMP_WORDS=(tradeguard promote --code); COMP_CWORD=2; "
        "_shtab_tradeguard tradeguard --code promote; echo ${COMPREPLY[@]}"
    )
    done = subprocess.run(
        ["bash", "-c", probe_words], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert done[0].split() == ["promote"]
    assert done[1].split() == ["--flatten"]
    assert sorted(done[2].split()) == ["--code-file", "--code-stdin"]
    zsh = run_cli("completion", "zsh")
    assert zsh.returncode == 0, zsh.stderr
    for word in ("promote", "demote", "--flatten"):
        assert word in zsh.stdout


# ---------------------------------------------------------------- the daemon's answers


def _answer(command: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The audit record the daemon sends for ``command`` (docs/protocol.md)."""
    return {
        "ts": 1.0,
        "type": f"mode.{command['type']}",
        "scope": "strategy",
        "strategy_id": command["strategy_id"],
        "source": command["source"],
        "ok": False,
        "detail": "",
        **fields,
    }


async def _answered(
    mosquitto: Mosquitto,
    prefix: str,
    call: Callable[[], Any],
    reply: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> tuple[Any, str, dict[str, Any]]:
    """Run ``call`` (the CLI) while a peer answers its command with ``reply(command)``.

    Before the answer, a record of the same type for another source goes out: the CLI
    must wait for its own. Returns what ``call`` returned, the command's topic and body.
    """
    t = Topics(prefix)
    result: list[Any] = []

    async def cli() -> None:
        result.append(await anyio.to_thread.run_sync(call))

    async with (
        probe(mosquitto, t.kill_command, t.admin_command("operator")) as p,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(cli)
        topic, command = await _command(p)
        if reply is not None:
            decoy = _answer({**command, "source": "someone-else"}, ok=True, detail="no")
            await p.publish(t.audit, decoy)
            await p.publish(t.audit, reply(command))
    return result[0], topic, command


async def _command(p: Probe) -> tuple[str, dict[str, Any]]:
    await p.wait_until(lambda: bool(p.received), timeout=30)
    message = p.received[0]
    body = await p.expect(message.topic)
    return message.topic, body


def _tg(config: Path, *argv: str, stdin: str = "") -> Callable[[], Any]:
    return functools.partial(run_cli, "--config", str(config), *argv, stdin=stdin)


async def test_a_promotion_goes_to_the_login_s_admin_topic_and_prints_one_line(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = client_config(tmp_path, mosquitto, prefix, login=True)
    out, topic, command = await _answered(
        mosquitto,
        prefix,
        _tg(config, "promote", "s1", "--operator", "alice", stdin=f"{CODE}\n"),
        lambda c: _answer(c, ok=True, detail="promoted to live"),
    )
    assert topic == Topics(prefix).admin_command("operator")
    assert command["type"] == "promote"
    assert (command["strategy_id"], command["code"], command["operator"]) == ("s1", CODE, "alice")
    assert command["source"].startswith("cli-")
    assert (out.returncode, out.stdout, out.stderr) == (0, "strategy s1: promoted to live\n", "")
    assert CODE not in out.stdout + out.stderr


async def test_a_demotion_needs_no_code_and_goes_to_the_kill_topic(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = client_config(tmp_path, mosquitto, prefix, login=True)
    detail = "demoted to paper: 20 live orders cancelled, 2 live positions closed"
    out, topic, command = await _answered(
        mosquitto,
        prefix,
        _tg(config, "demote", "s1", "--flatten", "--reason", "drawdown"),
        lambda c: _answer(c, ok=True, detail=detail),
    )
    assert topic == Topics(prefix).kill_command
    assert command["type"] == "demote"
    assert (command["strategy_id"], command["flatten"], command["reason"]) == (
        "s1",
        True,
        "drawdown",
    )
    assert "code" not in command
    assert (out.returncode, out.stdout, out.stderr) == (0, f"strategy s1: {detail}\n", "")


async def test_unmet_evidence_lists_each_criterion_and_exits_2(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = client_config(tmp_path, mosquitto, prefix, login=False)
    unmet = ["2 paper sessions, 5 needed", "3 filled paper orders, 20 needed"]
    reasons = [{"code": "MODE_CHANGE_REFUSED", "message": m} for m in unmet]
    out, topic, _ = await _answered(
        mosquitto,
        prefix,
        _tg(config, "promote", "s2", stdin=f"{CODE}\n"),
        lambda c: _answer(c, detail="refused: " + "; ".join(unmet), reasons=reasons),
    )
    assert topic == Topics(prefix).kill_command  # no login: the open command topic
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "tradeguard: error: strategy s2: promotion refused:",
        f"  - {unmet[0]}",
        f"  - {unmet[1]}",
    ]


@pytest.mark.parametrize(
    "case",
    [
        (
            ["promote", "s1"],
            {"detail": "denied: wrong code"},
            3,
            "denied: wrong code\n",
            "",
        ),
        (
            ["promote", "nosuch"],
            {"detail": "unknown strategy 'nosuch'"},
            2,
            "",
            "tradeguard: error: unknown strategy 'nosuch'\n",
        ),
        (
            # The code check names an unknown strategy once the code is right.
            ["promote", "nosuch"],
            {"detail": "denied: unknown strategy 'nosuch'"},
            2,
            "",
            "tradeguard: error: unknown strategy 'nosuch'\n",
        ),
        (
            ["promote", "s1"],
            {"detail": "s1 is live already"},
            2,
            "",
            "tradeguard: error: s1 is live already\n",
        ),
        (
            ["demote", "s1"],
            {"detail": "s1 trades paper already"},
            2,
            "",
            "tradeguard: error: s1 trades paper already\n",
        ),
        (
            # Told apart by the fields: 'denied' inside a refusal is not a denied code.
            ["promote", "s1"],
            {"detail": "refused: last kill denied trading", "reasons": []},
            2,
            "",
            "tradeguard: error: refused: last kill denied trading\n",
        ),
    ],
)
async def test_refusals_and_denials(
    mosquitto: Mosquitto,
    prefix: str,
    tmp_path: Path,
    case: tuple[list[str], dict[str, Any], int, str, str],
) -> None:
    argv, fields, code, stdout, stderr = case
    config = client_config(tmp_path, mosquitto, prefix, login=False)
    out, _, _ = await _answered(
        mosquitto, prefix, _tg(config, *argv, stdin=f"{CODE}\n"), lambda c: _answer(c, **fields)
    )
    assert (out.returncode, out.stdout, out.stderr) == (code, stdout, stderr)


async def test_no_answer_in_time_is_exit_1(
    mosquitto: Mosquitto,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (cc.PROMOTE_TIMEOUT_S, cc.DEMOTE_TIMEOUT_S) == (10.0, 45.0)
    monkeypatch.setattr(cc, "PROMOTE_TIMEOUT_S", 0.4)
    monkeypatch.setattr(cc, "DEMOTE_TIMEOUT_S", 0.6)
    config = load_config(client_config(tmp_path, mosquitto, prefix, login=False))
    for command, waited in (
        (Promote(strategy_id="s1", code=CODE), 0.4),
        (Demote(strategy_id="s1"), 0.6),
    ):
        result, _, _ = await _answered(
            mosquitto, prefix, functools.partial(cc.change_mode, config, command), None
        )
        assert result == 1
        err = capsys.readouterr().err
        assert err == f"tradeguard: no answer from the daemon within {waited:g} s\n"


# ---------------------------------------------------------------- status


async def test_status_shows_each_strategy_s_mode_and_each_account(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = client_config(tmp_path, mosquitto, prefix, login=False)
    t = Topics(prefix)
    account = {"broker": "sim", "broker_connected": True, "circuit": "closed"}
    daemon = {
        "version": "9.9",
        "mode": "paper",
        "broker": "sim",
        "broker_connected": True,
        "circuit": "closed",
        "accounts": {
            "live": account
            | {"equity": 25000.5, "daily_drawdown": 0.0, "total_drawdown": 0.0}
            | {"circuit": "open", "strategies": ["s1"]},
            "paper": account
            | {"equity": None, "daily_drawdown": None, "total_drawdown": None}
            | {"strategies": ["s2"]},
        },
    }
    strategies = {"s1": "live", "s2": "paper"}
    async with probe(mosquitto, t.daemon_state) as p:
        await p.publish(t.daemon_state, daemon, retain=True)
        for sid, mode in strategies.items():
            state = {"strategy_id": sid, "mode": mode, "open_orders": 0, "positions": {}}
            await p.publish(t.strategy_state(sid), state, retain=True)
        await p.expect(t.daemon_state)
        try:
            out = await anyio.to_thread.run_sync(_tg(config, "status"))
            as_json = await anyio.to_thread.run_sync(_tg(config, "status", "--json"))
        finally:
            for topic in (t.daemon_state, t.strategy_state("s1"), t.strategy_state("s2")):
                await p.publish(topic, b"", retain=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    accounts = [line for line in lines if line.startswith("account ")]
    assert accounts == [
        "account paper: broker sim (connected)  equity -  circuit closed  strategies s2",
        "account live: broker sim (connected)  equity 25,000.50  circuit open  strategies s1",
    ]
    rows = {
        line.split()[1]: line.split() for line in lines if line.split()[1:2] in (["s1"], ["s2"])
    }
    assert rows["s1"][3] == "live"
    assert rows["s2"][3] == "paper"
    assert as_json.returncode == 0, as_json.stderr
    assert '"accounts"' in as_json.stdout
    assert '"mode": "live"' in as_json.stdout
