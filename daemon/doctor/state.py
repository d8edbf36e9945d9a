"""The doctor's state checks: the state folder and the journal in it (opened read-only)."""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path
from typing import Final

from daemon.config import Config, resolve_path
from daemon.doctor.probes import mode_of
from daemon.doctor.results import CheckResult, skip

JOURNAL_TABLES: Final = ("meta", "kill_switch", "audit", "decisions", "orders", "fills")


def check_state(config: Config) -> list[CheckResult]:
    """The state folder (exists or can be made, writable, private) and the journal."""
    journal = resolve_path(config, config.state.path).absolute()
    folder = journal.parent
    as_root = " (checked as root: the daemon's own user may differ)" if os.geteuid() == 0 else ""
    if not folder.exists():
        return _missing_folder(folder, as_root)
    if not folder.is_dir():
        return [
            CheckResult(
                check="state folder",
                status="FAIL",
                detail=f"{folder} exists but is not a folder",
                fix=f"move {folder} aside, or set state.path to a file in a folder",
            ),
            skip("journal", "state folder unusable"),
        ]
    return [_existing_folder(folder, as_root), _check_journal(journal)]


def _missing_folder(folder: Path, as_root: str) -> list[CheckResult]:
    ancestor = _nearest_existing(folder)
    if ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK):
        # Nothing to fix: the first start makes it (a fresh `make run` looks like this).
        return [
            CheckResult(
                check="state folder",
                status="PASS",
                detail=f"{folder} does not exist yet; the daemon will create it (mode 700)"
                + as_root,
            ),
            CheckResult(check="journal", status="PASS", detail="no journal yet (first run)"),
        ]
    why = "is not a folder" if not ancestor.is_dir() else "is not writable"
    return [
        CheckResult(
            check="state folder",
            status="FAIL",
            detail=f"{folder} does not exist and cannot be created ({ancestor} {why})" + as_root,
            fix=f"mkdir -p {folder} && chmod 700 {folder} as the daemon's user "
            "(under systemd, StateDirectory=tradeguard creates it), or set state.path",
        ),
        skip("journal", "state folder missing"),
    ]


def _existing_folder(folder: Path, as_root: str) -> CheckResult:
    mode = mode_of(folder) or 0
    if not os.access(folder, os.W_OK | os.X_OK):
        return CheckResult(
            check="state folder",
            status="FAIL",
            detail=f"{folder} is not writable by this user (uid {os.geteuid()})",
            fix=f"chown the folder to the daemon's user and chmod 700 {folder}",
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return CheckResult(
            check="state folder",
            status="WARN",
            detail=f"{folder} is writable by group/others (mode {mode:04o}): "
            "anyone could replace the journal",
            fix=f"chmod 700 {folder}",
        )
    return CheckResult(
        check="state folder",
        status="PASS",
        detail=f"{folder} is writable (mode {mode:04o})" + as_root,
    )


def _check_journal(path: Path) -> CheckResult:
    if not path.exists():
        return CheckResult(
            check="journal", status="PASS", detail=f"no journal yet at {path} (first run)"
        )
    aside = (
        f"point state.path at tradeguard's journal, or move {path} aside (the daemon then "
        "starts a fresh journal: no kill switch engaged, no open orders known)"
    )
    try:
        with closing(sqlite3.connect(_read_only_uri(path), uri=True)) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            missing = [t for t in JOURNAL_TABLES if t not in names]
            if missing:
                return CheckResult(
                    check="journal",
                    status="FAIL",
                    detail=f"{path} is not a tradeguard journal: missing tables "
                    + ", ".join(missing),
                    fix=aside,
                )
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            engaged = [
                row[0] for row in db.execute("SELECT scope_key FROM kill_switch WHERE engaged")
            ]
    except sqlite3.Error as exc:
        return CheckResult(
            check="journal", status="FAIL", detail=f"cannot read {path}: {exc}", fix=aside
        )
    if not os.access(path, os.W_OK):
        return CheckResult(
            check="journal",
            status="FAIL",
            detail=f"{path} is not writable by this user",
            fix=f"chown {path} to the daemon's user and chmod 600 {path}",
        )
    detail = f"{path}: schema {version[0] if version else '?'}, every table present"
    if engaged:
        detail += "; kill switch engaged: " + ", ".join(engaged)
    return CheckResult(check="journal", status="PASS", detail=detail)


def _read_only_uri(path: Path) -> str:
    """A URI that reads the journal without creating any file next to it.

    A read-only open of a WAL database creates ``-wal``/``-shm`` when they are
    missing; made by root they would lock the daemon's own user out of its journal.
    Without them every row is in the main file, which ``immutable=1`` reads as is.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    if wal.exists() and shm.exists():
        return uri  # a daemon is running (or died): read through its WAL index
    return uri + "&immutable=1"


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
