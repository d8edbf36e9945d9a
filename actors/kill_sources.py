"""What engages the kill switch without a command: buttons, heartbeats, Home Assistant.

The kill-switch authority decides; this actor only translates what it hears into the
commands the authority takes from the control plane.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.base import Actor, TradingHalt
from actors.channels import Heartbeat, InboundKillCommand, KillChanged, Publish, TriggerPress
from actors.core.kill_rules import matches
from actors.core.settings import TriggerConfig
from actors.core.trading_state import KillGate
from actors.home_assistant import HomeAssistantDiscovery, interpret
from protocol.messages import ApprovalCommand, AuditRecord, Engage, KillCommand

log = structlog.get_logger(__name__)


class KillSources(Actor):
    """Turns button presses, lost heartbeats and Home Assistant messages into commands.

    Inputs: trigger presses and Home Assistant messages (MQTT control plane), strategy
    heartbeats, and kill changes (a release re-arms the strategy's dead-man timer).
    Outputs: engage, release, approve and deny commands to the kill-switch authority;
    Home Assistant discovery and emptied code boxes; audit records of refused Home
    Assistant approvals.
    Edge cases: a retained press is ignored (a restart must not replay it); a trigger
    never releases; every matching trigger engages its own scope (one button may map
    ``single``, ``double`` and ``hold`` to different scopes); a strategy whose heartbeats
    stop for longer than its timeout is engaged once, then again only after a release
    and another timeout. Fail-closed: if it dies, trading halts.
    """

    fail_closed = True

    def __init__(
        self,
        *,
        gate: KillGate,
        heartbeats: MemoryObjectReceiveStream[Heartbeat],
        triggers: MemoryObjectReceiveStream[TriggerPress],
        commands: MemoryObjectSendStream[InboundKillCommand],
        outbound: MemoryObjectSendStream[Publish],
        audit: Callable[[AuditRecord], None],
        trigger_configs: Sequence[TriggerConfig] = (),
        heartbeat_timeouts: Mapping[str, float] | None = None,
        home_assistant: HomeAssistantDiscovery | None = None,
        halt: TradingHalt,
    ) -> None:
        """Wire the sources; ``gate`` is only read."""
        super().__init__("kill_sources", halt=halt)
        self._gate = gate
        self._heartbeats = heartbeats
        self._triggers = triggers
        self._commands = commands
        self._outbound = outbound
        self._audit = audit
        self._trigger_configs = trigger_configs
        self._timeouts = dict(heartbeat_timeouts or {})
        self._ha = home_assistant
        now = time.monotonic()
        self._last_heartbeat = dict.fromkeys(self._timeouts, now)

    async def on_kill_change(self, change: KillChanged) -> None:
        """A listener of the authority: a released strategy's dead-man timer starts again."""
        if not change.engaged and change.strategy_id in self._last_heartbeat:
            self._last_heartbeat[change.strategy_id] = time.monotonic()

    async def _run(self) -> None:
        if self._ha is not None:
            for message in self._ha.discovery_messages():
                await self._outbound.send(message)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._consume_heartbeats)
            if self._timeouts:
                tg.start_soon(self._dead_man)
            async for press in self._triggers:
                await self._press(press)
            tg.cancel_scope.cancel()

    async def _press(self, press: TriggerPress) -> None:
        if self._ha is not None and press.topic in self._ha.watched_topics():
            await self._home_assistant(press)
            return
        if press.retained:
            log.info("trigger.retained_ignored", topic=press.topic)
            return
        for trigger in self._trigger_configs:
            if trigger.topic == press.topic and matches(trigger, press.payload):
                strategy_id = trigger.strategy_id if trigger.scope == "strategy" else None
                engage = Engage(
                    scope=trigger.scope,
                    strategy_id=strategy_id,
                    reason=f"trigger {trigger.name or trigger.topic}",
                    source=trigger.name or press.topic,
                    flatten=trigger.flatten,
                )
                await self._send(engage, "trigger", press.received_at)

    async def _home_assistant(self, press: TriggerPress) -> None:
        assert self._ha is not None
        action = interpret(self._ha, press)
        for message in action.publish:
            await self._outbound.send(message)
        if action.refusal is not None:
            self._audit(
                AuditRecord(
                    type=action.refused_kind,
                    ok=False,
                    ts=time.time(),
                    source="homeassistant",
                    detail=action.refusal,
                )
            )
        if action.command is not None:
            await self._send(action.command, "homeassistant", press.received_at)

    async def _send(self, command: KillCommand | ApprovalCommand, origin: str, at: float) -> None:
        await self._commands.send(
            InboundKillCommand(command=command, origin=origin, received_at=at)
        )

    async def _consume_heartbeats(self) -> None:
        async for beat in self._heartbeats:
            if beat.strategy_id in self._last_heartbeat:
                self._last_heartbeat[beat.strategy_id] = time.monotonic()

    async def _dead_man(self) -> None:
        """Engage a strategy whose heartbeats stopped for longer than its timeout."""
        while True:
            now = time.monotonic()
            wait = 1.0
            for sid, timeout in self._timeouts.items():
                overdue = now - self._last_heartbeat[sid] - timeout
                if overdue >= 0:
                    if not self._gate.engaged(sid):
                        engage = Engage(
                            scope="strategy",
                            strategy_id=sid,
                            reason="heartbeat_lost",
                            source="dead-man",
                        )
                        await self._send(engage, "dead-man", time.time())
                    self._last_heartbeat[sid] = now
                    wait = min(wait, timeout)
                else:
                    wait = min(wait, -overdue)
            await anyio.sleep(max(wait, 0.05))
