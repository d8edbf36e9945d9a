"""The drawdown circuit breaker: a pure state machine over account equity.

States (docs/protocol.md ``circuit``):

``closed``
    Normal trading.
``half_open``
    The daily drawdown reached ``risk.warn_daily_drawdown``. With
    ``risk.reduce_only_on_warn`` only reducing orders may trade
    (:attr:`CircuitBreaker.reduce_only`). It stays for the rest of the session
    even if equity recovers, so that a drawdown hovering at the warning level
    does not flap the mode (and the audit log) back and forth.
``open``
    The daily drawdown reached ``risk.max_daily_drawdown`` or the drawdown
    from the peak reached ``risk.max_total_drawdown``. The caller engages the
    kill switch on the transition. ``open`` is sticky: neither recovering
    equity nor a new session closes it, only :meth:`CircuitBreaker.reset`
    (after the caller has checked the admin code).

Drawdowns are ``(base - equity) / base``, 0 for a gain; the daily base is the
start-of-day equity, the total base the highest equity ever seen (the peak).
A threshold is reached at ``drawdown >= threshold`` (``1e-9`` tolerance for
float rounding). Nothing here reads a clock or does I/O: the caller passes
``now``, audits the returned :class:`Transition` values before acting on them,
and persists :meth:`CircuitBreaker.snapshot` (a msgspec Struct) so that the
peak, the baseline and an ``open`` state survive restarts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

from actors.core.limit_bounds import drawdown, reaches
from actors.core.settings import RiskConfig
from protocol.messages import AuditRecord, CircuitState

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerState",
    "SessionState",
    "Transition",
    "apply_account_poll",
]


def _check_equity(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


class CircuitBreakerState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the breaker needs after a restart; persisted by the caller.

    Attributes:
        state: the circuit state.
        since: when it entered ``state`` (None: never changed).
        reason: why it entered ``state``.
        start_of_day_equity: the daily baseline (None: set by the first update).
        peak_equity: the highest equity seen (None: set by the first update).
        equity: the last equity seen.
    """

    state: CircuitState = "closed"
    since: float | None = None
    reason: str | None = None
    start_of_day_equity: float | None = None
    peak_equity: float | None = None
    equity: float | None = None


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One change of state, for the audit log; on ``after == "open"`` engage the kill switch."""

    before: CircuitState
    after: CircuitState
    reason: str
    ts: float

    def audit_record(self) -> AuditRecord:
        """The record journaled and published for this change (type ``circuit.<after>``)."""
        return AuditRecord(
            type="circuit." + self.after,
            ok=True,
            detail=f"{self.before} -> {self.after}: {self.reason}",
            ts=self.ts,
            scope="global",
            source="circuit_breaker",
        )


class CircuitBreaker:
    """Drawdown circuit breaker (see module doc).

    Inputs: equity updates, session starts, operator resets, each with ``now``.
    Outputs: lists of :class:`Transition`, empty when nothing changed.
    Edge cases: the first equity seen becomes the start-of-day and peak equity
    when none was persisted; equity <= 0 is a 100 % drawdown; a non-finite
    equity raises ``ValueError`` (a bug upstream, never a state change).
    """

    __slots__ = (
        "_equity",
        "_max_daily",
        "_max_total",
        "_peak",
        "_reason",
        "_reduce_only_on_warn",
        "_since",
        "_start_of_day",
        "_state",
        "_warn_daily",
    )

    def __init__(self, risk: RiskConfig, state: CircuitBreakerState | None = None) -> None:
        """Start from the thresholds of ``[risk]`` and a persisted state (None: fresh)."""
        self._warn_daily = risk.warn_daily_drawdown
        self._max_daily = risk.max_daily_drawdown
        self._max_total = risk.max_total_drawdown
        self._reduce_only_on_warn = risk.reduce_only_on_warn
        state = state or CircuitBreakerState()
        self._state: CircuitState = state.state
        self._since = state.since
        self._reason = state.reason
        self._start_of_day = state.start_of_day_equity
        self._peak = state.peak_equity
        self._equity = state.equity

    # ------------------------------------------------------------------ views

    @property
    def state(self) -> CircuitState:
        """The current state."""
        return self._state

    @property
    def since(self) -> float | None:
        """When the current state was entered (None: never changed)."""
        return self._since

    @property
    def reason(self) -> str | None:
        """Why the current state was entered."""
        return self._reason

    @property
    def reduce_only(self) -> bool:
        """Whether only reducing orders may trade (``half_open`` with ``reduce_only_on_warn``)."""
        return self._state == "half_open" and self._reduce_only_on_warn

    @property
    def daily_drawdown(self) -> float | None:
        """Drawdown from the start-of-day equity; None before any equity."""
        if self._equity is None:
            return None
        return drawdown(self._start_of_day, self._equity)

    @property
    def total_drawdown(self) -> float | None:
        """Drawdown from the peak equity; None before any equity."""
        if self._equity is None:
            return None
        return drawdown(self._peak, self._equity)

    @property
    def start_of_day_equity(self) -> float | None:
        """The daily baseline."""
        return self._start_of_day

    @property
    def peak_equity(self) -> float | None:
        """The highest equity seen (or rebased to by a reset)."""
        return self._peak

    def snapshot(self) -> CircuitBreakerState:
        """The state to persist."""
        return CircuitBreakerState(
            state=self._state,
            since=self._since,
            reason=self._reason,
            start_of_day_equity=self._start_of_day,
            peak_equity=self._peak,
            equity=self._equity,
        )

    # ------------------------------------------------------------------ inputs

    def update(self, equity: float, now: float) -> list[Transition]:
        """Take a new account equity; returns the transitions it causes.

        Raises:
            ValueError: ``equity`` is not a finite number.
        """
        _check_equity("equity", equity)
        self._equity = equity
        if self._start_of_day is None:
            self._start_of_day = equity
        if self._peak is None or equity > self._peak:
            self._peak = equity
        return self._evaluate(now)

    def new_session(self, start_of_day_equity: float, now: float) -> list[Transition]:
        """Start a trading session: the daily baseline moves, the peak stays.

        ``half_open`` (a daily warning) goes back to ``closed``; ``open`` stays
        open until :meth:`reset`. The total drawdown is then checked at once,
        so an account still below its total limit opens (or stays open).

        Raises:
            ValueError: ``start_of_day_equity`` is not a finite number.
        """
        _check_equity("start_of_day_equity", start_of_day_equity)
        self._start_of_day = start_of_day_equity
        self._equity = start_of_day_equity
        if self._peak is None or start_of_day_equity > self._peak:
            self._peak = start_of_day_equity
        transitions: list[Transition] = []
        if self._state == "half_open":
            transitions.append(self._move("closed", "new session: daily drawdown reset", now))
        transitions.extend(self._evaluate(now))
        return transitions

    def reset(self, now: float, *, operator: str | None = None) -> list[Transition]:
        """Close the circuit after an authorised operator reset.

        A reset acknowledges the losses that tripped the circuit: the daily
        baseline moves to the current equity if the daily drawdown reached the
        warning level, and the peak moves to it if the total drawdown reached
        its limit. Baselines that are within their limits stay, so a reset
        never hides a drawdown it did not have to. Closed: nothing happens.
        """
        if self._state == "closed":
            return []
        rebased: list[str] = []
        equity = self._equity
        if equity is not None:
            daily = drawdown(self._start_of_day, equity)
            if reaches(daily, self._warn_daily) and daily > 0:
                self._start_of_day = equity
                rebased.append(f"start-of-day equity rebased to {equity:.2f}")
            total = drawdown(self._peak, equity)
            if reaches(total, self._max_total) and total > 0:
                self._peak = equity
                rebased.append(f"peak equity rebased to {equity:.2f}")
        who = f"reset by {operator}" if operator else "reset by operator"
        return [self._move("closed", "; ".join([who, *rebased]), now)]

    # ------------------------------------------------------------------ machine

    def _move(self, after: CircuitState, reason: str, now: float) -> Transition:
        transition = Transition(before=self._state, after=after, reason=reason, ts=now)
        self._state = after
        self._since = now
        self._reason = reason
        return transition

    def _evaluate(self, now: float) -> list[Transition]:
        if self._state == "open" or self._equity is None:
            return []
        equity = self._equity
        daily = drawdown(self._start_of_day, equity)
        total = drawdown(self._peak, equity)
        # A zero threshold means "no loss tolerated", not "always tripped".
        breaches: list[str] = []
        if daily > 0 and reaches(daily, self._max_daily):
            breaches.append(
                f"daily drawdown {daily:.2%} >= limit {self._max_daily:.2%} "
                f"(equity {equity:.2f}, start of day {self._start_of_day:.2f})"
            )
        if total > 0 and reaches(total, self._max_total):
            breaches.append(
                f"total drawdown {total:.2%} >= limit {self._max_total:.2%} "
                f"(equity {equity:.2f}, peak {self._peak:.2f})"
            )
        if breaches:
            return [self._move("open", "; ".join(breaches), now)]
        if self._state == "closed" and daily > 0 and reaches(daily, self._warn_daily):
            return [
                self._move(
                    "half_open",
                    f"daily drawdown {daily:.2%} >= warning {self._warn_daily:.2%} "
                    f"(equity {equity:.2f}, start of day {self._start_of_day:.2f})",
                    now,
                )
            ]
        return []


class SessionState(msgspec.Struct, kw_only=True):
    """The trading session the daily limits count from (persisted)."""

    session: str | None = None
    realized_base: dict[str, float] = msgspec.field(default_factory=dict)


def apply_account_poll(
    risk: RiskConfig,
    breaker: CircuitBreaker,
    session: SessionState,
    *,
    equity: float,
    market_open: bool | None,
    broker_session: str | None,
    realized_pnl: Callable[[], dict[str, float]],
    now: float,
) -> tuple[CircuitBreaker, SessionState, list[Transition]]:
    """An account poll applied to a copy of ``breaker``; neither argument is changed.

    A new session starts when the market is open and the broker names a session other
    than ``session.session``: the daily baseline moves to ``equity``
    (:meth:`CircuitBreaker.new_session`) and each strategy's realized P&L at that
    moment (``realized_pnl()``, called only then) becomes its session base. Then the
    equity is taken as an update.

    Returns:
        The updated copy of the breaker, the session (``session`` itself unless a new
        one started) and the transitions, in order.
    """
    candidate = CircuitBreaker(risk, breaker.snapshot())
    transitions: list[Transition] = []
    if market_open and broker_session and broker_session != session.session:
        transitions += candidate.new_session(equity, now)
        session = SessionState(session=broker_session, realized_base=realized_pnl())
    transitions += candidate.update(equity, now)
    return candidate, session, transitions
