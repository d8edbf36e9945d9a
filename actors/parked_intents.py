"""Intents waiting for a person's approval (an order manager's part).

An intent above ``approval_above_notional`` is parked: listed on
``P/v1/approval/pending`` by the guardian, and decided when an operator approves or
denies it, or when ``approval_timeout_s`` passes (then ``APPROVAL_TIMEOUT``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from actors.channels import OrderMetrics, RiskDesk
from actors.core.order_book import approval_request
from protocol.messages import OrderIntent

log = structlog.get_logger(__name__)


class ParkedIntents:
    """One strategy's parked intents and their deadlines."""

    def __init__(
        self,
        strategy_id: str,
        approvals: RiskDesk,
        *,
        timeout_s: float,
        metrics: OrderMetrics | None,
        changed: Callable[[], None],
    ) -> None:
        """``approvals``: the guardian that lists pending approvals; ``changed``: state moved."""
        self._sid = strategy_id
        self._approvals = approvals
        self.timeout_s = timeout_s
        self._metrics = metrics
        self._changed = changed
        self._parked: dict[str, tuple[OrderIntent, float]] = {}
        self._wake = anyio.Event()

    def __contains__(self, intent_id: object) -> bool:
        """Whether ``intent_id`` waits for a person."""
        return intent_id in self._parked

    def __len__(self) -> int:
        """Intents waiting."""
        return len(self._parked)

    def park(self, intent: OrderIntent, notional: float, now: float) -> None:
        """Hold an intent above ``approval_above_notional`` until a person decides."""
        request = approval_request(self._sid, intent, notional, now, self.timeout_s)
        self._parked[intent.intent_id] = (intent, request.expires_at)
        self._approvals.set_pending(request, (self._sid, intent.intent_id))
        self._wake.set()
        self._changed()
        if self._metrics is not None:
            self._metrics.intent(self._sid, "awaiting_approval")
        log.info(
            "intent.awaiting_approval",
            strategy_id=self._sid,
            intent_id=intent.intent_id,
            notional=round(notional, 2),
        )

    def take(self, intent_id: str) -> OrderIntent | None:
        """Un-park ``intent_id`` to decide it now (None: it was not waiting)."""
        parked = self._parked.pop(intent_id, None)
        if parked is None:
            return None
        self._approvals.set_pending(None, (self._sid, intent_id))
        self._changed()
        return parked[0]

    async def run_timeouts(self, settle: Callable[[str], Awaitable[None]]) -> None:
        """Call ``settle`` for each intent whose approval deadline passes."""
        while True:
            if not self._parked:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            intent_id, (_intent, expires) = min(self._parked.items(), key=lambda kv: kv[1][1])
            delay = expires - time.time()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._wake.wait()
                    self._wake = anyio.Event()
                continue
            await settle(intent_id)
