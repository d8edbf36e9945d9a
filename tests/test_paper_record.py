"""The paper record read from a real journal: New York dates, one account, real audit types."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from actors import kill_switch
from actors.core.circuit_breaker import Transition
from actors.core.errors import JournalError
from actors.core.promotion import PaperRecord, Trip, promotion_gaps
from actors.core.rows import AuditRow, FillRow, OrderChangeRow, OrderRow, Row
from actors.core.settings import PromotionConfig
from daemon.evidence import CIRCUIT_OPEN, KILL_ENGAGE, new_york_date, paper_record
from daemon.journal import Journal, statement
from protocol.codec import encode
from protocol.messages import AuditRecord, CircuitState, OrderIntent, Side

pytestmark = pytest.mark.anyio


def utc(text: str) -> float:
    """A Unix time from ``YYYY-MM-DD HH:MM`` in UTC."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()


def traded(
    sid: str,
    intent_id: str,
    when: str,
    *,
    side: Side = "buy",
    price: float = 100.0,
    qty: float = 10.0,
    account: str | None = None,
    filled: bool = True,
) -> list[Row]:
    """An order (and, when ``filled``, its one fill and its end) at ``when`` UTC."""
    ts = utc(when)
    coid = f"{sid}-{intent_id}"
    intent = OrderIntent(intent_id=intent_id, symbol="AAPL", side=side, qty=qty)
    rows: list[Row] = [
        OrderRow(
            client_order_id=coid,
            strategy_id=sid,
            intent_id=intent_id,
            intent=encode(intent),
            status="pending",
            ts=ts,
            account=account,
        )
    ]
    if filled:
        rows += [
            FillRow(
                client_order_id=coid,
                strategy_id=sid,
                symbol="AAPL",
                side=side,
                qty=qty,
                price=price,
                ts=ts + 1,
                cum_qty=qty,
                account=account,
            ),
            OrderChangeRow(
                client_order_id=coid,
                status="filled",
                broker_order_id=f"b-{coid}",
                filled_qty=qty,
                filled_avg_price=price,
                ts=ts + 1,
            ),
        ]
    return rows


def audit(when: str, kind: str, *, strategy_id: str | None = None, ok: bool = True) -> AuditRow:
    return AuditRow(
        record=AuditRecord(
            type=kind,
            ok=ok,
            detail="test",
            ts=utc(when),
            scope="strategy" if strategy_id else "global",
            strategy_id=strategy_id,
            source="test",
        )
    )


def circuit(when: str, after: CircuitState) -> AuditRow:
    transition = Transition(before="closed", after=after, reason="drawdown", ts=utc(when))
    return AuditRow(record=transition.audit_record())


def write(path: Path, rows: list[Row]) -> None:
    journal = Journal(path)
    journal.commit([statement(row) for row in rows])
    journal.close()


PAPER: list[Row] = [
    # New York is UTC-5 until 2025-03-09, UTC-4 after.
    *traded("s1", "a", "2025-03-03 15:00"),  # 10:00 NY, 03-03: buy 10 @ 100
    *traded("s1", "b", "2025-03-04 02:30", side="sell", price=110.0),  # 21:30 NY, still 03-03
    *traded("s1", "c", "2025-03-04 23:30"),  # 18:30 NY, 03-04 (UTC evening, same date)
    *traded("s1", "d", "2025-03-05 15:00", side="sell", price=85.0),  # -150: 50 under 0
    *traded("s1", "e", "2025-03-10 03:30", filled=False),  # 23:30 NY (EDT), 03-09
]
"""s1 on the paper (primary) account: 4 filled orders, sessions 03-03, 03-04, 03-05, 03-09;
realized P&L +100 then -150: 150 under its peak."""
OTHERS: list[Row] = [
    *traded("s1", "live1", "2025-03-06 15:00", account="live"),
    *traded("s1", "live2", "2025-03-07 15:00", side="sell", price=10.0, account="live"),
    *traded("s2", "x", "2025-03-06 15:00"),
    *traded("s2", "y", "2025-03-07 15:00", side="sell", price=1.0),
]
"""s1 on the live account and s2 on paper: no part of s1's paper record."""
AUDIT: list[Row] = [
    audit("2025-03-04 16:00", KILL_ENGAGE),  # global: covers s1
    audit("2025-03-05 04:00", KILL_ENGAGE, strategy_id="s1"),  # 23:00 NY 03-04
    audit("2025-03-05 16:00", KILL_ENGAGE, strategy_id="s2"),  # another strategy's
    audit("2025-03-05 16:00", KILL_ENGAGE, strategy_id="s1", ok=False),  # refused
    audit("2025-03-05 17:00", "kill.disengage"),
    circuit("2025-03-06 15:00", "half_open"),
    circuit("2025-03-09 15:00", "open"),
]


def test_the_audit_types_are_the_ones_the_kill_switch_and_the_breaker_write() -> None:
    assert f'type="{KILL_ENGAGE}"' in inspect.getsource(kill_switch)
    transition = Transition(before="closed", after="open", reason="x", ts=0.0)
    assert transition.audit_record().type == CIRCUIT_OPEN


def test_new_york_dates() -> None:
    assert new_york_date(utc("2025-03-04 04:59")) == "2025-03-03"  # EST
    assert new_york_date(utc("2025-03-04 05:00")) == "2025-03-04"
    assert new_york_date(utc("2025-07-04 03:59")) == "2025-07-03"  # EDT
    assert new_york_date(utc("2025-07-04 04:00")) == "2025-07-04"


def test_the_paper_record_of_one_strategy_on_one_account(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write(path, [*PAPER, *OTHERS, *AUDIT])
    record = paper_record(path, "s1", account=None)
    assert record == PaperRecord(
        sessions=["2025-03-03", "2025-03-04", "2025-03-05", "2025-03-09"],
        filled_orders=4,
        max_drawdown=pytest.approx(150.0),  # type: ignore[arg-type]
        trips=[
            Trip("2025-03-04", "kill.engage (global)"),
            Trip("2025-03-04", "kill.engage (strategy)"),
            Trip("2025-03-09", "circuit.open"),
        ],
    )


def test_the_live_account_has_its_own_record(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write(path, [*PAPER, *OTHERS, *AUDIT])
    live = paper_record(path, "s1", account="live")
    assert live.sessions == ["2025-03-06", "2025-03-07"]
    assert live.filled_orders == 2
    assert live.max_drawdown == pytest.approx(900.0)
    other = paper_record(path, "s2", account=None)
    assert other.sessions == ["2025-03-06", "2025-03-07"]
    assert [trip.what for trip in other.trips] == [
        "kill.engage (global)",
        "kill.engage (strategy)",
        "circuit.open",
    ]
    assert paper_record(path, "nobody", account=None).sessions == []


def test_the_record_against_promotion(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write(path, [*PAPER, *OTHERS, *AUDIT])
    record = paper_record(path, "s1", account=None)
    config = PromotionConfig(min_sessions=4, min_filled_orders=4, max_drawdown=0.2)
    reasons = promotion_gaps(config, record, open_orders=0, capital=1_000.0)
    assert [reason.message for reason in reasons] == [
        (
            "kill switch or circuit trip in the last 3 paper sessions: "
            "2025-03-04 kill.engage (global), 2025-03-04 kill.engage (strategy), "
            "2025-03-09 circuit.open"
        )
    ]


def test_it_reads_while_the_daemon_holds_a_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    daemon = Journal(path)
    daemon.commit([statement(row) for row in PAPER])
    daemon._db.execute("BEGIN IMMEDIATE")
    for row in traded("s1", "late", "2025-03-20 15:00"):
        write_ = statement(row)
        daemon._db.execute(write_.sql, write_.params)
    record = paper_record(path, "s1", account=None)  # committed rows only
    assert record.filled_orders == 4
    assert "2025-03-20" not in record.sessions
    daemon._db.execute("COMMIT")
    assert paper_record(path, "s1", account=None).filled_orders == 5
    daemon.close()


async def test_it_runs_in_a_worker_thread(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write(path, PAPER)
    record = await anyio.to_thread.run_sync(lambda: paper_record(path, "s1", account=None))
    assert record.filled_orders == 4


def test_a_missing_or_broken_journal_raises_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        paper_record(tmp_path / "missing.db", "s1", account=None)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database" * 100)
    with pytest.raises(JournalError):
        paper_record(broken, "s1", account=None)
