"""A strategy's accounts, and moving it between paper and live (an order manager's part).

A strategy with a paper and a live account has one :class:`AccountDesk` for each: its
book there (orders and positions on that account), the guardian that counts that
account's equity, and the gateway's queues. New orders go to the desk of the strategy's
mode; an order placed before a mode change stays with its account until it ends.

:class:`ModeSwitcher` carries out a :class:`~actors.channels.ModeChange` while the
order manager decides nothing else:

- **promotion** (paper to live, its admin code already accepted by the authority): the
  paper record in the journal must meet ``[promotion]``
  (:func:`~actors.core.promotion.promotion_gaps`); else it is refused with every unmet
  criterion listed;
- **demotion** (live to paper, no code): the strategy's live orders are cancelled at the
  live account and, with ``flatten``, its live positions closed; then it switches.

Either way the new mode and its audit record are journaled together before it takes
effect, so a restart routes the strategy where the last change left it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from actors.channels import (
    CancelOrder,
    JournalSink,
    ModeChange,
    Publish,
    RiskDesk,
    SubmitOrder,
)
from actors.core.order_book import OrderBook
from actors.core.promotion import PaperRecord, promotion_gaps
from actors.core.rows import MODE_PREFIX, AuditRow, MetaRow, Row
from actors.core.settings import PromotionConfig
from protocol.codec import encode
from protocol.messages import AuditRecord, Reason
from protocol.topics import Topics

log = structlog.get_logger(__name__)

SETTLE_TIMEOUT_S: Final = 30.0
"""How long a demotion waits for the live orders' cancels (and a flatten's fills)."""
_POLL_S: Final = 0.05


@dataclass(frozen=True)
class AccountDesk:
    """One broker account as a strategy's order manager sees it."""

    account: str | None
    """The journal's name of the account: None for ``[broker]``, ``live`` for ``[broker.live]``."""
    book: OrderBook
    guardian: RiskDesk
    submissions: MemoryObjectSendStream[SubmitOrder]
    cancels: MemoryObjectSendStream[CancelOrder]
    admission: Callable[[int], float] | None = None
    refresh_quotes: Callable[[set[str]], Awaitable[None]] | None = None
    equity: Callable[[], float | None] | None = None
    """The account's equity now (a promotion measures the paper drawdown against it)."""


@dataclass(frozen=True)
class Promotion:
    """What a promotion is checked against."""

    rules: PromotionConfig
    allocation: float
    """The strategy's share of the paper account: its paper capital is this x equity."""
    record: Callable[[str, str | None], Awaitable[PaperRecord]]
    """The strategy's record on an account, read from the journal off the event loop."""


class ModeSwitcher:
    """Promotes and demotes one strategy (called by its order manager, one change at a time)."""

    def __init__(
        self,
        strategy_id: str,
        desks: Mapping[str, AccountDesk],
        journal: JournalSink,
        outbound: MemoryObjectSendStream[Publish],
        *,
        topics: Topics,
        promotion: Promotion | None,
        settle_timeout_s: float = SETTLE_TIMEOUT_S,
    ) -> None:
        """``desks`` by mode (``paper``, ``live``)."""
        self._sid = strategy_id
        self._desks = desks
        self._journal = journal
        self._outbound = outbound
        self._audit_topic = topics.audit
        self._promotion = promotion
        self._settle_timeout_s = settle_timeout_s

    async def change(self, change: ModeChange, current: str) -> str:
        """Carry out ``change``; returns the strategy's mode afterwards (audited either way)."""
        kind = "mode.promote" if change.target == "live" else "mode.demote"
        refusal = self._impossible(change, current)
        if refusal is not None:
            await self._record(kind, change, ok=False, detail=refusal)
            return current
        if change.target == "live":
            return await self._promote(change, current)
        return await self._demote(change)

    def _impossible(self, change: ModeChange, current: str) -> str | None:
        if change.target not in self._desks:
            return f"no {change.target} account is configured"
        if change.target == current:
            return f"strategy {self._sid!r} is already {current}"
        return None

    async def _promote(self, change: ModeChange, current: str) -> str:
        reasons = await self._unmet(self._desks["paper"])
        if reasons:
            await self._record(
                "mode.promote",
                change,
                ok=False,
                detail="refused: " + "; ".join(r.message for r in reasons),
                reasons=reasons,
            )
            return current
        how = f" ({change.authorised})" if change.authorised else ""
        await self._record(
            "mode.promote", change, ok=True, detail=f"promoted to live{how}", mode="live"
        )
        return "live"

    async def _unmet(self, paper: AccountDesk) -> list[Reason]:
        """Every criterion of ``[promotion]`` the paper record does not meet."""
        promotion = self._promotion
        assert promotion is not None  # a live desk comes with its promotion rules
        record = await promotion.record(self._sid, paper.account)
        equity = paper.equity() if paper.equity is not None else None
        capital = equity * promotion.allocation if equity is not None else None
        return promotion_gaps(
            promotion.rules, record, open_orders=len(paper.book.open), capital=capital
        )

    async def _demote(self, change: ModeChange) -> str:
        live = self._desks["live"]
        cancelled = len(live.book.open)
        for order in list(live.book.open.values()):
            await live.cancels.send(
                CancelOrder(strategy_id=self._sid, client_order_id=order.client_order_id)
            )
        still_open = await self._settle(live.book)
        detail = f"demoted to paper: {cancelled} live orders cancelled"
        if change.flatten and not still_open:
            closing = await flatten_desk(live, self._sid, self._journal)
            still_open = await self._settle(live.book)
            detail += f", {closing} live positions closed"
        if still_open:
            detail += f"; {still_open} live orders still open after {self._settle_timeout_s:g} s"
        if change.reason:
            detail += f" ({change.reason})"
        await self._record("mode.demote", change, ok=True, detail=detail, mode="paper")
        return "paper"

    async def _settle(self, book: OrderBook) -> int:
        """Wait until ``book`` has no open order (bounded); returns how many are still open."""
        with anyio.move_on_after(self._settle_timeout_s):
            # The manager's update task empties the book; the pure book has no event to wait on.
            while book.open:  # noqa: ASYNC110
                await anyio.sleep(_POLL_S)
        return len(book.open)

    async def _record(
        self,
        kind: str,
        change: ModeChange,
        *,
        ok: bool,
        detail: str,
        reasons: list[Reason] | None = None,
        mode: str | None = None,
    ) -> None:
        """Journal the audit record (with the new mode, if any) before it takes effect."""
        record = AuditRecord(
            type=kind,
            ok=ok,
            detail=detail,
            ts=time.time(),
            scope="strategy",
            strategy_id=self._sid,
            source=change.source,
            operator=change.operator,
            reasons=reasons,
        )
        rows: list[Row] = [AuditRow(record=record)]
        if mode is not None:
            rows.insert(0, MetaRow(key=MODE_PREFIX + self._sid, value=mode))
        await self._journal.write(*rows, urgent=True)
        log.warning(kind, strategy_id=self._sid, ok=ok, detail=detail, source=change.source)
        await self._outbound.send(Publish(topic=self._audit_topic, payload=encode(record)))


async def flatten_desk(desk: AccountDesk, strategy_id: str, journal: JournalSink) -> int:
    """Market orders closing the strategy's positions on ``desk``'s account; how many.

    Journaled first, then sent past the kill gate (``bypass_gate``): closing is what an
    engage with ``flatten`` asks for.
    """
    now = time.time()
    orders = desk.book.flatten(now)
    if not orders:
        return 0
    await journal.write(*(row for _record, row in orders))
    for record, _row in orders:
        log.warning(
            "kill.flatten",
            strategy_id=strategy_id,
            account=desk.account,
            symbol=record.intent.symbol,
            qty=record.intent.qty,
        )
        await desk.submissions.send(
            SubmitOrder(
                strategy_id=strategy_id,
                client_order_id=record.client_order_id,
                intent=record.intent,
                accepted_at=now,
                bypass_gate=True,
            )
        )
    return len(orders)
