"""CLI commands that talk to a running daemon over MQTT or read its journal.

Every command the CLI sends carries a ``source`` of its own (``cli-`` and random
hex), so it waits for the daemon's audit record of exactly that command: a
refusal (an unknown strategy, an intent that is not waiting for approval) comes
back at once, exit 2; a wrong code is exit 3.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors.core.book import Position
from actors.core.errors import BrokerConnectionError, JournalError
from daemon.cli_parser import one_line
from daemon.config import Config, resolve_path
from daemon.embedded_broker import client_config
from daemon.endpoints import check_mqtt_login, mqtt_endpoint
from daemon.mqtt_endpoint import MqttLink
from protocol.codec import decode_json, encode
from protocol.messages import (
    Approve,
    AuditRecord,
    Demote,
    Deny,
    Disengage,
    Engage,
    KillState,
    Promote,
)
from protocol.topics import Topics

if TYPE_CHECKING:
    from rich.console import Console

CONFIRM_TIMEOUT_S = 5.0
PROMOTE_TIMEOUT_S = 10.0
"""A promotion reads the strategy's paper record from the journal before it answers."""
DEMOTE_TIMEOUT_S = 45.0
"""A demotion is answered once the strategy's live orders are cancelled (up to ~30 s)."""
STATUS_QUIET_S = 0.3
STATUS_MAX_S = 3.0

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_DENIED = 3

_kill_state = msgspec.json.Decoder(KillState)
_audit = msgspec.json.Decoder(AuditRecord)


def _link(config: Config) -> MqttLink:
    config = client_config(config)  # the embedded broker's `operator` login
    check_mqtt_login(config)
    return MqttLink(mqtt_endpoint(config))


def kill(config: Config, *, strategy_id: str | None, flatten: bool, reason: str) -> int:
    """Engage; 0 when the daemon confirms, 2 when it refuses, 1 without an answer in 5 s."""
    topics = Topics(config.mqtt.topic_prefix)
    source = _source()
    command = Engage(
        scope="strategy" if strategy_id else "global",
        strategy_id=strategy_id,
        reason=reason,
        source=source,
        flatten=flatten,
    )
    scope = f"strategy {strategy_id}" if strategy_id else "global"

    async def go() -> int:
        switch = None
        async with _link(config) as link:
            await link.subscribe(topics.kill_state, topics.audit)
            await link.publish(topics.kill_command, encode(command))
            with anyio.move_on_after(CONFIRM_TIMEOUT_S):
                async for message in link.messages():
                    if message.topic == topics.kill_state:
                        try:
                            state = _kill_state.decode(message.payload)
                        except msgspec.MsgspecError:
                            continue
                        switch = state.strategies.get(strategy_id) if strategy_id else state.global_
                        continue
                    record = _own_record(message.payload, "kill.engage", source)
                    if record is None:
                        continue
                    if not record.ok:
                        return _refused(record)
                    # The daemon publishes the state before the audit record.
                    since = switch.since if switch is not None and switch.engaged else record.ts
                    print(f"kill switch ({scope}) engaged {human_time(since)}")
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
    return admin(config, command, audit_type="kill.disengage")


def command_topic(config: Config, command: msgspec.Struct) -> str:
    """Where a command goes.

    Logged in to a secured broker, a command with a code goes to the login's own
    ``admin/USER/command`` (the daemon names the login in the audit and counts wrong
    codes per login); otherwise approvals go to ``approval/command`` and the rest to
    ``kill/command``, which stays open to engage-only buttons.
    """
    topics = Topics(config.mqtt.topic_prefix)
    plain = topics.approval_command if isinstance(command, Approve | Deny) else topics.kill_command
    username = client_config(config).mqtt.username  # the embedded broker's own logins too
    if username is not None and getattr(command, "code", None) is not None:
        return topics.admin_command(username)
    return plain


def admin(config: Config, command: msgspec.Struct, *, audit_type: str) -> int:
    """Send a command; 0 when the daemon confirms, 3 when denied, 2 when refused, 1 on silence."""
    return _ask(
        config, command, audit_type=audit_type, timeout_s=CONFIRM_TIMEOUT_S, answer=_admin_answer
    )


def _admin_answer(record: AuditRecord) -> int:
    if record.ok:
        print(record.detail)
        return EXIT_OK
    if _is_refusal(record):
        return _refused(record)
    print(record.detail)
    return EXIT_DENIED


def change_mode(config: Config, command: Promote | Demote) -> int:
    """Promote (paper to live) or demote (live to paper) a strategy, and say how it went.

    Waits for the audit record answering exactly this command (its ``source``): up to
    10 s for a promotion, 45 s for a demotion (the daemon answers once the strategy's
    live orders are cancelled).

    Returns:
        0 done; 3 the code was denied; 2 refused (unmet evidence, each unmet criterion
        on a line of its own; an unknown strategy; nothing to do); 1 no answer in time.
    """
    if isinstance(command, Promote):
        audit_type, timeout_s = "mode.promote", PROMOTE_TIMEOUT_S
    else:
        audit_type, timeout_s = "mode.demote", DEMOTE_TIMEOUT_S
        if sys.stderr.isatty():
            print(
                f"demoting {command.strategy_id}: its live orders are cancelled first "
                f"(up to {timeout_s:g} s)",
                file=sys.stderr,
            )
    return _ask(config, command, audit_type=audit_type, timeout_s=timeout_s, answer=_mode_answer)


def _mode_answer(record: AuditRecord) -> int:
    """The exit code of a promote/demote answer, told apart by fields, not by wording."""
    sid = record.strategy_id or "?"
    if record.ok:
        print(f"strategy {sid}: {record.detail}")
        return EXIT_OK
    if record.reasons:
        # Unmet evidence: every criterion on a line of its own, like an intent's reasons.
        print(f"tradeguard: error: strategy {sid}: promotion refused:", file=sys.stderr)
        for reason in record.reasons:
            print(f"  - {one_line(reason.message)}", file=sys.stderr)
        return EXIT_USAGE
    if record.detail.startswith("denied: ") and not _is_refusal(record):
        print(record.detail)
        return EXIT_DENIED
    # Nothing to do, no such account, or an unknown strategy (which the code check names
    # "denied: unknown strategy ..." once the code is right: the one wording read here).
    return _refused(record)


def _ask(
    config: Config,
    command: msgspec.Struct,
    *,
    audit_type: str,
    timeout_s: float,
    answer: Callable[[AuditRecord], int],
) -> int:
    """Publish ``command`` with a source of its own; ``answer`` the audit record of it."""
    source = _source()
    command = msgspec.structs.replace(command, source=source)
    topic = command_topic(config, command)

    async def go() -> int:
        async with _link(config) as link:
            await link.subscribe(Topics(config.mqtt.topic_prefix).audit)
            await link.publish(topic, encode(command))
            with anyio.move_on_after(timeout_s):
                async for message in link.messages():
                    record = _own_record(message.payload, audit_type, source)
                    if record is not None:
                        return answer(record)
        print(f"tradeguard: no answer from the daemon within {timeout_s:g} s", file=sys.stderr)
        return EXIT_FAIL

    return _run_mqtt(go)


def _source() -> str:
    """A source no other command shares: the audit record answering it names it."""
    return f"cli-{secrets.token_hex(6)}"


def _own_record(payload: bytes, audit_type: str, source: str) -> AuditRecord | None:
    try:
        record = _audit.decode(payload)
    except msgspec.MsgspecError:
        return None
    if record.type != audit_type or record.source != source:
        return None
    return record


def _is_refusal(record: AuditRecord) -> bool:
    """Bad input (exit 2) rather than a denied code (exit 3).

    The audit record has no field for the why, so this reads the daemon's wording of the
    two refusals it makes whatever the code: an unknown strategy, and an intent that is
    not waiting for approval.
    """
    detail = record.detail.removeprefix("denied: ")
    return detail.startswith(("unknown strategy", "no intent "))


def _refused(record: AuditRecord) -> int:
    print(f"tradeguard: error: {record.detail.removeprefix('denied: ')}", file=sys.stderr)
    return EXIT_USAGE


def human_time(ts: float | None, now: float | None = None) -> str:
    """``2026-11-30 14:03:07 UTC (3 s ago)`` for a Unix time; ``-`` for none."""
    if ts is None:
        return "-"
    ago = max(0.0, (time.time() if now is None else now) - ts)
    when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if ago < 60:  # seconds in a minute
        span = f"{ago:.0f} s"
    elif ago < 3600:
        span = f"{ago / 60:.0f} min"
    elif ago < 86400:
        span = f"{ago / 3600:.1f} h"
    else:
        span = f"{ago / 86400:.1f} d"
    return f"{when} ({span} ago)"


def _console(*, wide: bool = False) -> Console:
    """Rich output; piped (or ``wide``) it never wraps or shortens: lines are full width."""
    from rich.console import Console  # noqa: PLC0415  # only for the table views

    if wide or not sys.stdout.isatty():
        return Console(width=100_000, soft_wrap=True, highlight=False)
    return Console(highlight=False)


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
    from rich.table import Table  # noqa: PLC0415  # only for the table view

    console = _console()
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
    if glob.get("engaged"):
        console.print(
            f"global kill switch: [red]ENGAGED[/red] {human_time(glob.get('since'))}: "
            f"{glob.get('reason') or ''}",
            markup=True,
        )
    else:
        console.print("global kill switch: [green]released[/green]")
    _print_accounts(console, daemon.get("accounts"))
    table = Table("strategy", "mode", "kill", "open orders", "positions")
    switches = kill.get("strategies") or {}
    for sid in sorted(set(switches) | set(found["strategies"])):
        state = found["strategies"].get(sid, {})
        sw = switches.get(sid, {})
        positions = ", ".join(f"{k} {v:g}" for k, v in (state.get("positions") or {}).items())
        table.add_row(
            sid,
            str(state.get("mode") or "-"),
            "ENGAGED" if sw.get("engaged") else "-",
            str(state.get("open_orders", "?")),
            positions or "-",
        )
    console.print(table)


def _print_accounts(console: Console, accounts: Any) -> None:
    """One line per broker account (a daemon with a paper and a live account)."""
    if not isinstance(accounts, dict):
        return
    for name in sorted(accounts, key=lambda n: (n != "paper", n)):
        account = accounts[name] if isinstance(accounts[name], dict) else {}
        equity = account.get("equity")
        shown = f"{equity:,.2f}" if isinstance(equity, int | float) else "-"
        strategies = ", ".join(str(s) for s in account.get("strategies") or []) or "none"
        connected = "connected" if account.get("broker_connected") else "not connected"
        console.print(
            f"account {name}: broker {account.get('broker', '?')} ({connected})  "
            f"equity {shown}  circuit {account.get('circuit', '?')}  strategies {strategies}",
            markup=False,
        )


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


def orders(
    config: Config, *, strategy_id: str | None, limit: int, as_json: bool, wide: bool = False
) -> int:
    """Print the most recent orders from the journal (ids in full when piped or ``wide``)."""
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
    from rich.table import Table  # noqa: PLC0415  # only for the table view

    table = Table("strategy", "intent", "symbol", "side", "qty", "type", "status", "filled", "avg")
    # approve and deny need the intent id whole: it folds onto a second line, never "…".
    table.columns[1].overflow = "fold"
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
    _console(wide=wide).print(table)
    return EXIT_OK


def _journaled_fills(config: Config) -> list[tuple[Any, ...]]:
    """(strategy, account, symbol, side, qty, price) of every fill, in order.

    A journal the daemon has not opened since accounts came (schema 1) has no
    ``account`` column: every fill is then the ``[broker]`` account's.
    """
    columns = "strategy_id, {}, symbol, side, qty, price FROM fills ORDER BY id"
    try:
        return _read_journal(config, "SELECT " + columns.format("account"))
    except JournalError:
        return _read_journal(config, "SELECT " + columns.format("NULL"))


def positions(config: Config, *, as_json: bool) -> int:
    """Print every strategy's positions, rebuilt from the journaled fills (the daemon's book).

    With a paper and a live account, each account's positions are apart (``account``).
    """
    book: dict[tuple[str, str, str], Position] = {}
    for sid, column, symbol, side, qty, price in _journaled_fills(config):
        account = column or config.broker.mode  # NULL: the [broker] account
        position = book.setdefault((sid, account, symbol), Position())
        position.apply(1 if side == "buy" else -1, qty, price)
    records: list[dict[str, Any]] = [
        {
            "strategy_id": sid,
            "account": account,
            "symbol": symbol,
            "qty": p.qty,
            "avg_price": p.avg_price,
            "realized_pnl": p.realized_pnl,
        }
        for (sid, account, symbol), p in sorted(book.items())
    ]
    if as_json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    from rich.table import Table  # noqa: PLC0415

    table = Table("strategy", "account", "symbol", "qty", "avg price", "realized P&L")
    for r in records:
        table.add_row(
            r["strategy_id"],
            r["account"],
            r["symbol"],
            f"{r['qty']:g}",
            f"{r['avg_price']:.2f}",
            f"{r['realized_pnl']:.2f}",
        )
    _console().print(table)
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
