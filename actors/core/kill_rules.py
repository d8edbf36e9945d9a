"""The kill-switch authority's rules that need no state: trigger presses, command audit. Pure."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from actors.core.messages import InboundKillCommand, ModeChange
from actors.core.rows import SwitchRow
from actors.core.settings import TriggerConfig
from protocol.codec import decode_json
from protocol.messages import (
    Approve,
    AuditRecord,
    Deny,
    Disengage,
    Promote,
    ResetCircuit,
    Resume,
    SwitchState,
)

Privileged = Resume | ResetCircuit | Approve | Deny | Promote
"""The commands that need an admin code (besides releasing a switch)."""


def authorised_detail(command: Privileged, how: str) -> str:
    """The audit detail of an authorised privileged command."""
    if isinstance(command, Approve | Deny):
        return f"intent {command.intent_id}: authorised ({how})"
    return f"authorised ({how})"


def describe(command: Privileged) -> tuple[str, str | None]:
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
        case Promote():
            return "mode.promote", command.strategy_id


def queue_full(command: Disengage | Privileged, origin: str, size: int, now: float) -> AuditRecord:
    """The refusal of a privileged command when ``size`` already wait for a code check."""
    kind, strategy_id = (
        ("kill.disengage", command.strategy_id)
        if isinstance(command, Disengage)
        else describe(command)
    )
    return AuditRecord(
        type=kind,
        ok=False,
        ts=now,
        strategy_id=strategy_id,
        source=command.source or origin,
        detail=f"denied: more than {size} privileged commands waiting; try again",
    )


def refusal(
    kind: str,
    strategy_id: str | None,
    *,
    source: str,
    detail: str,
    now: float,
    operator: str | None = None,
) -> AuditRecord:
    """The audit record of a refused command."""
    return AuditRecord(
        type=kind,
        ok=False,
        scope="strategy" if strategy_id else "global",
        strategy_id=strategy_id,
        source=source,
        operator=operator,
        detail=detail,
        ts=now,
    )


def nothing_to_authorise(
    command: Privileged,
    strategies: frozenset[str],
    is_pending: Callable[[str, str], bool] | None,
) -> str | None:
    """Why ``command`` is refused before its code is checked (None: check the code).

    An approval of an intent that waits for nobody, or a promotion of an unknown
    strategy, has nothing to authorise: refused at once, and no code step is used up.
    """
    if (
        isinstance(command, Approve | Deny)
        and is_pending is not None
        and not is_pending(command.strategy_id, command.intent_id)
    ):
        return (
            f"no intent {command.intent_id} of strategy {command.strategy_id} "
            "is waiting for approval"
        )
    if isinstance(command, Promote) and command.strategy_id not in strategies:
        return f"unknown strategy {command.strategy_id!r}"
    return None


def promotion(command: Promote, *, source: str, how: str) -> ModeChange:
    """An authorised promotion, for the strategy's order manager to check and carry out."""
    return ModeChange(
        strategy_id=command.strategy_id,
        target="live",
        source=source,
        operator=command.operator,
        authorised=how,
    )


def lockout_caller(inbound: InboundKillCommand, *, per_user: bool) -> str:
    """Whose failures a code check counts against (one shared count unless ``per_user``)."""
    if not per_user:
        return ""
    if inbound.user is not None:
        return f"admin/{inbound.user}"
    return "homeassistant" if inbound.origin == "homeassistant" else ""


def switch_row(key: str, state: SwitchState) -> SwitchRow:
    """The journal row of a switch (or of a pause, under ``PAUSE_PREFIX``)."""
    return SwitchRow(
        scope_key=key,
        engaged=state.engaged,
        since=state.since,
        reason=state.reason,
        source=state.source,
    )


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
