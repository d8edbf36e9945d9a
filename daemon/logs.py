"""structlog set-up: key-value events, JSON when stderr is not a terminal, secrets redacted.

Two things make the output fit for journald under systemd:

- When ``JOURNAL_STREAM`` names the device and inode of our stderr, systemd connected it
  to the journal: every line then starts with a syslog priority prefix (``<3>`` error,
  ``<4>`` warning, ``<6>`` info, ...), which journald strips and files as the entry's
  priority, so ``journalctl -p warning`` finds warnings.
- Records of the standard ``logging`` module (aiomqtt and paho, alpaca-py, asyncio, Python
  warnings) go through the same processors and renderer as the daemon's own events, so the
  JSON log has no raw line. Only their warnings and worse pass: their info and debug
  records (paho logs every packet) would cost the hot path and say little.
- An exception nobody caught, in the main thread or another, is a ``critical`` event
  with its traceback, so that a crash shows under ``journalctl -p warning``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import Processor

_SECRET_KEYS = frozenset({"code", "password", "secret", "secret_key", "key_id", "token", "totp"})

# syslog(3) priorities, which journald reads from a ``<N>`` prefix on a stream line.
_JOURNAL_PRIORITY = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}
_INFO_PRIORITY = 6

_FOREIGN_FLOOR = logging.WARNING


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Never let a value under a secret-looking key reach a log line."""
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


def stderr_is_journal() -> bool:
    """Whether file descriptor 2 is the journal stream systemd set up for this service.

    systemd exports ``JOURNAL_STREAM=DEVICE:INODE`` for the stream it connects; a child
    whose stderr was redirected elsewhere inherits the variable, so the pair must match
    what ``fstat(2)`` says now.

    Returns:
        True when stderr is that stream.
    """
    device, sep, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(2)
        return (int(device), int(inode)) == (stat.st_dev, stat.st_ino)
    except (OSError, ValueError):
        return False


class JournalPriorityPrefix:
    """Wrap a renderer so that every line it makes starts with journald's ``<N>`` priority.

    A rendered event is one line in JSON; a console rendering with a traceback spans
    several, and journald files each line as its own entry, so each gets the prefix.
    """

    def __init__(self, renderer: Processor) -> None:
        """Wrap ``renderer``, which must return a string.

        Args:
            renderer: the last processor of the chain (JSON or console).
        """
        self._renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        """Render ``event`` and prefix each line with the priority of its level."""
        level = str(event.get("level", method)).lower()
        prefix = f"<{_JOURNAL_PRIORITY.get(level, _INFO_PRIORITY)}>"
        rendered = self._renderer(logger, method, event)
        if not isinstance(rendered, str):
            raise TypeError(f"the renderer returned {type(rendered).__name__}, not str")
        return "\n".join(prefix + line for line in rendered.split("\n"))


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """``sys.excepthook``: the crash as one critical event (Ctrl-C keeps Python's own)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger(__name__).critical(
        "process.uncaught_exception", exc_info=(kind, error, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread that died of an exception, as a critical event."""
    if args.exc_value is None:
        return
    structlog.get_logger(__name__).critical(
        "thread.uncaught_exception",
        thread=args.thread.name if args.thread is not None else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


class _ForeignRecords(logging.StreamHandler):  # type: ignore[type-arg]  # TextIO stream
    """The root handler that renders other libraries' ``logging`` records like our events."""


def configure_logging(
    level: str = "info", *, json: bool | None = None, journal: bool | None = None
) -> None:
    """Configure structlog, and route the standard ``logging`` module through it.

    Args:
        level: minimum level name (``debug``, ``info``, ``warning``, ``error``) of the
            daemon's own events; other libraries' records need at least ``warning``.
        json: force JSON (True) or console (False) output; None picks JSON when
            stderr is not a terminal.
        journal: force (True) or omit (False) journald priority prefixes; None adds
            them when :func:`stderr_is_journal`.
    """
    if json is None:
        json = not sys.stderr.isatty()
    if journal is None:
        journal = stderr_is_journal()
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty() and not journal)
    )
    if journal:
        renderer = JournalPriorityPrefix(renderer)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # One write() per line, so a line never interleaves with a foreign record's.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _ForeignRecords(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ForeignRecords)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(threshold, _FOREIGN_FLOOR))
    # warnings.warn() from any library becomes a `py.warnings` record instead of raw text.
    logging.captureWarnings(True)  # noqa: FBT003  # the stdlib's own signature
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
