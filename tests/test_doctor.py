"""``tradeguard doctor`` against real components: mosquitto (with a password file, with
TLS), the paper venue, real files, real SQLite journals.

Blocking doctor runs go through ``anyio.to_thread.run_sync`` when the paper venue
serves from the test's own event loop.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from harness import Mosquitto, free_port, trading_tables, write_config
from sim_harness import fast_config, running_venue

from actors.admin_code import hash_code
from daemon.config import Config, load_config
from daemon.doctor import classify_skew, diagnose, run_doctor
from daemon.embedded_broker import find_mosquitto, mosquitto_config
from daemon.journal import Journal

MQTT_USER = "doctor-user"
MQTT_PASSWORD = "right-mqtt-password-7f3a"  # a test broker's password
WRONG_PASSWORD = "wrong-mqtt-password-91c2"
SECRET_KEY = "venue-secret-5d1e"
WRONG_SECRET = "not-the-venue-secret-0b7"
PAPER_KEY = "PKDOCTORKEY1"

needs_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd"
)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass
class Broker:
    """A mosquitto started with extra config lines (password file, TLS)."""

    port: int
    process: subprocess.Popen[bytes]


def _start_mosquitto(workdir: Path, extra: list[str], *, anonymous: bool = True) -> Broker:
    """Start mosquitto with tradeguard's loopback config plus ``extra`` lines."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    base = mosquitto_config(port=port, data_dir=workdir)
    if not anonymous:
        base = base.replace("allow_anonymous true", "allow_anonymous false")
    conf = workdir / "mosquitto.conf"
    conf.write_text(base + "\n".join(extra) + "\n", encoding="utf-8")
    process = subprocess.Popen(
        [find_mosquitto(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    for raw in process.stderr:
        if b" running" in raw:
            break
    else:
        raise RuntimeError(f"mosquitto did not start: {conf.read_text()}")
    stream = process.stderr
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
    return Broker(port=port, process=process)


def _stop(broker: Broker) -> None:
    broker.process.terminate()
    broker.process.wait(10)


@pytest.fixture(scope="module")
def secured_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A mosquitto that refuses anonymous clients and knows one user."""
    workdir = tmp_path_factory.mktemp("secured-mosquitto")
    passwords = workdir / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, MQTT_PASSWORD],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o600)
    broker = _start_mosquitto(workdir, [f"password_file {passwords}"], anonymous=False)
    yield broker
    _stop(broker)


def _secret(path: Path, value: str) -> str:
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def _doctor_json(config: Config, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the doctor with ``--json``; the exit code and the JSON it printed."""
    capsys.readouterr()
    code = run_doctor(config, as_json=True)
    out = capsys.readouterr().out
    # An in-process venue logs to stdout too: keep the doctor's JSON list only.
    lines = out.splitlines()
    start, end = lines.index("["), len(lines) - lines[::-1].index("]")
    return code, "\n".join(lines[start:end])


def _by_check(output: str) -> dict[str, dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads(output)
    assert all(set(r) == {"check", "status", "detail", "fix"} for r in results)
    return {r["check"]: r for r in results}


def _assert_fixes(results: dict[str, dict[str, Any]]) -> None:
    for result in results.values():
        if result["status"] in {"FAIL", "WARN"}:
            assert result["fix"], result


def _assert_no_secrets(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output


@pytest.fixture(scope="module")
def tls_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Path]]:
    """A mosquitto speaking only TLS, with a self-signed certificate for 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("tls-mosquitto")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    broker = _start_mosquitto(workdir, [f"certfile {cert}", f"keyfile {key}"])
    yield broker, cert
    _stop(broker)


def _broken_tables(state_root: Path, mqtt_port: int) -> dict[str, dict[str, Any]]:
    """Wrong MQTT password, a state folder that cannot exist, paper keys on the live URL."""
    blocker = state_root / "not-a-folder"
    blocker.write_text("a file where the state folder should be\n")
    return {
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "username": MQTT_USER,
            "password_file": _secret(state_root / "mqtt-password", WRONG_PASSWORD),
        },
        "broker": {
            "kind": "alpaca",
            "mode": "paper",
            "url": "https://api.alpaca.markets",
            "stream_url": "wss://api.alpaca.markets/stream",
            "key_id_file": _secret(state_root / "key-id", PAPER_KEY),
            "secret_key_file": _secret(state_root / "secret-key", SECRET_KEY),
        },
        "state": {"path": str(blocker / "state" / "state.db")},
        "kill": {"admin_code_hash": hash_code("123456", salt=b"0123456789abcdef")},
        "strategies.s1": {},
    }


@needs_passwd
def test_broken_setup_names_every_problem_with_a_fix(
    tmp_path: Path, secured_mosquitto: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(write_config(tmp_path, _broken_tables(tmp_path, secured_mosquitto.port)))

    code, output = _doctor_json(config, capsys)

    assert code == 1
    results = _by_check(output)
    _assert_fixes(results)
    _assert_no_secrets(output, WRONG_PASSWORD, SECRET_KEY, PAPER_KEY)
    failed = {name for name, r in results.items() if r["status"] == "FAIL"}
    # The config check runs what `run` checks at start: it refuses the mode too.
    assert failed == {"config", "mqtt", "state folder", "broker mode"}, results
    assert "would refuse it: broker.mode is 'paper'" in results["config"]["detail"]
    mqtt = results["mqtt"]
    assert "refused the login" in mqtt["detail"]
    # mosquitto 2 answers 135 (not authorized) rather than 134 (bad user name or password).
    assert "[code:134]" in mqtt["detail"] or "[code:135]" in mqtt["detail"]
    assert "mqtt.username" in mqtt["fix"]
    assert "password file" in mqtt["fix"]
    state = results["state folder"]
    assert "cannot be created" in state["detail"]
    assert "mkdir -p" in state["fix"]
    assert "StateDirectory=" in state["fix"]
    mode = results["broker mode"]
    assert "broker.mode is 'paper' but broker.url points at live trading" in mode["detail"]
    assert "paper-api.alpaca.markets" in mode["fix"]
    # Paper keys are never sent to the live endpoint.
    assert results["broker"]["status"] == "SKIP"
    assert results["clock"]["status"] == "SKIP"


@needs_passwd
def test_broken_setup_table_names_problems_and_hides_secrets(
    tmp_path: Path, secured_mosquitto: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(write_config(tmp_path, _broken_tables(tmp_path, secured_mosquitto.port)))

    code = run_doctor(config, as_json=False)

    output = capsys.readouterr().out
    assert code == 1
    assert output.count("FAIL") >= 4
    assert output.count("fix:") >= 4
    assert "4 fail" in output
    _assert_no_secrets(output, WRONG_PASSWORD, SECRET_KEY, PAPER_KEY)


@needs_passwd
def test_right_mqtt_password_logs_in(tmp_path: Path, secured_mosquitto: Broker) -> None:
    tables: dict[str, dict[str, Any]] = {
        "mqtt": {
            "host": "127.0.0.1",
            "port": secured_mosquitto.port,
            "username": MQTT_USER,
            "password_file": _secret(tmp_path / "mqtt-password", MQTT_PASSWORD),
        },
        "state": {"path": str(tmp_path / "state.db")},
        "broker.sim": {"port": 0},
    }
    results = {r.check: r for r in diagnose(load_config(write_config(tmp_path, tables)))}

    assert results["mqtt"].status == "PASS", results["mqtt"]
    assert f"as {MQTT_USER}" in results["mqtt"].detail
    assert results["secret mqtt.password_file"].status == "PASS"
    assert all(MQTT_PASSWORD not in r.detail + (r.fix or "") for r in results.values())


@pytest.mark.anyio
async def test_healthy_setup_passes(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    Journal(state_dir / "state.db").close()
    async with running_venue(fast_config()) as venue:
        tables = trading_tables(mosquitto, prefix, state_dir, venue.base_url)
        tables["kill"] = {"admin_code_hash": hash_code("123456", salt=b"0123456789abcdef")}
        for name in ("key_id", "secret_key"):
            (state_dir / name).chmod(0o600)
        config = load_config(write_config(tmp_path, tables))

        before = sorted(state_dir.iterdir())
        code, output = await anyio.to_thread.run_sync(partial(_doctor_json, config, capsys))

    results = _by_check(output)
    assert code == 0
    # Reading the journal leaves no -wal/-shm behind (root-owned ones would lock the daemon out).
    assert sorted(state_dir.iterdir()) == before
    assert {r["status"] for r in results.values()} == {"PASS"}, results
    assert "every table present" in results["journal"]["detail"]
    assert "status ACTIVE" in results["broker"]["detail"]
    assert "/v2/clock timestamp" in results["clock"]["detail"]
    _assert_no_secrets(output, "PKTESTKEY", "test-secret")


@pytest.mark.anyio
async def test_refused_keys_and_clock_skew(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_venue(fast_config(key_id=PAPER_KEY, secret_key=SECRET_KEY)) as venue:
        tables: dict[str, dict[str, Any]] = {
            "state": {"path": str(tmp_path / "state.db")},
            "broker": {
                "kind": "alpaca",
                "url": venue.base_url,
                "stream_url": venue.stream_url,
                "key_id_file": _secret(tmp_path / "key-id", PAPER_KEY),
                "secret_key_file": _secret(tmp_path / "secret-key", WRONG_SECRET),
            },
        }
        config = load_config(write_config(tmp_path, tables))
        code, output = await anyio.to_thread.run_sync(partial(_doctor_json, config, capsys))
        refused = _by_check(output)

        _secret(tmp_path / "secret-key", SECRET_KEY)
        venue.advance_clock(3.0)
        warned = {r.check: r for r in await anyio.to_thread.run_sync(diagnose, config)}
        venue.advance_clock(7.0)
        failed = {r.check: r for r in await anyio.to_thread.run_sync(diagnose, config)}

    assert code == 1
    assert refused["broker"]["status"] == "FAIL"
    assert "the broker refused the keys (HTTP 401" in refused["broker"]["detail"]
    assert "broker.secret_key_file" in refused["broker"]["fix"]
    assert refused["clock"]["status"] == "SKIP"
    _assert_no_secrets(output, WRONG_SECRET, PAPER_KEY)
    assert warned["broker"].status == "PASS"
    assert warned["clock"].status == "WARN", warned["clock"]
    assert "timedatectl set-ntp true" in (warned["clock"].fix or "")
    assert failed["clock"].status == "FAIL", failed["clock"]
    assert "10.0" in failed["clock"].detail
    assert "behind the broker" in failed["clock"].detail


def test_skew_thresholds() -> None:
    assert classify_skew(0.4, source="x").status == "PASS"
    assert classify_skew(1.5, source="x").status == "WARN"
    assert classify_skew(-1.5, uncertainty=0.6, source="x").status == "PASS"
    assert classify_skew(-6.0, source="x").status == "FAIL"


def test_mqtt_nobody_listening_names_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    tables: dict[str, dict[str, Any]] = {
        "mqtt": {"host": "127.0.0.1", "port": port},
        "state": {"path": str(tmp_path / "state.db")},
        "broker.sim": {"port": 0},
    }
    results = {r.check: r for r in diagnose(load_config(write_config(tmp_path, tables)))}

    assert results["mqtt"].status == "FAIL"
    assert f"127.0.0.1:{port}" in results["mqtt"].detail
    assert "connection refused" in results["mqtt"].detail
    assert "mqtt.port" in (results["mqtt"].fix or "")


@needs_openssl
def test_mqtt_tls_untrusted_certificate_then_trusted(
    tmp_path: Path, tls_mosquitto: tuple[Broker, Path]
) -> None:
    broker, cert = tls_mosquitto
    tables: dict[str, dict[str, Any]] = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "tls": True},
        "state": {"path": str(tmp_path / "state.db")},
        "broker.sim": {"port": 0},
    }
    untrusted = {r.check: r for r in diagnose(load_config(write_config(tmp_path, tables)))}
    tables["mqtt"]["ca_file"] = str(cert)
    trusted = {r.check: r for r in diagnose(load_config(write_config(tmp_path, tables)))}

    assert untrusted["mqtt"].status == "FAIL"
    assert "certificate verify failed" in untrusted["mqtt"].detail
    assert "mqtt.ca_file" in (untrusted["mqtt"].fix or "")
    assert trusted["mqtt"].status == "PASS", trusted["mqtt"]
    assert "(TLS)" in trusted["mqtt"].detail


def _embedded(tmp_path: Path, **tables: dict[str, Any]) -> dict[str, Any]:
    """Results of a config with the embedded broker and venue on free ports."""
    base: dict[str, dict[str, Any]] = {
        "mqtt": {"port": 0},
        "broker.sim": {"port": 0},
        "state": {"path": str(tmp_path / "state" / "state.db")},
        "strategies.s1": {},
    }
    base.update(tables)
    return {r.check: r for r in diagnose(load_config(write_config(tmp_path, base)))}


def test_state_folder_states(tmp_path: Path) -> None:
    missing = _embedded(tmp_path)
    assert missing["state folder"].status == "PASS"  # the first start makes it
    assert "will create it" in missing["state folder"].detail

    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o777)
    loose = _embedded(tmp_path)
    assert loose["state folder"].status == "WARN"
    assert "chmod 700" in (loose["state folder"].fix or "")

    (tmp_path / "state").chmod(0o700)
    (tmp_path / "state" / "state.db").write_bytes(b"this is not sqlite, it is long enough" * 4)
    garbage = _embedded(tmp_path)
    assert garbage["state folder"].status == "PASS"
    assert garbage["journal"].status == "FAIL"
    assert "move" in (garbage["journal"].fix or "")

    (tmp_path / "state" / "state.db").unlink()
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        db.execute("CREATE TABLE meta (key TEXT)")
    foreign = _embedded(tmp_path)
    assert foreign["journal"].status == "FAIL"
    assert (
        "missing tables kill_switch, audit, decisions, orders, fills" in foreign["journal"].detail
    )


def test_secret_files_and_kill_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    _secret(credentials / "mqtt-password", MQTT_PASSWORD)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    loose = tmp_path / "totp"
    loose.write_text("JBSWY3DPEHPK3PXP\n")
    loose.chmod(0o644)

    results = _embedded(
        tmp_path,
        mqtt={"port": 0, "password_file": "mqtt-password"},
        kill={"totp_secret_file": str(loose), "admin_code_hash": "scrypt$1$2$3$bad$hash"},
    )

    assert results["secret mqtt.password_file"].status == "PASS"
    assert str(credentials) in results["secret mqtt.password_file"].detail
    assert results["secret kill.totp_secret_file"].status == "WARN"
    assert f"chmod 600 {loose}" == results["secret kill.totp_secret_file"].fix
    assert results["kill release"].status == "PASS"
    assert results["admin code hash"].status == "FAIL"
    assert "tradeguard hash-code" in (results["admin code hash"].fix or "")

    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    unset = _embedded(tmp_path, mqtt={"port": 0, "password_file": "mqtt-password"})
    assert unset["secret mqtt.password_file"].status == "FAIL"
    assert "LoadCredential=" in (unset["secret mqtt.password_file"].fix or "")
    # No release method: the daemon makes an admin code, as on the built-in defaults.
    assert unset["kill release"].status == "PASS"
    assert str(tmp_path / "state" / "admin-code") in unset["kill release"].detail


def test_live_mode_with_a_paper_key_is_named(tmp_path: Path) -> None:
    results = _embedded(
        tmp_path,
        broker={
            "kind": "alpaca",
            "mode": "live",
            "url": "https://api.alpaca.markets",
            "stream_url": "wss://api.alpaca.markets/stream",
            "key_id_file": _secret(tmp_path / "key-id", PAPER_KEY),
            "secret_key_file": _secret(tmp_path / "secret-key", SECRET_KEY),
        },
    )

    assert results["broker mode"].status == "FAIL"
    assert "not a live key" in results["broker mode"].detail
    assert results["broker"].status == "SKIP"


def test_busy_embedded_ports_warn(tmp_path: Path) -> None:
    with socket.socket() as mqtt, socket.socket() as venue:
        for sock in (mqtt, venue):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        results = _embedded(
            tmp_path,
            mqtt={"port": mqtt.getsockname()[1]},
            **{"broker.sim": {"port": venue.getsockname()[1]}},
        )

    assert results["mosquitto"].status == "PASS"
    assert results["mqtt port"].status == "WARN"
    assert "running tradeguard daemon" in results["mqtt port"].detail
    assert results["broker port"].status == "WARN"
    assert "broker.sim.port" in (results["broker port"].fix or "")


def test_end_to_end_json_in_a_subprocess(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "mqtt": {"port": 0, "password_file": str(tmp_path / "absent")},
            "broker.sim": {"port": 0},
            "state": {"path": str(tmp_path / "state.db")},
            "strategies.s1": {},
        },
    )
    script = (
        "import sys; from daemon.config import load_config; from daemon.doctor import run_doctor;"
        " sys.exit(run_doctor(load_config(sys.argv[1]), as_json=True))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    results = _by_check(done.stdout)
    # `run` would refuse the missing password file: the config check says so too.
    assert results["config"]["status"] == "FAIL"
    assert "mqtt.password_file" in results["config"]["detail"]
    assert results["secret mqtt.password_file"]["status"] == "FAIL"
    _assert_fixes(results)
