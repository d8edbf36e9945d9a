"""A strategy's paper record, read from the journal for a ``promote`` command.

Blocking: the caller runs :func:`paper_record` in a worker thread. It opens its own
read-only connection, reads one consistent snapshot (WAL: the daemon keeps
writing meanwhile) and closes it. Dates are New York dates, the trading sessions'.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from actors.core.errors import JournalError
from actors.core.promotion import PaperRecord, Trip, max_realized_drawdown
from daemon.journal import open_read_only

NEW_YORK: Final = ZoneInfo("America/New_York")
KILL_ENGAGE: Final = "kill.engage"
"""The audit type of an engage (:mod:`actors.kill_switch`); its scope is ``global`` or
``strategy`` (then ``strategy_id`` names it)."""
CIRCUIT_OPEN: Final = "circuit.open"
"""The audit type of a circuit breaker's opening (``Transition.audit_record``)."""
_HOUR: Final = 3600
"""New York's offset from UTC is whole hours: a UTC hour lies within one New York date."""


def new_york_date(ts: float) -> str:
    """The New York date (``YYYY-MM-DD``) of a Unix time."""
    return datetime.fromtimestamp(ts, UTC).astimezone(NEW_YORK).date().isoformat()


def paper_record(path: Path, strategy_id: str, *, account: str | None) -> PaperRecord:
    """The strategy's record on ``account``, from the journal at ``path``.

    Args:
        path: the journal file (the daemon may be writing it).
        strategy_id: the strategy.
        account: the account to read: None for ``[broker]``, ``live`` for
            ``[broker.live]`` (the journal's ``account`` column).

    Returns:
        Its sessions, filled orders and realized drawdown on the account, and every kill
        engage that covered it (global or its own) and every circuit opening.

    Raises:
        JournalError: the journal cannot be opened or read.
    """
    try:
        with closing(open_read_only(path)) as reader:
            reader.execute("BEGIN")  # one snapshot for every read below
            return _read(reader, strategy_id, account)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the paper record in {path}: {exc}") from exc


def _read(reader: sqlite3.Connection, sid: str, account: str | None) -> PaperRecord:
    hours = reader.execute(
        "SELECT DISTINCT CAST(created_ts / ? AS INTEGER) FROM orders "
        "WHERE strategy_id = ? AND account IS ?",
        (_HOUR, sid, account),
    ).fetchall()
    (filled,) = reader.execute(
        "SELECT count(*) FROM orders WHERE strategy_id = ? AND account IS ? AND status = 'filled'",
        (sid, account),
    ).fetchone()
    fills = reader.execute(
        "SELECT symbol, side, qty, price FROM fills WHERE strategy_id = ? AND account IS ? "
        "ORDER BY id",
        (sid, account),
    )
    drawdown = max_realized_drawdown(fills)
    trips = [
        Trip(new_york_date(ts), f"{kind} ({scope})" if kind == KILL_ENGAGE else kind)
        for ts, kind, scope in reader.execute(
            "SELECT ts, type, scope FROM audit WHERE ok = 1 AND (type = ? OR "
            "(type = ? AND (scope = 'global' OR strategy_id = ?))) ORDER BY id",
            (CIRCUIT_OPEN, KILL_ENGAGE, sid),
        )
    ]
    return PaperRecord(
        sessions=sorted({new_york_date(hour * _HOUR) for (hour,) in hours}),
        filled_orders=int(filled),
        max_drawdown=drawdown,
        trips=trips,
    )
