"""The shipped unit (systemd/tradeguard.service) is valid, hardened and fits the daemon.

``systemd-analyze verify`` exits 0 on most mistakes (unknown keys, bad values), so
the test asserts that it prints nothing. It also insists that ExecStart's binary
exists on this machine, and systemd 252 checks the host's path even with
``--root``; the test therefore verifies a copy whose ExecStart names this venv's
``tradeguard`` (the only line it changes, and only after checking it).
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Mosquitto, base_tables, free_port, unique_prefix, write_config

from daemon.config import load_config

UNIT = REPO / "systemd" / "tradeguard.service"
EXAMPLE_CONFIG = REPO / "systemd" / "tradeguard.toml.example"
EXEC_START = "ExecStart=/opt/tradeguard/.venv/bin/tradeguard run"
TRADEGUARD = Path(sys.executable).parent / "tradeguard"
MAX_EXPOSURE = 2.0

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is missing: apt-get install -y systemd"
)


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys may repeat)."""
    found: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        found.append((section, key.strip(), value.strip()))
    return found


def service(key: str) -> list[str]:
    """Every value of ``key`` in [Service]."""
    text = UNIT.read_text(encoding="utf-8")
    return [v for s, k, v in directives(text) if s == "Service" and k == key]


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    env["SYSTEMD_LOG_COLOR"] = "0"
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )


def installable_copy(directory: Path, text: str | None = None) -> Path:
    """The unit as ``directory/tradeguard.service`` with ExecStart pointing at this venv."""
    text = UNIT.read_text(encoding="utf-8") if text is None else text
    assert text.count(EXEC_START + "\n") == 1, f"the unit must say {EXEC_START!r} once"
    assert TRADEGUARD.exists(), f"{TRADEGUARD} is missing: pip install -e . first"
    path = directory / "tradeguard.service"
    path.write_text(text.replace(EXEC_START, f"ExecStart={TRADEGUARD} run"), encoding="utf-8")
    return path


@needs_analyze
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    result = analyze("verify", str(installable_copy(tmp_path)))
    assert result.stderr == ""
    assert result.stdout == ""
    assert result.returncode == 0


@needs_analyze
def test_verify_does_report_a_mistake(tmp_path: Path) -> None:
    # Guards the test above: the same check on a misspelt key must not be silent.
    text = UNIT.read_text(encoding="utf-8").replace("\nProtectClock=yes\n", "\nProtectClok=yes\n")
    result = analyze("verify", str(installable_copy(tmp_path, text)))
    assert "Unknown key 'ProtectClok'" in result.stderr


@needs_analyze
def test_security_exposure_is_at_most_2() -> None:
    result = analyze("security", "--offline=true", "--no-pager", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for tradeguard\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_the_unit_runs_the_daemon_the_way_it_expects() -> None:
    assert service("Type") == ["notify"]
    assert service("NotifyAccess") == ["main"]
    assert service("WatchdogSec") == ["30s"]
    assert service("ExecStart") == ["/opt/tradeguard/.venv/bin/tradeguard run"]
    assert "TRADEGUARD_CONFIG=/etc/tradeguard/tradeguard.toml" in service("Environment")
    assert service("KillSignal") == ["SIGTERM"]
    assert service("Restart") == ["on-failure"]
    assert service("StateDirectory") == ["tradeguard"]
    assert service("ConfigurationDirectory") == ["tradeguard"]
    credentials = dict(v.split(":", 1) for v in service("LoadCredential"))
    assert credentials == {
        name: f"/etc/tradeguard/credentials/{name}"
        for name in ("alpaca-key-id", "alpaca-secret-key", "mqtt-password", "totp-secret")
    }


def test_the_example_config_fits_the_unit() -> None:
    config = load_config(EXAMPLE_CONFIG)
    loaded = {v.split(":", 1)[0] for v in service("LoadCredential")}
    secrets = {
        "mqtt.password_file": config.mqtt.password_file,
        "broker.key_id_file": config.broker.key_id_file,
        "broker.secret_key_file": config.broker.secret_key_file,
        "kill.totp_secret_file": config.kill.totp_secret_file,
    }
    for key, name in secrets.items():
        # A bare name is looked up in $CREDENTIALS_DIRECTORY (daemon.config.read_secret).
        assert name in loaded, f"{key} = {name!r} is not a LoadCredential= of the unit"
    state = Path(config.state.path)
    assert state.parent == Path("/var/lib") / service("StateDirectory")[0]
    assert not config.mqtt.is_embedded  # the unit talks to the secured system broker
    stop_timeout = float(service("TimeoutStopSec")[0].removesuffix("s"))
    assert config.daemon.shutdown_timeout_s < stop_timeout


# --- the sandbox's kernel side: SystemCallFilter= and MemoryDenyWriteExecute= ----
#
# Without a running systemd the unit cannot be started here, so its two kernel
# restrictions that could break Python are rebuilt around a plain child process:
# a seccomp allow list made from the unit's SystemCallFilter= lines and
# `systemd-analyze syscall-filter` (denied calls fail with EPERM, as with
# SystemCallErrorNumber=EPERM, through libseccomp like systemd), and
# prctl(PR_SET_MDWE), the kernel's write-xor-execute switch (Linux 6.3+) with the
# promise of MemoryDenyWriteExecute=yes. Both survive exec.
SANDBOX_LAUNCHER = """
import ctypes, os, sys
allowed, argv = sys.argv[1], sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
if allowed != "-":
    seccomp = ctypes.CDLL("libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = seccomp.seccomp_init(0x00050000 | 1)  # SCMP_ACT_ERRNO(EPERM)
    for name in open(allowed).read().split():
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:
            assert seccomp.seccomp_rule_add(ctx, 0x7FFF0000, number, 0) == 0, name  # ALLOW
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS, as NoNewPrivileges=yes
        sys.exit("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if seccomp.seccomp_load(ctx) != 0:
        sys.exit("seccomp_load failed")
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(f"prctl(PR_SET_MDWE): {os.strerror(ctypes.get_errno())}")
os.execv(argv[0], argv)
"""


def _syscall_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in analyze("syscall-filter").stdout.splitlines():
        line = raw.strip()
        if raw.startswith("@"):
            current = groups.setdefault(line, [])
        elif line and not line.startswith("#"):
            current.append(line)
    return groups


def unit_syscall_allow_list() -> set[str]:
    """The system calls the unit's SystemCallFilter= lines allow."""
    groups = _syscall_groups()

    def expand(item: str) -> set[str]:
        if not item.startswith("@"):
            return {item}
        assert item in groups, f"unknown syscall group {item}"
        return set().union(*(expand(member) for member in groups[item]))

    allowed = expand("@default")  # systemd always allows these with an allow list
    lines = service("SystemCallFilter")
    assert lines, "the unit has no SystemCallFilter="
    assert not lines[0].startswith("~"), "the first SystemCallFilter= must be an allow list"
    for value in lines:
        deny = value.startswith("~")
        names = set().union(*(expand(item) for item in value.removeprefix("~").split()))
        allowed = allowed - names if deny else allowed | names
    return allowed


def _launch(allow_list: Path | None, *argv: str) -> list[str]:
    return [sys.executable, "-c", SANDBOX_LAUNCHER, str(allow_list or "-"), *argv]


@pytest.fixture
def sandbox(tmp_path: Path) -> list[str]:
    """A command prefix that runs a program under the unit's syscall filter and MDWE."""
    if ANALYZE is None:
        pytest.skip("systemd-analyze is missing: apt-get install -y systemd")
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp.so.2 is missing: apt-get install -y libseccomp2")
    probe = subprocess.run(_launch(None, "/bin/true"), capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"this kernel cannot forbid W+X memory (Linux 6.3+): {probe.stderr.strip()}")
    allow_list = tmp_path / "allowed-syscalls"
    allow_list.write_text("\n".join(sorted(unit_syscall_allow_list())), encoding="utf-8")
    return _launch(allow_list)


def test_the_sandbox_really_restricts_the_child(sandbox: list[str]) -> None:
    # Guards the test below: W+X memory and a @resources call both fail in the sandbox.
    code = """
import mmap, os
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx allowed")
except PermissionError:
    print("wx denied")
try:
    os.setpriority(os.PRIO_PROCESS, 0, 1)
    print("setpriority allowed")
except PermissionError:
    print("setpriority denied")
"""
    result = subprocess.run(
        [*sandbox, sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stdout.split("\n")[:2] == ["wx denied", "setpriority denied"], result.stderr


def test_the_daemon_runs_in_the_units_sandbox(
    sandbox: list[str], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # Everything `tradeguard run` loads and does (alpaca-py, pydantic-core, msgspec,
    # numpy, aiohttp, sqlite, ssl, threads, signals) must work with the unit's system
    # call filter and without W+X memory, or the daemon would not start under systemd.
    tables = base_tables(mosquitto, unique_prefix(), tmp_path)
    tables["broker.sim"] = {"port": free_port()}
    config = write_config(tmp_path, tables)
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [*sandbox, str(TRADEGUARD), "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(30), "the daemon printed nothing within 30 s"
        line = process.stdout.readline()  # the ready line, or EOF if it died
        assert "ready" in line, f"no ready line: {line!r}\n{process.communicate(timeout=10)[1]}"
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
