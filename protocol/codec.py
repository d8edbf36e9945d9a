"""Encoding and decoding of v1 messages; every encoder and decoder is built once.

Decoding never raises on bad input: it returns a :class:`DecodeFailure` whose
``message`` names the field and the rule, ready for an ``INVALID_INTENT`` answer.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from protocol.messages import (
    INTENT_ID_PATTERN,
    MAX_QTY_DECIMALS,
    STRATEGY_ID_PATTERN,
    SYMBOL_PATTERN,
    ApprovalCommand,
    ApprovalPending,
    AuditRecord,
    DaemonState,
    Engage,
    Event,
    Intent,
    KillCommand,
    KillState,
    OrderIntent,
    StrategyState,
)

MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Inbound payloads above this are refused before parsing (an intent is ~300 bytes)."""

_LONG_QTY: Final = re.compile(rb'"qty"\s*:\s*-?\d+\.\d{10,}')
"""More than 9 decimals as written, before a float's rounding can hide them."""
_VALID_INTENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""Only a valid id is echoed back: never control characters or 100 KB of text."""

MAX_NESTING: Final = 16
"""Deepest nesting of arrays and objects accepted (an intent needs 1). Deeper payloads
are refused before any parser sees them: a 2 KB ``[[[[...]]]]`` would otherwise
exhaust the parser's recursion."""

PLAIN_ENGAGE_WORDS: Final = frozenset({"ENGAGE", "KILL", "ON", "PRESS"})
"""Plain-text kill payloads that engage the global switch (docs/protocol.md)."""


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
_admin_decoder: Final[msgspec.json.Decoder[KillCommand | ApprovalCommand]] = msgspec.json.Decoder(
    KillCommand | ApprovalCommand
)
_event_decoder: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_loose_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()

_TAGS: Final = {
    "intent": "order, cancel, cancel_all",
    "kill": "engage, disengage, reset_circuit, pause, resume",
    "approval": "approve, deny",
    "admin": "engage, disengage, reset_circuit, pause, resume, approve, deny",
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


_PATTERN_WORDS: Final = (
    (STRATEGY_ID_PATTERN, "1-32 characters of A-Z a-z 0-9 _ -"),
    (INTENT_ID_PATTERN, "1-64 characters of A-Z a-z 0-9 . _ : -"),
    (SYMBOL_PATTERN, "1-12 characters of A-Z 0-9 . / (upper case, nothing else)"),
)


def _plain(detail: str) -> str:
    """Plain words for msgspec's: ``Expected `float` <= 1.0`` -> ``expected a number <= 1``."""
    for typename, words in _WORDS:
        detail = detail.replace(typename, words)
    for pattern, words in _PATTERN_WORDS:
        detail = detail.replace(f"matching regex {pattern!r}", f"of {words}")
    detail = detail.replace("Expected", "expected", 1)
    return re.sub(r"(\d+)\.0\b", r"\1", detail)


def nesting_depth(payload: bytes, limit: int = MAX_NESTING) -> int:
    """How deeply arrays and objects nest in ``payload``, counted up to ``limit + 1``.

    Brackets inside JSON strings do not count. Linear in the payload; a payload with
    few brackets costs two counts.
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return payload.count(b"[") + payload.count(b"{")
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > limit:
            break
    return deepest


_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def _read_intent_id(payload: bytes) -> str | None:
    """Best effort: the ``intent_id`` of an otherwise broken payload."""
    if len(payload) > MAX_PAYLOAD_BYTES or nesting_depth(payload) > MAX_NESTING:
        return None
    try:
        loose = _loose_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(loose, dict):
        candidate = loose.get("intent_id")
        if isinstance(candidate, str) and _VALID_INTENT_ID.fullmatch(candidate):
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
    if nesting_depth(payload) > MAX_NESTING:
        return f"payload nests arrays or objects more than {MAX_NESTING} levels deep"
    return None


def decode_intent(payload: bytes) -> Intent | DecodeFailure:
    """Decode and validate one intent (docs/protocol.md)."""
    problem = _precheck(payload)
    if problem is not None:
        intent_id = _read_intent_id(payload) if len(payload) <= MAX_PAYLOAD_BYTES else None
        return DecodeFailure(intent_id=intent_id, message=problem)
    try:
        intent = _intent_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        return DecodeFailure(
            intent_id=_read_intent_id(payload), message=_explain(exc, _TAGS["intent"])
        )
    except (RecursionError, ValueError, TypeError) as exc:  # belt and braces: never raise
        return DecodeFailure(intent_id=None, message=f"payload refused ({type(exc).__name__})")
    if isinstance(intent, OrderIntent) and _LONG_QTY.search(payload):
        # A float keeps ~16 digits: "1.00000000000000001" would pass as 1.0 after parsing.
        return DecodeFailure(
            intent_id=intent.intent_id,
            message=f"qty: at most {MAX_QTY_DECIMALS} decimal places (Alpaca's limit)",
        )
    return intent


def decode_kill_command(payload: bytes) -> KillCommand | DecodeFailure:
    """Decode a kill command: JSON (docs/protocol.md) or a plain-text engage word.

    Plain text can only ever engage the global switch; any other word is refused.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return DecodeFailure(
            intent_id=None, message=f"payload too large: {len(payload)} bytes > {MAX_PAYLOAD_BYTES}"
        )
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
    problem = _precheck(stripped)
    if problem is not None:
        return DecodeFailure(intent_id=None, message=problem)
    try:
        return _kill_decoder.decode(stripped)
    except msgspec.MsgspecError as exc:
        return DecodeFailure(intent_id=None, message=_explain(exc, _TAGS["kill"]))
    except (RecursionError, ValueError, TypeError) as exc:  # belt and braces: never raise
        return DecodeFailure(intent_id=None, message=f"payload refused ({type(exc).__name__})")


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
    except (RecursionError, ValueError, TypeError) as exc:  # belt and braces: never raise
        return DecodeFailure(intent_id=None, message=f"payload refused ({type(exc).__name__})")


def decode_admin_command(payload: bytes) -> KillCommand | ApprovalCommand | DecodeFailure:
    """Decode a command on ``P/v1/admin/USER/command``: any kill or approval command (JSON)."""
    problem = _precheck(payload)
    if problem is not None:
        return DecodeFailure(intent_id=None, message=problem)
    try:
        return _admin_decoder.decode(payload)
    except msgspec.MsgspecError as exc:
        return DecodeFailure(intent_id=None, message=_explain(exc, _TAGS["admin"]))
    except (RecursionError, ValueError, TypeError) as exc:  # belt and braces: never raise
        return DecodeFailure(intent_id=None, message=f"payload refused ({type(exc).__name__})")


def decode_event(payload: bytes) -> Event:
    """Decode a daemon event (used by strategy clients). Raises on bad input."""
    return _event_decoder.decode(payload)


def decode_json(payload: bytes) -> Any:
    """Decode untyped JSON (trigger topics).

    Raises:
        msgspec.DecodeError: on anything but a small, shallow JSON document (also for
            payloads over ``MAX_PAYLOAD_BYTES`` or nested deeper than ``MAX_NESTING``).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise msgspec.DecodeError(f"payload too large: {len(payload)} bytes")
    if nesting_depth(payload) > MAX_NESTING:
        raise msgspec.DecodeError(f"payload nests more than {MAX_NESTING} levels deep")
    try:
        return _loose_decoder.decode(payload)
    except RecursionError as exc:
        raise msgspec.DecodeError("payload nests too deeply") from exc


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
