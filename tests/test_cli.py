"""The command line: built-in defaults, admin-code tools, start-up refusals."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pyotp
import pytest
from harness import VENV_BIN

from daemon.admin_code import AdminCodeVerifier

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
