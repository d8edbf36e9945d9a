"""Actor base, restart policy, the trading-halt latch and the supervisor.

An actor is one long-running ``_run()`` coroutine fed by bounded channels that
are created by the wiring and passed in. The base class owns the restart
policy; the supervisor runs every actor in one anyio task group.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import ClassVar

import anyio
import msgspec
import structlog

from actors.core.errors import ActorDiedError

log = structlog.get_logger(__name__)


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often an actor may crash before it is declared dead.

    Attributes:
        max_restarts: restarts allowed inside ``window_s``; beyond, the actor is dead.
        window_s: the sliding window for counting restarts.
        backoff_s: the wait before a restart, doubled per recent crash, capped at 5 s.
    """

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.2


class TradingHalt:
    """A latch that stops all trading when a fail-closed actor dies.

    Once tripped it stays tripped until the daemon restarts: a half-working
    risk or kill-switch actor is never trusted again within one process.
    Listeners are called synchronously on the first trip (to publish state).
    """

    def __init__(self) -> None:
        """Start untripped."""
        self.reason: str | None = None
        self._listeners: list[Callable[[str], None]] = []

    @property
    def halted(self) -> bool:
        """Whether trading is halted."""
        return self.reason is not None

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` when the latch trips."""
        self._listeners.append(listener)

    def trip(self, reason: str) -> None:
        """Halt trading. The first reason is kept."""
        if self.reason is not None:
            return
        self.reason = reason
        log.critical("trading.halted", reason=reason)
        for listener in self._listeners:
            listener(reason)


class Actor(ABC):
    """Base of every actor: a name, a restart policy and a fail-closed flag.

    Subclasses implement ``_run()``, which returns when its input channel ends
    (``EndOfStream``) and raises on a bug. ``run()`` restarts it per the policy.
    A fail-closed actor halts trading on its first crash, before any restart.
    """

    fail_closed: ClassVar[bool] = False
    restart_policy: ClassVar[RestartPolicy] = RestartPolicy()

    def __init__(self, name: str, *, halt: TradingHalt) -> None:
        """Name the actor and give it the halt latch it trips when fail-closed."""
        self.name = name
        self._halt = halt
        self._crashes: deque[float] = deque()

    @abstractmethod
    async def _run(self) -> None:
        """The actor's body."""

    async def run(self) -> None:
        """Run ``_run`` under the restart policy.

        Raises:
            ActorDiedError: after more crashes than the policy allows.
        """
        policy = self.restart_policy
        while True:
            try:
                await self._run()
            except Exception as exc:
                now = time.monotonic()
                self._crashes.append(now)
                while self._crashes and now - self._crashes[0] > policy.window_s:
                    self._crashes.popleft()
                log.exception("actor.crashed", actor=self.name, crashes=len(self._crashes))
                if self.fail_closed:
                    self._halt.trip(f"{self.name} crashed: {type(exc).__name__}")
                if len(self._crashes) > policy.max_restarts:
                    self._halt.trip(f"{self.name} died after {len(self._crashes)} crashes")
                    raise ActorDiedError(f"actor {self.name} died") from exc
                delay = min(5.0, policy.backoff_s * math.pow(2, len(self._crashes) - 1))
                await anyio.sleep(delay)
                log.info("actor.restarting", actor=self.name)
            else:
                log.debug("actor.finished", actor=self.name)
                return
