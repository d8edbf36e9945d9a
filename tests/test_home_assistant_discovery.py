"""Every discovery payload against Home Assistant's MQTT platform options (2026.4).

Home Assistant itself does not install on Python 3.11 any more, so the options come
from a checked-in copy (``tests/data/ha_mqtt_discovery_options_2026.4.json``) that
names the release it describes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.home_assistant import CLEARED_CODE, HomeAssistantDiscovery, entity_slug
from daemon.config import HomeAssistantConfig
from protocol.topics import Topics

OPTIONS = json.loads(
    (Path(__file__).parent / "data" / "ha_mqtt_discovery_options_2026.4.json").read_text()
)
_ENTITY_ID = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")
_ICON = re.compile(r"[a-z0-9-]+:[a-z0-9-]+")


def _type_error(kind: Any, value: Any) -> str | None:
    """Why ``value`` is not of the documented ``kind``, or None."""
    if isinstance(kind, dict):
        return None if value in kind["enum"] else f"{value!r} not one of {kind['enum']}"
    checks = {
        "string": lambda v: isinstance(v, str),
        "string_or_null": lambda v: v is None or isinstance(v, str),
        "string_or_list": lambda v: (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ),
        "boolean": lambda v: isinstance(v, bool),
        "positive_integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "template": lambda v: isinstance(v, str) and bool(v.strip()),
        "subscribe_topic": lambda v: isinstance(v, str) and bool(v) and "\0" not in v,
        "publish_topic": lambda v: isinstance(v, str) and bool(v) and not set("+#\0") & set(v),
        "icon": lambda v: isinstance(v, str) and _ICON.fullmatch(v) is not None,
        "entity_id": lambda v: isinstance(v, str) and _ENTITY_ID.fullmatch(v) is not None,
        "regex": lambda v: isinstance(v, str) and re.compile(v) is not None,
        "list": lambda v: isinstance(v, list),
    }
    return None if checks[kind](value) else f"{value!r} is not a {kind}"


def _submap_errors(name: str, value: Any, allowed: dict[str, Any]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{name}: not a map"]
    errors = [f"{name}.{key}: unknown option" for key in value if key not in allowed]
    for key, item in value.items():
        if key in allowed and (why := _type_error(allowed[key], item)):
            errors.append(f"{name}.{key}: {why}")
    return errors


def validate(component: str, payload: dict[str, Any]) -> list[str]:
    """Every way ``payload`` breaks the documented options of ``component``."""
    if component not in OPTIONS["platforms"]:
        return [f"{component}: not a platform tradeguard validates"]
    platform = OPTIONS["platforms"][component]
    allowed = OPTIONS["common"] | platform["options"]
    errors = [f"{key}: required" for key in platform["required"] if key not in payload]
    for key, value in payload.items():
        if key in OPTIONS["removed"]:
            errors.append(f"{key}: {OPTIONS['removed'][key]}")
        elif key == "device":
            errors += _submap_errors(key, value, OPTIONS["device"])
            if not value.get("identifiers") and not value.get("connections"):
                errors.append("device: needs identifiers or connections")
        elif key == "origin":
            errors += _submap_errors(key, value, OPTIONS["origin"])
            if "name" not in value:
                errors.append("origin.name: required")
        elif key not in allowed:
            errors.append(f"{key}: unknown option for {component}")
        elif why := _type_error(allowed[key], value):
            errors.append(f"{key}: {why}")
    only = platform.get("entity_category")
    if "entity_category" in payload and only and payload["entity_category"] not in only:
        errors.append(f"entity_category: {component} allows only {platform['entity_category']}")
    if "default_entity_id" in payload and not str(payload["default_entity_id"]).startswith(
        f"{component}."
    ):
        errors.append(f"default_entity_id: must start with {component}.")
    if component == "text":
        low, high = payload.get("min", 0), payload.get("max", platform["max_length"])
        if not low <= high <= platform["max_length"]:
            errors.append(f"min/max: need 0 <= min <= max <= {platform['max_length']}")
    return errors


def discovery() -> dict[str, dict[str, Any]]:
    """The daemon's discovery configs, by config topic."""
    ha = HomeAssistantDiscovery(
        HomeAssistantConfig(enabled=True), Topics("tradeguard"), frozenset({"s1", "s2"}), "9.9"
    )
    messages = ha.discovery_messages()
    assert all(m.retain for m in messages)
    return {m.topic: msgspec.json.decode(m.payload) for m in messages}


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def test_every_payload_passes_the_2026_4_options() -> None:
    configs = discovery()
    assert len(configs) == 14
    for topic, payload in configs.items():
        prefix, component, node, object_id, last = topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "tradeguard", "config")
        assert validate(component, payload) == [], topic
        assert payload["default_entity_id"] == f"{component}.tradeguard_{object_id}"
    unique_ids = [p["unique_id"] for p in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)


def test_no_object_id_remains() -> None:
    for payload in discovery().values():
        assert not _keys(payload) & set(OPTIONS["removed"])


def test_the_validator_is_not_vacuous() -> None:
    good = discovery()["homeassistant/text/tradeguard/kill_release/config"]
    assert validate("text", good) == []
    assert validate("text", good | {"object_id": "x"}) != []
    assert validate("text", good | {"payload_press": "PRESS"}) != []
    assert validate("text", good | {"max": 300}) != []
    assert validate("text", good | {"default_entity_id": "sensor.x"}) != []
    assert validate("sensor", {"state_topic": "t", "entity_category": "config"}) != []
    assert validate("binary_sensor", {"state_topic": "t", "device_class": "halted"}) != []
    assert validate("button", {"name": "no command topic"}) != []


def test_entities_read_right_on_a_current_home_assistant() -> None:
    configs = discovery()
    by_id = {p["unique_id"]: p for p in configs.values()}
    # The kill switches show On (engaged) / Off: no "Unsafe" while trading is halted.
    for uid in ("tradeguard_kill_global", "tradeguard_kill_s1", "tradeguard_kill_s2"):
        assert "device_class" not in by_id[uid]
        assert by_id[uid]["payload_on"] == "ON"
    assert by_id["tradeguard_kill_global"]["default_entity_id"] == (
        "binary_sensor.tradeguard_kill_global"
    )
    # The release box sits with the controls, where the companion app shows it.
    assert "entity_category" not in by_id["tradeguard_kill_release"]
    # Numeric sensors render None (unknown) for a null value, never 'unknown'.
    for uid in ("tradeguard_equity", "tradeguard_daily_drawdown", "tradeguard_total_drawdown"):
        template = by_id[uid]["value_template"]
        assert "'unknown'" not in template
        assert template.endswith("is not none else None }}")


@pytest.mark.parametrize("box", ["kill_release", "approval_approve", "approval_deny"])
def test_code_boxes_have_a_state_topic_the_daemon_clears(box: str) -> None:
    payload = discovery()[f"homeassistant/text/tradeguard/{box}/config"]
    ha = HomeAssistantDiscovery(
        HomeAssistantConfig(enabled=True), Topics("tradeguard"), frozenset(), "9.9"
    )
    # A state topic makes Home Assistant non-optimistic: the typed code never
    # becomes the entity's state.
    assert payload["state_topic"] == f"{payload['command_topic']}/state"
    assert payload["mode"] == "password"
    assert payload["retain"] is False
    cleared = ha.cleared_code(payload["command_topic"])
    assert cleared.topic == payload["state_topic"]
    assert cleared.retain is False
    # The cleared state is valid for the box (HA raises on a state shorter than min).
    assert payload["min"] <= len(cleared.payload) <= payload["max"]
    assert cleared.payload == CLEARED_CODE
    assert "pattern" not in payload


def test_each_strategy_has_a_mode_sensor_from_its_state() -> None:
    configs = discovery()
    for sid in ("s1", "s2"):
        sensor = configs[f"homeassistant/sensor/tradeguard/mode_{sid}/config"]
        assert validate("sensor", sensor) == []
        assert sensor["default_entity_id"] == f"sensor.tradeguard_mode_{sid}"
        assert sensor["name"] == f"Trading mode ({sid})"
        assert sensor["state_topic"] == f"tradeguard/v1/strategy/{sid}/state"
        assert sensor["value_template"] == "{{ value_json.mode | default(None) }}"
        assert (sensor["device_class"], sensor["options"]) == ("enum", ["paper", "live"])
        assert sensor["availability_topic"] == "tradeguard/v1/daemon/status"


def test_entity_ids_follow_home_assistant_s_rule_whatever_the_strategy_id() -> None:
    # Strategy ids may hold capitals and '-'; entity ids may not (nor __ or an edge _).
    valid = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
    ha = HomeAssistantDiscovery(
        HomeAssistantConfig(enabled=True),
        Topics("tradeguard"),
        frozenset({"Trend-Follow", "s_1", "x--y_"}),
        "9.9",
    )
    bodies = [msgspec.json.decode(m.payload) for m in ha.discovery_messages()]
    for body in bodies:
        assert valid.fullmatch(body["default_entity_id"]), body["default_entity_id"]
    ids = {b["default_entity_id"] for b in bodies}
    assert {"sensor.tradeguard_mode_trend_follow", "binary_sensor.tradeguard_kill_s_1"} <= ids
    assert "sensor.tradeguard_mode_x_y" in ids
    assert len({b["unique_id"] for b in bodies}) == len(bodies)
    assert entity_slug("tradeguard_kill_global") == "tradeguard_kill_global"
