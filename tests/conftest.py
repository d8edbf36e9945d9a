"""Shared test fixtures: the anyio backend and a real mosquitto per session."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run every anyio test on asyncio, the daemon's backend."""
    return "asyncio"
