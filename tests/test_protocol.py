"""Wire protocol: the contract's examples decode, broken variants are refused by name."""

from __future__ import annotations

import json
import subprocess

import msgspec
import pytest
from harness import VENV_BIN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import DecodeFailure, decode_event, decode_intent, decode_kill_command, encode
from protocol.messages import (
    Accepted,
    CancelAllIntent,
    CancelIntent,
    Disengage,
    Engage,
    FillEvent,
    KillState,
    OrderEvent,
    OrderIntent,
    Rejected,
)
from protocol.topics import ParsedTopic, TopicKind, Topics

CONTRACT_ORDER = {
    "type": "order",
    "intent_id": "a-0001",
    "symbol": "AAPL",
    "side": "buy",
    "qty": 10,
    "order_type": "limit",
    "limit_price": 187.5,
    "time_in_force": "day",
    "stop_loss": 185.0,
}


def enc(value: object) -> bytes:
    return json.dumps(value).encode()


def test_contract_intent_examples_decode() -> None:
    order = decode_intent(enc(CONTRACT_ORDER))
    assert isinstance(order, OrderIntent)
    assert order.qty == 10
    assert order.stop_loss == 185.0
    assert isinstance(decode_intent(b'{"type": "cancel", "intent_id": "a-0001"}'), CancelIntent)
    assert isinstance(decode_intent(b'{"type": "cancel_all"}'), CancelAllIntent)
    market = decode_intent(
        b'{"type":"order","intent_id":"m1","symbol":"BRK.B","side":"sell","notional":500}'
    )
    assert isinstance(market, OrderIntent)
    assert market.order_type == "market"
    assert market.time_in_force == "day"


def test_contract_event_examples_decode() -> None:
    examples = [
        '{"type": "accepted", "intent_id": "a-0001", "client_order_id": "SID-a-0001", "ts": 0.0}',
        (
            '{"type": "rejected", "intent_id": "a-0001", "reasons": [{"code": "MAX_NOTIONAL", '
            '"message": "notional 30000.00 > limit 25000.00"}], "ts": 0.0}'
        ),
        (
            '{"type": "order", "intent_id": "a-0001", "client_order_id": "SID-a-0001", '
            '"broker_order_id": "uuid", "status": "filled", "filled_qty": 10, '
            '"filled_avg_price": 187.41, "ts": 0.0}'
        ),
        (
            '{"type": "fill", "intent_id": "a-0001", "client_order_id": "SID-a-0001", "qty": 4, '
            '"price": 187.40, "position_qty": 4, "ts": 0.0}'
        ),
    ]
    kinds: list[type] = [Accepted, Rejected, OrderEvent, FillEvent]
    for text, kind in zip(examples, kinds, strict=True):
        event: object = decode_event(text.encode())
        assert type(event) is kind
        assert decode_event(encode(event)) == event  # type: ignore[arg-type]  # checked above


def test_contract_kill_examples_decode() -> None:
    engage = decode_kill_command(
        b'{"type": "engage", "scope": "global", "reason": "phone", "source": "alice-phone", '
        b'"flatten": false}'
    )
    assert isinstance(engage, Engage)
    assert isinstance(
        decode_kill_command(b'{"type": "engage", "scope": "strategy", "strategy_id": "s1"}'), Engage
    )
    release = decode_kill_command(
        b'{"type": "disengage", "scope": "global", "code": "123456", "operator": "alice"}'
    )
    assert isinstance(release, Disengage)
    for word in (b"ENGAGE", b"kill", b"On", b" press\n"):
        plain = decode_kill_command(word)
        assert isinstance(plain, Engage)
        assert plain.scope == "global"
    for word in (b"OFF", b"DISENGAGE", b"release", b"\xff"):
        assert isinstance(decode_kill_command(word), DecodeFailure)
    state = msgspec.json.decode(
        b'{"global": {"engaged": true, "since": 0.0, "reason": "phone", "source": "alice-phone"},'
        b' "strategies": {"s1": {"engaged": false, "since": null, "reason": null, "source": null}},'
        b' "ts": 0.0}',
        type=KillState,
    )
    assert state.global_.engaged
    assert b'"global"' in encode(state)


BROKEN: list[tuple[dict[str, object], str]] = [
    ({"intent_id": ""}, "intent_id"),
    ({"intent_id": "has space"}, "intent_id"),
    ({"intent_id": "x" * 65}, "intent_id"),
    ({"intent_id": 7}, "intent_id"),
    ({"symbol": "aapl"}, "symbol"),
    ({"symbol": "TOOLONGSYMBOL1"}, "symbol"),
    ({"side": "short"}, "side"),
    ({"qty": 0}, "qty"),
    ({"qty": -1}, "qty"),
    ({"qty": "10"}, "qty"),
    ({"qty": True}, "qty"),
    ({"notional": 100}, "qty"),  # both qty and notional
    ({"order_type": "trailing"}, "order_type"),
    ({"limit_price": None}, "limit_price"),
    ({"limit_price": -5}, "limit_price"),
    ({"order_type": "stop"}, "stop_price"),
    ({"time_in_force": "forever"}, "time_in_force"),
    ({"extended_hours": "yes"}, "extended_hours"),
    ({"stop_loss": 0}, "stop_loss"),
    ({"confidence": 1.5}, "confidence"),
    ({"ts": "now"}, "ts"),
    ({"surprise": 1}, "surprise"),
    ({"type": "teleport"}, "type"),
]


@pytest.mark.parametrize(("change", "field"), BROKEN)
def test_each_broken_field_is_named(change: dict[str, object], field: str) -> None:
    body = {**CONTRACT_ORDER, **change}
    result = decode_intent(enc(body))
    assert isinstance(result, DecodeFailure), body
    assert field in result.message


def test_overflowing_number_is_named() -> None:
    result = decode_intent(
        b'{"type":"order","intent_id":"a","symbol":"A","side":"buy","qty":1e400}'
    )
    assert isinstance(result, DecodeFailure)
    assert "qty" in result.message


def test_cross_field_rules() -> None:
    no_qty = {k: v for k, v in CONTRACT_ORDER.items() if k != "qty"}
    result = decode_intent(enc(no_qty))
    assert isinstance(result, DecodeFailure)
    assert "exactly one of `qty` or `notional`" in result.message
    limit_notional = {**no_qty, "notional": 100}
    result = decode_intent(enc(limit_notional))
    assert isinstance(result, DecodeFailure)
    assert "`notional` is only allowed with order_type `market`" in result.message
    market_with_limit = {**CONTRACT_ORDER, "order_type": "market"}
    result = decode_intent(enc(market_with_limit))
    assert isinstance(result, DecodeFailure)
    assert "limit_price" in result.message


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\xff\xfe\x00", "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"x" * 1_000_000, "too large"),
        (b'"just a string"', "JSON object"),
    ],
)
def test_garbage_payloads(payload: bytes, words: str) -> None:
    result = decode_intent(payload)
    assert isinstance(result, DecodeFailure)
    assert words in result.message


def test_intent_id_is_echoed_when_readable() -> None:
    result = decode_intent(b'{"type":"order","intent_id":"abc","symbol":"x"}')
    assert isinstance(result, DecodeFailure)
    assert result.intent_id == "abc"


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_decoders_never_raise_on_bytes(payload: bytes) -> None:
    assert decode_intent(payload) is not None
    assert decode_kill_command(payload) is not None


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted({*CONTRACT_ORDER, "notional", "stop_price", "confidence", "ts"})),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    )
)
def test_decoder_total_on_json_objects(body: dict[str, object]) -> None:
    result = decode_intent(json.dumps({**CONTRACT_ORDER, **body}).encode())
    if isinstance(result, OrderIntent):
        assert (result.qty is None) != (result.notional is None)
        assert result.qty is None or result.qty > 0


def test_topics_parse_round_trip() -> None:
    topics = Topics("tg")
    assert topics.parse(topics.intent("s1")) == ParsedTopic(TopicKind.INTENT, "s1")
    assert topics.parse(topics.heartbeat("s-2")) == ParsedTopic(TopicKind.HEARTBEAT, "s-2")
    assert topics.parse(topics.kill_command) == ParsedTopic(TopicKind.KILL_COMMAND, None)
    assert topics.parse(topics.admin_command("alice")) == ParsedTopic(
        TopicKind.ADMIN_COMMAND, None, "alice"
    )
    assert topics.parse("tg/v1/admin/a+b/command") is None
    assert topics.parse("tg/v1/admin/alice/other") is None
    assert topics.parse(topics.event("s1")) is None
    assert topics.parse("other/v1/strategy/s1/intent") is None
    assert topics.parse("tg/v1/strategy//intent") is None


def test_schema_command_prints_every_message() -> None:
    out = subprocess.run(
        [str(VENV_BIN / "tradeguard"), "schema"], capture_output=True, text=True, check=True
    )
    schema = json.loads(out.stdout)
    for name in ("OrderIntent", "Rejected", "KillState", "DaemonState", "AuditRecord", "Engage"):
        assert name in schema["$defs"], name
