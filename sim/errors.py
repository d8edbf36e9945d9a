"""The paper venue's exception hierarchy, rooted in :class:`SimError`."""

from __future__ import annotations


class SimError(Exception):
    """Base of every error the paper venue raises."""


class SimConfigError(SimError):
    """The venue configuration cannot be used (bad CSV, bad value)."""


class RequestRefusedError(SimError):
    """The venue refuses a request (order, cancel, lookup); carries the Alpaca answer.

    Args:
        status: HTTP status Alpaca answers with (403, 404, 422).
        code: Alpaca error code, e.g. 40310000.
        message: Alpaca error message.
        extra: Further fields of the Alpaca error body.
    """

    def __init__(
        self, status: int, code: int, message: str, extra: dict[str, str] | None = None
    ) -> None:
        """Record the response the REST layer will send."""
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})

    def body(self) -> dict[str, object]:
        """The JSON body Alpaca sends for this error."""
        return {"code": self.code, "message": self.message, **self.extra}
