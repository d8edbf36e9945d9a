"""The audit trail for records that hold nothing up (illegal transitions, external orders).

Kill-switch and circuit changes are journaled by their owners *before* they take
effect; this trail takes the rest from synchronous callers, journals them and
publishes them on ``P/v1/audit``.
"""

from __future__ import annotations

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.base import Actor, TradingHalt
from actors.channels import JournalSink, Publish
from actors.core.rows import AuditRow
from protocol.codec import encode
from protocol.messages import AuditRecord
from protocol.topics import Topics

log = structlog.get_logger(__name__)


class AuditTrail(Actor):
    """Journals and publishes audit records handed over by :meth:`record`.

    Inputs: records from synchronous callers (bounded channel).
    Outputs: journal rows and ``P/v1/audit`` messages.
    Edge cases: when the channel is full the record is logged at error level
    (it is never silently lost from the log).
    """

    def __init__(
        self,
        *,
        records: MemoryObjectReceiveStream[AuditRecord],
        submit: MemoryObjectSendStream[AuditRecord],
        journal: JournalSink,
        outbound: MemoryObjectSendStream[Publish],
        topics: Topics,
        halt: TradingHalt,
    ) -> None:
        """Wire the trail."""
        super().__init__("audit_trail", halt=halt)
        self._records = records
        self._submit = submit
        self._journal = journal
        self._outbound = outbound
        self._topic = topics.audit

    def record(self, record: AuditRecord) -> None:
        """Hand over one record (never blocks)."""
        try:
            self._submit.send_nowait(record)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.error(  # noqa: TRY400  # an overflow, not a failure: no traceback to show
                "audit.overflow",
                type=record.type,
                detail=record.detail,
                strategy_id=record.strategy_id,
            )

    async def _run(self) -> None:
        async for record in self._records:
            await self._journal.write(AuditRow(record=record))
            await self._outbound.send(Publish(topic=self._topic, payload=encode(record)))
