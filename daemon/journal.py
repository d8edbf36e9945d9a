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
from pathlib import Path
from typing import Any, Final, assert_never
from urllib.parse import quote

import anyio
import msgspec
import structlog

from actors.base import Actor, TradingHalt
from actors.core.errors import JournalError
from actors.core.rows import (
    AuditRow,
    DecisionRow,
    FillRow,
    MetaRow,
    OrderChangeRow,
    OrderRow,
    Row,
    SwitchRow,
)
from daemon.journal_load import (
    load_books,
    load_gate,
    load_last_totp_step,
    load_modes,
    load_risk_state,
    replay_positions,
)

__all__ = [
    "SCHEMA_VERSION",
    "Journal",
    "JournalWriter",
    "Write",
    "load_books",
    "load_gate",
    "load_last_totp_step",
    "load_modes",
    "load_risk_state",
    "open_read_only",
    "replay_positions",
    "statement",
]

log = structlog.get_logger(__name__)

SCHEMA_VERSION: Final = 2
"""Recorded in ``meta`` as ``schema_version``. 1: the first schema; 2: ``account`` on
``orders`` and ``fills`` (NULL: the ``[broker]`` account; ``live``: ``[broker.live]``)."""
_ACCOUNT_TABLES: Final = ("orders", "fills")
"""The tables that gained ``account`` in version 2."""

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
    created_ts REAL NOT NULL, updated_ts REAL NOT NULL, detail TEXT,
    account TEXT                          -- NULL: [broker]; 'live': [broker.live]
);
CREATE INDEX IF NOT EXISTS orders_open ON orders (status);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL, strategy_id TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, ts REAL NOT NULL,
    cum_qty REAL NOT NULL, account TEXT,
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
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        try:
            _create_or_migrate(self._db, path)
        except BaseException:
            self._db.close()
            raise

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


def _create_or_migrate(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables, or bring an older journal's up to date: one transaction.

    Raises:
        JournalError: the schema cannot be written, or the journal is not one this
            version can use (nothing was changed).
    """
    try:
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA)  # the transaction stays open
        try:
            _migrate(db, path)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise JournalError(f"cannot open journal {path}: {exc}") from exc


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the journal up to :data:`SCHEMA_VERSION` inside the caller's transaction.

    Idempotent: a column already there is left alone. Rows written before version 2
    have a NULL ``account``: they were on the ``[broker]`` account.

    Raises:
        JournalError: the journal was written by a newer tradeguard (an older one would
            misread it), or its recorded version is not a number.
    """
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row else SCHEMA_VERSION
    except ValueError:
        raise JournalError(f"journal {path}: schema_version {row[0]!r} is not a number") from None
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema {version}, this tradeguard knows up to "
            f"{SCHEMA_VERSION}: run the newer tradeguard"
        )
    for table in _ACCOUNT_TABLES:
        columns = {info[1] for info in db.execute(f"PRAGMA table_info({table})")}
        if "account" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN account TEXT")
            log.info("journal.migrated", table=table, column="account", version=SCHEMA_VERSION)
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )


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
        "created_ts, updated_ts, account) VALUES (?,?,?,?,?,?,?,?)",
        (
            row.client_order_id,
            row.strategy_id,
            row.intent_id,
            row.intent,
            row.status,
            row.ts,
            row.ts,
            row.account,
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
        "price, ts, cum_qty, account) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            row.client_order_id,
            row.strategy_id,
            row.symbol,
            row.side,
            row.qty,
            row.price,
            row.ts,
            row.cum_qty,
            row.account,
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
