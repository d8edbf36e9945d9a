"""The journal: group commits, durability settings, bounded memory with journal fallback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from actors.base import TradingHalt
from actors.core.book import DecisionIndex
from actors.core.rows import DecisionRow, MetaRow
from daemon import journal as journal_module
from daemon.journal import Journal, JournalWriter, Write, load_books
from protocol.codec import encode
from protocol.messages import OrderIntent

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
    monkeypatch.setattr(journal_module, "RECENT_DECISIONS", 2)
    monkeypatch.setattr(journal_module, "RECENT_FINAL_ORDERS", 2)
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
