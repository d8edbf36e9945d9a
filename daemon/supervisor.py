"""The supervisor: one owner of the actors' task groups, start order, readiness and shutdown.

Three tiers run nested, each inside the one before:

- the **core** (the journal writer and the MQTT session) starts first and stops last,
  so that everything the others do is journaled and published;
- the **services** (kill-switch authority and its sources, risk guardian, audit
  trail, broker gateway) run until the order managers are done;
- the **desks** (one order manager per strategy) stop first, when intake stops.

When an actor stops, for any reason, the senders it was handed are closed, so that
whoever reads them sees the end of the stream. A fail-closed actor that dies halts
trading first (:class:`actors.base.Actor`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog

from actors.base import Actor

log = structlog.get_logger(__name__)


class Closable(Protocol):
    """A sender the supervisor closes when its actor stops."""

    def close(self) -> None:
        """Close it (idempotent)."""
        ...


@dataclass
class Supervised:
    """An actor and the senders it was handed (closed when it stops)."""

    actor: Actor
    senders: Sequence[Closable] = ()


@dataclass
class Plan:
    """What the supervisor runs, in its tiers, and how the daemon stops.

    Attributes:
        writer, session: the core; ``close_writer`` ends the writer's input.
        services, desks: the other tiers.
        tasks: plain tasks beside the services (readiness announcement, ...).
        stop_intake: waits for the stop request, stops intake, then cancels the desks
            after their grace period (it is handed the desks' cancel scope).
        shared: senders closed once every service and desk has stopped (the session
            then drains them, says ``offline`` and leaves).
        close_writer: ends the journal writer's input after the shared senders.
        shutdown_timeout_s: how long the core may take to drain.
    """

    writer: Actor
    session: Actor
    services: list[Supervised]
    desks: list[Supervised]
    stop_intake: Callable[[anyio.CancelScope], Coroutine[Any, Any, None]]
    close_writer: Callable[[], None]
    shutdown_timeout_s: float
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    shared: list[Closable] = field(default_factory=list)


async def _run_then_close(supervised: Supervised, done: anyio.Event | None = None) -> None:
    """Run an actor; when it stops for any reason, close the senders it was handed."""
    try:
        await supervised.actor.run()
    finally:
        for sender in supervised.senders:
            sender.close()
        if done is not None:
            done.set()


async def supervise(plan: Plan) -> None:
    """Run ``plan`` to its end: start the tiers in order, stop them in reverse."""
    async with anyio.create_task_group() as core:
        writer_done, session_done = anyio.Event(), anyio.Event()
        core.start_soon(_run_then_close, Supervised(plan.writer), writer_done)
        core.start_soon(_run_then_close, Supervised(plan.session), session_done)
        async with anyio.create_task_group() as services:
            for service in plan.services:
                services.start_soon(_run_then_close, service)
            for task in plan.tasks:
                services.start_soon(task)
            with anyio.CancelScope() as desks_scope:
                services.start_soon(plan.stop_intake, desks_scope)
                async with anyio.create_task_group() as desks:
                    for desk in plan.desks:
                        desks.start_soon(_run_then_close, desk)
            # Every desk has finished (or the shutdown timeout cut them off).
            services.cancel_scope.cancel()
        for sender in plan.shared:
            sender.close()
        plan.close_writer()
        with anyio.move_on_after(plan.shutdown_timeout_s, shield=True) as scope:
            await session_done.wait()
            await writer_done.wait()
        if scope.cancelled_caught:
            # Last resort: a session that cannot say goodbye (broker gone) is cut off.
            log.warning("daemon.forced_stop", after_s=plan.shutdown_timeout_s)
        core.cancel_scope.cancel()


def log_loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log errors raised in bare loop callbacks instead of failing the loop.

    paho's socket callbacks racing a dropped connection raise EBADF there; the
    session's reconnect loop deals with the connection itself.
    """
    error = context.get("exception")
    log.warning(
        "loop.callback_error", message=context.get("message"), error=repr(error) if error else None
    )
