"""Part of the MQTT session: inbound messages decoded, routed, or answered at once.

The session's connections hand every message they receive to an
:class:`InboundRouter`; it needs no connection itself. What can be answered
without any trading state is answered here: a malformed intent or one for an
unknown strategy gets its ``rejected`` event at once, and a full strategy inbox
gets ``OVERLOADED`` at once. Nothing raised while decoding or routing one message
can reach the actor: it becomes that message's answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import assert_never

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from actors.channels import Heartbeat, InboundIntent, InboundKillCommand, Publish, TriggerPress
from daemon.metrics import Metrics
from protocol.codec import (
    DecodeFailure,
    decode_admin_command,
    decode_approval_command,
    decode_intent,
    decode_kill_command,
    encode,
)
from protocol.messages import (
    ApprovalCommand,
    CancelAllIntent,
    CancelIntent,
    Intent,
    KillCommand,
    OrderIntent,
    Reason,
    Rejected,
)
from protocol.reasons import ReasonCode
from protocol.topics import ParsedTopic, TopicKind, Topics

log = structlog.get_logger(__name__)


class InboundRouter:
    """Decodes and routes what the broker sends the daemon, on either plane.

    Inputs: one message at a time (:meth:`route`), from the session's receive loops.
    Outputs: one intent channel per configured strategy, the kill-command channel,
    heartbeats and trigger presses; ``rejected`` events it can decide alone go to
    ``loopback`` (the data plane's publisher).

    Edge cases: retained intents are refused (a retained intent would replay on
    every restart); retained commands are ignored for the same reason; a full
    strategy inbox answers ``OVERLOADED`` at once; heartbeats are dropped when their
    channel is full (a fresher one is already queued); a payload whose decoding or
    routing raises gets ``INVALID_INTENT`` (or an audited refusal on a command
    topic); after :meth:`close_intake` intents are neither answered nor forwarded.
    """

    def __init__(
        self,
        *,
        topics: Topics,
        strategies: frozenset[str],
        loopback: MemoryObjectSendStream[Publish],
        intents: Mapping[str, MemoryObjectSendStream[InboundIntent]],
        kill_commands: MemoryObjectSendStream[InboundKillCommand],
        heartbeats: MemoryObjectSendStream[Heartbeat],
        triggers: MemoryObjectSendStream[TriggerPress],
        trigger_topics: frozenset[str],
        metrics: Metrics | None = None,
    ) -> None:
        """Wire the router; see the class docstring for the channels.

        Args:
            topics: the daemon's topics.
            strategies: configured strategy ids.
            loopback: where answers given here are published (the data plane).
            intents: each strategy's inbox.
            kill_commands: the kill switch authority's inbox (kill, approval, admin).
            heartbeats: strategy heartbeats.
            triggers: presses on ``trigger_topics``.
            trigger_topics: topics whose messages are trigger presses (buttons,
                Home Assistant).
            metrics: counts the answers given here.
        """
        self._topics = topics
        self._strategies = strategies
        self._loopback = loopback
        self._intents = intents
        self._kill_commands = kill_commands
        self._heartbeats = heartbeats
        self._triggers = triggers
        self._trigger_topics = trigger_topics
        self._metrics = metrics
        self._intake_open = True
        self.received_intents = 0
        self.overloaded = 0

    def close_intake(self) -> None:
        """Stop taking intents (shutdown): they are neither answered nor forwarded."""
        self._intake_open = False

    async def route(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """Route one message; whatever it raises becomes its answer, never a crash.

        Returns:
            False for an intent left untaken (shutting down), else True.
        """
        try:
            return await self._dispatch(topic, payload, retained=retained)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise  # shutting down: not the payload's fault
        except Exception as exc:  # noqa: BLE001  # one hostile payload must not stop the daemon
            log.warning(
                "mqtt.payload_refused",
                topic=topic[:200],
                size=len(payload),
                error=type(exc).__name__,
            )
            await self._refuse(topic, f"payload could not be processed ({type(exc).__name__})")
            return True

    async def _refuse(self, topic: str, message: str) -> None:
        """Answer a payload that broke routing: INVALID_INTENT, or an audited refusal."""
        parsed = self._topics.parse(topic)
        if parsed is None:
            return
        if parsed.kind in (
            TopicKind.KILL_COMMAND,
            TopicKind.APPROVAL_COMMAND,
            TopicKind.ADMIN_COMMAND,
        ):
            await self._kill_commands.send(
                InboundKillCommand(
                    command=DecodeFailure(intent_id=None, message=message),
                    origin="mqtt",
                    received_at=time.time(),
                )
            )
        elif parsed.kind is TopicKind.INTENT and parsed.strategy_id is not None:
            await self._reject(parsed.strategy_id, None, ReasonCode.INVALID_INTENT, message)

    async def _dispatch(self, topic: str, payload: bytes, *, retained: bool) -> bool:
        """Route one inbound message; False for an intent left untaken (shutting down)."""
        now = time.time()
        if topic in self._trigger_topics:
            # The authority decides; it ignores retained presses so a restart never replays one.
            await self._triggers.send(
                TriggerPress(topic=topic, payload=payload, received_at=now, retained=retained)
            )
            return True
        parsed = self._topics.parse(topic)
        if parsed is None:
            return True
        if parsed.kind in (
            TopicKind.KILL_COMMAND,
            TopicKind.APPROVAL_COMMAND,
            TopicKind.ADMIN_COMMAND,
        ):
            await self._take_command(parsed, payload, retained=retained, now=now)
            return True
        sid = parsed.strategy_id
        assert sid is not None
        if parsed.kind is TopicKind.HEARTBEAT:
            if sid in self._strategies:
                try:
                    self._heartbeats.send_nowait(Heartbeat(strategy_id=sid, received_at=now))
                except anyio.WouldBlock:
                    log.debug("heartbeat.channel_full", strategy_id=sid)
            return True
        return await self._take_intent(sid, payload, retained=retained, now=now)

    async def _take_command(
        self, parsed: ParsedTopic, payload: bytes, *, retained: bool, now: float
    ) -> None:
        """Kill, approval and admin commands go to the authority, decoded (or not)."""
        if retained:
            # A retained command would replay on every restart; only live presses count.
            log.warning("command.retained_ignored", kind=parsed.kind.value, user=parsed.user)
            return
        command: KillCommand | ApprovalCommand | DecodeFailure
        match parsed.kind:
            case TopicKind.KILL_COMMAND:
                command = decode_kill_command(payload)
            case TopicKind.APPROVAL_COMMAND:
                command = decode_approval_command(payload)
            case _:
                command = decode_admin_command(payload)
        origin = f"admin/{parsed.user}" if parsed.user is not None else "mqtt"
        await self._kill_commands.send(
            InboundKillCommand(command=command, origin=origin, received_at=now, user=parsed.user)
        )

    async def _take_intent(self, sid: str, payload: bytes, *, retained: bool, now: float) -> bool:
        if not self._intake_open:
            log.info("intent.left_for_restart", strategy_id=sid[:64])
            return False
        self.received_intents += 1
        if sid not in self._strategies:
            await self._reject(
                sid,
                _intent_id_of(decode_intent(payload)),
                ReasonCode.UNKNOWN_STRATEGY,
                f"strategy {sid[:64]!r} is not configured (add [strategies.NAME] to the config)",
            )
            return True
        decoded = decode_intent(payload)
        if isinstance(decoded, DecodeFailure):
            await self._reject(sid, decoded.intent_id, ReasonCode.INVALID_INTENT, decoded.message)
            return True
        if retained:
            await self._reject(
                sid,
                _intent_id_of(decoded),
                ReasonCode.INVALID_INTENT,
                "retained intents are refused: publish intents with retain off",
            )
            return True
        try:
            self._intents[sid].send_nowait(
                InboundIntent(strategy_id=sid, intent=decoded, received_at=now)
            )
        except anyio.WouldBlock:
            self.overloaded += 1
            await self._reject(
                sid,
                _intent_id_of(decoded),
                ReasonCode.OVERLOADED,
                "the strategy's intake is full: nothing was decided, re-send later",
                quiet=True,
            )
        return True

    async def _reject(
        self,
        sid: str,
        intent_id: str | None,
        code: ReasonCode,
        message: str,
        *,
        quiet: bool = False,
    ) -> None:
        """Answer an intent that never reaches a strategy actor (nothing is journaled)."""
        if not quiet:
            log.debug(  # per intent: metrics count these
                "intent.rejected",
                strategy_id=sid[:64],
                intent_id=intent_id,
                code=code.value,
                detail=message,
            )
        if self._metrics is not None:
            self._metrics.intent(sid if sid in self._strategies else "?", "rejected", [code.value])
        event = Rejected(
            intent_id=intent_id, reasons=[Reason(code=code, message=message)], ts=time.time()
        )
        await self._loopback.send(Publish(topic=self._topics.event(sid), payload=encode(event)))


def _intent_id_of(decoded: Intent | DecodeFailure) -> str | None:
    """The intent id of a decoded intent or failure, if it has one."""
    match decoded:
        case DecodeFailure() | OrderIntent() | CancelIntent() | CancelAllIntent():
            return decoded.intent_id
        case _:
            assert_never(decoded)
