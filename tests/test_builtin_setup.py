"""Issue 15, built-in set-up: the embedded mosquitto is secured like the production one.

The README's tour, run literally on the built-in defaults, never shows the admin code
to another login; anonymous clients are refused; nobody but the daemon writes state;
the CLI and the demo strategy find their generated logins; a config without
strategies is one line, exit 2; ``doctor`` has nothing to warn about while the
daemon runs; a failed start leaves the state folder free.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from harness import VENV_BIN, free_port, write_config

from actors.core.errors import TradeguardError
from daemon.config import builtin_defaults, load_config
from daemon.doctor import diagnose
from daemon.embedded_broker import client_config, password_hash, prepare_logins
from daemon.wiring import Daemon

TG = str(VENV_BIN / "tradeguard")
REPO = Path(__file__).resolve().parent.parent
WAIT_S = 30.0
KILL_STATE = "tradeguard/v1/kill/state"

needs_clients = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="needs mosquitto-clients",
)


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}


@contextmanager
def _daemon(cwd: Path, *args: str) -> Iterator[str]:
    """``tradeguard run`` in ``cwd``; yields its ready line, stops it with Ctrl-C."""
    process = subprocess.Popen(
        [TG, "run", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "ready:" in line, line
        yield line
    finally:
        # Ctrl-C even when the test failed: a killed daemon would leave its mosquitto behind.
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    assert code == 0


class _Watcher:
    """A ``mosquitto_sub`` (any command line) whose output goes to a file."""

    def __init__(self, script: str, cwd: Path, name: str) -> None:
        self.output = cwd / f"{name}.out"
        self._file = self.output.open("w")
        self.process = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_env(),
        )

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> None:
        """Poll the output until ``predicate`` holds (the event we expect), or fail."""
        deadline = time.monotonic() + WAIT_S
        while not predicate(self.text()):
            assert self.process.poll() is None, f"watcher exited: {self.text()}"
            assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s: {self.text()}"
            time.sleep(0.05)  # polling a file for the awaited line, not a synchronising sleep

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
        self._file.close()


def _tour_blocks() -> list[str]:
    """The ``sh`` blocks of the README's tour, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tour = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", tour, flags=re.DOTALL)


@needs_clients
@pytest.mark.skipif(
    _port_busy(1883) or _port_busy(8790),
    reason="ports 1883/8790 are in use here (another broker or daemon): the defaults need them",
)
def test_readme_tour_shows_no_admin_code_to_other_logins(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    blocks = _tour_blocks()
    watchers_src = [b for b in blocks if "mosquitto_sub" in b]
    steps = [b for b in blocks if "mosquitto_sub" not in b]
    assert len(watchers_src) == 2, blocks
    # `demo-strategy` trades market orders: on the built-in NYSE clock they wait for the
    # open, so it is left to test_cli_and_demo_strategy_use_their_own_logins below.
    steps = [
        "\n".join(line for line in step.splitlines() if "demo-strategy" not in line)
        for step in steps
    ]
    # The steps are typed into one terminal: its variables carry from one to the next.
    variables = [line for step in steps for line in step.splitlines() if re.match(r"\w+=", line)]
    steps = ["\n".join([*variables, step]) for step in steps]
    with _daemon(tmp_path) as ready:
        assert "admin code in tradeguard-state/admin-code" in ready
        code = (tmp_path / "tradeguard-state" / "admin-code").read_text().strip()
        logins = tmp_path / "tradeguard-state" / "mqtt-logins"
        assert sorted(p.name for p in logins.iterdir()) == ["demo", "operator", "tradeguard"]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logins.iterdir())
        # Besides the tour's own watchers: everything the demo strategy's login may read.
        everything = _Watcher(
            f"mosquitto_sub -u demo -P \"$(cat {logins / 'demo'})\" -t '#' -v", tmp_path, "all"
        )
        demo = _Watcher(watchers_src[0], tmp_path, "demo")
        operator = _Watcher(watchers_src[1], tmp_path, "operator")
        try:
            # Each login hears its retained state at once: subscribed.
            demo.wait_for(lambda t: "tradeguard/v1/strategy/demo/state" in t, "demo state")
            everything.wait_for(lambda t: "tradeguard/v1/strategy/demo/state" in t, "state")
            operator.wait_for(lambda t: "tradeguard/v1/daemon/status online" in t, "online")
            for step in steps:
                if "disengage" in step:
                    operator.wait_for(
                        lambda t: (
                            re.search(r'kill/state \{"global":\{"engaged":true', t) is not None
                        ),
                        "engaged kill state",
                    )
                done = subprocess.run(
                    ["bash", "-c", step],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env=_env(),
                    check=False,
                )
                assert done.returncode == 0, (step, done.stdout, done.stderr)
            operator.wait_for(
                lambda t: re.search(r'kill/state \{"global":\{"engaged":false', t) is not None,
                "released kill state",
            )
            demo.wait_for(lambda t: '"intent_id":"t-4"' in t, "the t-4 decision")
        finally:
            for watcher in (everything, demo, operator):
                watcher.stop()
    seen = {w.output.name: w.text() for w in (everything, demo, operator)}
    assert '"intent_id":"t-1"' in seen["demo.out"]
    assert '"duplicate":true' in seen["demo.out"]
    assert "kill.disengage" in seen["operator.out"]  # the denied and the accepted release
    for name, text in seen.items():
        assert code not in text, name
        # Only the daemon reads the topics where codes travel.
        assert "/kill/command" not in text, name
        assert "/approval/command" not in text, name
        assert "/admin/" not in text, name
    # The demo login reads its own topics and nothing else, even with '#'.
    topics = {line.split(" ", 1)[0] for line in seen["all.out"].splitlines() if line}
    assert topics <= {"tradeguard/v1/strategy/demo/event", "tradeguard/v1/strategy/demo/state"}


def _embedded_config(tmp_path: Path, **tables: dict[str, Any]) -> Path:
    """The built-in set-up on free ports, from a config file without any credential."""
    base: dict[str, dict[str, Any]] = {
        "mqtt": {"embedded": True, "port": free_port()},
        "broker.sim": {"port": free_port(), "clock": "always-open"},
        "strategies.demo": {},
    }
    base.update(tables)
    return write_config(tmp_path, base)


def _tg(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(),
        check=False,
    )


@needs_clients
def test_cli_and_demo_strategy_use_their_own_logins(tmp_path: Path) -> None:
    config = _embedded_config(tmp_path)
    port = str(load_config(config).mqtt.port)
    state = tmp_path / "tradeguard-state"
    with _daemon(tmp_path, "--config", str(config)) as ready:
        # No release method configured: the daemon makes the admin code, as with no config.
        assert "admin code in" in ready
        anonymous = subprocess.run(
            ["mosquitto_sub", "-p", port, "-t", "#", "-C", "1", "-W", "5"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert anonymous.returncode != 0
        assert "not authorised" in anonymous.stderr.lower()

        assert _tg("kill", "--config", str(config)).returncode == 0
        status = _tg("status", "--json", "--config", str(config))
        assert status.returncode == 0, status.stderr
        assert '"engaged": true' in status.stdout
        released = _tg(
            "disengage", "--code-file", str(state / "admin-code"), "--config", str(config)
        )
        assert released.returncode == 0, released.stderr
        demo = _tg("demo-strategy", "--rounds", "1", "--config", str(config))
        assert demo.returncode == 0, demo.stderr
        assert "filled" in demo.stdout

        # A login other than the daemon's cannot write a state topic: the daemon's retained
        # kill state stays what it is.
        operator_pw = (state / "mqtt-logins" / "operator").read_text().strip()
        fake = '{"global":{"engaged":false,"since":null,"reason":"forged","source":"x"}}'
        _tg("kill", "--config", str(config))
        login = ["-p", port, "-u", "operator", "-P", operator_pw, "-V", "mqttv5"]
        published = subprocess.run(
            ["mosquitto_pub", *login, "-q", "1", "-r", "-t", KILL_STATE, "-m", fake],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "not authori" in (published.stdout + published.stderr).lower(), published
        retained = subprocess.run(
            ["mosquitto_sub", *login, "-t", KILL_STATE, "-C", "1", "-W", "10"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert retained.returncode == 0, retained.stderr
        assert '"engaged":true' in retained.stdout
        assert "forged" not in retained.stdout

        # Nothing the doctor finds is wrong while the daemon runs (its ports are its own).
        results = {r.check: r for r in diagnose(load_config(config))}
        assert {r.status for r in results.values()} == {"PASS"}, results
        assert "logged in to the daemon's mosquitto" in results["mqtt"].detail


def test_a_missing_login_is_one_line(tmp_path: Path) -> None:
    config = _embedded_config(tmp_path)
    done = _tg("status", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "no MQTT login 'operator'" in done.stderr
    assert "start it first" in done.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_config_without_strategies_is_refused_in_one_line(tmp_path: Path, command: str) -> None:
    config = write_config(tmp_path, {"mqtt": {"port": free_port()}})
    done = _tg(command, "--config", str(config))
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr == (
        "tradeguard: error: strategies: none listed; add a [strategies.ID] table for each "
        "strategy allowed to trade\n"
    )
    assert not (tmp_path / "tradeguard-state").exists()  # refused before anything started
    doctor = {r.check: r for r in diagnose(load_config(config))}
    assert doctor["config"].status == "FAIL"
    assert "strategies: none listed" in doctor["config"].detail


@pytest.mark.parametrize("sid", ["operator", "tradeguard", "tradeguard-control"])
def test_a_strategy_cannot_take_a_login_of_the_embedded_broker(tmp_path: Path, sid: str) -> None:
    config = _embedded_config(tmp_path, **{f"strategies.{sid}": {"allocation": 0.1}})
    done = _tg("check-config", str(config))
    assert done.returncode == 2
    assert f"strategies.{sid}: '{sid}' is a login of the embedded mosquitto" in done.stderr


@pytest.mark.skipif(
    _port_busy(1883) or _port_busy(8790),
    reason="ports 1883/8790 are in use here (another broker or daemon): the defaults need them",
)
def test_doctor_on_builtin_defaults_while_running_warns_about_nothing(tmp_path: Path) -> None:
    with _daemon(tmp_path):
        done = subprocess.run(
            [TG, "doctor", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            check=False,
        )
    assert done.returncode == 0, done.stderr
    statuses = dict(re.findall(r'"check": "([^"]+)",\s*"status": "(\w+)"', done.stdout))
    assert statuses, done.stdout
    assert set(statuses.values()) == {"PASS"}, done.stdout
    assert {"mqtt port", "broker port", "mqtt", "kill release"} <= set(statuses)


@pytest.mark.skipif(
    _port_busy(1883) or _port_busy(8790),
    reason="ports 1883/8790 are in use here (another broker or daemon): the defaults need them",
)
def test_doctor_on_builtin_defaults_before_the_first_start_warns_about_nothing(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [TG, "doctor", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    statuses = dict(re.findall(r'"check": "([^"]+)",\s*"status": "(\w+)"', done.stdout))
    assert set(statuses.values()) == {"PASS"}, done.stdout
    assert not (tmp_path / "tradeguard-state").exists()  # the doctor only looks


def test_given_credentials_are_the_daemons_login_on_the_embedded_broker(tmp_path: Path) -> None:
    secret = tmp_path / "alice-password"
    secret.write_text("alice-pw-4e1b\n")
    config = load_config(
        _embedded_config(
            tmp_path, mqtt={"embedded": True, "username": "alice", "password_file": str(secret)}
        )
    )
    daemon_config, access = prepare_logins(config, tmp_path / "tradeguard-state")

    # The daemon logs in as the config says, under a client id nobody else can guess.
    assert daemon_config.mqtt.username == "alice"
    assert daemon_config.mqtt.password_file == str(secret)
    assert re.fullmatch(r"tradeguard-daemon-[0-9a-f]{16}", daemon_config.mqtt.client_id)
    again, _ = prepare_logins(config, tmp_path / "tradeguard-state")
    assert again.mqtt.client_id == daemon_config.mqtt.client_id  # its session survives restarts
    assert access.daemon == ("alice", "alice-control")
    assert access.passwords["alice"] == access.passwords["alice-control"] == "alice-pw-4e1b"
    assert set(access.passwords) == {"alice", "alice-control", "operator", "demo"}
    assert "user alice-control\ntopic readwrite tradeguard/#" in access.acl()
    # The CLI still logs in as `operator`, never as the daemon.
    assert client_config(config).mqtt.username == "operator"
    assert client_config(config, "demo").mqtt.username == "demo"


def test_a_failed_start_releases_the_state_folder(tmp_path: Path) -> None:
    tables: dict[str, dict[str, Any]] = {
        "kill": {"totp_secret_file": str(tmp_path / "absent-totp")},
    }
    config = load_config(_embedded_config(tmp_path, **tables))
    for _ in range(2):  # the second attempt would find the folder locked by the first
        with pytest.raises(TradeguardError, match=r"kill\.totp_secret_file"):
            Daemon(config)


def test_password_hash_is_mosquitto_2_format() -> None:
    salt = bytes(range(12))
    entry = password_hash("secret-pw", salt=salt)
    kind, iterations, salt64, hash64 = entry.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(salt64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"secret-pw", salt, 101, 64)
    assert base64.b64decode(hash64) == expected
    assert password_hash("secret-pw") != password_hash("secret-pw")  # a fresh salt each time


def _acl_rules(text: str) -> dict[str, set[str]]:
    """``{user: {rule line}}`` of a mosquitto ACL file."""
    rules: dict[str, set[str]] = {}
    user = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("user "):
            user = line.removeprefix("user ")
            rules.setdefault(user, set())
        else:
            rules[user].add(line)
    return rules


@pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None or shutil.which("openssl") is None,
    reason="install.sh needs mosquitto_passwd and openssl",
)
def test_embedded_acl_has_the_production_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run(
        [
            "bash",
            str(REPO / "systemd/mosquitto/install.sh"),
            "--root",
            str(root),
            "--no-triggers",
            "demo",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    production = _acl_rules((root / "etc/mosquitto/tradeguard/acl").read_text())
    _, access = prepare_logins(builtin_defaults(), tmp_path / "state")
    embedded = _acl_rules(access.acl())

    assert set(embedded) == {"tradeguard", "tradeguard-control", "operator", "demo"}
    assert embedded == {user: production[user] for user in embedded}
