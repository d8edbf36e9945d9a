"""The order state machine under hypothesis: no illegal state, fills exact, finals final."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors.base import TradingHalt
from actors.channels import OrderUpdate
from actors.core.book import FINAL, TRANSITIONS, OrderRecord, StrategyBook, legal
from actors.core.order_book import OrderBook
from actors.core.rows import Row
from actors.core.trading_state import KillGate
from actors.mode_switch import AccountDesk
from actors.order_manager import OrderManager
from actors.risk_guardian import RiskGuardian
from daemon.config import builtin_defaults
from daemon.journal import Journal, JournalWriter
from protocol.messages import AuditRecord, FillEvent, OrderEvent, OrderIntent, OrderStatus
from protocol.topics import Topics

STATUSES: list[OrderStatus] = list(TRANSITIONS)
REACHABLE_FROM_PENDING: set[OrderStatus] = set(STATUSES)


def make_manager(tmp: Path) -> tuple[OrderManager, list[AuditRecord]]:
    halt = TradingHalt()
    journal = Journal(tmp / "state.db")
    writer = JournalWriter(journal, halt=halt)
    audits: list[AuditRecord] = []
    streams: list[Any] = []

    def pair(size: int = 8) -> tuple[Any, Any]:
        send, receive = anyio.create_memory_object_stream[Any](size)
        streams.extend([send, receive])
        return send, receive

    config = builtin_defaults()
    gate = KillGate()
    topics = Topics("sm")
    book = OrderBook("demo", StrategyBook())
    guardian = RiskGuardian(
        books={"demo": book},
        risk=config.risk,
        strategies=config.strategies,
        broker_mode=config.broker.mode,
        broker_kind=config.broker.kind,
        gate=gate,
        topics=topics,
        outbound=pair()[0],
        version="t",
        halt=halt,
    )
    manager = OrderManager(
        strategy_id="demo",
        intents=pair()[1],
        kill_changes=pair()[1],
        updates=pair()[1],
        outbound=pair()[0],
        journal=writer,
        desks={
            "paper": AccountDesk(
                account=None,
                book=book,
                guardian=guardian,
                submissions=pair()[0],
                cancels=pair()[0],
            )
        },
        mode="paper",
        gate=gate,
        topics=topics,
        broker_ready=anyio.Event(),
        audit=audits.append,
        halt=halt,
    )
    return manager, audits


class OrderMachine(RuleBasedStateMachine):
    """Random broker reports against orders; the manager must keep every invariant."""

    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory()
        self.manager, self.audits = make_manager(Path(self._tmp.name))
        self.history: dict[str, list[OrderStatus]] = {}
        self.qty: dict[str, float] = {}
        self.fills: dict[str, float] = {}

    def teardown(self) -> None:
        self._tmp.cleanup()

    @initialize(count=st.integers(1, 4))
    def orders(self, count: int) -> None:
        for n in range(count):
            coid = f"demo-o{n}"
            qty = float(2 + n)
            intent = OrderIntent(intent_id=f"o{n}", symbol="AAPL", side="buy", qty=qty)
            self.manager.orders[coid] = OrderRecord(
                client_order_id=coid, intent_id=f"o{n}", intent=intent, status="pending"
            )
            self.history[coid] = ["pending"]
            self.qty[coid] = qty
            self.fills[coid] = 0.0

    @rule(
        pick=st.integers(0, 3),
        status=st.sampled_from(STATUSES),
        fill_fraction=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
        source=st.sampled_from(["rest", "stream", "reconcile", "lookup"]),
    )
    def report(self, pick: int, status: OrderStatus, fill_fraction: float, source: str) -> None:
        coids = sorted(self.history)
        coid = coids[pick % len(coids)]
        order = self.manager.orders[coid]
        before = order.status
        before_fill = order.filled_qty
        # A broker never reports less filled than before; sometimes it repeats itself.
        cum = max(before_fill, round(self.qty[coid] * fill_fraction, 6))
        if status == "filled":
            cum = self.qty[coid]
        writes: list[Row] = []
        events: list[OrderEvent | FillEvent] = []
        update = OrderUpdate(
            client_order_id=coid,
            status=status,
            broker_order_id="b-" + coid,
            filled_qty=cum,
            filled_avg_price=100.0 if cum else None,
            source=source,
        )
        audits_before = len(self.audits)
        self.manager._apply(update, writes, events)
        after = order.status
        if status != before and not legal(before, status):
            # Illegal: not applied, audited.
            assert after == before
            assert order.filled_qty == before_fill
            assert len(self.audits) == audits_before + 1
        else:
            assert after == status
        if before in FINAL:
            assert after == before
            assert order.filled_qty == before_fill
        if after != before:
            self.history[coid].append(after)
        self.fills[coid] += sum(e.qty for e in events if isinstance(e, FillEvent))

    @invariant()
    def every_path_follows_the_table(self) -> None:
        for path in self.history.values():
            for current, nxt in itertools.pairwise(path):
                assert legal(current, nxt), path

    @invariant()
    def fills_add_up_and_never_exceed_qty(self) -> None:
        total = 0.0
        for coid, order in self.manager.orders.items():
            assert order.filled_qty <= self.qty[coid] + 1e-9
            assert abs(self.fills[coid] - order.filled_qty) < 1e-9
            assert order.status in REACHABLE_FROM_PENDING
            total += order.filled_qty
        position = self.manager.positions.get("AAPL")
        assert abs((position.qty if position else 0.0) - total) < 1e-9


OrderMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestOrderMachine = OrderMachine.TestCase


def test_final_states_have_no_exit() -> None:
    for status in FINAL:
        assert TRANSITIONS[status] == frozenset()
    assert legal("pending", "submitted")
    assert not legal("filled", "cancelled")
    assert not legal("partially_filled", "accepted")
