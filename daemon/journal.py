"""The journal: one SQLite file (WAL, ``synchronous=FULL``) holding every decision.

Reads happen at start-up, before any actor runs. At run time only the
:class:`JournalWriter` actor touches the connection: it takes write requests
from a bounded channel, commits everything queued at that moment in one
transaction (group commit: one fsync for many intents) and then releases every
waiter. A caller that awaits :meth:`JournalWriter.write` returns only once its
rows are durable, so "journaled before it takes effect" is a plain ``await``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, assert_never
from urllib.parse import quote

import anyio
import msgspec
import structlog

from actors.base import Actor, TradingHalt
from actors.core.book import (
    RECENT_DECISIONS,
    RECENT_FINAL_ORDERS,
    DecisionIndex,
    OrderRecord,
    Position,
    SeenIds,
    StrategyBook,
)
from actors.core.circuit_breaker import CircuitBreakerState, SessionState
from actors.core.errors import JournalError
from actors.core.rows import (
    CIRCUIT_KEY,
    SESSION_KEY,
    TOTP_KEY,
    AuditRow,
    DecisionRow,
    FillRow,
    MetaRow,
    OrderChangeRow,
    OrderRow,
    Row,
    SwitchRow,
)
from actors.core.trading_state import PAUSE_PREFIX, KillGate
from protocol.messages import OrderIntent, SwitchState

log = structlog.get_logger(__name__)
_intent_decoder = msgspec.json.Decoder(OrderIntent)

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kill_switch (
    scope_key TEXT PRIMARY KEY,          -- 'global' or the strategy id
    engaged INTEGER NOT NULL,
    since REAL, reason TEXT, source TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, type TEXT NOT NULL, scope TEXT, strategy_id TEXT,
    source TEXT, operator TEXT, ok INTEGER NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    strategy_id TEXT NOT NULL, intent_id TEXT NOT NULL,
    accepted INTEGER NOT NULL, event BLOB NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (strategy_id, intent_id)
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    strategy_id TEXT NOT NULL, intent_id TEXT NOT NULL,
    intent BLOB NOT NULL, status TEXT NOT NULL, broker_order_id TEXT,
    filled_qty REAL NOT NULL DEFAULT 0, filled_avg_price REAL,
    created_ts REAL NOT NULL, updated_ts REAL NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS orders_open ON orders (status);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL, strategy_id TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, ts REAL NOT NULL,
    cum_qty REAL NOT NULL,
    UNIQUE (client_order_id, cum_qty)
);
"""


class Write(msgspec.Struct, frozen=True):
    """One SQL statement to run inside the next group commit."""

    sql: str
    params: Sequence[Any] = ()


class _Request:
    __slots__ = ("done", "error", "writes")

    def __init__(self, writes: Sequence[Write]) -> None:
        self.writes = writes
        self.done = anyio.Event()
        self.error: BaseException | None = None


class Journal:
    """The SQLite file. Open it once at start-up; read it; hand it to the writer.

    Args:
        path: the database file; its folder is created (mode 0700) if missing.
    """

    def __init__(self, path: Path) -> None:
        """Open (and create) the database."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query (start-up and tests)."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc

    def commit(self, writes: Sequence[Write]) -> None:
        """Run ``writes`` in one durable transaction (blocking; used by the writer)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for write in writes:
                    self._db.execute(write.sql, write.params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"journal write failed: {exc}") from exc

    def reader(self) -> sqlite3.Connection:
        """A separate read-only connection for look-ups from the event loop.

        WAL lets it read while the writer commits; it sees committed rows only.
        """
        return open_read_only(self.path)

    def get_meta(self, key: str) -> str | None:
        """A value from the key-value ``meta`` table."""
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def statement(row: Row) -> Write:
    """The SQL of one typed row."""
    match row:
        case DecisionRow():
            return _decision_sql(row)
        case OrderRow():
            return _order_sql(row)
        case OrderChangeRow():
            return _order_change_sql(row)
        case FillRow():
            return _fill_sql(row)
        case SwitchRow():
            return _switch_sql(row)
        case MetaRow():
            return _meta_sql(row)
        case AuditRow():
            return _audit_sql(row)
        case _:
            assert_never(row)


def _decision_sql(row: DecisionRow) -> Write:
    return Write(
        "INSERT INTO decisions (strategy_id, intent_id, accepted, event, ts) VALUES (?,?,?,?,?)",
        (row.strategy_id, row.intent_id, int(row.accepted), row.event, row.ts),
    )


def _order_sql(row: OrderRow) -> Write:
    return Write(
        "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
        "created_ts, updated_ts) VALUES (?,?,?,?,?,?,?)",
        (
            row.client_order_id,
            row.strategy_id,
            row.intent_id,
            row.intent,
            row.status,
            row.ts,
            row.ts,
        ),
    )


def _order_change_sql(row: OrderChangeRow) -> Write:
    return Write(
        "UPDATE orders SET status=?, broker_order_id=?, filled_qty=?, filled_avg_price=?, "
        "updated_ts=?, detail=COALESCE(?, detail) WHERE client_order_id=?",
        (
            row.status,
            row.broker_order_id,
            row.filled_qty,
            row.filled_avg_price,
            row.ts,
            row.detail,
            row.client_order_id,
        ),
    )


def _fill_sql(row: FillRow) -> Write:
    return Write(
        "INSERT OR IGNORE INTO fills (client_order_id, strategy_id, symbol, side, qty, "
        "price, ts, cum_qty) VALUES (?,?,?,?,?,?,?,?)",
        (
            row.client_order_id,
            row.strategy_id,
            row.symbol,
            row.side,
            row.qty,
            row.price,
            row.ts,
            row.cum_qty,
        ),
    )


def _switch_sql(row: SwitchRow) -> Write:
    return Write(
        "INSERT INTO kill_switch (scope_key, engaged, since, reason, source) "
        "VALUES (?,?,?,?,?) ON CONFLICT(scope_key) DO UPDATE SET "
        "engaged=excluded.engaged, since=excluded.since, reason=excluded.reason, "
        "source=excluded.source",
        (row.scope_key, int(row.engaged), row.since, row.reason, row.source),
    )


def _meta_sql(row: MetaRow) -> Write:
    return Write(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (row.key, row.value),
    )


def _audit_sql(row: AuditRow) -> Write:
    record = row.record
    return Write(
        "INSERT INTO audit (ts, type, scope, strategy_id, source, operator, ok, detail) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (
            record.ts,
            record.type,
            record.scope,
            record.strategy_id,
            record.source,
            record.operator,
            int(record.ok),
            record.detail,
        ),
    )


class _CommitThread:
    """The journal's own thread: commits one group at a time, hands each result back.

    One thread, one connection, for the daemon's life: no pool to take a worker from
    and no limiter per commit; the result comes back with one ``call_soon_threadsafe``.
    """

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._queue: queue.SimpleQueue[
            tuple[Sequence[Write], asyncio.AbstractEventLoop, asyncio.Future[None]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def commit(self, writes: Sequence[Write]) -> None:
        """Commit ``writes`` on the journal's thread; return once durable."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="journal", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((writes, loop, done))
        await done

    def stop(self) -> None:
        """End the thread once what is queued is committed."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            writes, loop, done = job
            try:
                self._journal.commit(writes)
            except JournalError as exc:
                loop.call_soon_threadsafe(_settle, done, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class JournalWriter(Actor):
    """Owns the journal at run time and commits writes in groups.

    Inputs: write requests through :meth:`write`; ``urgent`` ones (kill-switch and
    other control-plane changes) jump the queue and are committed in a transaction
    of their own, so an engage waits for at most the one commit in progress, never
    for a backlog of intents.
    Outputs: durable rows; each waiter is released after its group's COMMIT.
    Edge cases: the normal lane is bounded (a writer behind makes its callers wait);
    a group holds at most ``group_limit`` requests so every commit stays short; a
    failed commit fails every waiter of that group with :class:`JournalError` and
    halts trading (fail-closed: nothing may take effect that is not journaled).
    """

    fail_closed = True

    def __init__(
        self,
        journal: Journal,
        *,
        halt: TradingHalt,
        size: int = 4096,
        group_limit: int = 128,
    ) -> None:
        """Create the two lanes (owned here: only ``write`` feeds them)."""
        super().__init__("journal", halt=halt)
        self.journal = journal
        self._normal: deque[_Request] = deque()
        self._urgent: deque[_Request] = deque()
        self._space = anyio.Semaphore(size)
        self._wake = anyio.Event()
        self._closed = False
        self._group_limit = group_limit
        self._committer = _CommitThread(journal)
        self.commits = 0
        self.commit_seconds_total = 0.0

    async def write(self, *rows: Row, urgent: bool = False) -> None:
        """Queue ``rows`` and return once they are durable.

        Raises:
            JournalError: if the commit failed, or the writer has stopped.
        """
        if self._closed:
            raise JournalError("journal writer has stopped")
        request = _Request([statement(row) for row in rows])
        if urgent:
            self._urgent.append(request)
        else:
            await self._space.acquire()
            self._normal.append(request)
        self._wake.set()
        await request.done.wait()
        if request.error is not None:
            raise JournalError("journal commit failed") from request.error

    def close_input(self) -> None:
        """No more writes will come: the writer finishes what is queued and returns."""
        self._closed = True
        self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                if self._urgent:
                    batch = list(self._urgent)
                    self._urgent.clear()
                    normal = 0
                elif self._normal:
                    normal = min(len(self._normal), self._group_limit)
                    batch = [self._normal.popleft() for _ in range(normal)]
                elif self._closed:
                    return
                else:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                try:
                    await self._commit(batch)
                finally:
                    for _ in range(normal):
                        self._space.release()
        finally:
            self._committer.stop()  # its thread ends with the writer (a restart starts one)

    async def _commit(self, batch: list[_Request]) -> None:
        writes = [w for request in batch for w in request.writes]
        started = time.perf_counter()
        try:
            await self._committer.commit(writes)
        except JournalError as exc:
            for request in batch:
                request.error = exc
                request.done.set()
            raise
        self.commits += 1
        self.commit_seconds_total += time.perf_counter() - started
        for request in batch:
            request.done.set()


def _journaled_decision(reader: sqlite3.Connection, sid: str, intent_id: str) -> bytes | None:
    row = reader.execute(
        "SELECT event FROM decisions WHERE strategy_id = ? AND intent_id = ?", (sid, intent_id)
    ).fetchone()
    return bytes(row[0]) if row else None


def _journaled_order(reader: sqlite3.Connection, sid: str, intent_id: str) -> OrderRecord | None:
    row = reader.execute(
        "SELECT client_order_id, intent_id, intent, status, broker_order_id, filled_qty, "
        "filled_avg_price, created_ts FROM orders WHERE strategy_id = ? AND intent_id = ?",
        (sid, intent_id),
    ).fetchone()
    if row is None:
        return None
    coid, iid, intent, status, broker_id, filled, avg, created = row
    return OrderRecord(
        client_order_id=coid,
        intent_id=iid,
        intent=_intent_decoder.decode(intent),
        status=status,
        broker_order_id=broker_id,
        filled_qty=filled,
        filled_avg_price=avg,
        created_ts=created,
    )


def load_books(journal: Journal, strategies: frozenset[str]) -> dict[str, StrategyBook]:
    """Load each strategy's book from the journal at start-up.

    Positions, unfinished orders and recent decisions and finished orders come into
    memory; older ones stay in the journal and are looked up when asked for.
    """
    reader = journal.reader()
    books: dict[str, StrategyBook] = {}
    for sid in strategies:
        recent = journal.query(
            "SELECT intent_id, event FROM decisions WHERE strategy_id = ? ORDER BY ts DESC LIMIT ?",
            (sid, RECENT_DECISIONS),
        )
        seen = SeenIds(
            row[0]
            for row in journal.query(
                "SELECT intent_id FROM decisions WHERE strategy_id = ?", (sid,)
            )
        )
        books[sid] = StrategyBook(
            decisions=DecisionIndex(
                {intent_id: bytes(event) for intent_id, event in reversed(recent)},
                lookup=partial(_journaled_decision, reader, sid),
                capacity=RECENT_DECISIONS,
                seen=seen,
            ),
            lookup_order=partial(_journaled_order, reader, sid),
        )
    for row in journal.query(
        "SELECT client_order_id, strategy_id, intent_id, intent, status, broker_order_id, "
        "filled_qty, filled_avg_price, created_ts FROM orders WHERE status NOT IN "
        "('filled', 'cancelled', 'rejected', 'expired') OR rowid > "
        "(SELECT coalesce(max(rowid), 0) FROM orders) - ? ORDER BY rowid",
        (RECENT_FINAL_ORDERS,),
    ):
        coid, sid, intent_id, intent, status, broker_id, filled, avg, created = row
        if sid in books:
            books[sid].orders[coid] = OrderRecord(
                client_order_id=coid,
                intent_id=intent_id,
                intent=_intent_decoder.decode(intent),
                status=status,
                broker_order_id=broker_id,
                filled_qty=filled,
                filled_avg_price=avg,
                created_ts=created,
            )
    for sid, positions in replay_positions(journal.reader()).items():
        if sid in books:
            books[sid].positions.update(positions)
    return books


def replay_positions(reader: sqlite3.Connection) -> dict[str, dict[str, Position]]:
    """Every strategy's positions, rebuilt from its fills in order."""
    positions: dict[str, dict[str, Position]] = {}
    try:
        rows = reader.execute(
            "SELECT strategy_id, symbol, side, qty, price FROM fills ORDER BY id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"journal read failed: {exc}") from exc
    for sid, symbol, side, qty, price in rows:
        held = positions.setdefault(sid, {})
        held.setdefault(symbol, Position()).apply(1 if side == "buy" else -1, qty, price)
    return positions


def load_gate(journal: Journal) -> KillGate:
    """Read the persisted switches; called at start-up before any intent is answered."""
    switches: dict[str, SwitchState] = {}
    pauses: dict[str, SwitchState] = {}
    for key, engaged, since, reason, source in journal.query(
        "SELECT scope_key, engaged, since, reason, source FROM kill_switch"
    ):
        state = SwitchState(engaged=bool(engaged), since=since, reason=reason, source=source)
        if key.startswith(PAUSE_PREFIX):
            pauses[key.removeprefix(PAUSE_PREFIX)] = state
        else:
            switches[key] = state
    return KillGate(switches, pauses)


def load_last_totp_step(journal: Journal) -> int | None:
    """The last accepted TOTP step, so that a restart cannot accept it again."""
    value = journal.get_meta(TOTP_KEY)
    return int(value) if value is not None else None


def load_risk_state(journal: Journal) -> tuple[CircuitBreakerState | None, SessionState]:
    """The persisted breaker and session (start-up)."""
    circuit = journal.get_meta(CIRCUIT_KEY)
    session = journal.get_meta(SESSION_KEY)
    return (
        msgspec.json.decode(circuit, type=CircuitBreakerState) if circuit else None,
        msgspec.json.decode(session, type=SessionState) if session else SessionState(),
    )


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the journal at ``path`` (WAL: it reads while the daemon writes).

    Raises:
        JournalError: the file is missing or unreadable.
    """
    uri = f"file:{quote(str(path))}?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path} for reading: {exc}") from exc
