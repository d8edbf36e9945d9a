"""Home Assistant MQTT discovery for the kill switch.

Published (retained) under ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``
and again whenever Home Assistant's birth message ``online`` arrives on
``<discovery_prefix>/status``. Entities, all sharing one device and the daemon's
availability topic (``P/v1/daemon/status``, ``online``/``offline``):

* ``button`` *Engage kill switch*: ``command_topic`` = ``P/v1/kill/command``,
  ``payload_press`` = ``PRESS`` (a plain-text engage, CONTRACT §5).
* ``binary_sensor`` *Kill switch (global)* and one per strategy: ``state_topic`` =
  ``P/v1/kill/state`` with a ``value_template`` reading ``engaged``.
* ``text`` *Release code* (``mode: password``): ``command_topic`` =
  ``P/v1/ha/release``; whatever code is typed there is tried as a global release,
  audited like any other attempt. Retained messages on it are ignored.
* ``text`` *Approve* and *Deny* (``mode: password``), ``P/v1/ha/approve`` and
  ``P/v1/ha/deny``: type ``STRATEGY INTENT_ID CODE`` (space separated).
* ``sensor`` *Approvals pending* (count, the list as attributes), *Circuit breaker*,
  *Equity*, *Daily drawdown* and *Total drawdown* (from ``P/v1/daemon/state``).

Discovery fields used: ``name``, ``unique_id``, ``object_id``, ``device``
(``identifiers``, ``name``, ``manufacturer``, ``model``, ``sw_version``),
``availability_topic``, ``payload_available``, ``payload_not_available``,
``command_topic``, ``payload_press``, ``state_topic``, ``value_template``,
``payload_on``, ``payload_off``, ``device_class``, ``mode``, ``min``, ``max``,
``pattern``, ``icon``, ``entity_category``, ``qos``, ``retain``,
``json_attributes_topic``, ``unit_of_measurement``, ``state_class``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from daemon.channels import Publish
from daemon.config import HomeAssistantConfig
from protocol.topics import Topics

_json = msgspec.json.Encoder()


class HomeAssistantDiscovery:
    """Builds the discovery messages and names the topics Home Assistant talks on.

    Args:
        config: the ``[homeassistant]`` table.
        topics: the daemon's topics.
        strategies: configured strategy ids.
        version: the daemon version for the device card.
    """

    def __init__(
        self,
        config: HomeAssistantConfig,
        topics: Topics,
        strategies: frozenset[str],
        version: str,
    ) -> None:
        """Keep what the messages need."""
        self._config = config
        self._topics = topics
        self._strategies = sorted(strategies)
        self._version = version
        self.birth_topic = f"{config.discovery_prefix}/status"
        self.release_topic = f"{topics.root}/ha/release"
        self.approve_topic = f"{topics.root}/ha/approve"
        self.deny_topic = f"{topics.root}/ha/deny"

    def watched_topics(self) -> frozenset[str]:
        """Topics the daemon subscribes to for Home Assistant."""
        return frozenset(
            {self.birth_topic, self.release_topic, self.approve_topic, self.deny_topic}
        )

    def _config_topic(self, component: str, object_id: str) -> str:
        node = self._config.node_id
        return f"{self._config.discovery_prefix}/{component}/{node}/{object_id}/config"

    def _base(self, object_id: str, name: str) -> dict[str, Any]:
        node = self._config.node_id
        return {
            "name": name,
            "unique_id": f"{node}_{object_id}",
            "object_id": f"{node}_{object_id}",
            "availability_topic": self._topics.daemon_status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [node],
                "name": "tradeguard",
                "manufacturer": "tradeguard",
                "model": "execution and risk daemon",
                "sw_version": self._version,
            },
        }

    def discovery_messages(self) -> list[Publish]:
        """Every discovery config, retained."""
        messages: list[tuple[str, str, dict[str, Any]]] = []
        button = self._base("kill_engage", "Engage kill switch")
        button |= {
            "command_topic": self._topics.kill_command,
            "payload_press": "PRESS",
            "icon": "mdi:alert-octagon",
            "qos": 1,
        }
        messages.append(("button", "kill_engage", button))
        sensor = self._base("kill_global", "Kill switch (global)")
        sensor |= {
            "state_topic": self._topics.kill_state,
            "value_template": "{{ 'ON' if value_json['global'].engaged else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "safety",
        }
        messages.append(("binary_sensor", "kill_global", sensor))
        for sid in self._strategies:
            per = self._base(f"kill_{sid}", f"Kill switch ({sid})")
            per |= {
                "state_topic": self._topics.kill_state,
                "value_template": (
                    f"{{{{ 'ON' if value_json.strategies['{sid}'].engaged else 'OFF' }}}}"
                ),
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "safety",
            }
            messages.append(("binary_sensor", f"kill_{sid}", per))
        text = self._base("kill_release", "Release code")
        text |= {
            "command_topic": self.release_topic,
            "mode": "password",
            "min": 6,
            "max": 64,
            "pattern": "[A-Za-z0-9]{6,64}",
            "icon": "mdi:lock-open-variant",
            "entity_category": "config",
            "retain": False,
            "qos": 1,
        }
        messages.append(("text", "kill_release", text))
        for verb, topic in (("approve", self.approve_topic), ("deny", self.deny_topic)):
            entry = self._base(f"approval_{verb}", f"{verb.capitalize()} (strategy intent code)")
            entry |= {
                "command_topic": topic,
                "mode": "password",
                "min": 8,
                "max": 160,
                "icon": "mdi:check-decagram" if verb == "approve" else "mdi:close-octagon",
                "retain": False,
                "qos": 1,
            }
            messages.append(("text", f"approval_{verb}", entry))
        pending = self._base("approvals_pending", "Approvals pending")
        pending |= {
            "state_topic": self._topics.approval_pending,
            "value_template": "{{ value_json.pending | length }}",
            "json_attributes_topic": self._topics.approval_pending,
            "icon": "mdi:account-clock",
        }
        messages.append(("sensor", "approvals_pending", pending))
        circuit = self._base("circuit", "Circuit breaker")
        circuit |= {
            "state_topic": self._topics.daemon_state,
            "value_template": "{{ value_json.circuit }}",
            "icon": "mdi:electric-switch",
        }
        messages.append(("sensor", "circuit", circuit))
        for key, name, unit in (
            ("equity", "Equity", "USD"),
            ("daily_drawdown", "Daily drawdown", "%"),
            ("total_drawdown", "Total drawdown", "%"),
        ):
            sensor_body = self._base(key, name)
            scale = " * 100" if unit == "%" else ""
            sensor_body |= {
                "state_topic": self._topics.daemon_state,
                "value_template": (
                    f"{{{{ (value_json.{key}{scale}) | round(2) if value_json.{key} is not none "
                    "else 'unknown' }}"
                ),
                "unit_of_measurement": unit,
                "state_class": "measurement",
            }
            messages.append(("sensor", key, sensor_body))
        return [
            Publish(
                topic=self._config_topic(component, object_id),
                payload=_json.encode(body),
                retain=True,
            )
            for component, object_id, body in messages
        ]
