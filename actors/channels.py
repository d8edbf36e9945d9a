"""The bounded channels between actors, and the narrow seams an actor is handed.

The messages themselves are :mod:`actors.core.messages` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.core.messages import (
    ApprovalDecision,
    BrokerStatus,
    CancelOrder,
    FlattenNow,
    Heartbeat,
    InboundIntent,
    InboundKillCommand,
    KillChanged,
    KillSettled,
    ModeChange,
    OrderUpdate,
    Publish,
    SubmitOrder,
    TriggerPress,
)
from actors.core.risk_limits import Quote, StrategyView
from actors.core.rows import Row
from protocol.messages import (
    OrderIntent,
    PendingApproval,
    Reason,
)

__all__ = [
    "ApprovalDecision",
    "BrokerStatus",
    "CancelOrder",
    "Channel",
    "FlattenNow",
    "Heartbeat",
    "InboundIntent",
    "InboundKillCommand",
    "JournalSink",
    "KillChanged",
    "KillSettled",
    "ModeChange",
    "OrderMetrics",
    "OrderUpdate",
    "Publish",
    "RiskDesk",
    "SubmitOrder",
    "TriggerPress",
    "receive_batch",
]

T = TypeVar("T")


async def receive_batch(stream: MemoryObjectReceiveStream[T], limit: int = 256) -> list[T] | None:
    """Wait for one item, then take whatever else is queued (up to ``limit``).

    Returns None when the stream has ended. Callers use it to cover a burst with one
    journal commit.
    """
    try:
        batch = [await stream.receive()]
    except anyio.EndOfStream:
        return None
    while len(batch) < limit:
        try:
            batch.append(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return batch


class Channel(Generic[T]):  # Python 3.11 has no PEP 695 syntax
    """A bounded memory object stream pair, created by the wiring."""

    def __init__(self, size: int) -> None:
        """Create the pair with ``size`` slots."""
        send, receive = anyio.create_memory_object_stream[T](size)
        self.sender: MemoryObjectSendStream[T] = send
        self.receiver: MemoryObjectReceiveStream[T] = receive


# ---------------------------------------------------------------------- seams
# Narrow interfaces an actor is handed at construction; the daemon provides them.


class JournalSink(Protocol):
    """Where an actor journals: ``write`` returns once the rows are durable."""

    async def write(self, *rows: Row, urgent: bool = False) -> None:
        """Journal ``rows`` (``urgent``: ahead of the queue, for the control plane)."""
        ...


class OrderMetrics(Protocol):
    """The counters an order manager feeds."""

    def intent(self, strategy_id: str, outcome: str, codes: Sequence[str] = ()) -> None:
        """Count one decided intent and its reason codes."""
        ...

    def decision_latency(self, seconds: float) -> None:
        """Time from receipt to journaled decision."""
        ...

    def order_status(self, strategy_id: str, status: str) -> None:
        """Count one order status change."""
        ...


class RiskDesk(Protocol):
    """What an order manager asks of the risk guardian, right before it decides."""

    @property
    def quotes(self) -> Mapping[str, Quote]:
        """The latest quotes, by symbol."""
        ...

    @property
    def reduce_only(self) -> bool:
        """Whether the circuit breaker allows only orders that reduce a position."""
        ...

    @property
    def abstentions(self) -> Mapping[str, int]:
        """Heartbeat-less abstentions, by strategy."""
        ...

    def evaluate(
        self,
        strategy_id: str,
        intent: OrderIntent,
        now: float,
        strategy_view: StrategyView | None = None,
        received_at: float | None = None,
    ) -> list[Reason]:
        """Every limit ``intent`` breaks (empty: it may trade)."""
        ...

    def needs_approval(
        self, strategy_id: str, intent: OrderIntent, view: StrategyView, now: float
    ) -> float | None:
        """The notional that needs a human's approval, or None."""
        ...

    def recheck_after_approval(
        self, strategy_id: str, intent: OrderIntent, now: float, view: StrategyView
    ) -> list[Reason]:
        """The limits again, once a human approved."""
        ...

    def session_pnl_base(self, strategy_id: str) -> float:
        """Realized P&L of the strategy when the session began."""
        ...

    def set_pending(self, approval: PendingApproval | None, key: tuple[str, str]) -> None:
        """Add (or with None remove) one pending approval."""
        ...
