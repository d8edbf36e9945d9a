"""How a call to the broker ended, as values: the outcome, the answer, the error's fields.

The Alpaca adapter (:mod:`actors.alpaca_adapter`) classifies every call into an
:class:`Outcome`; the gateway matches on it and on :class:`BrokerCallError`'s fields,
never on message text. Pure: no I/O, no anyio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, Literal, TypeAlias, TypeVar

from actors.core.errors import BrokerError

T = TypeVar("T")


class Outcome(enum.Enum):
    """How a broker call ended."""

    OK = "ok"
    DUPLICATE = "duplicate"
    """HTTP 422, duplicate ``client_order_id``: the broker already has that order."""
    REJECTED = "rejected"
    """The broker answered no (any other 4xx): sending it again would not help."""
    NOT_FOUND = "not_found"
    UNKNOWN = "unknown"
    """No usable answer (timeout, dropped connection, 5xx, 429): it may have happened."""
    BLOCKED = "blocked"
    """Not sent: the last check before the request left said no."""
    EXPIRED = "expired"
    """Not sent: its deadline passed before the request left."""


class BrokerCallError(BrokerError):
    """A broker call that failed, as fields: match on these, never on the message.

    Attributes:
        http_status: the answer's HTTP status (None when no answer came).
        code: Alpaca's error code from the answer's body (40010001: a duplicate order id).
        message: Alpaca's message, or the transport error's text.
        transport: the transport error's class name (None when an answer came).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        transport: str | None = None,
    ) -> None:
        """Keep the fields; the text is ``message``."""
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.transport = transport


@dataclass(frozen=True)
class Ok(Generic[T]):
    """The broker did it; ``value`` is its answer, parsed."""

    value: T
    outcome: Literal[Outcome.OK] = Outcome.OK


@dataclass(frozen=True)
class Failed:
    """The call did not succeed (or was not sent: :attr:`Outcome.BLOCKED`, ``EXPIRED``)."""

    outcome: Outcome
    error: BrokerCallError | None = None
    """What the broker or the transport said (None when nothing was sent)."""
    reason: str = ""
    """Why it was not sent (``BLOCKED``)."""

    @property
    def http_status(self) -> int | None:
        """The answer's HTTP status, if one came."""
        return self.error.http_status if self.error is not None else None

    @property
    def detail(self) -> str:
        """One line for logs and for the strategy."""
        error = self.error
        if error is None:
            return self.reason
        if error.transport is not None:
            return f"{error.transport}: {error.message}"
        if self.outcome is Outcome.UNKNOWN and error.http_status is not None:
            return f"HTTP {error.http_status}: {error.message}"
        return error.message


CallResult: TypeAlias = Ok[T] | Failed


@dataclass(frozen=True)
class Refusal:
    """A check right before the request leaves says it must not (``BLOCKED``/``EXPIRED``)."""

    outcome: Outcome
    reason: str = ""
