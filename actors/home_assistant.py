"""Home Assistant MQTT discovery for the kill switch.

Published (retained) under ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``
and again whenever Home Assistant's birth message ``online`` arrives on
``<discovery_prefix>/status``. The payloads follow Home Assistant 2026.4: the entity
id comes from ``default_entity_id`` (``<component>.<node_id>_<object_id>``, for
example ``binary_sensor.tradeguard_kill_global``; lower case, other characters ``_``,
:func:`entity_slug`); the older ``object_id`` option,
deprecated in 2025.10 and removed in 2026.4, is not sent. Entities, all sharing one
device and the daemon's availability topic (``P/v1/daemon/status``,
``online``/``offline``):

* ``button`` *Engage kill switch*: ``command_topic`` = ``P/v1/kill/command``,
  ``payload_press`` = ``PRESS`` (a plain-text engage, docs/protocol.md).
* ``binary_sensor`` *Kill switch (global)* and one per strategy: ``state_topic`` =
  ``P/v1/kill/state`` with a ``value_template`` reading ``engaged``. No device
  class: Home Assistant then shows *On* (engaged) and *Off* (released), which is
  what the entity's name says. (``safety`` would show *Unsafe* while trading is
  halted, the safe state; ``problem`` would call a deliberate halt a problem.)
* ``text`` *Release code* (``mode: password``): ``command_topic`` =
  ``P/v1/ha/release``; whatever code is typed there is tried as a global release,
  audited like any other attempt. Retained messages on it are ignored. It has no
  ``entity_category``, so the companion app shows it with the other controls.
* ``text`` *Approve* and *Deny* (``mode: password``), ``P/v1/ha/approve`` and
  ``P/v1/ha/deny``: type ``STRATEGY INTENT_ID CODE`` (space separated).
* ``sensor`` *Approvals pending* (count, the list as attributes), *Circuit breaker*,
  *Equity*, *Daily drawdown* and *Total drawdown* (from ``P/v1/daemon/state``).
  The numeric ones render ``None`` when the daemon has no value yet, which Home
  Assistant shows as *unknown* (a string such as ``'unknown'`` makes a numeric
  sensor raise ``ValueError``).
* ``sensor`` *Trading mode (SID)* per strategy (``device_class: enum``, ``paper`` or
  ``live``): ``state_topic`` = ``P/v1/strategy/SID/state``, ``value_json.mode``; a
  state without a mode renders ``None``, which Home Assistant shows as *unknown*.

The three code boxes each have a ``state_topic`` (``P/v1/ha/release/state``,
``.../approve/state``, ``.../deny/state``). With a state topic Home Assistant is not
optimistic: it never takes the typed text as the entity's state, so no code reaches
its state machine, recorder or history. The daemon publishes an empty state there
after every message on the command topic (:meth:`HomeAssistantDiscovery.cleared_code`),
so the entity's state is empty. ``min`` is 0 so that the empty state is valid.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeAlias

import msgspec
import structlog

from actors.channels import Publish, TriggerPress
from actors.core.settings import HomeAssistantConfig
from protocol.messages import Approve, Deny, Disengage
from protocol.topics import Topics

log = structlog.get_logger(__name__)

_json = msgspec.json.Encoder()

CLEARED_CODE: Final = b""
"""The state the daemon publishes to a code box's state topic after each use."""

_Entity: TypeAlias = tuple[str, str, dict[str, Any]]
"""One discovery config: component, object id, body."""


def entity_slug(text: str) -> str:
    """``text`` as the object part of a Home Assistant entity id.

    Home Assistant's rule: ``[a-z0-9_]``, no ``__``, no ``_`` first or last. Strategy
    ids may hold capitals and ``-``: ``Trend-Follow`` becomes ``trend_follow``.
    """
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_")


def _numeric(key: str, scale: str = "") -> str:
    """A value template that yields a rounded number, or ``None`` for a null value."""
    return (
        f"{{{{ (value_json.{key}{scale}) | round(2) if value_json.{key} is not none else None }}}}"
    )


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

    @staticmethod
    def code_state_topic(command_topic: str) -> str:
        """The state topic of the code box that publishes on ``command_topic``."""
        return f"{command_topic}/state"

    def cleared_code(self, command_topic: str) -> Publish:
        """The empty state for the code box of ``command_topic``, sent after each use.

        Not retained: an empty retained message would only delete one, and a Home
        Assistant that starts later shows the box as unknown, which holds no code
        either.
        """
        return Publish(topic=self.code_state_topic(command_topic), payload=CLEARED_CODE)

    def _config_topic(self, component: str, object_id: str) -> str:
        node = self._config.node_id
        return f"{self._config.discovery_prefix}/{component}/{node}/{object_id}/config"

    def _base(self, component: str, object_id: str, name: str) -> dict[str, Any]:
        node = self._config.node_id
        return {
            "name": name,
            "unique_id": f"{node}_{object_id}",
            "default_entity_id": f"{component}.{entity_slug(f'{node}_{object_id}')}",
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
            "origin": {"name": "tradeguard", "sw_version": self._version},
        }

    def _code_box(
        self, object_id: str, name: str, command_topic: str, max_length: int, icon: str
    ) -> dict[str, Any]:
        body = self._base("text", object_id, name)
        body |= {
            "command_topic": command_topic,
            "state_topic": self.code_state_topic(command_topic),
            "mode": "password",
            "min": 0,
            "max": max_length,
            "icon": icon,
            "retain": False,
            "qos": 1,
        }
        return body

    def discovery_messages(self) -> list[Publish]:
        """Every discovery config, retained."""
        return [
            Publish(
                topic=self._config_topic(component, object_id),
                payload=_json.encode(body),
                retain=True,
            )
            for component, object_id, body in (
                *self._kill_entities(),
                *self._code_boxes(),
                *self._state_sensors(),
                *self._mode_sensors(),
            )
        ]

    def _kill_entities(self) -> list[_Entity]:
        """The engage button and the kill state, globally and per strategy."""
        button = self._base("button", "kill_engage", "Engage kill switch")
        button |= {
            "command_topic": self._topics.kill_command,
            "payload_press": "PRESS",
            "icon": "mdi:alert-octagon",
            "qos": 1,
        }
        entities: list[_Entity] = [("button", "kill_engage", button)]
        switches = [("kill_global", "Kill switch (global)", "value_json['global'].engaged")]
        switches += [
            (f"kill_{sid}", f"Kill switch ({sid})", f"value_json.strategies['{sid}'].engaged")
            for sid in self._strategies
        ]
        for object_id, name, engaged in switches:
            sensor = self._base("binary_sensor", object_id, name)
            sensor |= {
                "state_topic": self._topics.kill_state,
                "value_template": f"{{{{ 'ON' if {engaged} else 'OFF' }}}}",
                "payload_on": "ON",
                "payload_off": "OFF",
                "icon": "mdi:octagon",
            }
            entities.append(("binary_sensor", object_id, sensor))
        return entities

    def _code_boxes(self) -> list[_Entity]:
        """The release, approve and deny code boxes."""
        release = self._code_box(
            "kill_release", "Release code", self.release_topic, 64, "mdi:lock-open-variant"
        )
        entities: list[_Entity] = [("text", "kill_release", release)]
        for verb, topic in (("approve", self.approve_topic), ("deny", self.deny_topic)):
            entry = self._code_box(
                f"approval_{verb}",
                f"{verb.capitalize()} (strategy intent code)",
                topic,
                160,
                "mdi:check-decagram" if verb == "approve" else "mdi:close-octagon",
            )
            entities.append(("text", f"approval_{verb}", entry))
        return entities

    def _state_sensors(self) -> list[_Entity]:
        """Approvals pending, the circuit breaker, equity and the drawdowns."""
        pending = self._base("sensor", "approvals_pending", "Approvals pending")
        pending |= {
            "state_topic": self._topics.approval_pending,
            "value_template": "{{ value_json.pending | length }}",
            "json_attributes_topic": self._topics.approval_pending,
            "icon": "mdi:account-clock",
        }
        circuit = self._base("sensor", "circuit", "Circuit breaker")
        circuit |= {
            "state_topic": self._topics.daemon_state,
            "value_template": "{{ value_json.circuit }}",
            "icon": "mdi:electric-switch",
        }
        entities: list[_Entity] = [
            ("sensor", "approvals_pending", pending),
            ("sensor", "circuit", circuit),
        ]
        for key, name, unit in (
            ("equity", "Equity", "USD"),
            ("daily_drawdown", "Daily drawdown", "%"),
            ("total_drawdown", "Total drawdown", "%"),
        ):
            sensor_body = self._base("sensor", key, name)
            sensor_body |= {
                "state_topic": self._topics.daemon_state,
                "value_template": _numeric(key, " * 100" if unit == "%" else ""),
                "unit_of_measurement": unit,
                "state_class": "measurement",
            }
            entities.append(("sensor", key, sensor_body))
        return entities

    def _mode_sensors(self) -> list[_Entity]:
        """Each strategy's trading mode (``paper`` or ``live``), from its retained state."""
        entities: list[_Entity] = []
        for sid in self._strategies:
            object_id = f"mode_{sid}"
            sensor = self._base("sensor", object_id, f"Trading mode ({sid})")
            sensor |= {
                "state_topic": self._topics.strategy_state(sid),
                "value_template": "{{ value_json.mode | default(None) }}",
                "device_class": "enum",
                "options": ["paper", "live"],
                "icon": "mdi:bank-transfer",
            }
            entities.append(("sensor", object_id, sensor))
        return entities


class HomeAssistantAction(msgspec.Struct, frozen=True, kw_only=True):
    """What a message on one of Home Assistant's topics asks of the kill-switch authority.

    Attributes:
        publish: messages to publish (discovery after HA's birth, an emptied code box).
        command: a release, approval or denial to route like any other command.
        refusal: the detail of an approval or denial refused before any code check.
        refused_kind: the audit type of that refusal (``approval.approve``/``.deny``).
    """

    publish: list[Publish] = msgspec.field(default_factory=list)
    command: Disengage | Approve | Deny | None = None
    refusal: str | None = None
    refused_kind: str = ""


def interpret(ha: HomeAssistantDiscovery, press: TriggerPress) -> HomeAssistantAction:
    """Translate a message on a watched Home Assistant topic (retained ones do nothing)."""
    if press.topic == ha.birth_topic:
        online = press.payload.strip() == b"online"
        return HomeAssistantAction(publish=ha.discovery_messages() if online else [])
    # The code box's state is empty again: Home Assistant stores no code.
    cleared = [ha.cleared_code(press.topic)]
    if press.retained:
        kind_of = "release" if press.topic == ha.release_topic else "approval"
        log.warning(f"homeassistant.retained_{kind_of}_ignored")  # noqa: G004 - two fixed names
        return HomeAssistantAction(publish=cleared)
    if press.topic == ha.release_topic:
        try:
            code: str | None = press.payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            code = None
        release = Disengage(
            scope="global", code=code, operator="homeassistant", source="homeassistant"
        )
        return HomeAssistantAction(publish=cleared, command=release)
    kind = Approve if press.topic == ha.approve_topic else Deny
    refused_kind = f"approval.{kind.__name__.lower()}"
    parts = press.payload.decode("utf-8", "replace").split()
    if len(parts) != 3:
        detail = "denied: expected 'STRATEGY INTENT_ID CODE'"
        return HomeAssistantAction(publish=cleared, refusal=detail, refused_kind=refused_kind)
    try:
        command = kind(
            strategy_id=parts[0],
            intent_id=parts[1],
            code=parts[2],
            operator="homeassistant",
            source="homeassistant",
        )
    except (TypeError, ValueError) as exc:
        return HomeAssistantAction(
            publish=cleared, refusal=f"denied: {exc}", refused_kind=refused_kind
        )
    return HomeAssistantAction(publish=cleared, command=command)
