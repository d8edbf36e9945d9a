"""Every channel between the actors: bounded, created here, handed out by the wiring.

Each broker account's own queues (orders, cancels, kill changes) are its
:class:`~daemon.account_wiring.Account`'s.
"""

from __future__ import annotations

from actors.channels import (
    ApprovalDecision,
    Channel,
    FlattenNow,
    Heartbeat,
    InboundIntent,
    InboundKillCommand,
    KillChanged,
    KillSettled,
    ModeChange,
    OrderUpdate,
    Publish,
    TriggerPress,
)
from daemon.config import Config
from protocol.messages import AuditRecord


class Links:
    """Every channel between the actors, each bounded, created here and nowhere else."""

    def __init__(self, config: Config) -> None:
        """One set per daemon, sized by ``daemon.inbox_size``."""
        size = config.daemon.inbox_size
        self.strategies = frozenset(config.strategies)
        self.outbound = Channel[Publish](size * 4)
        self.control_outbound = Channel[Publish](1024)
        self.settlements = Channel[KillSettled](64)
        self.kill_commands = Channel[InboundKillCommand](64)
        self.heartbeats = Channel[Heartbeat](256)
        self.triggers = Channel[TriggerPress](64)
        self.intents = {sid: Channel[InboundIntent](size) for sid in self.strategies}
        self.kill_changes = {
            sid: Channel[KillChanged | ApprovalDecision | ModeChange](64) for sid in self.strategies
        }
        self.updates = {sid: Channel[OrderUpdate | FlattenNow](size * 4) for sid in self.strategies}
        self.audit_records = Channel[AuditRecord](1024)
