"""Shared test fixtures: the anyio backend, a real mosquitto, unique topic prefixes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Mosquitto, free_port, unique_prefix


@pytest.fixture
def anyio_backend() -> str:
    """Run every anyio test on asyncio, the daemon's backend."""
    return "asyncio"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One real mosquitto for the session, on a free port, Nagle off."""
    broker = Mosquitto(port=free_port(), workdir=tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto for one test (tests that stop and restart it)."""
    broker = Mosquitto(port=free_port(), workdir=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix per test."""
    return unique_prefix()
