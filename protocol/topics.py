"""MQTT topic names of docs/protocol.md: builders, subscription filters and a parser."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

_STRATEGY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
"""A login name as it may appear in a topic level."""


class TopicKind(StrEnum):
    """What an inbound topic carries."""

    INTENT = "intent"
    HEARTBEAT = "heartbeat"
    KILL_COMMAND = "kill_command"
    APPROVAL_COMMAND = "approval_command"
    ADMIN_COMMAND = "admin_command"


class ParsedTopic(NamedTuple):
    """An inbound topic split into its kind and the id it names.

    ``strategy_id`` is the strategy of a strategy topic; ``user`` the login of an
    ``admin/USER/command`` topic (the broker's ACL lets each login write only its own).
    """

    kind: TopicKind
    strategy_id: str | None
    user: str | None = None


class Topics:
    """Every topic of one daemon, under its prefix ``P`` (``mqtt.topic_prefix``).

    Args:
        prefix: the topic prefix, without a trailing slash.
    """

    def __init__(self, prefix: str) -> None:
        """Build the fixed topics once."""
        self.prefix = prefix
        self.root = f"{prefix}/v1"
        self.kill_command = f"{self.root}/kill/command"
        self.kill_state = f"{self.root}/kill/state"
        self.audit = f"{self.root}/audit"
        self.daemon_status = f"{self.root}/daemon/status"
        self.daemon_state = f"{self.root}/daemon/state"
        self.approval_pending = f"{self.root}/approval/pending"
        self.approval_command = f"{self.root}/approval/command"
        self._admin = f"{self.root}/admin/"
        self._strategy = f"{self.root}/strategy/"

    def intent(self, strategy_id: str) -> str:
        """``P/v1/strategy/SID/intent``."""
        return f"{self._strategy}{strategy_id}/intent"

    def event(self, strategy_id: str) -> str:
        """``P/v1/strategy/SID/event``."""
        return f"{self._strategy}{strategy_id}/event"

    def heartbeat(self, strategy_id: str) -> str:
        """``P/v1/strategy/SID/heartbeat``."""
        return f"{self._strategy}{strategy_id}/heartbeat"

    def strategy_state(self, strategy_id: str) -> str:
        """``P/v1/strategy/SID/state``."""
        return f"{self._strategy}{strategy_id}/state"

    def admin_command(self, user: str) -> str:
        """``P/v1/admin/USER/command``: privileged commands from one login."""
        return f"{self._admin}{user}/command"

    def subscriptions(self) -> list[str]:
        """Every topic filter the daemon subscribes to (data and control plane)."""
        return [*self.data_subscriptions(), *self.control_subscriptions()]

    def data_subscriptions(self) -> list[str]:
        """Filters of the data-plane connection: intents only."""
        return [f"{self._strategy}+/intent"]

    def control_subscriptions(self) -> list[str]:
        """Filters of the control-plane connection: commands and heartbeats.

        They get a connection of their own because the broker queues per
        connection: a backlog of intents can then never delay a kill command.
        """
        return [
            f"{self._strategy}+/heartbeat",
            self.kill_command,
            self.approval_command,
            f"{self._admin}+/command",
        ]

    def parse(self, topic: str) -> ParsedTopic | None:
        """Classify an inbound topic; ``None`` for anything that is not ours.

        A strategy topic whose id breaks the id rule parses with the raw id so
        that the caller can answer it; the id is then never trusted further.
        """
        if topic == self.kill_command:
            return ParsedTopic(TopicKind.KILL_COMMAND, None)
        if topic == self.approval_command:
            return ParsedTopic(TopicKind.APPROVAL_COMMAND, None)
        if topic.startswith(self._admin):
            user, sep, leaf = topic[len(self._admin) :].partition("/")
            if sep and leaf == "command" and _USER.fullmatch(user):
                return ParsedTopic(TopicKind.ADMIN_COMMAND, None, user)
            return None
        if not topic.startswith(self._strategy):
            return None
        sid, sep, leaf = topic[len(self._strategy) :].partition("/")
        if not sep or not sid:
            return None
        if leaf == "intent":
            return ParsedTopic(TopicKind.INTENT, sid)
        if leaf == "heartbeat":
            return ParsedTopic(TopicKind.HEARTBEAT, sid)
        return None


def valid_strategy_id(strategy_id: str) -> bool:
    """Whether ``strategy_id`` follows the id rule of docs/protocol.md."""
    return _STRATEGY_ID.fullmatch(strategy_id) is not None
