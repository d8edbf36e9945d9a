"""The broker ACL for Home Assistant's code boxes (install.sh's rendered acl.template).

Uses the secured mosquitto of ``test_mosquitto_acl``: Home Assistant may read the
state topics the daemon clears after each code, and may not write them (so nobody
can plant a code, or anything else, as a box's state).
"""

from __future__ import annotations

import pytest
from test_mosquitto_acl import (
    NOT_AUTHORIZED,
    REFUSED_OR_FILTERED,
    Client,
    Login,
    P,
    broker,  # noqa: F401  # the module's secured mosquitto, a fixture used by connect
    connect,  # noqa: F401  # a fixture
    token,
)

BOXES = ("release", "approve", "deny")


@pytest.fixture
def daemon_login(connect: Login) -> Client:  # noqa: F811  # the imported fixture
    """The daemon's control-plane login, which publishes the cleared states."""
    return connect("tradeguard-control")


def test_home_assistant_reads_the_code_boxes_state_and_cannot_write_it(
    connect: Login,  # noqa: F811  # the imported fixture
    daemon_login: Client,
) -> None:
    ha, phone = connect("homeassistant"), connect("phone")
    assert ha.subscribe(f"{P}/v1/ha/+/state") < 0x80
    for box in BOXES:
        assert ha.publish(f"{P}/v1/ha/{box}/state", token()) == NOT_AUTHORIZED
    # Nobody else needs the boxes' state: the phone gets nothing from it.
    assert phone.subscribe(f"{P}/v1/ha/+/state") in REFUSED_OR_FILTERED
    assert phone.subscribe(f"{P}/v1/kill/state") < 0x80
    for box in BOXES:
        marker = token()
        assert daemon_login.publish(f"{P}/v1/ha/{box}/state", marker) == 0
        ha.wait_for(f"{P}/v1/ha/{box}/state", marker)
    after = token()
    assert daemon_login.publish(f"{P}/v1/kill/state", after) == 0
    before = phone.wait_for(f"{P}/v1/kill/state", after)
    assert not [m for m in before if m.topic.startswith(f"{P}/v1/ha/")]


def test_home_assistant_reads_each_strategy_state_for_its_mode_sensor(
    connect: Login,  # noqa: F811  # the imported fixture
) -> None:
    """The mode sensors read ``P/v1/strategy/SID/state``; Home Assistant cannot write it."""
    ha, daemon = connect("homeassistant"), connect("tradeguard")
    assert ha.subscribe(f"{P}/v1/strategy/+/state") < 0x80
    marker = token()
    assert daemon.publish(f"{P}/v1/strategy/s1/state", marker) == 0
    ha.wait_for(f"{P}/v1/strategy/s1/state", marker)
    assert ha.publish(f"{P}/v1/strategy/s1/state", token()) == NOT_AUTHORIZED
