"""The command line: built-in defaults, admin-code tools, start-up refusals."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import anyio
import pyotp
import pytest
from harness import VENV_BIN, Mosquitto, base_tables, running_daemon, write_config

from actors.admin_code import AdminCodeVerifier
from daemon.cli_parser import build_parser
from daemon.journal import Journal
from sim.cli import add_options as add_sim_options

TG = str(VENV_BIN / "tradeguard")


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(
    port_busy(1883) or port_busy(8790),
    reason="ports 1883/8790 are in use here (another broker or daemon): the defaults need them",
)
def test_builtin_defaults_start_print_and_stop_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    process = subprocess.Popen(
        [TG, "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "ready: mqtt 127.0.0.1:1883" in line
        assert "broker sim http://127.0.0.1:8790 (paper)" in line
        code_file = tmp_path / "tradeguard-state" / "admin-code"
        assert str(code_file.relative_to(tmp_path)) in line
        assert stat.S_IMODE(code_file.stat().st_mode) == 0o600
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_hash_code_reads_stdin_and_verifies(tmp_path: Path) -> None:
    out = subprocess.run(
        [TG, "hash-code"], input="correct-horse\n", capture_output=True, text=True, check=True
    )
    encoded = out.stdout.strip()
    assert encoded.startswith("scrypt$")
    assert "correct-horse" not in out.stdout + out.stderr
    verifier = AdminCodeVerifier(totp_secret=None, code_hash=encoded)
    assert verifier.verify("correct-horse").ok
    assert not verifier.verify("correct-horsf").ok
    short = subprocess.run(
        [TG, "hash-code"], input="abc\n", capture_output=True, text=True, check=False
    )
    assert short.returncode == 2
    assert "at least 6" in short.stderr


def test_totp_setup_writes_a_private_secret_and_a_uri(tmp_path: Path) -> None:
    target = tmp_path / "totp.secret"
    out = subprocess.run(
        [TG, "totp-setup", "--output", str(target)], capture_output=True, text=True, check=True
    )
    secret = target.read_text().strip()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "otpauth://totp/" in out.stdout
    assert AdminCodeVerifier(totp_secret=secret, code_hash=None).verify(pyotp.TOTP(secret).now()).ok
    again = subprocess.run(
        [TG, "totp-setup", "--output", str(target)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 2
    assert target.read_text().strip() == secret


@pytest.mark.parametrize(
    ("mode", "url", "key", "words"),
    [
        ("paper", "https://api.alpaca.markets", "PKKEY", "points at live trading"),
        ("live", "https://paper-api.alpaca.markets", "AKKEY", "is not https://api.alpaca.markets"),
        ("live", "https://api.alpaca.markets", "PKKEY", "not a live key"),
    ],
)
def test_run_refuses_a_mode_that_disagrees(
    tmp_path: Path, mode: str, url: str, key: str, words: str
) -> None:
    (tmp_path / "key").write_text(key)
    (tmp_path / "secret").write_text("s")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1\n[state]\npath = "{tmp_path}/st/state.db"\n'
        f'[broker]\nkind = "alpaca"\nmode = "{mode}"\nurl = "{url}"\n'
        f'stream_url = "wss://x/stream"\nkey_id_file = "{tmp_path}/key"\n'
        f'secret_key_file = "{tmp_path}/secret"\n[strategies.s1]\nallocation = 0.1\n'
    )
    out = subprocess.run(
        [TG, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 2
    assert words in out.stderr
    assert out.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["sim", "--port", "70000"], "argument --port: a port is 0-65535"),
        (["sim", "--port", "-1"], "argument --port"),
        (["sim", "--port", "http"], "argument --port: not a port number"),
        (["sim", "--host", "no-such-host.invalid", "--port", "0"], "--host: cannot listen"),
        (["sim", "--cash", "nan"], "argument --cash"),
        (["sim", "--cash", "inf"], "argument --cash"),
        (["sim", "--rate-limit", "0"], "argument --rate-limit"),
        (["sim", "--key-id", "", "--secret-key", ""], "argument --key-id: must not be empty"),
        (["schema", "--config", "/no/such/file.toml"], "cannot read config file"),
        (["--config", "/no/such/file.toml", "hash-code"], "cannot read config file"),
        (["orders", "--limit", "0"], "argument --limit"),
        (["orders", "--strategy", "no such"], "argument --strategy"),
        (["demo-strategy", "--rounds", "-3"], "argument --rounds"),
        (["kill", "--strategy", "s1/../x"], "argument --strategy: 's1/../x' is not a strategy"),
        (["kill", "--reason", "r" * 201], "argument --reason: at most 200"),
        (["pause", "--strategy", ""], "argument --strategy"),
        (["promote", "s1/../x"], "argument SID: 's1/../x' is not a strategy id"),
        (["demote", "s1", "--reason", "r" * 201], "argument --reason: at most 200"),
        (["approve", "--strategy", "s1", "--intent", "a b", "--code-stdin"], "argument --intent"),
        (["totp-setup", "--output", "/proc/no-such-folder/totp"], "--output: cannot write"),
        (["run", "--config", "/"], "cannot read config file /"),
        (["status", "--config", "/no/such/file.toml"], "cannot read config file"),
        (["check-config", "/"], "cannot read config file /"),
        (["frobnicate"], "invalid choice"),
        (["kill", "--strategy", "s1\nx"], "argument --strategy: 's1\\nx' is not"),
        (["status", "--config", "new\nline.toml"], "cannot read config file new\\nline.toml"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, argv: list[str], words: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    out = subprocess.run(
        [TG, *argv], capture_output=True, text=True, check=False, timeout=30, cwd=tmp_path, env=env
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("tradeguard: error: ")
    assert words in out.stderr


def test_sim_on_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [TG, "sim", "--port", str(port)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    assert errors == [
        f"tradeguard: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_run_with_a_busy_metrics_port_is_one_line_and_exit_2(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    tables = base_tables(mosquitto, prefix, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tables["metrics"] = {"enabled": True, "port": port}
        tables["log"] = {"level": "error"}
        config = write_config(tmp_path, tables)
        out = subprocess.run(
            [TG, "run", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-1] == (
        f"tradeguard: error: metrics.port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    )


def _every_command() -> list[list[str]]:
    """Each subcommand with its required arguments."""
    return [
        ["run"],
        ["kill"],
        ["disengage", "--code-stdin"],
        ["reset-circuit", "--code-file", "code"],
        ["pause", "--strategy", "s1"],
        ["resume", "--strategy", "s1"],
        ["approve", "--strategy", "s1", "--intent", "i1", "--code-stdin"],
        ["deny", "--strategy", "s1", "--intent", "i1"],
        ["promote", "s1", "--code-stdin"],
        ["demote", "s1", "--flatten"],
        ["status"],
        ["sim"],
        ["schema"],
        ["orders"],
        ["doctor"],
        ["positions"],
        ["demo-strategy"],
        ["check-config"],
        ["hash-code"],
        ["totp-setup", "--output", "x"],
        ["completion", "bash"],
    ]


def test_every_command_takes_config_before_or_after_its_name() -> None:
    parser = build_parser(sim_options=add_sim_options)
    subcommands = next(
        action._name_parser_map
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    assert sorted(c[0] for c in _every_command()) == sorted(subcommands)
    for command in _every_command():
        assert parser.parse_args(["--config", "before.toml", *command]).config == "before.toml"
        assert parser.parse_args([*command, "--config", "after.toml"]).config == "after.toml"
        assert parser.parse_args(command).config is None
        both = parser.parse_args(["--config", "before.toml", *command, "--config", "after.toml"])
        assert both.config == "after.toml"


def test_journal_commands_read_the_config_given_anywhere(tmp_path: Path) -> None:
    state = tmp_path / "elsewhere" / "state.db"
    Journal(state).close()
    config = tmp_path / "c.toml"
    config.write_text(f'[state]\npath = "{state}"\n')
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    for argv, extra in (
        (["--config", str(config), "orders", "--json"], {}),
        (["orders", "--json", "--config", str(config)], {}),
        (["orders", "--json"], {"TRADEGUARD_CONFIG": str(config)}),
        (["--config", str(config), "positions", "--json"], {}),
    ):
        out = subprocess.run(
            [TG, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            cwd=tmp_path,
            env={**env, **extra},
        )
        assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "[]", ""), argv
    # Without any: the built-in defaults (./tradeguard-state), which has no journal here.
    out = subprocess.run(
        [TG, "orders"], capture_output=True, text=True, check=False, cwd=tmp_path, env=env
    )
    assert out.returncode == 2
    assert "no journal at tradeguard-state/state.db" in out.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"not a database at all", "file is not a database"), (b"", "no such table")],
)
def test_an_unreadable_journal_is_one_line_and_exit_2(
    tmp_path: Path, content: bytes, words: str
) -> None:
    (tmp_path / "state.db").write_bytes(content)
    config = tmp_path / "c.toml"
    config.write_text('[state]\npath = "state.db"\n')
    for command in ("orders", "positions"):
        out = subprocess.run(
            [TG, command, "--config", str(config)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1
        assert f"cannot read the journal {tmp_path / 'state.db'}: {words}" in out.stderr


def test_client_commands_check_the_mqtt_login_files_first(tmp_path: Path) -> None:
    (tmp_path / "not-a-cert.pem").write_text("garbage\n")
    cases = {
        "ca_file = 'absent.pem'": "mqtt.ca_file: cannot load",
        "cert_file = 'not-a-cert.pem'": "mqtt.cert_file: cannot load the client certificate",
        "password_file = 'absent'": "mqtt.password_file: file 'absent' not found",
    }
    for line, words in cases.items():
        config = tmp_path / "c.toml"
        config.write_text(f"[mqtt]\nhost = '127.0.0.1'\nport = 1\ntls = true\n{line}\n")
        for command in (["kill"], ["status"], ["pause", "--strategy", "s1"], ["demo-strategy"]):
            out = subprocess.run(
                [TG, *command, "--config", str(config)],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            assert out.returncode == 2, (command, out.stderr)
            assert out.stderr.count("\n") == 1, out.stderr
            assert words in out.stderr


@pytest.mark.anyio
async def test_kill_honours_config_before_the_command(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}

    def tradeguard(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TG, *argv], capture_output=True, text=True, check=False, timeout=30, env=env
        )

    async with running_daemon(config) as daemon:
        out = await anyio.to_thread.run_sync(
            lambda: tradeguard("--config", str(config), "kill", "--strategy", "s1")
        )
        assert out.returncode == 0, out.stderr
        assert daemon.gate.engaged("s1")
        assert not daemon.gate.engaged(None)
        env["TRADEGUARD_CONFIG"] = str(config)
        out = await anyio.to_thread.run_sync(lambda: tradeguard("kill", "--reason", "env"))
        assert out.returncode == 0, out.stderr
        assert daemon.gate.engaged(None)
