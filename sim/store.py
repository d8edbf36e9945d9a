"""SQLite persistence of the paper venue: account, orders, positions, activities.

The engine writes through on every change (one transaction per order event,
one per fill), so a venue killed at any moment restarts from its last event.
Records are JSON documents keyed by id; decimals travel as strings, so nothing
is rounded on the way. The file uses WAL journaling with ``synchronous=NORMAL``:
a power cut may lose the last few events, never corrupt the file.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import SimConfigError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, qty TEXT NOT NULL, avg TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activities (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, record TEXT NOT NULL
);
"""


@dataclass(slots=True)
class StoredState:
    """Everything a restart resumes from."""

    account: dict[str, Any]
    orders: list[dict[str, Any]] = field(default_factory=list)
    positions: list[tuple[str, str, str]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)


class VenueStore:
    """One SQLite file holding one paper account.

    Args:
        path: The database file (created with its folder if missing).

    Raises:
        SimConfigError: If the file cannot be opened or is not a venue state file.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the file and its tables."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._set_meta("schema_version", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise SimConfigError(f"{path}: venue state version {version} is not supported")
        except (OSError, sqlite3.Error) as exc:
            raise SimConfigError(f"cannot open venue state {path}: {exc}") from exc

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def load(self) -> StoredState | None:
        """The saved account, or None for a fresh file."""
        account = self._meta("account")
        if account is None:
            return None
        orders = [
            json.loads(row[0]) for row in self._db.execute("SELECT record FROM orders ORDER BY seq")
        ]
        positions = [
            (str(row[0]), str(row[1]), str(row[2]))
            for row in self._db.execute("SELECT symbol, qty, avg FROM positions ORDER BY symbol")
        ]
        activities = [
            json.loads(row[0])
            for row in self._db.execute("SELECT record FROM activities ORDER BY seq")
        ]
        return StoredState(account, orders, positions, activities)

    def save_account(self, account: dict[str, Any]) -> None:
        """Replace the account record (cash, equity marks, configuration, ...)."""
        self._set_meta("account", account)

    def save_order(self, record: dict[str, Any]) -> None:
        """Insert or update one order."""
        self._db.execute(
            "INSERT INTO orders (id, seq, record) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET record = excluded.record",
            (record["id"], record["seq"], json.dumps(record)),
        )

    def save_fill(
        self,
        *,
        order: dict[str, Any],
        position: tuple[str, str, str] | tuple[str, None, None],
        activity: dict[str, Any],
        account: dict[str, Any],
    ) -> None:
        """Record one execution atomically: the order, the position, the activity, the cash.

        Args:
            order: The order record after the fill.
            position: ``(symbol, qty, avg_entry_price)``; qty None when now flat.
            activity: The FILL activity.
            account: The account record after the fill.
        """
        symbol, qty, avg = position
        with self._db:
            self._db.execute("BEGIN")
            self.save_order(order)
            if qty is None:
                self._db.execute("DELETE FROM positions WHERE symbol = ?", (symbol,))
            else:
                self._db.execute(
                    "INSERT INTO positions (symbol, qty, avg) VALUES (?, ?, ?) "
                    "ON CONFLICT(symbol) DO UPDATE SET qty = excluded.qty, avg = excluded.avg",
                    (symbol, qty, avg),
                )
            self._db.execute(
                "INSERT INTO activities (id, record) VALUES (?, ?)",
                (activity["id"], json.dumps(activity)),
            )
            self.save_account(account)

    def save_activity(self, activity: dict[str, Any]) -> None:
        """Append one account activity (a fill has its own :meth:`save_fill`)."""
        self._db.execute(
            "INSERT INTO activities (id, record) VALUES (?, ?)",
            (activity["id"], json.dumps(activity)),
        )

    def wipe(self) -> None:
        """Forget the account (a reset)."""
        with self._db:
            self._db.execute("BEGIN")
            for table in ("orders", "positions", "activities"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            self._db.execute("DELETE FROM meta WHERE key = 'account'")
