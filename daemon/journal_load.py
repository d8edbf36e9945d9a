"""Start-up reads of the journal: books, positions, switches, risk state and modes.

Called before any actor runs (the wiring), on the :class:`~daemon.journal.Journal`
the writer takes over afterwards. An account is ``str | None``: None is the
``[broker]`` account (the journal's ``account`` column is NULL), ``live`` the
``[broker.live]`` account. ``account IS ?`` matches NULL to None in SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import closing
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import msgspec

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
from actors.core.rows import MODE_PREFIX, TOTP_KEY, risk_keys
from actors.core.trading_state import PAUSE_PREFIX, KillGate
from protocol.messages import OrderIntent, SwitchState

if TYPE_CHECKING:
    from daemon.journal import Journal

_intent_decoder = msgspec.json.Decoder(OrderIntent)

_ORDER_COLUMNS: Final = (
    "client_order_id, intent_id, intent, status, broker_order_id, filled_qty, "
    "filled_avg_price, created_ts, account"
)
"""The columns :func:`_order_record` reads, in its order."""
MODES: Final = frozenset({"paper", "live"})
"""The values a ``mode.SID`` meta key may hold."""


def _order_record(row: tuple[Any, ...]) -> OrderRecord:
    coid, iid, intent, status, broker_id, filled, avg, created, account = row
    return OrderRecord(
        client_order_id=coid,
        intent_id=iid,
        intent=_intent_decoder.decode(intent),
        status=status,
        broker_order_id=broker_id,
        filled_qty=filled,
        filled_avg_price=avg,
        created_ts=created,
        account=account,
    )


def _journaled_decision(reader: sqlite3.Connection, sid: str, intent_id: str) -> bytes | None:
    row = reader.execute(
        "SELECT event FROM decisions WHERE strategy_id = ? AND intent_id = ?", (sid, intent_id)
    ).fetchone()
    return bytes(row[0]) if row else None


def _journaled_order(reader: sqlite3.Connection, sid: str, intent_id: str) -> OrderRecord | None:
    """The strategy's order of ``intent_id`` on either account (its ``account`` says which)."""
    row = reader.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE strategy_id = ? AND intent_id = ?",  # noqa: S608  # a constant column list
        (sid, intent_id),
    ).fetchone()
    return None if row is None else _order_record(row)


def _own_book(journal: Journal, reader: sqlite3.Connection, sid: str) -> StrategyBook:
    """A book with the strategy's own decision index and order look-up (both accounts)."""
    recent = journal.query(
        "SELECT intent_id, event FROM decisions WHERE strategy_id = ? ORDER BY ts DESC LIMIT ?",
        (sid, RECENT_DECISIONS),
    )
    seen = SeenIds(
        row[0]
        for row in journal.query("SELECT intent_id FROM decisions WHERE strategy_id = ?", (sid,))
    )
    return StrategyBook(
        decisions=DecisionIndex(
            {intent_id: bytes(event) for intent_id, event in reversed(recent)},
            lookup=partial(_journaled_decision, reader, sid),
            capacity=RECENT_DECISIONS,
            seen=seen,
        ),
        lookup_order=partial(_journaled_order, reader, sid),
    )


def _shared_books(
    strategies: frozenset[str], shared: Mapping[str, StrategyBook]
) -> dict[str, StrategyBook]:
    missing = sorted(strategies - shared.keys())
    if missing:
        raise ValueError(f"no shared book for {', '.join(missing)}")
    return {
        sid: StrategyBook(decisions=shared[sid].decisions, lookup_order=shared[sid].lookup_order)
        for sid in strategies
    }


def load_books(
    journal: Journal,
    strategies: frozenset[str],
    *,
    account: str | None = None,
    shared: Mapping[str, StrategyBook] | None = None,
) -> dict[str, StrategyBook]:
    """Load each strategy's book of one account from the journal at start-up.

    Positions, unfinished orders and recent finished orders of ``account`` come into
    memory; older ones stay in the journal and are looked up when asked for. Decisions
    are per strategy across both accounts: with ``shared``, each book takes its
    ``decisions`` and ``lookup_order`` from ``shared[sid]`` (one index per strategy);
    without, they are read here.

    Args:
        journal: the journal, opened (and migrated) at start-up.
        strategies: the configured strategies.
        account: None for the ``[broker]`` account, ``live`` for ``[broker.live]``.
        shared: the books of the other account, loaded first (every strategy in it).

    Returns:
        One book per strategy.

    Raises:
        JournalError: the journal cannot be read.
        ValueError: ``shared`` lacks one of ``strategies``.
    """
    if shared is not None:
        books = _shared_books(strategies, shared)
    else:
        reader = journal.reader()  # stays open: the books' look-ups read through it
        books = {sid: _own_book(journal, reader, sid) for sid in strategies}
    for row in journal.query(
        f"SELECT strategy_id, {_ORDER_COLUMNS} FROM orders WHERE account IS ? AND "  # noqa: S608  # a constant column list
        "(status NOT IN ('filled', 'cancelled', 'rejected', 'expired') OR rowid > "
        "(SELECT coalesce(max(rowid), 0) FROM orders) - ?) ORDER BY rowid",
        (account, RECENT_FINAL_ORDERS),
    ):
        if row[0] in books:
            order = _order_record(row[1:])
            books[row[0]].orders[order.client_order_id] = order
    with closing(journal.reader()) as reader:
        replayed = replay_positions(reader, account=account)
    for sid, positions in replayed.items():
        if sid in books:
            books[sid].positions.update(positions)
    return books


def replay_positions(
    reader: sqlite3.Connection, *, account: str | None = None
) -> dict[str, dict[str, Position]]:
    """Every strategy's positions on one account, rebuilt from its fills in order.

    Args:
        reader: a connection to the journal.
        account: None (the default) for the ``[broker]`` account, ``live`` for
            ``[broker.live]``.

    Returns:
        Positions by strategy id, then symbol.

    Raises:
        JournalError: the journal cannot be read.
    """
    positions: dict[str, dict[str, Position]] = {}
    try:
        rows = reader.execute(
            "SELECT strategy_id, symbol, side, qty, price FROM fills WHERE account IS ? "
            "ORDER BY id",
            (account,),
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


def load_risk_state(
    journal: Journal, account: str | None = None
) -> tuple[CircuitBreakerState | None, SessionState]:
    """The persisted breaker and session of one account (start-up).

    Args:
        journal: the journal.
        account: None for the ``[broker]`` account, ``live`` for ``[broker.live]``
            (meta keys of :func:`~actors.core.rows.risk_keys`).

    Returns:
        The breaker's state (None: never persisted) and the session's baselines.
    """
    circuit_key, session_key = risk_keys(account)
    circuit = journal.get_meta(circuit_key)
    session = journal.get_meta(session_key)
    return (
        msgspec.json.decode(circuit, type=CircuitBreakerState) if circuit else None,
        msgspec.json.decode(session, type=SessionState) if session else SessionState(),
    )


def load_modes(journal: Journal) -> dict[str, str]:
    """Every strategy's journaled trading mode (``mode.SID`` meta keys).

    Returns:
        ``paper`` or ``live`` by strategy id; a strategy never promoted nor demoted is
        absent (its configured mode applies).

    Raises:
        JournalError: the journal cannot be read, or holds a mode other than
            ``paper`` and ``live`` (fail-closed: no guess at where orders go).
    """
    modes: dict[str, str] = {}
    for key, value in journal.query(
        "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
        (len(MODE_PREFIX), MODE_PREFIX),
    ):
        if value not in MODES:
            raise JournalError(f"journal meta {key!r} holds {value!r}, not paper or live")
        modes[key.removeprefix(MODE_PREFIX)] = value
    return modes
