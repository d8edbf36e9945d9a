"""Fail closed: if an actor on the path that decides or sends an order dies, trading halts."""

from __future__ import annotations

import anyio
import pytest

from actors.base import Actor, TradingHalt
from actors.broker_gateway import BrokerGateway
from actors.kill_sources import KillSources
from actors.kill_switch import KillSwitchAuthority
from actors.order_manager import OrderManager
from actors.risk_guardian import RiskGuardian
from daemon.journal import JournalWriter

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "actor",
    [OrderManager, RiskGuardian, KillSwitchAuthority, KillSources, BrokerGateway, JournalWriter],
)
def test_every_actor_that_decides_or_sends_is_fail_closed(actor: type[Actor]) -> None:
    assert actor.fail_closed


class _Crashing(Actor):
    fail_closed = True

    async def _run(self) -> None:
        raise RuntimeError("a bug")


async def test_the_first_crash_of_a_fail_closed_actor_halts_trading() -> None:
    halt = TradingHalt()
    actor = _Crashing("crashing", halt=halt)
    with anyio.move_on_after(0.5):
        await actor.run()  # restarts after a back-off; the halt comes first
    assert halt.halted
    assert halt.reason == "crashing crashed: RuntimeError"
