"""Read-only probes of this machine for the doctor: file modes, ports, a running daemon."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from daemon.config import Config, resolve_path
from daemon.doctor.results import CheckResult
from daemon.state_lock import LOCK_FILE_NAME


def mode_of(path: Path) -> int | None:
    """The permission bits of ``path``, or None when it cannot be looked at."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def state_folder(config: Config) -> Path:
    """The folder of the journal, which the running daemon locks."""
    return resolve_path(config, config.state.path).absolute().parent


def running_daemon(config: Config) -> int | None:
    """The PID of the daemon holding this config's state folder, or None when none runs.

    A shared ``flock`` probe, dropped at once: it fails while a daemon holds its
    exclusive lock. Opened read-only, never created.
    """
    path = state_folder(config) / LOCK_FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            first = os.pread(fd, 32, 0).split(b"\n", 1)[0].strip()
            return int(first) if first.isdigit() else 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_port(
    check: str, host: str, port: int, *, user: str, busy: str, fix: str, owner: int | None = None
) -> CheckResult:
    """Whether ``user`` will be able to listen on ``host:port`` (bind, then release).

    ``owner`` is the PID of the daemon that holds this config's state folder: a port
    in use is then most likely that daemon's own listener, not a conflict.
    """
    if port == 0:
        return CheckResult(check=check, status="PASS", detail=f"{user} picks a free port")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and owner is not None:
                return CheckResult(
                    check=check,
                    status="PASS",
                    detail=f"{host}:{port} is in use: the running daemon of this state folder "
                    f"(pid {owner}) holds the folder, and {user} is its own",
                )
            if exc.errno == errno.EADDRINUSE:
                return CheckResult(
                    check=check,
                    status="WARN",
                    detail=f"something already listens on {host}:{port}: {busy}",
                    fix=fix,
                )
            return CheckResult(
                check=check,
                status="FAIL",
                detail=f"{user} cannot listen on {host}:{port}: {exc.strerror}",
                fix=fix,
            )
    return CheckResult(check=check, status="PASS", detail=f"{host}:{port} is free for {user}")
