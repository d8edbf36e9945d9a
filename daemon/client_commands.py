"""CLI commands that talk to a running daemon over MQTT: ``status``, ``kill``, ``disengage``."""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
import time
from contextlib import closing
from typing import Any

import anyio
import msgspec

from daemon.config import Config, resolve_path
from daemon.embedded_broker import client_config
from daemon.errors import BrokerConnectionError, JournalError
from daemon.mqtt_session import MqttLink
from daemon.preflight import check_mqtt_login
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
    config = client_config(config)  # the embedded broker's `operator` login
    check_mqtt_login(config)
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
    command = Disengage(
        scope="strategy" if strategy_id else "global",
        strategy_id=strategy_id,
        code=code,
        operator=operator,
    )
    topic = Topics(config.mqtt.topic_prefix).kill_command
    return admin(config, command, topic=topic, audit_type="kill.disengage")


def admin(config: Config, command: msgspec.Struct, *, topic: str, audit_type: str) -> int:
    """Send a privileged command; 0 when the daemon confirms, 3 when denied, 1 on no answer."""
    source = f"cli-{secrets.token_hex(4)}"
    command = msgspec.structs.replace(command, source=source)

    async def go() -> int:
        async with _link(config) as link:
            await link.subscribe(Topics(config.mqtt.topic_prefix).audit)
            await link.publish(topic, encode(command))
            with anyio.move_on_after(CONFIRM_TIMEOUT_S):
                async for message in link.messages():
                    try:
                        record = _audit.decode(message.payload)
                    except msgspec.MsgspecError:
                        continue
                    if record.type != audit_type or record.source != source:
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


def _read_journal(config: Config, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the daemon's journal without writing (safe while it runs: WAL readers)."""
    path = resolve_path(config, config.state.path)
    if not path.exists():
        raise JournalError(f"no journal at {path} (has the daemon run with this config?)")
    # With no daemon running, a read-only open would still create -wal/-shm files owned by
    # whoever runs this (root, say) and lock the daemon's user out: open immutable then.
    live = (
        path.with_name(path.name + "-wal").exists() and path.with_name(path.name + "-shm").exists()
    )
    uri = f"file:{path}?mode=ro" if live else f"file:{path}?mode=ro&immutable=1"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from exc


def orders(config: Config, *, strategy_id: str | None, limit: int, as_json: bool) -> int:
    """Print the most recent orders from the journal."""
    sql = (
        "SELECT strategy_id, intent_id, client_order_id, status, filled_qty, filled_avg_price, "
        "broker_order_id, intent, updated_ts, detail FROM orders"
    )
    params: tuple[Any, ...] = ()
    if strategy_id:
        sql += " WHERE strategy_id = ?"
        params = (strategy_id,)
    sql += " ORDER BY updated_ts DESC LIMIT ?"
    rows = _read_journal(config, sql, (*params, limit))
    records = []
    for sid, intent_id, coid, status, filled, avg, broker_id, intent, updated, detail in rows:
        body = decode_json(intent)
        records.append(
            {
                "strategy_id": sid,
                "intent_id": intent_id,
                "client_order_id": coid,
                "symbol": body.get("symbol"),
                "side": body.get("side"),
                "qty": body.get("qty"),
                "notional": body.get("notional"),
                "order_type": body.get("order_type", "market"),
                "status": status,
                "filled_qty": filled,
                "filled_avg_price": avg,
                "broker_order_id": broker_id,
                "updated_ts": updated,
                "detail": detail,
            }
        )
    if as_json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    from rich.console import Console  # noqa: PLC0415  # only for the table view
    from rich.table import Table  # noqa: PLC0415

    table = Table("strategy", "intent", "symbol", "side", "qty", "type", "status", "filled", "avg")
    for r in records:
        table.add_row(
            r["strategy_id"],
            r["intent_id"],
            str(r["symbol"]),
            str(r["side"]),
            f"{r['qty']:g}" if r["qty"] is not None else f"${r['notional']:g}",
            r["order_type"],
            r["status"],
            f"{r['filled_qty']:g}",
            f"{r['filled_avg_price']:.2f}" if r["filled_avg_price"] else "-",
        )
    Console().print(table)
    return EXIT_OK


def positions(config: Config, *, as_json: bool) -> int:
    """Print every strategy's positions, rebuilt from the journaled fills."""
    from actors.order_manager import Position  # noqa: PLC0415

    book: dict[tuple[str, str], Position] = {}
    for sid, symbol, side, qty, price in _read_journal(
        config, "SELECT strategy_id, symbol, side, qty, price FROM fills ORDER BY id"
    ):
        book.setdefault((sid, symbol), Position()).apply(1 if side == "buy" else -1, qty, price)
    records: list[dict[str, Any]] = [
        {
            "strategy_id": sid,
            "symbol": symbol,
            "qty": p.qty,
            "avg_price": p.avg_price,
            "realized_pnl": p.realized_pnl,
        }
        for (sid, symbol), p in sorted(book.items())
    ]
    if as_json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table("strategy", "symbol", "qty", "avg price", "realized P&L")
    for r in records:
        table.add_row(
            r["strategy_id"],
            r["symbol"],
            f"{r['qty']:g}",
            f"{r['avg_price']:.2f}",
            f"{r['realized_pnl']:.2f}",
        )
    Console().print(table)
    return EXIT_OK


def demo_strategy(config: Config, *, strategy_id: str, rounds: int) -> int:
    """Trade a few symbols against the daemon: buy, wait for the fill, sell, report."""
    from protocol.client import StrategyClient, StrategyClientError  # noqa: PLC0415
    from protocol.messages import Accepted, OrderIntent  # noqa: PLC0415

    config = client_config(config, strategy_id)  # on the embedded broker, its own login
    check_mqtt_login(config)
    endpoint = mqtt_endpoint(config)
    symbols = ["AAPL", "MSFT", "SPY"]
    run = secrets.token_hex(3)

    async def go() -> int:
        # The strategy client reports a refused connection as its own library's error: ask
        # the way every other command does first, so that it is the same one line.
        async with _link(config):
            pass
        async with StrategyClient(
            strategy_id,
            host=endpoint.host,
            port=endpoint.port,
            prefix=config.mqtt.topic_prefix,
            username=endpoint.username,
            password=endpoint.password,
            heartbeat_s=1.0,
        ) as client:
            for n in range(rounds):
                symbol = symbols[n % len(symbols)]
                for side in ("buy", "sell"):
                    intent = OrderIntent(
                        intent_id=f"demo-{run}-{n}-{side}",
                        symbol=symbol,
                        side=side,
                        qty=1,
                        ts=time.time(),
                    )
                    decision = await client.submit(intent)
                    if not isinstance(decision, Accepted):
                        reasons = "; ".join(f"{r.code}: {r.message}" for r in decision.reasons)
                        print(f"{intent.intent_id}: rejected ({reasons})")
                        break
                    order = await client.wait_order(intent.intent_id)
                    print(
                        f"{intent.intent_id}: {side} {symbol} -> {order.status} "
                        f"{order.filled_qty:g} @ {order.filled_avg_price or 0:.2f}"
                    )
        return EXIT_OK

    try:
        return _run_mqtt(go)
    except StrategyClientError as exc:
        print(f"tradeguard: {exc}", file=sys.stderr)
        return EXIT_FAIL
