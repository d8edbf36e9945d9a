"""The journal: group commits, durability settings, bounded memory with journal fallback,
the schema's migration, and the start-up loads per account."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import msgspec
import pytest

from actors.base import TradingHalt
from actors.core.book import DecisionIndex
from actors.core.circuit_breaker import CircuitBreakerState, SessionState
from actors.core.errors import JournalError
from actors.core.rows import (
    CIRCUIT_KEY,
    MODE_PREFIX,
    SESSION_KEY,
    DecisionRow,
    FillRow,
    MetaRow,
    OrderChangeRow,
    OrderRow,
    Row,
    risk_keys,
)
from daemon import journal as journal_module
from daemon import journal_load
from daemon.journal import (
    SCHEMA_VERSION,
    Journal,
    JournalWriter,
    Write,
    load_books,
    load_modes,
    load_risk_state,
    replay_positions,
    statement,
)
from protocol.codec import encode
from protocol.messages import OrderIntent, Side

pytestmark = pytest.mark.anyio


def test_wal_and_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j" / "state.db")
    assert journal.query("PRAGMA journal_mode")[0][0] == "wal"
    assert journal.query("PRAGMA synchronous")[0][0] == 2  # FULL
    assert (tmp_path / "j").stat().st_mode & 0o077 == 0


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    writer = JournalWriter(journal, halt=TradingHalt())
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)

        async def write(n: int) -> None:
            await writer.write(MetaRow(key=f"k{n}", value=str(n)))

        async with anyio.create_task_group() as writers:
            for n in range(200):
                writers.start_soon(write, n)
        writer.close_input()
    assert journal.query("SELECT count(*) FROM meta WHERE key LIKE 'k%'")[0][0] == 200
    assert writer.commits < 200  # grouped: fewer fsyncs than writes
    # Every write is visible to another connection: it was committed.
    with sqlite3.connect(tmp_path / "state.db") as other:
        assert other.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 200


async def test_failed_commit_fails_its_waiters_and_halts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    halt = TradingHalt()
    writer = JournalWriter(journal, halt=halt)
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            try:
                await writer.run()
            except Exception as exc:  # noqa: BLE001  # the actor dies; we record how
                errors.append(exc)

        tg.start_soon(run)
        decision = DecisionRow(strategy_id="s1", intent_id="i1", accepted=True, event=b"", ts=0.0)
        with pytest.raises(Exception, match="journal commit failed"):
            await writer.write(decision, decision)  # the same primary key twice
        tg.cancel_scope.cancel()
    assert halt.halted


def test_old_decisions_and_orders_come_back_from_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "state.db")
    rows = []
    for n in range(5):
        intent = OrderIntent(intent_id=f"i{n}", symbol="AAPL", side="buy", qty=1)
        rows.append(
            Write(
                "INSERT INTO decisions VALUES (?,?,?,?,?)",
                ("s1", f"i{n}", 1, f"decision-{n}".encode(), float(n)),
            )
        )
        rows.append(
            Write(
                "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
                "filled_qty, created_ts, updated_ts) VALUES (?,?,?,?,?,?,?,?)",
                (f"s1-i{n}", "s1", f"i{n}", encode(intent), "filled", 1.0, float(n), float(n)),
            )
        )
    journal.commit(rows)
    monkeypatch.setattr(journal_load, "RECENT_DECISIONS", 2)
    monkeypatch.setattr(journal_load, "RECENT_FINAL_ORDERS", 2)
    book = load_books(journal, frozenset({"s1"}))["s1"]
    assert len(book.decisions) == 2
    assert len(book.orders) == 2
    assert book.decisions.get("i0") == b"decision-0"  # from the journal
    assert book.decisions.get("i4") == b"decision-4"
    assert book.decisions.get("never") is None
    assert book.lookup_order is not None
    old = book.lookup_order("i0")
    assert old is not None
    assert old.status == "filled"


def test_decision_index_is_bounded() -> None:
    index = DecisionIndex(capacity=3)
    for n in range(10):
        index.put(f"i{n}", b"x")
    assert len(index) == 3
    assert "i9" in index
    assert "i0" not in index


# ------------------------------------------------------------------ schema 2: accounts

OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE kill_switch (
    scope_key TEXT PRIMARY KEY, engaged INTEGER NOT NULL, since REAL, reason TEXT, source TEXT
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL, type TEXT NOT NULL, scope TEXT, strategy_id TEXT,
    source TEXT, operator TEXT, ok INTEGER NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE decisions (
    strategy_id TEXT NOT NULL, intent_id TEXT NOT NULL,
    accepted INTEGER NOT NULL, event BLOB NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (strategy_id, intent_id)
);
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    strategy_id TEXT NOT NULL, intent_id TEXT NOT NULL,
    intent BLOB NOT NULL, status TEXT NOT NULL, broker_order_id TEXT,
    filled_qty REAL NOT NULL DEFAULT 0, filled_avg_price REAL,
    created_ts REAL NOT NULL, updated_ts REAL NOT NULL, detail TEXT
);
CREATE INDEX orders_open ON orders (status);
CREATE TABLE fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL, strategy_id TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, ts REAL NOT NULL,
    cum_qty REAL NOT NULL,
    UNIQUE (client_order_id, cum_qty)
);
INSERT INTO meta VALUES ('schema_version', '1');
"""
"""The tables as every journal before schema 2 has them."""


def intent(intent_id: str, side: Side = "buy", qty: float = 10.0) -> bytes:
    return encode(OrderIntent(intent_id=intent_id, symbol="AAPL", side=side, qty=qty))


def old_journal(path: Path) -> None:
    """A schema-1 journal: one open order, one filled order and its fill, one decision."""
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO decisions VALUES ('s1', 'i1', 1, x'00', 1.0)")
        db.execute(
            "INSERT INTO orders (client_order_id, strategy_id, intent_id, intent, status, "
            "filled_qty, created_ts, updated_ts) VALUES "
            "('s1-i1', 's1', 'i1', ?, 'filled', 10, 1.0, 2.0), "
            "('s1-i2', 's1', 'i2', ?, 'accepted', 0, 3.0, 3.0)",
            (intent("i1"), intent("i2")),
        )
        db.execute(
            "INSERT INTO fills (client_order_id, strategy_id, symbol, side, qty, price, ts, "
            "cum_qty) VALUES ('s1-i1', 's1', 'AAPL', 'buy', 10, 100, 2.0, 10)"
        )
    db.close()


def columns(journal: Journal, table: str) -> set[str]:
    return {row[1] for row in journal.query(f"PRAGMA table_info({table})")}


def test_an_old_journal_is_migrated_at_open_and_its_rows_are_the_primary_account(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old_journal(path)
    journal = Journal(path)
    assert "account" in columns(journal, "orders")
    assert "account" in columns(journal, "fills")
    assert journal.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
    assert journal.query("SELECT count(*) FROM orders WHERE account IS NULL") == [(2,)]
    primary = load_books(journal, frozenset({"s1"}))["s1"]
    assert set(primary.orders) == {"s1-i1", "s1-i2"}
    assert {order.account for order in primary.orders.values()} == {None}
    assert primary.positions["AAPL"].qty == 10
    assert primary.decisions.get("i1") == b"\x00"
    live = load_books(journal, frozenset({"s1"}), account="live", shared={"s1": primary})["s1"]
    assert live.orders == {}
    assert live.positions == {}
    journal.close()
    # Idempotent: a second open changes nothing and new rows carry their account.
    again = Journal(path)
    assert again.get_meta("schema_version") == "2"
    again.commit([statement(fill_row("s1-i3", "live", cum=5.0))])
    assert again.query("SELECT account FROM fills ORDER BY id") == [(None,), ("live",)]
    again.close()


def test_a_failed_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.db"
    old_journal(path)
    monkeypatch.setattr(journal_module, "_ACCOUNT_TABLES", ("orders", "no_such_table"))
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal(path)
    with sqlite3.connect(path) as db:
        assert "account" not in {row[1] for row in db.execute("PRAGMA table_info(orders)")}
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",
        )
    db.close()


def test_a_journal_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Journal(path).commit([statement(MetaRow(key="schema_version", value="3"))])
    with pytest.raises(JournalError, match="has schema 3"):
        Journal(path)


def test_a_new_journal_has_the_account_columns(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    assert "account" in columns(journal, "orders")
    assert "account" in columns(journal, "fills")
    assert journal.get_meta("schema_version") == "2"


def order_row(intent_id: str, account: str | None, *, sid: str = "s1", ts: float = 1.0) -> OrderRow:
    return OrderRow(
        client_order_id=f"{sid}-{intent_id}",
        strategy_id=sid,
        intent_id=intent_id,
        intent=intent(intent_id),
        status="pending",
        ts=ts,
        account=account,
    )


def fill_row(
    coid: str, account: str | None, *, side: Side = "buy", qty: float = 5.0, cum: float = 5.0
) -> FillRow:
    return FillRow(
        client_order_id=coid,
        strategy_id=coid.split("-", maxsplit=1)[0],
        symbol="AAPL",
        side=side,
        qty=qty,
        price=100.0,
        ts=2.0,
        cum_qty=cum,
        account=account,
    )


def decision(intent_id: str) -> DecisionRow:
    return DecisionRow(
        strategy_id="s1", intent_id=intent_id, accepted=True, event=intent_id.encode(), ts=1.0
    )


def test_books_load_per_account_with_one_decision_index(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    rows: list[Row] = [
        decision("p1"),
        order_row("p1", None),
        fill_row("s1-p1", None, qty=5.0, cum=5.0),
        decision("l1"),
        order_row("l1", "live"),
        fill_row("s1-l1", "live", qty=3.0, cum=3.0),
        decision("l2"),
        order_row("l2", "live"),
        OrderChangeRow(
            client_order_id="s1-l2",
            status="filled",
            broker_order_id="b2",
            filled_qty=2.0,
            filled_avg_price=100.0,
            ts=3.0,
        ),
        fill_row("s1-l2", "live", side="sell", qty=2.0, cum=2.0),
    ]
    journal.commit([statement(row) for row in rows])
    assert journal.query("SELECT client_order_id, account FROM orders ORDER BY rowid") == [
        ("s1-p1", None),
        ("s1-l1", "live"),
        ("s1-l2", "live"),
    ]
    primary = load_books(journal, frozenset({"s1"}))  # the wiring's call, unchanged
    live = load_books(journal, frozenset({"s1"}), account="live", shared=primary)
    paper_book, live_book = primary["s1"], live["s1"]
    assert set(paper_book.orders) == {"s1-p1"}
    assert set(live_book.orders) == {"s1-l1", "s1-l2"}
    assert {order.account for order in live_book.orders.values()} == {"live"}
    assert paper_book.positions["AAPL"].qty == 5.0
    assert live_book.positions["AAPL"].qty == 1.0
    assert live_book.decisions is paper_book.decisions
    assert live_book.lookup_order is paper_book.lookup_order
    assert live_book.decisions.get("p1") == b"p1"
    assert live_book.lookup_order is not None
    looked_up = live_book.lookup_order("l1")
    assert looked_up is not None
    assert looked_up.account == "live"
    paper_lookup = paper_book.lookup_order
    assert paper_lookup is not None
    old = paper_lookup("p1")
    assert old is not None
    assert old.account is None
    with pytest.raises(ValueError, match="s2"):
        load_books(journal, frozenset({"s1", "s2"}), account="live", shared=primary)


def test_positions_replay_per_account(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    journal.commit(
        [
            statement(fill_row("s1-a", None, qty=5.0)),
            statement(fill_row("s1-b", "live", qty=7.0)),
            statement(fill_row("s2-c", "live", qty=1.0)),
        ]
    )
    reader = journal.reader()
    assert replay_positions(reader)["s1"]["AAPL"].qty == 5.0
    assert "s2" not in replay_positions(reader)
    live = replay_positions(reader, account="live")
    assert live["s1"]["AAPL"].qty == 7.0
    assert live["s2"]["AAPL"].qty == 1.0
    reader.close()


def test_modes_come_back_from_meta(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    assert load_modes(journal) == {}
    journal.commit(
        [
            statement(MetaRow(key=MODE_PREFIX + "s1", value="live")),
            statement(MetaRow(key=MODE_PREFIX + "s2", value="paper")),
            statement(MetaRow(key="modes", value="not a mode key")),
            statement(MetaRow(key=CIRCUIT_KEY, value="{}")),
        ]
    )
    assert load_modes(journal) == {"s1": "live", "s2": "paper"}
    journal.commit([statement(MetaRow(key=MODE_PREFIX + "s1", value="paper"))])
    assert load_modes(journal)["s1"] == "paper"
    journal.commit([statement(MetaRow(key=MODE_PREFIX + "s3", value="LIVE"))])
    with pytest.raises(JournalError, match=r"mode\.s3"):
        load_modes(journal)


def test_risk_keys_of_the_primary_are_the_old_keys() -> None:
    assert risk_keys(None) == (CIRCUIT_KEY, SESSION_KEY) == ("risk.circuit", "risk.session")
    assert risk_keys("live") == ("risk.circuit.live", "risk.session.live")


def test_risk_state_loads_per_account(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state.db")
    assert load_risk_state(journal) == (None, SessionState())
    live_circuit, live_session = risk_keys("live")
    journal.commit(
        [
            statement(
                MetaRow(
                    key=CIRCUIT_KEY,
                    value=msgspec.json.encode(CircuitBreakerState(equity=100.0)).decode(),
                )
            ),
            statement(
                MetaRow(
                    key=live_circuit,
                    value=msgspec.json.encode(
                        CircuitBreakerState(state="open", equity=50.0)
                    ).decode(),
                )
            ),
            statement(
                MetaRow(
                    key=live_session,
                    value=msgspec.json.encode(SessionState(session="2025-03-04")).decode(),
                )
            ),
        ]
    )
    circuit, session = load_risk_state(journal)
    assert circuit == CircuitBreakerState(equity=100.0)
    assert session.session is None
    circuit, session = load_risk_state(journal, "live")
    assert circuit == CircuitBreakerState(state="open", equity=50.0)
    assert session.session == "2025-03-04"
