"""The daemon host against a real mosquitto: bad input, Last Will, broker restarts, sd_notify."""

from __future__ import annotations

import gc
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    DaemonProcess,
    Mosquitto,
    base_tables,
    probe,
    running_daemon,
    write_config,
)

from protocol.topics import Topics

pytestmark = pytest.mark.anyio

GOOD = {"type": "order", "symbol": "AAPL", "side": "buy", "qty": 1}


def rejected_for(intent_id: str | None) -> Any:
    return lambda body: body.get("type") == "rejected" and body.get("intent_id") == intent_id


def decided(intent_id: str) -> Any:
    return lambda body: (
        body.get("type") in ("accepted", "rejected") and body.get("intent_id") == intent_id
    )


async def test_every_bad_input_gets_exactly_one_answer(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    bad_payloads: list[tuple[bytes, str]] = [
        (os.urandom(64) + b"\xff", "UTF-8"),
        (b"[1, 2, 3]", "JSON object"),
        (b"x" * 1_000_000, "too large"),
        (b"\xc3\x28 invalid utf-8", "UTF-8"),
        (b"{broken json", "not valid JSON"),
    ]
    wrong_fields: list[tuple[dict[str, Any], str]] = [
        ({"symbol": "aapl"}, "symbol"),
        ({"side": "up"}, "side"),
        ({"qty": -1}, "qty"),
        ({"qty": "1"}, "qty"),
        ({"order_type": "limit"}, "limit_price"),
        ({"time_in_force": "never"}, "time_in_force"),
        ({"extended_hours": 1}, "extended_hours"),
        ({"confidence": 2}, "confidence"),
        ({"bogus": True}, "bogus"),
        ({"type": "nope"}, "type"),
    ]
    async with running_daemon(config), probe(mosquitto, f"{prefix}/v1/strategy/+/event") as p:
        event_topic = topics.event("s1")
        for payload, words in bad_payloads:
            start = len(p.received)
            await p.publish(topics.intent("s1"), payload)
            body = await p.expect(event_topic, rejected_for(None), start=start)
            assert body["reasons"][0]["code"] == "INVALID_INTENT"
            assert words in body["reasons"][0]["message"]
        for index, (change, field) in enumerate(wrong_fields):
            intent_id = f"bad-{index}"
            await p.publish(topics.intent("s1"), {**GOOD, "intent_id": intent_id, **change})
            body = await p.expect(event_topic, rejected_for(intent_id))
            assert body["reasons"][0]["code"] == "INVALID_INTENT"
            assert field in body["reasons"][0]["message"]
        # Unknown strategy: answered on its own event topic.
        await p.publish(topics.intent("ghost"), {**GOOD, "intent_id": "g1"})
        body = await p.expect(topics.event("ghost"), rejected_for("g1"))
        assert body["reasons"][0]["code"] == "UNKNOWN_STRATEGY"
        # Still answering: a well-formed intent gets its decision.
        await p.publish(topics.intent("s1"), {**GOOD, "intent_id": "fine-1"})
        await p.expect(event_topic, decided("fine-1"))
        # Exactly one answer each.
        bodies = p.bodies(event_topic)
        assert sum(1 for b in bodies if b.get("intent_id", "") is None) == len(bad_payloads)
        for index in range(len(wrong_fields)):
            assert sum(1 for b in bodies if b.get("intent_id") == f"bad-{index}") == 1


async def test_last_will_after_kill9(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    daemon = DaemonProcess(config)
    try:
        async with probe(mosquitto, topics.daemon_status) as p:
            daemon.start()
            await p.expect(topics.daemon_status, lambda b: b == "online")
            start = len(p.received)
            killed_at = time.monotonic()
            daemon.kill9()
            keepalive = 2
            await p.expect(
                topics.daemon_status, lambda b: b == "offline", start=start, timeout=1.5 * keepalive
            )
            assert time.monotonic() - killed_at <= 1.5 * keepalive
    finally:
        daemon.stop_quietly()


async def test_sigterm_is_clean_and_says_offline(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    daemon = DaemonProcess(config)
    try:
        async with probe(mosquitto, topics.daemon_status) as p:
            daemon.start()
            await p.expect(topics.daemon_status, lambda b: b == "online")
            # docs/protocol.md: `starting` from connect until READY, then `online`.
            said = [m.payload for m in p.received if m.topic == topics.daemon_status]
            assert said[-2:] == [b"starting", b"online"], said
            start = len(p.received)
            code = await anyio.to_thread.run_sync(daemon.terminate)
            assert code == 0, daemon.log_text()
            await p.expect(topics.daemon_status, lambda b: b == "offline", start=start)
    finally:
        daemon.stop_quietly()


async def test_answers_again_after_broker_restart(
    own_mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(own_mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    async with running_daemon(config) as daemon:
        async with probe(own_mosquitto, topics.event("s1")) as p:
            await p.publish(topics.intent("s1"), {**GOOD, "intent_id": "before"})
            await p.expect(topics.event("s1"), decided("before"))
        own_mosquitto.stop()
        await anyio.to_thread.run_sync(own_mosquitto.start)
        returned = time.monotonic()
        with anyio.fail_after(10):
            await daemon.session.connected.wait()
        async with probe(own_mosquitto, topics.event("s1")) as p:
            await p.publish(topics.intent("s1"), {**GOOD, "intent_id": "after"})
            await p.expect(topics.event("s1"), decided("after"), timeout=10)
        assert time.monotonic() - returned < 10
        assert daemon.session.reconnects >= 1


async def test_sd_notify_ready_watchdog_stopping(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(10)
    daemon = DaemonProcess(config)
    os.environ["NOTIFY_SOCKET"] = str(sock_path)
    os.environ["WATCHDOG_USEC"] = "400000"
    try:
        daemon.start()
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    try:
        seen: set[str] = set()
        while not {"READY=1", "WATCHDOG=1"} <= seen:
            seen.update(server.recv(4096).decode().splitlines())
        assert any(line.startswith("STATUS=") for line in seen)
        daemon.process.send_signal(15)  # type: ignore[union-attr]  # started above
        while "STOPPING=1" not in seen:
            seen.update(server.recv(4096).decode().splitlines())
        assert daemon.process.wait(15) == 0  # type: ignore[union-attr]  # started above
    finally:
        daemon.stop_quietly()
        server.close()


async def test_retained_state_topics(mosquitto: Mosquitto, prefix: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    topics = Topics(prefix)
    async with (
        running_daemon(config),
        probe(mosquitto, topics.daemon_state, topics.kill_state, topics.strategy_state("s1")) as p,
    ):
        state = await p.expect(topics.daemon_state)
        for key in (
            "version",
            "mode",
            "broker",
            "broker_connected",
            "circuit",
            "equity",
            "daily_drawdown",
            "total_drawdown",
            "ts",
        ):
            assert key in state
        kill = await p.expect(topics.kill_state)
        assert kill["global"]["engaged"] is False
        assert "s1" in kill["strategies"]
        strategy = await p.expect(topics.strategy_state("s1"))
        for key in ("strategy_id", "kill_engaged", "open_orders", "positions", "ts"):
            assert key in strategy
        # A late subscriber gets every state topic at once, as a retained copy.
        topics_seen = {topics.daemon_state, topics.kill_state, topics.strategy_state("s1")}
        async with probe(mosquitto, *topics_seen) as late:
            for topic in topics_seen:
                await late.expect(topic)
            first: dict[str, bool] = {}
            for message in late.received:
                first.setdefault(message.topic, message.retained)
            assert all(first.values())
        assert json.dumps(kill)


async def test_what_is_built_before_ready_is_kept_out_of_full_collections(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    """Full GC passes over the modules and the loaded books held the loop 50-70 ms."""
    gc.unfreeze()
    config = write_config(tmp_path, base_tables(mosquitto, prefix, tmp_path))
    async with running_daemon(config):
        assert gc.get_freeze_count() > 0
