"""Misbehaviour on demand: the venue's fault plan.

Routes are named ``"METHOD /path/template"`` exactly as the venue registers
them, e.g. ``"POST /v2/orders"``, ``"GET /v2/orders/{order_id}"``,
``"DELETE /v2/positions/{symbol}"``; ``"*"`` matches every ``/v2`` route.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast, get_args

from sim.config import DropMode

if TYPE_CHECKING:
    from sim.config import SimConfig

ANY_ROUTE = "*"
INJECTABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class FaultPlan:
    """Faults that are currently armed.

    Attributes:
        latency_s: Added delay per route before it is served.
        base_latency_s: Delay of every ``/v2`` request (the network and the venue's
            own work), before ``latency_s``.
        latency_jitter_s: A further delay drawn uniformly from ``[0, this]`` for
            every ``/v2`` request, so requests overtake each other as they do live.
        errors: Per route, the statuses the next requests get instead of being served.
        drops: Per route, accept-then-drop modes for the next requests: the request
            is served (an order is created) but the client never gets the answer:
            ``close`` closes the connection without a response, ``504`` answers
            504 Gateway Timeout.
        stream_drop_interval_s: Close every trade stream connection this often.
        stream_mute: Trade streams stay connected but the venue sends nothing
            (no events, no replies, no pongs); events meanwhile are lost.
    """

    latency_s: dict[str, float] = field(default_factory=dict)
    base_latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    errors: dict[str, deque[int]] = field(default_factory=dict)
    drops: dict[str, deque[DropMode]] = field(default_factory=dict)
    stream_drop_interval_s: float | None = None
    stream_mute: bool = False

    @classmethod
    def from_config(cls, config: SimConfig) -> FaultPlan:
        """The faults a configuration arms from the start."""
        return cls(
            latency_s=dict(config.route_latency_s),
            base_latency_s=config.base_latency_s,
            latency_jitter_s=config.latency_jitter_s,
            stream_drop_interval_s=config.stream_drop_interval_s,
        )

    def clear(self) -> None:
        """Disarm every fault."""
        self.latency_s.clear()
        self.errors.clear()
        self.drops.clear()
        self.stream_drop_interval_s = None
        self.stream_mute = False

    def set_latency(self, route: str, seconds: float) -> None:
        """Delay every request on ``route`` by ``seconds`` (0 removes the delay)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        if seconds == 0:
            self.latency_s.pop(route, None)
        else:
            self.latency_s[route] = seconds

    def latency_for(self, route: str) -> float:
        """Total added latency of ``route``: base, jitter and the route's own delay."""
        jitter = (
            random.uniform(0.0, self.latency_jitter_s)  # noqa: S311  # timing noise, not crypto
            if self.latency_jitter_s > 0
            else 0.0
        )
        return (
            self.base_latency_s
            + jitter
            + self.latency_s.get(route, 0.0)
            + self.latency_s.get(ANY_ROUTE, 0.0)
        )

    def add_errors(self, route: str, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests on ``route`` with ``status``."""
        if status not in INJECTABLE_STATUSES:
            raise ValueError(f"status must be one of {sorted(INJECTABLE_STATUSES)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        self.errors.setdefault(route, deque()).extend([status] * count)

    def take_error(self, route: str) -> int | None:
        """Consume the next armed error status for ``route``, if any."""
        for key in (route, ANY_ROUTE):
            queue = self.errors.get(key)
            if queue:
                return queue.popleft()
        return None

    def add_drops(self, route: str, count: int = 1, mode: str = "close") -> None:
        """Serve but lose the answer of the next ``count`` requests on ``route``."""
        if mode not in get_args(DropMode):
            raise ValueError("mode must be 'close' or '504'")
        if count < 1:
            raise ValueError("count must be >= 1")
        self.drops.setdefault(route, deque()).extend([cast("DropMode", mode)] * count)

    def take_drop(self, route: str) -> DropMode | None:
        """Consume the next armed accept-then-drop mode for ``route``, if any."""
        for key in (route, ANY_ROUTE):
            queue = self.drops.get(key)
            if queue:
                return queue.popleft()
        return None

    def to_json(self) -> dict[str, Any]:
        """The armed faults, as ``GET /_sim/state`` reports them."""
        return {
            "latency_s": dict(self.latency_s),
            "base_latency_s": self.base_latency_s,
            "latency_jitter_s": self.latency_jitter_s,
            "errors": {route: list(queue) for route, queue in self.errors.items() if queue},
            "drops": {route: list(queue) for route, queue in self.drops.items() if queue},
            "stream_drop_interval_s": self.stream_drop_interval_s,
            "stream_mute": self.stream_mute,
        }
