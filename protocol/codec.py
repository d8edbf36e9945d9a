"""Encoding and decoding of v1 messages; every encoder and decoder is built once.

Decoding never raises on bad input: it returns a :class:`DecodeFailure` whose
``message`` names the field and the rule, ready for an ``INVALID_INTENT`` answer.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from protocol.messages import (
    ApprovalCommand,
    ApprovalPending,
    AuditRecord,
    DaemonState,
    Engage,
    Event,
    Intent,
    KillCommand,
    KillState,
    StrategyState,
)

MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Inbound payloads above this are refused before parsing (an intent is ~300 bytes)."""

MAX_ECHOED_ID_CHARS: Final = 128

PLAIN_ENGAGE_WORDS: Final = frozenset({"ENGAGE", "KILL", "ON", "PRESS"})
"""Plain-text kill payloads that engage the global switch (CONTRACT §5)."""


class DecodeFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A payload that is not a valid message.

    Attributes:
        intent_id: the ``intent_id`` if one could be read from the payload, else None.
        message: what is wrong, naming the field where there is one.
    """

    intent_id: str | None
    message: str


_intent_decoder: Final[msgspec.json.Decoder[Intent]] = msgspec.json.Decoder(Intent)
_kill_decoder: Final[msgspec.json.Decoder[KillCommand]] = msgspec.json.Decoder(KillCommand)
_approval_decoder: Final[msgspec.json.Decoder[ApprovalCommand]] = msgspec.json.Decoder(
    ApprovalCommand
)
_event_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_loose_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()

_TAGS: Final = {
    "intent": "order, cancel, cancel_all",
    "kill": "engage, disengage, reset_circuit, pause, resume",
    "approval": "approve, deny",
}


def encode(message: msgspec.Struct) -> bytes:
    """Encode any v1 message as compact JSON."""
    return _encoder.encode(message)


def _explain(error: msgspec.MsgspecError, kinds: str) -> str:
    """Turn a msgspec error into ``field: problem`` form."""
    text = str(error)
    if isinstance(error, msgspec.DecodeError) and not isinstance(error, msgspec.ValidationError):
        return f"payload is not valid JSON ({text})"
    detail, sep, where = text.partition(" - at `")
    if not sep:
        return text
    path = where.rstrip("`").removeprefix("$").lstrip(".") or "payload"
    if path == "type" and detail.startswith("Invalid value"):
        return f"type: {detail}; expected one of {kinds}"
    return f"{path}: {_plain(detail)}"


_WORDS: Final = (
    ("`float | null`", "a number"),
    ("`float`", "a number"),
    ("`str | null`", "a string"),
    ("`str`", "a string"),
    ("`bool`", "a boolean"),
    ("`int`", "an integer"),
    ("`object`", "an object"),
    ("`array`", "an array"),
)


def _plain(detail: str) -> str:
    """Plain words for msgspec's: ``Expected `float` <= 1.0`` -> ``expected a number <= 1``."""
    for typename, words in _WORDS:
        detail = detail.replace(typename, words)
    detail = detail.replace("Expected", "expected", 1)
    return re.sub(r"(\d+)\.0\b", r"\1", detail)


def _read_intent_id(payload: bytes) -> str | None:
    """Best effort: the ``intent_id`` of an otherwise broken payload."""
    try:
        loose = _loose_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    if isinstance(loose, dict):
        candidate = loose.get("intent_id")
        if isinstance(candidate, str) and 0 < len(candidate) <= MAX_ECHOED_ID_CHARS:
            return candidate
    return None


def _precheck(payload: bytes) -> str | None:
    """Problems found before JSON parsing: size, encoding, top-level shape."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return f"payload too large: {len(payload)} bytes > {MAX_PAYLOAD_BYTES}"
    if not payload.strip():
        return "payload is empty; expected a JSON object"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"payload is not valid UTF-8 (byte {exc.start})"
    if payload.lstrip()[:1] != b"{":
        return "payload must be a JSON object"
    return None


def decode_intent(payload: bytes) -> Intent | DecodeFailure:
    """Decode and validate one intent (CONTRACT §3)."""
    problem = _precheck(payload)
    if problem is not None:
        intent_id = _read_intent_id(payload) if len(payload) <= MAX_PAYLOAD_BYTES else None
        return DecodeFailure(intent_id=intent_id, message=problem)
    try:
        return _intent_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        return DecodeFailure(
            intent_id=_read_intent_id(payload), message=_explain(exc, _TAGS["intent"])
        )


def decode_kill_command(payload: bytes) -> KillCommand | DecodeFailure:
    """Decode a kill command: JSON (CONTRACT §5) or a plain-text engage word.

    Plain text can only ever engage the global switch; any other word is refused.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return DecodeFailure(intent_id=None, message="payload too large")
    stripped = payload.strip()
    if stripped[:1] != b"{":
        try:
            word = stripped.decode("utf-8").upper()
        except UnicodeDecodeError:
            return DecodeFailure(intent_id=None, message="payload is not valid UTF-8")
        if word in PLAIN_ENGAGE_WORDS:
            return Engage(scope="global", reason="plain-text command", source="mqtt")
        return DecodeFailure(
            intent_id=None,
            message="plain-text kill payloads can only engage (ENGAGE, KILL, ON, PRESS)",
        )
    try:
        return _kill_decoder.decode(stripped)
    except msgspec.MsgspecError as exc:
        return DecodeFailure(intent_id=None, message=_explain(exc, _TAGS["kill"]))


def decode_approval_command(payload: bytes) -> ApprovalCommand | DecodeFailure:
    """Decode an approval command (``P/v1/approval/command``)."""
    problem = _precheck(payload)
    if problem is not None:
        return DecodeFailure(intent_id=None, message=problem)
    try:
        return _approval_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        return DecodeFailure(
            intent_id=_read_intent_id(payload), message=_explain(exc, _TAGS["approval"])
        )


def decode_event(payload: bytes) -> Event:
    """Decode a daemon event (used by strategy clients). Raises on bad input."""
    return _event_decoder.decode(payload)


def decode_json(payload: bytes) -> Any:
    """Decode untyped JSON (trigger topics). Raises ``msgspec.DecodeError``."""
    return _loose_decoder.decode(payload)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every v1 message, as ``tradeguard schema`` prints it."""
    roots = (
        Intent,
        Event,
        KillCommand,
        KillState,
        DaemonState,
        StrategyState,
        AuditRecord,
        ApprovalCommand,
        ApprovalPending,
    )
    schemas, components = msgspec.json.schema_components(roots, ref_template="#/$defs/{name}")
    names = (
        "Intent",
        "Event",
        "KillCommand",
        "KillState",
        "DaemonState",
        "StrategyState",
        "AuditRecord",
        "ApprovalCommand",
        "ApprovalPending",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tradeguard v1 messages",
        "$defs": components,
        "properties": dict(zip(names, schemas, strict=True)),
    }
