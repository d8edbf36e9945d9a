"""What a check of ``tradeguard doctor`` reports: one :class:`CheckResult` each."""

from __future__ import annotations

from typing import Literal

import msgspec

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one check (one line of output, one object of ``--json``).

    Attributes:
        check: what was checked, e.g. ``mqtt`` or ``secret mqtt.password_file``.
        status: PASS, WARN, FAIL, or SKIP (not checked because an earlier check failed).
        detail: what was found.
        fix: how to fix it (None when there is nothing to fix).
    """

    check: str
    status: Status
    detail: str
    fix: str | None = None


def skip(check: str, why: str) -> CheckResult:
    """``check`` was not made because an earlier one failed (``why``)."""
    return CheckResult(check=check, status="SKIP", detail=f"not checked: {why}")
