"""Kill switch end to end: real mosquitto, real journal, real daemon processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pyotp
import pytest
from harness import (
    VENV_BIN,
    DaemonProcess,
    Mosquitto,
    base_tables,
    probe,
    running_daemon,
    write_config,
)

from actors.admin_code import hash_code
from protocol.topics import Topics

pytestmark = pytest.mark.anyio

STATIC_CODE = "open-sesame-42"
ORDER = {"type": "order", "symbol": "AAPL", "side": "buy", "qty": 1}


def kill_config(
    tmp_path: Path,
    broker: Mosquitto,
    prefix: str,
    *,
    strategies: dict[str, dict[str, Any]] | None = None,
    kill: dict[str, Any] | None = None,
    extra: str = "",
) -> tuple[Path, str]:
    """A config with a TOTP secret file and a static code hash; returns (path, totp secret)."""
    secret = pyotp.random_base32()
    (tmp_path / "totp.secret").write_text(secret + "\n")
    tables = base_tables(broker, prefix, tmp_path, **(strategies or {"s1": {}, "s2": {}}))
    tables["kill"] = {
        "totp_secret_file": str(tmp_path / "totp.secret"),
        "admin_code_hash": hash_code(STATIC_CODE),
        **(kill or {}),
    }
    return write_config(tmp_path, tables, extra), secret


def decision(intent_id: str) -> Any:
    return lambda b: b.get("intent_id") == intent_id and b.get("type") in ("accepted", "rejected")


def codes(body: dict[str, Any]) -> list[str]:
    return [r["code"] for r in body.get("reasons", [])]


async def test_plain_engage_from_mosquitto_pub_and_strategy_scope(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config, _ = kill_config(tmp_path, mosquitto, prefix)
    t = Topics(prefix)
    async with (
        running_daemon(config),
        probe(mosquitto, t.kill_state, f"{prefix}/v1/strategy/+/event") as p,
    ):
        await p.expect(t.kill_state, lambda s: s["global"]["engaged"] is False)
        start = len(p.received)
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                t.kill_command,
                "-m",
                "ENGAGE",
            ],
            check=True,
        )
        state = await p.expect(t.kill_state, lambda s: s["global"]["engaged"], start=start)
        assert state["global"]["source"] == "mqtt"
        for sid in ("s1", "s2"):
            await p.publish(t.intent(sid), {**ORDER, "intent_id": f"g-{sid}"})
            body = await p.expect(t.event(sid), decision(f"g-{sid}"))
            assert "KILL_SWITCH_GLOBAL" in codes(body)

    # A fresh daemon state folder: per-strategy engage blocks only that strategy.
    other = tmp_path / "second"
    other.mkdir()
    config2, _ = kill_config(other, mosquitto, prefix + "b")
    t2 = Topics(prefix + "b")
    async with (
        running_daemon(config2),
        probe(mosquitto, t2.kill_state, f"{prefix}b/v1/strategy/+/event") as p,
    ):
        await p.publish(
            t2.kill_command, {"type": "engage", "scope": "strategy", "strategy_id": "s1"}
        )
        await p.expect(t2.kill_state, lambda s: s["strategies"]["s1"]["engaged"])
        await p.publish(t2.intent("s1"), {**ORDER, "intent_id": "x1"})
        body = await p.expect(t2.event("s1"), decision("x1"))
        assert "KILL_SWITCH_STRATEGY" in codes(body)
        await p.publish(t2.intent("s2"), {**ORDER, "intent_id": "x2"})
        body = await p.expect(t2.event("s2"), decision("x2"))
        assert "KILL_SWITCH_STRATEGY" not in codes(body)
        assert "KILL_SWITCH_GLOBAL" not in codes(body)


async def test_forged_releases_change_nothing_and_lockout_holds(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config, secret = kill_config(
        tmp_path,
        mosquitto,
        prefix,
        extra=(
            "\n[homeassistant]\nenabled = true\n"
            '\n[[kill.triggers]]\ntopic = "z2m/'
            + prefix
            + '/button"\nmatch = {action = "single"}\n'
        ),
    )
    t = Topics(prefix)
    totp = pyotp.TOTP(secret)
    async with running_daemon(config) as daemon, probe(mosquitto, t.kill_state, t.audit) as p:
        await p.publish(t.kill_command, "PRESS")
        await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
        # Use one valid TOTP step legitimately... on a strategy switch, so that it is spent.
        used = totp.now()
        await p.publish(
            t.kill_command,
            {"type": "disengage", "scope": "strategy", "strategy_id": "s1", "code": used},
        )
        await p.expect(t.audit, lambda a: a["type"] == "kill.disengage" and a["ok"])
        stale = totp.at(time.time() - 300)
        forgeries: list[tuple[str, Any]] = [
            (t.kill_command, {"type": "disengage", "scope": "global", "code": "000000"}),
            (t.kill_command, {"type": "disengage", "scope": "global", "code": used}),
            (t.kill_command, {"type": "disengage", "scope": "global"}),
            (t.kill_command, {"type": "disengage", "scope": "global", "code": stale}),
            (t.kill_command, {"type": "disengage", "scope": "global", "code": "wrong-static"}),
            (t.kill_command, "OFF"),
            (t.kill_command, "DISENGAGE"),
            (t.kill_command, "PRESS"),
            (f"{prefix}/v1/ha/release", "123456"),
            (f"{prefix}/v1/ha/release", "not-the-code"),
            (f"z2m/{prefix}/button", {"action": "single"}),
            (f"z2m/{prefix}/button", {"action": "off"}),
        ]
        start = len(p.received)
        sent = 0
        while sent < 1000:
            topic, payload = forgeries[sent % len(forgeries)]
            await p.publish(topic, payload)
            sent += 1
        # A valid code now: the lockout must refuse it too.
        await p.publish(
            t.kill_command,
            {"type": "disengage", "scope": "global", "code": STATIC_CODE, "source": "late-valid"},
        )
        last = await p.expect(
            t.audit, lambda a: a.get("source") == "late-valid", start=start, timeout=60
        )
        assert last["ok"] is False
        assert "locked out" in last["detail"]
        assert daemon.gate.engaged(None)
        # Commands from different topics (kill/command, the HA release) take different
        # paths into the authority: wait for every denial rather than assume an order.
        per_round = {"disengage": 5, "ha": 2, "plain": 2}
        rounds = 1000 // len(forgeries)

        def denials() -> list[Any]:
            audits = [m for m in p.bodies(t.audit)[-2000:] if isinstance(m, dict)]
            return [a for a in audits if a["type"] == "kill.disengage" and not a["ok"]]

        await p.wait_until(
            lambda: len(denials()) >= rounds * (per_round["disengage"] + per_round["ha"]),
            timeout=30,
        )
        audits = [m for m in p.bodies(t.audit)[-2000:] if isinstance(m, dict)]
        release_denials = denials()
        assert not any(
            a["type"] == "kill.disengage" and a["ok"] and a["scope"] == "global" for a in audits
        )
        # Every JSON disengage, HA release and plain-text word got its own audit record.
        assert len(release_denials) >= rounds * (per_round["disengage"] + per_round["ha"])
        invalid = [a for a in audits if a["type"] == "kill.invalid_command"]
        assert len(invalid) >= rounds * per_round["plain"]
        # The journal has them all, too.
        rows = daemon.journal.query("SELECT count(*) FROM audit WHERE ok = 0")
        assert rows[0][0] >= len(release_denials)
        assert p.bodies(t.kill_state)[-1]["global"]["engaged"] is True
    logs_and_audits = "\n".join(str(b) for b in p.bodies(t.audit)) + str(p.bodies(t.kill_state))
    for code in (STATIC_CODE, used, stale, secret):
        assert code not in logs_and_audits


async def test_engaged_survives_kill9(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    config, _ = kill_config(tmp_path, mosquitto, prefix)
    t = Topics(prefix)
    daemon = DaemonProcess(config)
    try:
        async with probe(mosquitto, t.kill_state, t.event("s1")) as p:
            daemon.start()
            await p.publish(
                t.kill_command, {"type": "engage", "scope": "global", "reason": "drill"}
            )
            await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            daemon.kill9()
            # The intent waits in no queue: it is published the moment the new daemon is ready.
            await anyio.to_thread.run_sync(daemon.start)
            await p.publish(t.intent("s1"), {**ORDER, "intent_id": "after-crash"})
            body = await p.expect(t.event("s1"), decision("after-crash"))
            assert "KILL_SWITCH_GLOBAL" in codes(body)
            # Codes tried (wrong and right) never reach the log.
            start = len(p.received)
            await p.publish(t.kill_command, {"type": "disengage", "code": "wrong-code-xyz"})
            await p.publish(t.kill_command, {"type": "disengage", "code": STATIC_CODE})
            await p.expect(t.kill_state, lambda s: s["global"]["engaged"] is False, start=start)
            assert daemon.terminate() == 0
    finally:
        daemon.stop_quietly()
    log = daemon.log_text()
    assert "kill.disengage" in log
    assert STATIC_CODE not in log
    assert "wrong-code-xyz" not in log


async def test_retained_button_message_does_not_engage(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    button = f"zigbee2mqtt/{prefix}/panic_button"
    extra = (
        f'\n[[kill.triggers]]\ntopic = "{button}"\nmatch = {{action = "single"}}\nname = "panic"\n'
    )
    config, _ = kill_config(tmp_path, mosquitto, prefix, extra=extra)
    t = Topics(prefix)
    async with probe(mosquitto, t.kill_state, t.audit) as p:
        await p.publish(button, {"action": "single", "battery": 90}, retain=True)
        async with running_daemon(config) as daemon:
            await p.expect(t.kill_state, lambda s: s["global"]["engaged"] is False)
            # A non-matching live press, then a marker engage of s2: the retained one was ignored.
            await p.publish(button, {"action": "double"})
            await p.publish(
                t.kill_command,
                {"type": "engage", "scope": "strategy", "strategy_id": "s2", "source": "marker"},
            )
            await p.expect(t.audit, lambda a: a.get("source") == "marker")
            assert not daemon.gate.engaged(None)
            await p.publish(button, {"action": "single"})
            state = await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            assert state["global"]["source"] == "panic"
        await p.publish(button, b"", retain=True)


async def test_home_assistant_release(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    ha_prefix = f"ha{prefix}"
    extra = f'\n[homeassistant]\nenabled = true\ndiscovery_prefix = "{ha_prefix}"\n'
    config, _ = kill_config(tmp_path, mosquitto, prefix, extra=extra)
    t = Topics(prefix)
    release = f"{prefix}/v1/ha/release"
    async with (
        running_daemon(config) as daemon,
        probe(mosquitto, t.kill_state, t.audit, f"{ha_prefix}/#", f"{release}/state") as p,
    ):
        config_msg = await p.expect(f"{ha_prefix}/text/tradeguard/kill_release/config")
        assert config_msg["command_topic"] == release
        assert config_msg["state_topic"] == f"{release}/state"
        assert config_msg["mode"] == "password"
        assert config_msg["default_entity_id"] == "text.tradeguard_kill_release"
        assert "object_id" not in config_msg
        approve = await p.expect(f"{ha_prefix}/text/tradeguard/approval_approve/config")
        assert approve["command_topic"] == f"{prefix}/v1/ha/approve"
        circuit = await p.expect(f"{ha_prefix}/sensor/tradeguard/circuit/config")
        assert circuit["state_topic"] == t.daemon_state
        for sensor in ("equity", "daily_drawdown", "total_drawdown", "approvals_pending"):
            await p.expect(f"{ha_prefix}/sensor/tradeguard/{sensor}/config")
        button = await p.expect(f"{ha_prefix}/button/tradeguard/kill_engage/config")
        assert button["command_topic"] == t.kill_command
        # Home Assistant presses its button: the payload it sends engages.
        await p.publish(button["command_topic"], button["payload_press"])
        await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
        start = len(p.received)
        await p.publish(release, "wrong-code")
        denied = await p.expect(t.audit, lambda a: a["type"] == "kill.disengage")
        assert denied["ok"] is False
        assert denied["source"] == "homeassistant"
        assert daemon.gate.engaged(None)
        # The daemon clears the box's state: Home Assistant stores no code.
        cleared = await p.expect(f"{release}/state", start=start, raw=True)
        assert cleared == b""
        await p.publish(release, STATIC_CODE)
        await p.expect(t.kill_state, lambda s: s["global"]["engaged"] is False)
        # Birth message: discovery configs are published again.
        start = len(p.received)
        await p.publish(f"{ha_prefix}/status", "online")
        await p.expect(f"{ha_prefix}/button/tradeguard/kill_engage/config", start=start)
    for body in p.bodies(t.audit):
        assert STATIC_CODE not in str(body)


async def test_dead_man_engages_on_lost_heartbeat(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config, _ = kill_config(
        tmp_path, mosquitto, prefix, strategies={"s1": {"heartbeat_timeout_s": 0.5}, "s2": {}}
    )
    t = Topics(prefix)
    async with running_daemon(config) as daemon, probe(mosquitto, t.kill_state) as p:
        state = await p.expect(t.kill_state, lambda s: s["strategies"]["s1"]["engaged"], timeout=10)
        assert state["strategies"]["s1"]["reason"] == "heartbeat_lost"
        assert not daemon.gate.engaged("s2")
        assert not daemon.gate.engaged(None)


async def test_heartbeats_keep_the_dead_man_quiet(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config, _ = kill_config(
        tmp_path, mosquitto, prefix, strategies={"s1": {"heartbeat_timeout_s": 1.0}}
    )
    t = Topics(prefix)
    async with running_daemon(config) as daemon, probe(mosquitto, t.kill_state) as p:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            await p.publish(t.heartbeat("s1"), "{}")
            with anyio.move_on_after(0.2):
                await p.expect(
                    t.kill_state, lambda s: s["strategies"]["s1"]["engaged"], start=len(p.received)
                )
        assert not daemon.gate.engaged("s1")


async def test_cli_kill_and_disengage_exit_codes(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config, _ = kill_config(tmp_path, mosquitto, prefix)
    tg = str(VENV_BIN / "tradeguard")

    def cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tg, *args, "--config", str(config)],
            input=code,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    async with running_daemon(config) as daemon:
        result = await anyio.to_thread.run_sync(lambda: cli("kill", "--reason", "drill"))
        assert result.returncode == 0, result.stderr
        assert daemon.gate.engaged(None)
        result = await anyio.to_thread.run_sync(lambda: cli("disengage", code="nope-nope"))
        assert result.returncode == 3
        assert daemon.gate.engaged(None)
        result = await anyio.to_thread.run_sync(lambda: cli("disengage", code=STATIC_CODE))
        assert result.returncode == 0, result.stdout + result.stderr
        assert not daemon.gate.engaged(None)
        result = await anyio.to_thread.run_sync(lambda: cli("kill", "--strategy", "s2"))
        assert result.returncode == 0
        assert daemon.gate.engaged("s2")
        status = await anyio.to_thread.run_sync(lambda: cli("status", "--json"))
        assert status.returncode == 0
        assert '"s2"' in status.stdout
    # No daemon: kill has no confirmation.
    result = await anyio.to_thread.run_sync(lambda: cli("kill"))
    assert result.returncode == 1


async def test_wrong_codes_from_one_login_do_not_lock_out_another(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    # A login (mqtt.username) means a secured broker, where each login may write only its
    # own admin/USER topic; this broker is open, which is fine for the daemon's side.
    config, _ = kill_config(tmp_path, mosquitto, prefix)
    text = config.read_text().replace("[mqtt]\n", '[mqtt]\nusername = "tradeguard"\n', 1)
    config.write_text(text)
    t = Topics(prefix)
    async with running_daemon(config) as daemon, probe(mosquitto, t.kill_state, t.audit) as p:
        await p.publish(t.kill_command, "PRESS")
        await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
        wrong = {"type": "disengage", "scope": "global", "code": "000000"}
        for _ in range(100):
            await p.publish(t.admin_command("phone"), wrong)

        def phone_denials() -> list[Any]:
            return [
                a
                for a in p.bodies(t.audit)
                if a.get("type") == "kill.disengage" and a.get("operator") == "phone"
            ]

        await p.wait_until(lambda: len(phone_denials()) == 100, timeout=60)
        assert all(not a["ok"] for a in phone_denials())
        assert "locked out" in phone_denials()[-1]["detail"]
        # The operator's own login is not locked out: its valid code releases at once.
        start = len(p.received)
        await p.publish(
            t.admin_command("operator"),
            {"type": "disengage", "scope": "global", "code": STATIC_CODE},
        )
        released = await p.expect(
            t.audit, lambda a: a.get("operator") == "operator", start=start, timeout=10
        )
        assert released["ok"], released
        assert released["source"] == "admin/operator"
        await p.expect(t.kill_state, lambda s: not s["global"]["engaged"], start=start)
        assert not daemon.gate.engaged(None)
        # The phone is still locked out, and the shared kill/command topic has its own count.
        assert daemon.verifier.locked("admin/phone")
        assert not daemon.verifier.locked("")
