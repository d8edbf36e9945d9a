"""What the REST routes share: JSON in and out, and query parameter parsing.

Every parser raises the venue's 422 (:func:`~sim.wire.invalid`) naming the
parameter, as Alpaca does.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import msgspec
from aiohttp import web

from sim.wire import invalid


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(
        body=msgspec.json.encode(body), status=status, content_type="application/json"
    )


async def json_body(request: web.Request) -> Any:
    """The request body decoded as JSON (422 if it is not JSON)."""
    raw = await request.read()
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise invalid("request body format is invalid") from exc


def parse_time(raw: str | None, name: str) -> datetime | None:
    """An ISO time or date parameter (UTC when it names no zone); None when absent."""
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw + "T00:00:00+00:00")
        except ValueError as exc:
            raise invalid(f"invalid {name}: {raw!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_date(raw: str | None, name: str) -> date | None:
    """The date of an ISO date or time parameter; None when absent or empty."""
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw[:10])
    except ValueError as exc:
        raise invalid(f"invalid {name}: {raw!r}") from exc


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """An integer parameter between ``low`` and ``high``; ``default`` when absent."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid(f"invalid {name}: {raw!r}") from exc
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}")
    return value


def flag_param(raw: str | None, name: str) -> bool:
    """A ``true``/``false`` parameter (any case); False when absent."""
    if raw is None:
        return False
    if raw.lower() not in {"true", "false"}:
        raise invalid(f"invalid {name}: {raw!r}")
    return raw.lower() == "true"
