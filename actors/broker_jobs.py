"""The broker gateway's work: queued jobs for its workers, and the POSTs in flight.

Part of the gateway (not an actor): cancels are served before submissions; a
submission can be taken out of the queue unsent (the gate closed, or its deadline
passed) and is then settled by the gateway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

from actors.channels import CancelOrder, SubmitOrder


class JobQueue:
    """Queued submissions and cancels; one permit per queued job, cancels first.

    A worker takes a permit, then the most urgent job: no wake-up can be lost,
    whatever the timing. A job settled while queued leaves a permit with nothing to do.
    """

    def __init__(self) -> None:
        """Empty."""
        self.submits: deque[SubmitOrder] = deque()
        """Submissions waiting for a worker, oldest first (read it; change it by methods)."""
        self.cancels: deque[CancelOrder] = deque()
        """Cancels waiting for a worker, oldest first (read it; change it by methods)."""
        self._permits = anyio.Semaphore(0)

    def __len__(self) -> int:
        """Jobs waiting (cancels and submissions)."""
        return len(self.submits) + len(self.cancels)

    def put(self, job: SubmitOrder | CancelOrder) -> None:
        """Queue one job for the workers."""
        if isinstance(job, CancelOrder):
            self.cancels.append(job)
        else:
            self.submits.append(job)
        self._permits.release()

    def take_submits(self, which: Callable[[SubmitOrder], bool]) -> list[SubmitOrder]:
        """Take the queued submissions ``which`` picks (their permits find nothing)."""
        taken = [job for job in self.submits if which(job)]
        if taken:
            self.submits = deque(job for job in self.submits if not which(job))
        return taken

    def take_late(self, now: float, deadline_s: float) -> list[SubmitOrder]:
        """Take the queued submissions past their deadline at ``now``."""
        return self.take_submits(lambda job: now > job.accepted_at + deadline_s)

    async def next(self) -> SubmitOrder | CancelOrder | None:
        """Wait for a job: a cancel if any, else the oldest submission (None: taken unsent)."""
        await self._permits.acquire()
        if self.cancels:
            return self.cancels.popleft()
        return self.submits.popleft() if self.submits else None


class PostsInFlight:
    """How many POSTs are on their way, and an event for none."""

    def __init__(self) -> None:
        """None in flight."""
        self.count = 0
        self.idle = anyio.Event()
        self.idle.set()

    def enter(self) -> None:
        """A POST is about to be sent."""
        self.count += 1
        if self.count == 1:
            self.idle = anyio.Event()

    def leave(self) -> None:
        """A POST has returned (whatever its outcome)."""
        self.count -= 1
        if self.count == 0:
            self.idle.set()
