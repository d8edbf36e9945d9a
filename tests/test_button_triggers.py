"""IoT button triggers: plain-text payloads by value, several actions of one button.

The config and matching tests are pure; the last two run a real daemon against a
real mosquitto.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import VENV_BIN, Mosquitto, base_tables, probe, running_daemon, write_config

from actors.admin_code import hash_code
from actors.core.errors import ConfigError
from actors.core.kill_rules import matches as _matches  # the pure matching rule itself
from daemon.config import TriggerConfig, parse_config
from protocol.topics import Topics

ADMIN_CODE = "open-sesame-42"


def _trigger(**fields: Any) -> str:
    lines = [
        f"{key} = {{ {', '.join(f'{k} = {v!r}' for k, v in value.items())} }}"
        if isinstance(value, dict)
        else f"{key} = {value!r}"
        for key, value in fields.items()
    ]
    return "[[kill.triggers]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"topic": "z/b"}, "kill.triggers[0].payload: required (or a non-empty match)"),
        ({"topic": "z/b", "match": {}}, "kill.triggers[0].payload: required"),
        (
            {"topic": "z/b", "payload": "single", "match": {"action": "single"}},
            "kill.triggers[0]: set payload or match, not both",
        ),
        ({"topic": "z/b", "payload": ""}, "kill.triggers[0].payload"),
        ({"topic": "z/b", "payload": " single"}, "kill.triggers[0].payload: no leading"),
        (
            {"topic": "zigbee2mqtt/+/action", "payload": "single"},
            "kill.triggers[0].topic: 'zigbee2mqtt/+/action': name one topic",
        ),
    ],
)
def test_a_trigger_that_could_match_anything_is_refused(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_trigger(**fields))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_check_config_refuses_an_empty_match_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tradeguard.toml"
    path.write_text(
        "[strategies.s1]\nallocation = 0.1\n"
        f'[kill]\nadmin_code_hash = "{hash_code(ADMIN_CODE)}"\n'
        + _trigger(topic="zigbee2mqtt/desk/action", match={})
    )
    result = subprocess.run(
        [str(VENV_BIN / "tradeguard"), "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "kill.triggers[0]" in line]
    assert len(lines) == 1, result.stderr
    assert "kill.triggers[0].payload" in lines[0]


def test_plain_text_payload_matches_by_value_only() -> None:
    single = TriggerConfig(topic="z/b/action", payload="single")
    assert _matches(single, b"single")
    assert _matches(single, b"single\n")
    for other in (b"", b"double", b"hold", b"SINGLE", b"single_left", b'{"action": "single"}'):
        assert not _matches(single, other), other
    json_field = TriggerConfig(topic="z/b", match={"action": "single"})
    assert _matches(json_field, b'{"action": "single", "battery": 90}')
    for other in (b"", b"single", b'{"action": "double"}', b"[]", b'{"battery": 90}'):
        assert not _matches(json_field, other), other
    # Defence in depth: a trigger the config check would refuse matches nothing.
    assert not _matches(TriggerConfig(topic="z/b"), b"single")
    assert not _matches(TriggerConfig(topic="z/b"), b"")


def _button_config(tmp_path: Path, broker: Mosquitto, prefix: str, button: str) -> Path:
    tables = base_tables(broker, prefix, tmp_path, s1={}, s2={})
    tables["kill"] = {"admin_code_hash": hash_code(ADMIN_CODE)}
    # One IKEA-style button: single press halts everything (and strategy s2 by name),
    # a hold halts only strategy s1.
    extra = (
        "\n"
        + _trigger(topic=button, payload="single", name="desk single")
        + _trigger(
            topic=button, payload="single", scope="strategy", strategy_id="s2", name="s2 too"
        )
        + _trigger(topic=button, payload="hold", scope="strategy", strategy_id="s1", name="hold s1")
    )
    return write_config(tmp_path, tables, extra)


@pytest.mark.anyio
async def test_double_and_empty_payloads_do_not_engage_and_each_action_has_its_scope(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    button = f"zigbee2mqtt/{prefix}/desk/action"
    config = _button_config(tmp_path, mosquitto, prefix, button)
    t = Topics(prefix)
    async with running_daemon(config) as daemon, probe(mosquitto, t.kill_state) as p:
        await p.expect(t.kill_state, lambda s: s["global"]["engaged"] is False)
        # Not the configured values: none of these may engage anything.
        for payload in (b"double", b"", b"triple", b"SINGLE", b'{"action": "single"}'):
            await p.publish(button, payload, qos=1)
        # The same topic, hence the same path and order: once "hold" has engaged s1,
        # every message above has been looked at.
        await p.publish(button, b"hold", qos=1)
        state = await p.expect(t.kill_state, lambda s: s["strategies"]["s1"]["engaged"])
        assert state["strategies"]["s1"]["source"] == "hold s1"
        assert state["global"]["engaged"] is False
        assert state["strategies"]["s2"]["engaged"] is False
        assert not daemon.gate.engaged(None)
        assert not daemon.gate.engaged("s2")
        # A single press engages the global switch and, from its second table, s2.
        await p.publish(button, b"single", qos=1)
        state = await p.expect(
            t.kill_state,
            lambda s: s["global"]["engaged"] and s["strategies"]["s2"]["engaged"],
        )
        assert state["global"]["source"] == "desk single"
        assert state["strategies"]["s2"]["source"] == "s2 too"
        assert state["strategies"]["s1"]["source"] == "hold s1"


@pytest.mark.anyio
async def test_a_retained_action_does_not_engage(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    button = f"zigbee2mqtt/{prefix}/desk/action"
    config = _button_config(tmp_path, mosquitto, prefix, button)
    t = Topics(prefix)
    async with probe(mosquitto, t.kill_state) as p:
        await p.publish(button, b"single", retain=True, qos=1)
        try:
            async with running_daemon(config) as daemon:
                await p.expect(t.kill_state, lambda s: s["global"]["engaged"] is False)
                await p.publish(button, b"hold", qos=1)
                await p.expect(t.kill_state, lambda s: s["strategies"]["s1"]["engaged"])
                assert not daemon.gate.engaged(None)
        finally:
            await p.publish(button, b"", retain=True, qos=1)
