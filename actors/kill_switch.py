"""The kill-switch authority: global and per-strategy switches, persisted and audited.

Engaging needs no code and is idempotent; releasing needs an admin code. Every
change is journaled before it takes effect, then published (retained state and
an audit record) and announced to the order managers and the broker gateway,
which cancel the scope's open orders (and flatten when asked).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, assert_never

import anyio
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.admin_code import AdminCodeVerifier, Verdict
from actors.base import Actor, TradingHalt
from actors.channels import (
    ApprovalDecision,
    InboundKillCommand,
    JournalSink,
    KillChanged,
    KillSettled,
    ModeChange,
    Publish,
    receive_batch,
)
from actors.core.kill_rules import (
    Privileged,
    authorised_detail,
    describe,
    lockout_caller,
    nothing_to_authorise,
    promotion,
    queue_full,
    refusal,
    switch_row,
)
from actors.core.rows import TOTP_KEY, AuditRow, MetaRow, Row
from actors.core.trading_state import GLOBAL, PAUSE_PREFIX, KillGate
from protocol.codec import DecodeFailure, encode
from protocol.messages import (
    Approve,
    AuditRecord,
    Demote,
    Deny,
    Disengage,
    Engage,
    KillState,
    Pause,
    Promote,
    ResetCircuit,
    Resume,
    SwitchState,
)
from protocol.topics import Topics

log = structlog.get_logger(__name__)

PRIVILEGED_QUEUE: Final = 256
"""Commands waiting for a code check; more are refused (and audited) at once."""
REFUSALS_QUEUE: Final = 4096
"""Refusals waiting to be journaled and published (each group in one commit)."""


class KillSwitchAuthority(Actor):
    """Holds the switches and decides every engage and release.

    Inputs: kill commands (MQTT JSON and plain text, the CLI through MQTT,
    internal sources such as the circuit breaker), heartbeats (dead-man check),
    trigger presses (IoT buttons) and Home Assistant messages.
    Outputs: journal rows, retained ``P/v1/kill/state``, ``P/v1/audit`` records,
    and :class:`KillChanged` to every listener.

    Edge cases: retained trigger or release messages are ignored (a restart must
    not replay a press or a code); a trigger never releases; plain text never
    releases; a strategy scope must name a configured strategy; every refused
    release is audited without the code. Fail-closed: if this actor crashes,
    trading halts.
    """

    fail_closed = True

    def __init__(
        self,
        *,
        gate: KillGate,
        journal: JournalSink,
        verifier: AdminCodeVerifier,
        topics: Topics,
        strategies: frozenset[str],
        commands: MemoryObjectReceiveStream[InboundKillCommand],
        outbound: MemoryObjectSendStream[Publish],
        listeners: Sequence[Callable[[KillChanged], Awaitable[None]]],
        settlements: MemoryObjectReceiveStream[KillSettled] | None = None,
        per_user_lockout: bool = False,
        reset_circuit: Callable[[str | None], Awaitable[str]] | None = None,
        approvals: Mapping[str, Callable[[ApprovalDecision | ModeChange], Awaitable[None]]]
        | None = None,
        is_pending: Callable[[str, str], bool] | None = None,
        settlement_sources: int = 1,
        halt: TradingHalt,
    ) -> None:
        """Wire the authority; see the class docstring."""
        super().__init__("kill_switch", halt=halt)
        self.gate = gate
        self._journal = journal
        self._verifier = verifier
        self._topics = topics
        self._strategies = strategies
        self._commands = commands
        self._outbound = outbound
        self._listeners = listeners
        self._settlements = settlements
        self._per_user_lockout = per_user_lockout
        # Privileged commands (code checks: scrypt, ~0.1 s) run one at a time on their
        # own task, so an engage never waits behind one.
        self._privileged_send, self._privileged_receive = anyio.create_memory_object_stream[
            InboundKillCommand
        ](PRIVILEGED_QUEUE)
        # Refusals change nothing: their own task journals them in groups, in the normal
        # lane, so a flood of bad commands never puts a commit ahead of an engage.
        self._refusals, self._refusals_receive = anyio.create_memory_object_stream[AuditRecord](
            REFUSALS_QUEUE
        )
        self._engages: dict[str, int] = {}
        self._reset_circuit = reset_circuit
        self._approvals = dict(approvals or {})
        # Whether (strategy, intent) waits for a person: approving anything else is refused.
        self._is_pending = is_pending
        self._lock = anyio.Lock()
        self._settlement_sources = settlement_sources
        self._settled_parts: dict[str, int] = {}

    async def _run(self) -> None:
        await self._publish_state()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._consume_privileged)
            tg.start_soon(self._record_refusals)
            if self._settlements is not None:
                tg.start_soon(self._consume_settlements)
            async for inbound in self._commands:
                await self._route_command(inbound)
            tg.cancel_scope.cancel()

    async def _route_command(self, inbound: InboundKillCommand) -> None:
        """Engage at once; queue commands that need a code check for their own task."""
        match inbound.command:
            case (
                Disengage() | Resume() | ResetCircuit() | Approve() | Deny() | Promote() as command
            ):
                try:
                    self._privileged_send.send_nowait(inbound)
                except anyio.WouldBlock:
                    await self._audit(
                        queue_full(command, inbound.origin, PRIVILEGED_QUEUE, time.time())
                    )
            case _:
                await self._handle_command(inbound)

    async def _consume_privileged(self) -> None:
        async for inbound in self._privileged_receive:
            await self._handle_command(inbound)

    async def _consume_settlements(self) -> None:
        """The gateway reports that an engage has settled: POSTs returned, orders cancelled."""
        assert self._settlements is not None
        async for settled in self._settlements:
            key = settled.strategy_id or GLOBAL
            self._settled_parts[key] = self._settled_parts.get(key, 0) + 1
            if self._settled_parts[key] < self._settlement_sources:
                continue  # another account's gateway has not settled yet
            self._settled_parts[key] = 0
            async with self._lock:
                current = self.gate.switch(key)
                if not current.engaged or current.settled:
                    continue
                record = AuditRecord(
                    type="kill.settled",
                    ok=True,
                    scope="strategy" if settled.strategy_id else GLOBAL,
                    strategy_id=settled.strategy_id,
                    source="broker_gateway",
                    detail=settled.detail,
                    ts=time.time(),
                )
                await self._journal.write(AuditRow(record=record), urgent=True)
                self.gate.set_switch(key, msgspec.structs.replace(current, settled=True))
                log.warning("kill.settled", scope=record.scope, strategy_id=settled.strategy_id)
                await self._publish_state()
                await self._publish_audit(record)

    # ------------------------------------------------------------------ commands

    async def _handle_command(self, inbound: InboundKillCommand) -> None:
        command = inbound.command
        match command:
            case DecodeFailure():
                await self._audit(
                    AuditRecord(
                        type="kill.invalid_command",
                        ok=False,
                        detail=command.message,
                        ts=time.time(),
                        source=inbound.origin,
                    )
                )
            case Engage():
                await self.engage(
                    strategy_id=command.strategy_id if command.scope == "strategy" else None,
                    reason=command.reason or "engaged",
                    source=command.source or inbound.origin,
                    flatten=command.flatten,
                )
            case Disengage():
                await self.disengage(
                    strategy_id=command.strategy_id if command.scope == "strategy" else None,
                    code=command.code,
                    operator=inbound.user or command.operator,
                    source=command.source or inbound.origin,
                    caller=self._caller(inbound),
                )
            case Pause():
                await self.pause(
                    command.strategy_id,
                    reason=command.reason or "paused",
                    source=command.source or inbound.origin,
                )
            case Demote():
                await self._demote(command, source=command.source or inbound.origin)
            case Resume() | ResetCircuit() | Approve() | Deny() | Promote():
                if inbound.user is not None:
                    command = msgspec.structs.replace(command, operator=inbound.user)
                await self._privileged(
                    command,
                    inbound.origin,
                    caller=self._caller(inbound),
                )
            case _:
                assert_never(command)

    async def engage(
        self, *, strategy_id: str | None, reason: str, source: str, flatten: bool = False
    ) -> bool:
        """Engage a switch (None: global). Idempotent; journaled before it takes effect.

        Returns:
            False when refused (unknown strategy), else True.
        """
        key = strategy_id or GLOBAL
        now = time.time()
        known = strategy_id is None or strategy_id in self._strategies
        if known:
            self._close_gate(key, strategy_id, reason=reason, source=source, now=now)
        async with self._lock:
            if not known:
                await self._refuse(
                    "kill.engage",
                    strategy_id,
                    source=source,
                    detail=f"unknown strategy {strategy_id!r}",
                    now=now,
                )
                return False
            current = self.gate.switch(key)
            fresh = current.since == now and current.source == source
            state = current if current.engaged else self._engaged(reason, source, now)
            detail = "already engaged" if current.engaged and not fresh else f"engaged: {reason}"
            record = AuditRecord(
                type="kill.engage",
                ok=True,
                scope="strategy" if strategy_id else GLOBAL,
                strategy_id=strategy_id,
                source=source,
                detail=detail + (" (flatten)" if flatten else ""),
                ts=now,
            )
            await self._journal.write(switch_row(key, state), AuditRow(record=record), urgent=True)
            self.gate.set_switch(key, state)
            log.warning(
                "kill.engaged",
                strategy_id=strategy_id,
                reason=reason,
                source=source,
                flatten=flatten,
            )
            change = KillChanged(
                strategy_id=strategy_id, engaged=True, flatten=flatten, reason=reason
            )
            await self._announce(record, change)
            return True

    @staticmethod
    def _engaged(reason: str, source: str, now: float) -> SwitchState:
        return SwitchState(engaged=True, since=now, reason=reason, source=source, settled=False)

    def _close_gate(
        self, key: str, strategy_id: str | None, *, reason: str, source: str, now: float
    ) -> None:
        """Close the gate at once, before any await, and count the engage.

        From here on no order of the scope passes a gate check (the gateway checks right
        before every POST). Journaling and publishing follow; a crash before the journal
        commit loses an engage that was never confirmed, nothing more. A release whose
        code check is still running sees the count move and loses to this engage.
        """
        if not self.gate.switch(key).engaged:
            self.gate.set_switch(key, self._engaged(reason, source, now))
            self._settled_parts[key] = 0
            log.warning("kill.gate_closed", strategy_id=strategy_id, source=source)
        self._engages[key] = self._engages.get(key, 0) + 1

    def _caller(self, inbound: InboundKillCommand) -> str:
        return lockout_caller(inbound, per_user=self._per_user_lockout)

    async def disengage(
        self,
        *,
        strategy_id: str | None,
        code: str | None,
        operator: str | None,
        source: str,
        caller: str = "",
    ) -> bool:
        """Release a switch if ``code`` is a valid admin code. Every attempt is audited."""
        scope = "strategy" if strategy_id else GLOBAL
        key = strategy_id or GLOBAL
        engages_before = self._engages.get(key, 0) + self._engages.get(GLOBAL, 0)
        now = time.time()
        authorised = await self._authorise(
            code,
            kind="kill.disengage",
            strategy_id=strategy_id,
            source=source,
            operator=operator,
            now=now,
            caller=caller,
        )
        if authorised is None:
            return False
        async with self._lock:
            if self._engages.get(key, 0) + self._engages.get(GLOBAL, 0) != engages_before:
                # An engage arrived while the code was being checked: the later command wins.
                await self._refuse(
                    "kill.disengage",
                    strategy_id,
                    source=source,
                    detail="not released: an engage arrived while the code was checked",
                    now=now,
                    operator=operator,
                )
                return False
            verdict, writes = authorised
            released = "released" if self.gate.switch(key).engaged else "was not engaged"
            record = AuditRecord(
                type="kill.disengage",
                ok=True,
                scope=scope,
                strategy_id=strategy_id,
                source=source,
                operator=operator,
                detail=f"{released} ({verdict.detail})",
                ts=now,
            )
            writes += [switch_row(key, SwitchState()), AuditRow(record=record)]
            await self._journal.write(*writes, urgent=True)
            self.gate.set_switch(key, SwitchState())
            log.warning(
                "kill.disengaged", strategy_id=strategy_id, operator=operator, source=source
            )
            await self._announce(record, KillChanged(strategy_id=strategy_id, engaged=False))
            return True

    async def pause(self, strategy_id: str, *, reason: str, source: str) -> bool:
        """Pause a strategy (no code needed: like engaging, it only makes trading safer)."""
        async with self._lock:
            now = time.time()
            ok = strategy_id in self._strategies
            detail = f"paused: {reason}" if ok else f"unknown strategy {strategy_id!r}"
            record = AuditRecord(
                type="strategy.pause",
                ok=ok,
                scope="strategy",
                strategy_id=strategy_id,
                source=source,
                detail=detail,
                ts=now,
            )
            writes: list[Row] = [AuditRow(record=record)]
            state = SwitchState(engaged=True, since=now, reason=reason, source=source)
            if ok:
                writes.append(switch_row(PAUSE_PREFIX + strategy_id, state))
            await self._journal.write(*writes)
            if ok:
                self.gate.set_pause(strategy_id, state)
            change = KillChanged(strategy_id=strategy_id, engaged=False) if ok else None
            await self._announce(record, change)
            return ok

    async def _authorise(
        self,
        code: str | None,
        *,
        kind: str,
        strategy_id: str | None,
        source: str,
        operator: str | None,
        now: float,
        caller: str = "",
    ) -> tuple[Verdict, list[Row]] | None:
        """Check an admin code; a refusal is journaled, logged and published here.

        Returns:
            The verdict and the writes that must go with the effect (the used TOTP step),
            or None when refused.
        """
        check = functools.partial(self._verifier.verify, code, caller=caller)
        # scrypt costs ~0.1 s: off the event loop, so intents and engages keep flowing. A
        # locked-out caller's attempt is refused without one: no thread hop for it.
        locked = self._verifier.locked(caller)
        verdict = check() if locked else await anyio.to_thread.run_sync(check)
        if verdict.ok and strategy_id is not None and strategy_id not in self._strategies:
            verdict = msgspec.structs.replace(
                verdict, ok=False, detail=f"unknown strategy {strategy_id!r}"
            )
        writes: list[Row] = []
        if verdict.totp_step is not None:
            writes.append(MetaRow(key=TOTP_KEY, value=str(verdict.totp_step)))
        if verdict.ok:
            return verdict, writes
        record = AuditRecord(
            type=kind,
            ok=False,
            scope="strategy" if strategy_id else GLOBAL,
            strategy_id=strategy_id,
            source=source,
            operator=operator,
            detail=f"denied: {verdict.detail}",
            ts=now,
        )
        # A refusal changes nothing: journaled with the decisions' next group commit, not
        # in a commit of its own ahead of them (a storm of forged codes must not delay
        # intents), and still published only once it is durable.
        await self._journal.write(*writes, AuditRow(record=record))
        log.warning(
            "admin.denied",
            type=kind,
            strategy_id=strategy_id,
            source=source,
            operator=operator,
            detail=verdict.detail,
        )
        await self._publish_audit(record)
        return None

    async def _privileged(self, command: Privileged, origin: str, *, caller: str = "") -> bool:
        """Commands that need an admin code: resume, circuit reset, approve, deny, promote."""
        now = time.time()
        source = command.source or origin
        kind, strategy_id = describe(command)
        scope = "strategy" if strategy_id else GLOBAL
        if isinstance(command, ResetCircuit) and self._reset_circuit is None:
            code: str | None = None  # nothing to reset: refused like a wrong code
        else:
            code = command.code
        detail = nothing_to_authorise(command, self._strategies, self._is_pending)
        if detail is not None:  # before the code check: no code step is used up
            await self._refuse(
                kind, strategy_id, source=source, detail=detail, now=now, operator=command.operator
            )
            return False
        authorised = await self._authorise(
            code,
            kind=kind,
            strategy_id=strategy_id,
            source=source,
            operator=command.operator,
            now=now,
            caller=caller,
        )
        if authorised is None:
            return False
        async with self._lock:
            verdict, writes = authorised
            if isinstance(command, Promote):  # its order manager checks the paper record, audits
                await self._journal.write(*writes, urgent=True)
                await self._forward(promotion(command, source=source, how=verdict.detail))
                return True
            record = AuditRecord(
                type=kind,
                ok=True,
                scope=scope,
                strategy_id=strategy_id,
                source=source,
                operator=command.operator,
                detail=authorised_detail(command, verdict.detail),
                ts=now,
            )
            if isinstance(command, Resume):
                writes.append(switch_row(PAUSE_PREFIX + command.strategy_id, SwitchState()))
            await self._journal.write(*writes, AuditRow(record=record), urgent=True)
            await self._apply_privileged(command)
            await self._publish_audit(record)
            return True

    async def _forward(self, message: ApprovalDecision | ModeChange) -> None:
        forward = self._approvals.get(message.strategy_id)
        if forward is not None:
            await forward(message)

    async def _demote(self, command: Demote, *, source: str) -> None:
        """A demotion needs no code (a safety action): its order manager carries it out."""
        if command.strategy_id not in self._strategies:
            detail = f"unknown strategy {command.strategy_id!r}"
            await self._refuse("mode.demote", None, source=source, detail=detail, now=time.time())
            return
        await self._forward(
            ModeChange(
                strategy_id=command.strategy_id,
                target="paper",
                source=source,
                flatten=command.flatten,
                reason=command.reason,
            )
        )

    async def _apply_privileged(self, command: Privileged) -> None:
        """The effect of an authorised, journaled privileged command."""
        match command:
            case Resume():
                self.gate.set_pause(command.strategy_id, SwitchState())
                await self._publish_state()
                change = KillChanged(strategy_id=command.strategy_id, engaged=False)
                for listener in self._listeners:
                    await listener(change)
            case ResetCircuit():
                assert self._reset_circuit is not None
                outcome = await self._reset_circuit(command.operator)
                log.warning("circuit.reset", operator=command.operator, outcome=outcome)
            case Approve() | Deny():
                await self._forward(
                    ApprovalDecision(
                        strategy_id=command.strategy_id,
                        intent_id=command.intent_id,
                        approved=isinstance(command, Approve),
                        operator=command.operator,
                    )
                )

    # ------------------------------------------------------------------ triggers and HA

    # ------------------------------------------------------------------ publishing

    def kill_state(self) -> KillState:
        """The current state message."""
        return KillState(
            global_=self.gate.switch(GLOBAL),
            strategies={sid: self.gate.switch(sid) for sid in sorted(self._strategies)},
            paused={sid: self.gate.paused(sid) for sid in sorted(self._strategies)},
            ts=time.time(),
        )

    async def _publish_state(self) -> None:
        await self._outbound.send(
            Publish(topic=self._topics.kill_state, payload=encode(self.kill_state()), retain=True)
        )

    async def _audit(self, record: AuditRecord) -> None:
        """Record a refusal: journaled, then published, by :meth:`_record_refusals`."""
        await self._refusals.send(record)

    async def _record_refusals(self) -> None:
        while (batch := await receive_batch(self._refusals_receive, 256)) is not None:
            await self._journal.write(*(AuditRow(record=record) for record in batch))
            for record in batch:
                await self._publish_audit(record)

    async def _refuse(self, kind: str, strategy_id: str | None, **fields: Any) -> None:
        """Audit a refused command (journaled, then published): see :func:`refusal`."""
        await self._audit(refusal(kind, strategy_id, **fields))

    async def _announce(self, record: AuditRecord, change: KillChanged | None) -> None:
        """Publish the new state and the audit record, then tell every listener."""
        await self._publish_state()
        await self._publish_audit(record)
        if change is not None:
            for listener in self._listeners:
                await listener(change)

    async def _publish_audit(self, record: AuditRecord) -> None:
        await self._outbound.send(Publish(topic=self._topics.audit, payload=encode(record)))
