"""The risk guardian: pre-trade checks, the portfolio view and the drawdown circuit breaker.

Order managers call :meth:`RiskGuardian.evaluate` synchronously right before
journaling a decision. It runs on the event loop without awaiting, so a check
and what it records (rate buckets, duplicate memory) are atomic with respect to
every other strategy. The limits themselves are pure functions
(:mod:`actors.core.risk_limits`, :mod:`actors.core.intent_gates`); the breaker is a
pure state machine (:mod:`actors.core.circuit_breaker`); the account view and what
is published are pure too (:mod:`actors.core.risk_account`,
:mod:`actors.core.risk_reports`).

The guardian's own task takes broker status (equity, positions, clock) from the
gateway, runs the breaker, journals every circuit change before it takes effect,
engages the global kill switch when the circuit opens, starts a new session at
the market open (start-of-day equity from the broker), and publishes the
retained daemon state and the pending-approval list.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from actors.base import Actor, TradingHalt
from actors.channels import BrokerStatus, InboundKillCommand, JournalSink, Publish
from actors.core.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerState,
    SessionState,
    Transition,
    apply_account_poll,
)
from actors.core.intent_gates import gate_reasons
from actors.core.reconciliation import DriftWatch, marked_equity
from actors.core.risk_account import (
    MarkBasis,
    net_quantities,
    portfolio_view,
    sum_costs,
    symbols_to_mark,
)
from actors.core.risk_limits import (
    DuplicateDetector,
    EffectiveLimits,
    IntentRateLimit,
    PortfolioView,
    Quote,
    StrategyView,
    check_order,
    effective_limits,
    order_terms,
    usable_quote,
)
from actors.core.risk_reports import approval_list, daemon_state
from actors.core.rows import AuditRow, MetaRow, risk_keys
from actors.core.settings import RiskConfig, StrategyConfig
from actors.core.trading_state import KillGate
from protocol.codec import encode
from protocol.messages import (
    AccountState,
    AuditRecord,
    BrokerKind,
    CircuitState,
    DaemonState,
    Engage,
    OrderIntent,
    PendingApproval,
    Reason,
    TradingMode,
)
from protocol.reasons import ReasonCode
from protocol.topics import Topics

log = structlog.get_logger(__name__)

MARK_INTERVAL_S: Final = 2.0
"""Between account polls, held symbols are re-quoted and the equity re-marked this often
(one latest-quotes request to the data API, whose budget is apart from trading's)."""


class StrategyBookView(Protocol):
    """What the guardian reads of a strategy's book (:class:`~actors.core.order_book.OrderBook`)."""

    def realized_pnl(self) -> float:
        """Realized P&L since the strategy started trading."""
        ...

    def pending_opening(self, mark: Callable[[str], float | None]) -> dict[str, float]:
        """Symbol to notional of this strategy's open opening orders, at ``mark`` prices."""
        ...

    def held_positions(self) -> Mapping[str, tuple[float, float]]:
        """Symbol to (signed qty, average price) of this strategy, from its fills."""
        ...

    def position_costs(self) -> Mapping[str, tuple[float, float]]:
        """Symbol to (signed qty, net cash invested) of this strategy, from its fills."""
        ...

    def open_symbols(self) -> set[str]:
        """Symbols with an order of this strategy not yet final."""
        ...


@dataclass(frozen=True)
class AccountRole:
    """A guardian's account, when the daemon has a paper and a live account.

    Each account has a guardian of its own: equity, drawdowns, circuit, positions and
    capital deployed are counted per account. The ``[broker]`` account's guardian
    publishes the daemon state (with every account's figures) and the approvals.
    """

    mode: str
    """``paper`` or ``live``."""
    column: str | None
    """The journal's name of the account (None: ``[broker]``)."""
    strategies: Callable[[], Iterable[str]]
    """The strategies trading on this account now."""
    publishes: bool
    accounts: Callable[[], dict[str, AccountState]] | None = None
    on_circuit_open: Callable[[], Awaitable[None]] | None = None
    """Instead of engaging the global switch: act on this account's strategies only."""


class RiskGuardian(Actor):
    """Decides whether an order intent may trade, and watches the account.

    Inputs: ``evaluate()`` calls from order managers; broker status from the gateway;
    the kill gate and halt latch; approval requests from order managers.
    Outputs: lists of :class:`Reason` (empty means pass); journaled, audited circuit
    changes; a global engage when the circuit opens; retained daemon state and
    ``P/v1/approval/pending``.
    Edge cases: a halted daemon rejects everything with ``TRADING_HALTED``; an
    intent whose ``ts`` is older (or further ahead) than ``max_intent_age_s`` is
    ``STALE_INTENT``; before the first account figures arrive, equity-relative
    limits reject (equity unknown is treated as 0). Fail-closed: if it crashes,
    trading halts.
    """

    fail_closed = True

    def __init__(
        self,
        *,
        risk: RiskConfig,
        strategies: Mapping[str, StrategyConfig],
        broker_mode: TradingMode,
        broker_kind: BrokerKind,
        gate: KillGate,
        topics: Topics,
        outbound: MemoryObjectSendStream[Publish],
        version: str,
        halt: TradingHalt,
        journal: JournalSink | None = None,
        kill_commands: MemoryObjectSendStream[InboundKillCommand] | None = None,
        circuit: CircuitBreakerState | None = None,
        session: SessionState | None = None,
        audit: Callable[[AuditRecord], None] | None = None,
        books: Mapping[str, StrategyBookView] | None = None,
        quotes: Mapping[str, Quote] | None = None,
        refresh_quotes: Callable[[set[str]], Awaitable[None]] | None = None,
        account: AccountRole | None = None,
    ) -> None:
        """Wire it: ``books``, ``quotes`` read only; ``account``: one of two accounts."""
        super().__init__("risk_guardian" + (f".{account.mode}" if account else ""), halt=halt)
        self.account = account
        self._risk, self._strategies, self._gate = risk, strategies, gate
        self._broker_mode, self._broker_kind = broker_mode, broker_kind
        self._topics, self._outbound, self._version = topics, outbound, version
        self._halt_latch = halt
        self._journal = journal
        self._kill_commands = kill_commands
        self._audit = audit
        self._drift = DriftWatch()
        self.breaker = CircuitBreaker(risk, circuit)
        self.session = session or SessionState()
        self.limits: dict[str, EffectiveLimits] = {
            sid: effective_limits(risk, strategy) for sid, strategy in strategies.items()
        }
        self._rates = IntentRateLimit(
            {sid: lim.max_intents_per_second for sid, lim in self.limits.items()}
        )
        self._duplicates = DuplicateDetector()
        self.broker_connected = False
        self.equity: float | None = None  # the broker's, at the last poll
        self.positions: dict[str, tuple[float, float]] = {}
        self._basis: MarkBasis | None = None
        self.refresh_quotes = refresh_quotes
        self.quotes: Mapping[str, Quote] = quotes if quotes is not None else {}
        self.books: Mapping[str, StrategyBookView] = books if books is not None else {}
        self.abstentions: dict[str, int] = dict.fromkeys(strategies, 0)
        self.pending_approvals: dict[tuple[str, str], PendingApproval] = {}
        self.external_orders: list[str] = []
        self._status: BrokerStatus | None = None
        self._state_changed = anyio.Event()
        self._status_arrived = anyio.Event()
        self._breaker_lock = anyio.Lock()  # one change of the breaker at a time
        halt.subscribe(lambda _reason: self.state_changed())

    # ------------------------------------------------------------------ checks

    def state_changed(self) -> None:
        """Ask the guardian to re-publish the daemon state."""
        self._state_changed.set()

    def quote(self, symbol: str, now: float) -> Quote | None:
        """A usable quote for ``symbol`` from the gateway's cache, or None."""
        return usable_quote(self.quotes.get(symbol), now, self._risk.quote_max_age_s)

    @property
    def reduce_only(self) -> bool:
        """Whether the circuit breaker's warning allows only orders that reduce a position."""
        return self.breaker.reduce_only and self._risk.reduce_only_on_warn

    def mid(self, symbol: str) -> float | None:
        """The mid of the cached quote of ``symbol`` (however old), or None."""
        quote = self.quotes.get(symbol)
        return quote.mid if quote is not None else None

    def note_external_order(self, client_order_id: str) -> None:
        """An order of one of our strategies is at the broker but not in the journal."""
        self.external_orders.append(client_order_id)
        self.state_changed()

    def portfolio_view(self) -> PortfolioView:
        """The account as the limits see it (:func:`~actors.core.risk_account.portfolio_view`).

        Each symbol counts with the larger of the strategies' books (moved by every fill)
        and the broker's last account poll (every ``broker.account_poll_s``, with what no
        strategy owns): the limits never see less exposure than there is.
        """
        books = list(self.books.values())
        pending = [book.pending_opening(self.mid) for book in books]
        held = [book.held_positions() for book in books]
        return portfolio_view(
            pending=pending,
            held=held,
            broker_positions=self.positions,
            quotes=self.quotes,
            equity=self.current_equity() or 0.0,
            start_of_day_equity=self.breaker.start_of_day_equity,
            peak_equity=self.breaker.peak_equity,
        )

    def session_pnl_base(self, strategy_id: str) -> float:
        """Realized P&L of the strategy when the session began."""
        return self.session.realized_base.get(strategy_id, 0.0)

    def gates(
        self,
        strategy_id: str,
        intent: OrderIntent,
        now: float,
        received_at: float | None = None,
    ) -> list[Reason]:
        """The checks that never depend on prices: halt, kill switches, staleness.

        Staleness counts twice: the intent's own ``ts`` against now, and how long it
        waited here (:func:`~actors.core.intent_gates.gate_reasons`).
        """
        return gate_reasons(
            strategy_id,
            intent,
            now=now,
            received_at=received_at,
            halt_reason=self._halt_latch.reason,
            blocked=self._gate.blocked(strategy_id),
            max_intent_age_s=self.limits[strategy_id].max_intent_age_s,
        )

    def evaluate(
        self,
        strategy_id: str,
        intent: OrderIntent,
        now: float,
        strategy_view: StrategyView | None = None,
        received_at: float | None = None,
    ) -> list[Reason]:
        """Every limit ``intent`` breaks; empty when it may trade."""
        limits = self.limits[strategy_id]
        reasons = self.gates(strategy_id, intent, now, received_at)
        rate = self._rates.check(strategy_id, now)
        if rate is not None:
            reasons.append(rate)
        duplicate = self._duplicates.check(
            strategy_id, intent, now=now, window_s=limits.duplicate_window_s
        )
        if duplicate is not None:
            reasons.append(duplicate)
        view = strategy_view or StrategyView(gross_exposure=0.0, session_pnl=0.0)
        if self._gate.paused(strategy_id) and not view.paused:
            view = msgspec.structs.replace(view, paused=True)
        reasons += check_order(
            intent,
            limits=limits,
            strategy_view=view,
            portfolio=self.portfolio_view(),
            quote=self.quote(intent.symbol, now),
            now=now,
            circuit=self.breaker.state,
            reduce_only=self.reduce_only,
        )
        if any(r.code is ReasonCode.LOW_CONFIDENCE for r in reasons):
            self.abstentions[strategy_id] = self.abstentions.get(strategy_id, 0) + 1
        if not reasons:
            self._duplicates.record(
                strategy_id, intent, now=now, window_s=limits.duplicate_window_s
            )
        return reasons

    def needs_approval(
        self, strategy_id: str, intent: OrderIntent, view: StrategyView, now: float
    ) -> float | None:
        """The notional that makes ``intent`` wait for a person, or None."""
        threshold = self.limits[strategy_id].approval_above_notional
        if threshold is None:
            return None
        terms = order_terms(intent, strategy_view=view, quote=self.quote(intent.symbol, now))
        notional = terms.notional
        if notional is not None and notional > threshold:
            return notional
        return None

    def recheck_after_approval(
        self, strategy_id: str, intent: OrderIntent, now: float, view: StrategyView
    ) -> list[Reason]:
        """Limits again at approval time (the market moved); no rate or duplicate count."""
        reasons = self.gates(strategy_id, msgspec.structs.replace(intent, ts=None), now)
        reasons += check_order(
            intent,
            limits=self.limits[strategy_id],
            strategy_view=view,
            portfolio=self.portfolio_view(),
            quote=self.quote(intent.symbol, now),
            now=now,
            circuit=self.breaker.state,
            reduce_only=self.reduce_only,
        )
        return reasons

    def set_pending(self, approval: PendingApproval | None, key: tuple[str, str]) -> None:
        """Add (or with None remove) one pending approval; the list is re-published."""
        if approval is None:
            self.pending_approvals.pop(key, None)
        else:
            self.pending_approvals[key] = approval
        self.state_changed()

    # ------------------------------------------------------------------ broker status

    def on_broker_status(self, status: BrokerStatus) -> None:
        """Called by the gateway (synchronously); the guardian's task does the rest."""
        self.broker_connected = status.connected
        if status.positions is not None:
            self.positions = status.positions
            self._watch_drift(status.positions)
        if status.equity is not None:
            self.equity = status.equity
            self._basis = (
                MarkBasis(status.equity, dict(status.positions), self._book_costs())
                if status.positions is not None
                else None
            )
            self._status = status
            self._status_arrived.set()
        self.state_changed()

    def _book_costs(self) -> dict[str, tuple[float, float]]:
        """Every book's (shares, net cash invested), summed by symbol."""
        return sum_costs(book.position_costs() for book in self.books.values())

    def current_equity(self, now: float | None = None) -> float | None:
        """Equity now: the last poll's, marked to the latest quotes and fills since.

        The broker's own figure is taken as is when a poll arrives; between polls,
        what the books filled and what prices did since move it (:func:`marked_equity`).
        """
        basis = self._basis
        if basis is None:
            return self.equity
        at = time.time() if now is None else now

        def mark(symbol: str) -> float | None:
            quote = self.quote(symbol, at)
            return quote.mid if quote is not None else None

        return marked_equity(basis.equity, basis.positions, basis.books, self._book_costs(), mark)

    def _watch_drift(self, positions: Mapping[str, tuple[float, float]]) -> None:
        """The poll reconciles, it does not feed the limits: audit unexplained changes."""
        books = net_quantities(book.held_positions() for book in self.books.values())
        busy: set[str] = set()
        for book in self.books.values():
            busy |= book.open_symbols()
        broker = {symbol: qty for symbol, (qty, _value) in positions.items()}
        log.debug("ledger.poll", broker=broker, books=books, busy=sorted(busy))
        for drift in self._drift.observe(broker, books, busy):
            log.warning("ledger.drift", symbol=drift.symbol, detail=drift.describe())
            if self._audit is not None:
                self._audit(
                    AuditRecord(
                        type="ledger.drift",
                        ok=False,
                        detail=drift.describe(),
                        ts=time.time(),
                        scope="global",
                        source="broker_gateway",
                    )
                )

    async def _apply_status(self, status: BrokerStatus) -> None:
        async with self._breaker_lock:
            await self._apply_status_locked(status)

    async def _apply_status_locked(self, status: BrokerStatus) -> None:
        assert status.equity is not None
        candidate, session, transitions = apply_account_poll(
            self._risk,
            self.breaker,
            self.session,
            equity=status.equity,
            market_open=status.market_open,
            broker_session=status.session,
            realized_pnl=lambda: {sid: book.realized_pnl() for sid, book in self.books.items()},
            now=time.time(),
        )
        if session is not self.session:
            log.info("risk.new_session", session=status.session, start_equity=status.equity)
        if candidate.snapshot() == self.breaker.snapshot() and session is self.session:
            return
        await self._commit(candidate, session, transitions)

    async def _commit(
        self, candidate: CircuitBreaker, session: SessionState, transitions: list[Transition]
    ) -> None:
        """Journal the breaker (and audit its transitions) before they take effect."""
        records = [t.audit_record() for t in transitions]
        if self.account is not None:
            where = f"{self.account.mode} account: "
            records = [msgspec.structs.replace(r, detail=where + r.detail) for r in records]
        circuit_key, session_key = risk_keys(self.account.column if self.account else None)
        if self._journal is not None:
            await self._journal.write(
                MetaRow(key=circuit_key, value=msgspec.json.encode(candidate.snapshot()).decode()),
                MetaRow(key=session_key, value=msgspec.json.encode(session).decode()),
                *(AuditRow(record=r) for r in records),
            )
        self.breaker = candidate
        self.session = session
        for record in records:
            log.warning("circuit.transition", detail=record.detail)
            await self._outbound.send(Publish(topic=self._topics.audit, payload=encode(record)))
        opened = any(t.after == "open" for t in transitions)
        if opened and self.account is not None and self.account.on_circuit_open is not None:
            await self.account.on_circuit_open()  # this account's strategies only
        elif opened and self._kill_commands is not None:
            await self._kill_commands.send(
                InboundKillCommand(
                    command=Engage(
                        scope="global", reason="circuit_breaker", source="circuit_breaker"
                    ),
                    origin="circuit_breaker",
                    received_at=time.time(),
                )
            )
        self.state_changed()

    async def reset_circuit(self, operator: str | None) -> str:
        """Close the circuit after the authority checked the admin code; returns what happened."""
        async with self._breaker_lock:
            candidate = CircuitBreaker(self._risk, self.breaker.snapshot())
            transitions = candidate.reset(time.time(), operator=operator)
            if not transitions:
                return "circuit was already closed"
            await self._commit(candidate, self.session, transitions)
            return transitions[-1].reason

    # ------------------------------------------------------------------ state

    def account_state(self) -> AccountState:
        """This account's figures for the daemon state's ``accounts``."""
        return AccountState(
            broker=self._broker_kind,
            broker_connected=self.broker_connected,
            circuit=self.breaker.state,
            equity=self.equity,
            daily_drawdown=self.breaker.daily_drawdown,
            total_drawdown=self.breaker.total_drawdown,
            strategies=sorted(self.account.strategies()) if self.account is not None else [],
        )

    def daemon_state(self) -> DaemonState:
        """The retained daemon state message."""
        state = daemon_state(
            version=self._version,
            mode=self._broker_mode,
            broker=self._broker_kind,
            broker_connected=self.broker_connected,
            breaker=self.breaker,
            equity=self.equity,
            halt_reason=self._halt_latch.reason,
            strategies=self._strategies,
            session=self.session,
            external_orders=self.external_orders,
            ts=time.time(),
        )
        if self.account is None or self.account.accounts is None:
            return state
        return msgspec.structs.replace(state, accounts=self.account.accounts())

    @property
    def circuit(self) -> CircuitState:
        """The breaker's state."""
        return self.breaker.state

    async def _run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_status)
            tg.start_soon(self._mark_loop)
            last_pending: bytes | None = None
            while self.account is not None and not self.account.publishes:
                await anyio.sleep_forever()  # the [broker] account's guardian publishes
            while True:
                await self._outbound.send(
                    Publish(
                        topic=self._topics.daemon_state,
                        payload=encode(self.daemon_state()),
                        retain=True,
                    )
                )
                pending = encode(approval_list(self.pending_approvals.values(), 0.0))
                if pending != last_pending:
                    last_pending = pending
                    body = approval_list(self.pending_approvals.values(), time.time())
                    await self._outbound.send(
                        Publish(
                            topic=self._topics.approval_pending, payload=encode(body), retain=True
                        )
                    )
                with anyio.move_on_after(30):
                    await self._state_changed.wait()
                self._state_changed = anyio.Event()
                await anyio.sleep(0.05)  # coalesce bursts of changes into one publish

    async def _mark_loop(self) -> None:
        """Between polls, the drawdowns follow the marked equity (:meth:`current_equity`)."""
        while True:
            await anyio.sleep(MARK_INTERVAL_S)
            basis = self._basis
            if basis is None:
                continue
            held = symbols_to_mark(basis, self._book_costs())
            if held and self.refresh_quotes is not None:
                await self.refresh_quotes(held)
            async with self._breaker_lock:
                equity = self.current_equity()
                if equity is None or basis is not self._basis:
                    continue  # a poll arrived meanwhile: its own figure is applied
                candidate = CircuitBreaker(self._risk, self.breaker.snapshot())
                transitions = candidate.update(equity, time.time())
                before = self.breaker.snapshot()
                if transitions or candidate.snapshot().peak_equity != before.peak_equity:
                    await self._commit(candidate, self.session, transitions)
                else:
                    self.breaker = candidate  # the last equity only: not worth an fsync

    async def _watch_status(self) -> None:
        while True:
            await self._status_arrived.wait()
            self._status_arrived = anyio.Event()
            status = self._status
            if status is not None and status.equity is not None:
                await self._apply_status(status)
