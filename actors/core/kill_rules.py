"""The kill-switch authority's rules that need no state: trigger presses, command audit. Pure."""

from __future__ import annotations

import msgspec

from actors.core.settings import TriggerConfig
from protocol.codec import decode_json
from protocol.messages import Approve, Deny, ResetCircuit, Resume


def authorised_detail(command: Resume | ResetCircuit | Approve | Deny, how: str) -> str:
    """The audit detail of an authorised privileged command."""
    if isinstance(command, Approve | Deny):
        return f"intent {command.intent_id}: authorised ({how})"
    return f"authorised ({how})"


def describe(command: Resume | ResetCircuit | Approve | Deny) -> tuple[str, str | None]:
    """The audit type and the strategy of a privileged command."""
    match command:
        case Resume():
            return "strategy.resume", command.strategy_id
        case ResetCircuit():
            return "circuit.reset", None
        case Approve():
            return "approval.approve", command.strategy_id
        case Deny():
            return "approval.deny", command.strategy_id


def matches(trigger: TriggerConfig, payload: bytes) -> bool:
    """Whether a message on the trigger's topic is the configured press.

    ``payload``: the whole plain-text payload (surrounding white space ignored) equals
    it, as on zigbee2mqtt's ``.../action`` topic. ``match``: a JSON object in which
    every listed field is equal. A trigger with neither matches nothing (the config
    check refuses it): an empty payload, a battery report or a ``double`` must never
    engage a switch meant for ``single``.
    """
    if trigger.payload is not None:
        return payload.strip() == trigger.payload.encode("utf-8")
    if not trigger.match:
        return False
    try:
        body = decode_json(payload)
    except msgspec.DecodeError:
        return False
    if not isinstance(body, dict):
        return False
    return all(
        field in body and body[field] == value and type(body[field]) is type(value)
        for field, value in trigger.match.items()
    )
