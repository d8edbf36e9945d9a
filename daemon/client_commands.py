"""CLI commands that talk to a running daemon over MQTT: ``status``, ``kill``, ``disengage``."""

from __future__ import annotations

import json
import secrets
import sys
from typing import Any

import anyio
import msgspec

from daemon.config import Config
from daemon.errors import BrokerConnectionError
from daemon.mqtt_session import MqttLink
from daemon.wiring import mqtt_endpoint
from protocol.codec import decode_json, encode
from protocol.messages import AuditRecord, Disengage, Engage, KillState
from protocol.topics import Topics

CONFIRM_TIMEOUT_S = 5.0
STATUS_QUIET_S = 0.3
STATUS_MAX_S = 3.0

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_DENIED = 3

_kill_state = msgspec.json.Decoder(KillState)
_audit = msgspec.json.Decoder(AuditRecord)


def _link(config: Config) -> MqttLink:
    return MqttLink(mqtt_endpoint(config))


def kill(config: Config, *, strategy_id: str | None, flatten: bool, reason: str) -> int:
    """Engage and wait (5 s) for the retained kill state to confirm it."""
    topics = Topics(config.mqtt.topic_prefix)
    command = Engage(
        scope="strategy" if strategy_id else "global",
        strategy_id=strategy_id,
        reason=reason,
        source="cli",
        flatten=flatten,
    )

    async def go() -> int:
        async with _link(config) as link:
            await link.subscribe(topics.kill_state)
            await link.publish(topics.kill_command, encode(command))
            with anyio.move_on_after(CONFIRM_TIMEOUT_S):
                async for message in link.messages():
                    try:
                        state = _kill_state.decode(message.payload)
                    except msgspec.MsgspecError:
                        continue
                    switch = state.strategies.get(strategy_id) if strategy_id else state.global_
                    if switch is not None and switch.engaged:
                        scope = f"strategy {strategy_id}" if strategy_id else "global"
                        print(f"kill switch engaged ({scope}) since {switch.since}")
                        return EXIT_OK
        print("tradeguard: no confirmation from the daemon within 5 s", file=sys.stderr)
        return EXIT_FAIL

    return _run_mqtt(go)


def disengage(config: Config, *, strategy_id: str | None, code: str, operator: str | None) -> int:
    """Release; 0 when the daemon confirms, 3 when it denies, 1 when it does not answer."""
    topics = Topics(config.mqtt.topic_prefix)
    source = f"cli-{secrets.token_hex(4)}"
    command = Disengage(
        scope="strategy" if strategy_id else "global",
        strategy_id=strategy_id,
        code=code,
        operator=operator,
        source=source,
    )

    async def go() -> int:
        async with _link(config) as link:
            await link.subscribe(topics.audit)
            await link.publish(topics.kill_command, encode(command))
            with anyio.move_on_after(CONFIRM_TIMEOUT_S):
                async for message in link.messages():
                    try:
                        record = _audit.decode(message.payload)
                    except msgspec.MsgspecError:
                        continue
                    if record.type != "kill.disengage" or record.source != source:
                        continue
                    print(record.detail)
                    return EXIT_OK if record.ok else EXIT_DENIED
        print("tradeguard: no answer from the daemon within 5 s", file=sys.stderr)
        return EXIT_FAIL

    return _run_mqtt(go)


def status(config: Config, *, as_json: bool) -> int:
    """Print the retained kill, daemon and strategy state."""
    topics = Topics(config.mqtt.topic_prefix)

    async def go() -> dict[str, Any]:
        found: dict[str, Any] = {
            "daemon_status": None,
            "daemon": None,
            "kill": None,
            "strategies": {},
        }
        async with _link(config) as link:
            await link.subscribe(
                topics.daemon_status,
                topics.daemon_state,
                topics.kill_state,
                f"{topics.root}/strategy/+/state",
            )
            with anyio.move_on_after(STATUS_MAX_S):
                messages = link.messages()
                while True:
                    with anyio.move_on_after(STATUS_QUIET_S) as quiet:
                        message = await anext(messages)
                    if quiet.cancelled_caught:
                        break
                    _collect(found, topics, message.topic, message.payload)
        return found

    try:
        found = anyio.run(go, backend="asyncio")
    except BrokerConnectionError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if as_json:
        print(json.dumps(found, indent=2, sort_keys=True))
    else:
        _print_status(found)
    return EXIT_OK


def _collect(found: dict[str, Any], topics: Topics, topic: str, payload: bytes) -> None:
    if topic == topics.daemon_status:
        found["daemon_status"] = payload.decode("utf-8", "replace")
        return
    try:
        body = decode_json(payload)
    except msgspec.DecodeError:
        return
    if topic == topics.daemon_state:
        found["daemon"] = body
    elif topic == topics.kill_state:
        found["kill"] = body
    elif topic.endswith("/state") and isinstance(body, dict):
        found["strategies"][str(body.get("strategy_id", topic))] = body


def _print_status(found: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415  # only for the table view
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    daemon = found.get("daemon") or {}
    console.print(
        f"daemon: [bold]{found.get('daemon_status') or 'unknown'}[/bold]  "
        f"version {daemon.get('version', '?')}  mode {daemon.get('mode', '?')}  "
        f"broker {daemon.get('broker', '?')} "
        f"({'connected' if daemon.get('broker_connected') else 'not connected'})  "
        f"circuit {daemon.get('circuit', '?')}"
    )
    if daemon.get("trading_halted"):
        console.print(f"[red]trading halted: {daemon.get('halt_reason')}[/red]")
    kill = found.get("kill") or {}
    glob = kill.get("global") or {}
    engaged = "[red]ENGAGED[/red]" if glob.get("engaged") else "[green]released[/green]"
    console.print(f"global kill switch: {engaged} {glob.get('reason') or ''}")
    table = Table("strategy", "kill", "open orders", "positions")
    switches = kill.get("strategies") or {}
    for sid in sorted(set(switches) | set(found["strategies"])):
        state = found["strategies"].get(sid, {})
        sw = switches.get(sid, {})
        positions = ", ".join(f"{k} {v:g}" for k, v in (state.get("positions") or {}).items())
        table.add_row(
            sid,
            "ENGAGED" if sw.get("engaged") else "-",
            str(state.get("open_orders", "?")),
            positions or "-",
        )
    console.print(table)


def _run_mqtt(go: Any) -> int:
    try:
        result: int = anyio.run(go, backend="asyncio")
    except BrokerConnectionError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return result
