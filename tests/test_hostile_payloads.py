"""Hostile payloads on every inbound topic: no crash, no order, one answer each.

hypothesis generates the payloads (at least 2,000 over the topics); a few fixed ones
add what is too big to generate cheaply (10 MB bodies, 1,000-deep nesting). Each goes
to a real daemon through a real mosquitto, with alpaca-py against the paper venue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import (
    Mosquitto,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_harness import running_venue

from protocol.codec import PLAIN_ENGAGE_WORDS
from protocol.topics import Topics

pytestmark = pytest.mark.anyio

VALID: dict[str, Any] = {
    "type": "order",
    "intent_id": "fz-1",
    "symbol": "AAPL",
    "side": "buy",
    "qty": 1,
    "order_type": "limit",
    "limit_price": 1.0,
    "time_in_force": "day",
}
STRING_FIELDS = ("type", "intent_id", "symbol", "side", "order_type", "time_in_force")
NUMBER_FIELDS = ("qty", "limit_price", "stop_loss", "confidence", "ts")


def _encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def nested(depth: int, *, array: bool) -> bytes:
    inner = b"[" * depth + b"1" + b"]" * depth if array else b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"type":"order","intent_id":"deep","x":' + inner + b"}"


@st.composite
def trailing_newline(draw: st.DrawFn) -> bytes:
    body = dict(VALID)
    field = draw(st.sampled_from(STRING_FIELDS))
    body[field] = body[field] + draw(st.sampled_from(["\n", "\r\n", "\n\n", " \n"]))
    body["intent_id"] = body["intent_id"] if field == "intent_id" else draw(_ids)
    return _encode(body)


@st.composite
def bad_number(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from(NUMBER_FIELDS))
    # Each literal is wrong for every number field (a plain -1 would be a valid ``ts``).
    literal = draw(
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"1"', "true", "[]"])
    )
    text = _encode({**VALID, "intent_id": draw(_ids)})[:-1] + f',"{field}":{literal}}}'.encode()
    if field == "qty":  # the field is there already: a duplicate key with a bad value
        text = text.replace(b'"qty": 1, ', b"")
    return text


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    field, bad = draw(
        st.sampled_from(
            [("qty", "-5"), ("side", '"hold"'), ("type", '"nuke"'), ("symbol", '"aapl"')]
        )
    )
    return _encode({**VALID, "intent_id": draw(_ids)})[:-1] + f',"{field}":{bad}}}'.encode()


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    raw = _encode({**VALID, "intent_id": draw(_ids)})
    at = draw(st.integers(0, len(raw)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xfe"]))
    return raw[:at] + junk + raw[at:]


@st.composite
def wrong_shape(draw: st.DrawFn) -> bytes:
    field = draw(st.sampled_from([*STRING_FIELDS, *NUMBER_FIELDS, "extended_hours"]))
    # Wrong types only: a random string could be a valid side, symbol or id.
    value = draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.text(max_size=20) if field in NUMBER_FIELDS else st.integers(),
        )
    )
    body = {**VALID, "intent_id": draw(_ids), field: value}
    if field == "extended_hours" and isinstance(value, bool):
        body["qty"] = -1  # keep it invalid
    if field in ("stop_loss", "confidence", "ts"):
        body["side"] = "hold"  # an optional number set to a valid value must not pass
    return _encode(body)


@st.composite
def too_many_decimals(draw: st.DrawFn) -> bytes:
    digits = draw(st.integers(10, 17))
    qty = f"1.{'0' * (digits - 1)}1"
    body = _encode({k: v for k, v in VALID.items() if k != "qty"} | {"intent_id": draw(_ids)})
    return body[:-1] + f',"qty":{qty}}}'.encode()


_ids = st.from_regex(r"\Afz-[a-z0-9]{1,20}\Z")


def _hostile() -> st.SearchStrategy[bytes]:
    return st.one_of(
        trailing_newline(),
        bad_number(),
        duplicate_keys(),
        invalid_utf8(),
        wrong_shape(),
        st.binary(max_size=300),
        too_many_decimals(),
        st.integers(17, 60).map(lambda d: nested(d, array=True)),
        st.integers(17, 60).map(lambda d: nested(d, array=False)),
        st.text(max_size=50).map(str.encode),
        st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=5), max_size=5).map(
            _encode
        ),
    )


def generated_payloads(count: int) -> list[bytes]:
    """``count`` hostile payloads from hypothesis (collected by a property run)."""
    found: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_hostile())
    def collect(payload: bytes) -> None:
        found.append(payload)

    collect()
    return found


FIXED = [
    nested(1000, array=True),
    nested(1000, array=False),
    b"[" * 100_000,
    b'{"type":"order","intent_id":"big","pad":"' + b"x" * (10 * 1024 * 1024) + b'"}',
    b"\x00" * (10 * 1024 * 1024),
    b"",
    b"null",
    b'{"type":"order","intent_id":"nan","symbol":"AAPL","side":"buy","qty":NaN}',
    b'{"type":"order","intent_id":"inf","symbol":"AAPL","side":"buy","qty":Infinity}',
    b'{"type":"cancel_all","intent_id":"x\\n"}',
    b'{"type":"order","intent_id":"d","symbol":"AAPL","side":"buy","qty":1.0000000001}',
]


def not_an_engage(payload: bytes) -> bool:
    """Plain-text engage words would (rightly) engage; they are not hostile."""
    try:
        return payload.strip().decode().upper() not in PLAIN_ENGAGE_WORDS
    except UnicodeDecodeError:
        return True


@pytest.mark.slow
async def test_hostile_payloads_on_every_topic_crash_nothing_and_get_one_answer_each(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    payloads = generated_payloads(2200)
    assert len(payloads) >= 2000
    payloads = [p for p in payloads if not_an_engage(p)] + FIXED
    trigger = f"z2m/{prefix}/button"
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(mosquitto, prefix, tmp_path, venue.base_url)
        extra = (
            "\n[homeassistant]\nenabled = true\n"
            f'\n[[kill.triggers]]\ntopic = "{trigger}"\nmatch = {{action = "single"}}\n'
        )
        config = write_config(tmp_path, tables, extra)
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, f"{prefix}/v1/strategy/+/event", t.audit) as p,
        ):
            # Round-robin over every inbound topic, so each sees every kind of payload.
            answered = {t.intent("s1"): 0, t.intent("nosuch"): 0, "commands": 0}
            silent = [t.heartbeat("s1"), trigger, f"{prefix}/v1/ha/release"]
            order = [t.intent("s1"), t.intent("nosuch"), t.kill_command, t.approval_command]
            order += silent
            for n, payload in enumerate(payloads):
                topic = order[n % len(order)]
                await p.publish(topic, payload)
                if topic in answered:
                    answered[topic] += 1
                elif topic in (t.kill_command, t.approval_command):
                    answered["commands"] += 1
            # One valid marker per answered path, after everything else.
            marker = {**VALID, "intent_id": "marker", "side": "hold"}
            await p.publish(t.intent("s1"), marker)
            await p.publish(t.intent("nosuch"), marker)
            await p.publish(t.kill_command, {"type": "engage", "scope": "nowhere"})

            def rejected(sid: str) -> list[Any]:
                return [
                    b
                    for b in p.bodies(t.event(sid))
                    if isinstance(b, dict) and b.get("type") in ("accepted", "rejected")
                ]

            def command_refusals() -> list[Any]:
                return [
                    b
                    for b in p.bodies(t.audit)
                    if isinstance(b, dict) and b.get("type") == "kill.invalid_command"
                ]

            await p.wait_until(
                lambda: (
                    len(rejected("s1")) >= answered[t.intent("s1")] + 1
                    and len(rejected("nosuch")) >= answered[t.intent("nosuch")] + 1
                    and len(command_refusals()) >= answered["commands"] + 1
                ),
                timeout=120,
            )
            # Exactly one answer each: nothing extra, and the markers came last.
            assert len(rejected("s1")) == answered[t.intent("s1")] + 1
            assert rejected("s1")[-1]["intent_id"] == "marker"
            accepted = [b for b in rejected("s1") if b["type"] != "rejected"]
            assert not accepted, accepted
            codes = {r["code"] for b in rejected("s1") for r in b["reasons"]}
            assert codes == {"INVALID_INTENT"}, codes
            assert len(rejected("nosuch")) == answered[t.intent("nosuch")] + 1
            assert {r["code"] for b in rejected("nosuch") for r in b["reasons"]} == {
                "UNKNOWN_STRATEGY"
            }
            assert len(command_refusals()) == answered["commands"] + 1
            # Nothing crashed, nothing halted, nothing traded, the switch never moved.
            actors = [daemon.session, daemon.authority, daemon.guardian, daemon.gateway]
            actors += list(daemon.managers.values())
            assert all(a is not None and not a._crashes for a in actors)
            assert daemon.session is not None
            assert daemon.session.reconnects == 0
            assert not daemon.halt.halted
            assert not daemon.gate.engaged(None)
            await poll_until(lambda: daemon.session is not None and daemon.session.is_connected)
            assert not venue.engine.orders
