"""The broker accounts of a daemon: ``[broker]`` and, when configured, ``[broker.live]``.

Each account has its own endpoint and keys, rate limit, gateway, guardian, queues and,
per strategy, a book of the orders and positions it holds there. The wiring
(:mod:`daemon.wiring`) builds one :class:`Account` per configured account and
connects them; strategies move between them by mode (``paper``/``live``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import msgspec
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from actors.broker_gateway import BrokerGateway, TrackedOrder
from actors.channels import CancelOrder, Channel, InboundKillCommand, KillChanged, SubmitOrder
from actors.core.book import FINAL, StrategyBook
from actors.core.errors import ConfigError
from actors.core.order_book import OrderBook
from actors.core.promotion import PaperRecord
from actors.core.settings import StrategyConfig
from actors.mode_switch import AccountDesk, Promotion
from actors.order_manager import OrderManager
from actors.risk_guardian import AccountRole, RiskGuardian
from daemon.broker_mode import Endpoint, alpaca_endpoint, check_live_account, check_mode
from daemon.config import Config, SimSettings, strategy_mode
from daemon.evidence import paper_record
from daemon.journal import Journal, load_books
from protocol.messages import Demote, Engage

log = structlog.get_logger(__name__)

SIM_KEYS = ("tradeguard-sim", "tradeguard-sim")
"""The key pair the daemon gives its embedded paper venue."""


class AccountSettings(NamedTuple):
    """An account's own limits (Alpaca's rate limit is per account)."""

    request_timeout_s: float
    rate_limit_per_min: float


def account_columns(config: Config) -> dict[str, str | None]:
    """Mode to the journal's name of its account: ``[broker]`` is None, the live one ``live``."""
    columns: dict[str, str | None] = {config.broker.mode: None}
    if config.broker.live is not None:
        columns["live"] = "live"
    return columns


def resolve_primary(config: Config) -> Endpoint | None:
    """``[broker]``'s endpoint and keys, its mode checked (None: the embedded venue, started later).

    Raises:
        BrokerError: the mode disagrees with the endpoint or the key.
        SecretError: a key file cannot be read.
    """
    broker = config.broker
    if broker.kind == "sim":
        check_mode(mode=broker.mode, url="http://127.0.0.1", key_id="", kind="sim")
        return None
    endpoint = alpaca_endpoint(config, broker, key="broker")
    check_mode(mode=broker.mode, url=endpoint.url, key_id=endpoint.key_id, kind=broker.kind)
    return endpoint


def resolve_live(config: Config) -> Endpoint | None:
    """``[broker.live]``'s endpoint and keys, checked (None: an embedded rehearsal venue).

    Raises:
        BrokerError: a live account that is not Alpaca's live endpoint with a live key, or
            a rehearsal account that points at live trading.
        SecretError: a key file cannot be read.
    """
    live = config.broker.live
    assert live is not None
    if live.kind == "sim":
        check_live_account(url="http://127.0.0.1", key_id="", kind="sim", rehearsal=live.rehearsal)
        return None
    endpoint = alpaca_endpoint(config, live, key="broker.live")
    check_live_account(
        url=endpoint.url, key_id=endpoint.key_id, kind=live.kind, rehearsal=live.rehearsal
    )
    return endpoint


async def start_venue(
    root: anyio.abc.TaskGroup,
    settings: SimSettings,
    *,
    rate_limit_per_min: float,
    state_path: Path,
    key: str,
) -> tuple[Any, Endpoint]:
    """Start an embedded paper venue; its account lives in ``state_path`` (kept across restarts).

    Raises:
        ConfigError: naming ``key`` when the venue cannot open its state.
    """
    from sim.config import SimConfig  # noqa: PLC0415  # the venue only when embedded
    from sim.errors import SimError  # noqa: PLC0415
    from sim.venue import PaperVenue  # noqa: PLC0415

    try:
        venue = PaperVenue(
            SimConfig(
                host=settings.host,
                port=settings.port,
                seed=settings.seed,
                clock=settings.clock,
                starting_cash=settings.starting_cash,
                rate_limit_per_min=max(200, int(rate_limit_per_min) + 10),
                state_path=str(state_path),
            )
        )
    except SimError as exc:
        raise ConfigError(f"{key}: the paper venue's {state_path}: {exc}") from exc
    url = await root.start(venue.run)
    stream_url = url.replace("http", "ws", 1) + "/stream"
    return venue, Endpoint(url, stream_url, url, *SIM_KEYS)


def resolve_endpoints(config: Config, accounts: Mapping[str, Account]) -> None:
    """Each account's endpoint and keys, checked (an embedded venue's comes when it starts)."""
    for account in accounts.values():
        resolve = resolve_primary if account.column is None else resolve_live
        account.endpoint = resolve(config)


async def start_venues(
    root: anyio.abc.TaskGroup, config: Config, accounts: Mapping[str, Account], folder: Path
) -> None:
    """Start the embedded paper venue of each account that has one, its state in ``folder``."""
    broker = config.broker
    for account in accounts.values():
        if account.endpoint is not None:
            continue
        primary = account.column is None
        settings = broker.sim if primary or broker.live is None else broker.live.sim
        name = "paper-venue.db" if primary else f"paper-venue-{account.column}.db"
        account.venue, account.endpoint = await start_venue(
            root,
            settings,
            rate_limit_per_min=account.settings.rate_limit_per_min,
            state_path=folder / name,  # beside the journal: both persist
            key="broker.sim" if primary else "broker.live.sim",
        )


class Account:
    """One broker account: its strategies' books there and the queues to its gateway."""

    def __init__(
        self,
        *,
        mode: str,
        column: str | None,
        books: Mapping[str, StrategyBook],
        settings: AccountSettings,
        size: int,
    ) -> None:
        """``books``: each strategy's book on this account, loaded from the journal."""
        self.mode = mode
        self.column = column
        self.settings = settings
        self.loaded = books
        self.books = {sid: OrderBook(sid, book, account=column) for sid, book in books.items()}
        self.submissions = Channel[SubmitOrder](size)
        self.cancels = Channel[CancelOrder](size)
        self.kill_changes = Channel[KillChanged](64)
        self.endpoint: Endpoint | None = None
        self.venue: Any = None

    def tracked(self) -> dict[str, TrackedOrder]:
        """The journal's unfinished orders on this account, for its gateway."""
        return {
            coid: TrackedOrder(
                sid, order.broker_order_id, order.status, order.intent, order.created_ts
            )
            for sid, book in self.loaded.items()
            for coid, order in book.orders.items()
            if order.status not in FINAL
        }


def initial_modes(
    config: Config, journaled: Mapping[str, str], accounts: Mapping[str, Account]
) -> dict[str, str]:
    """Each strategy's mode at start-up: the journal's last change, else the config's.

    A promotion or demotion is journaled before it takes effect, so a restart (even
    after ``kill -9``) routes the strategy where the last change left it. A journaled
    mode whose account is no longer configured falls back to the config.
    """
    modes: dict[str, str] = {}
    for sid in config.strategies:
        configured = strategy_mode(config, sid)
        mode = journaled.get(sid, configured)
        if mode not in accounts:
            mode = configured
        if mode != configured:
            log.warning("strategy.mode_from_journal", strategy_id=sid, mode=mode, config=configured)
        modes[sid] = mode
    return modes


def account_strategies(config: Config, column: str | None) -> dict[str, StrategyConfig]:
    """The strategies' settings on an account: on the live one, ``live_allocation`` applies."""
    if column is None:
        return dict(config.strategies)
    return {
        sid: msgspec.structs.replace(s, allocation=s.live_allocation)
        if s.live_allocation is not None
        else s
        for sid, s in config.strategies.items()
    }


def circuit_action(strategy_id: str, action: str, mode: str) -> InboundKillCommand:
    """What an account's tripped circuit breaker does to one of its strategies."""
    reason = f"{mode} account circuit breaker"
    command: Demote | Engage = (
        Demote(strategy_id=strategy_id, reason=reason, source="circuit_breaker")
        if action == "demote"
        else Engage(
            scope="strategy", strategy_id=strategy_id, reason=reason, source="circuit_breaker"
        )
    )
    return InboundKillCommand(command=command, origin="circuit_breaker", received_at=time.time())


async def all_recovered(gateways: Iterable[BrokerGateway], ready: anyio.Event) -> None:
    """Set ``ready`` once every account's gateway has reconciled with its broker."""
    for gateway in gateways:
        await gateway.recovered.wait()
    ready.set()


def quote_refresher(
    gateway: BrokerGateway, max_age_s: float
) -> Callable[[set[str]], Awaitable[None]]:
    """Refresh ``gateway``'s quote cache for the symbols asked (older than ``max_age_s``)."""

    async def refresh(symbols: set[str]) -> None:
        await gateway.fresh_quotes(symbols, max_age_s=max_age_s)

    return refresh


def account_desk(
    account: Account, sid: str, guardian: RiskGuardian, gateway: BrokerGateway, config: Config
) -> AccountDesk:
    """One strategy's desk on ``account``: its book there, the guardian and the queues."""
    return AccountDesk(
        account=account.column,
        book=account.books[sid],
        guardian=guardian,
        submissions=account.submissions.sender.clone(),
        cancels=account.cancels.sender.clone(),
        admission=gateway.expected_submit_wait_s,
        refresh_quotes=quote_refresher(gateway, config.risk.quote_max_age_s),
        equity=guardian.current_equity,
    )


def load_accounts(journal: Journal, config: Config) -> dict[str, Account]:
    """Each configured account, by mode, with its strategies' books (decisions shared)."""
    strategies = frozenset(config.strategies)
    primary = load_books(journal, strategies)
    accounts: dict[str, Account] = {}
    for mode, column in account_columns(config).items():
        limits = config.broker.live if column is not None else None
        accounts[mode] = Account(
            mode=mode,
            column=column,
            books=primary
            if column is None
            else load_books(journal, strategies, account=column, shared=primary),
            settings=AccountSettings(
                (limits or config.broker).request_timeout_s,
                (limits or config.broker).rate_limit_per_min,
            ),
            size=config.daemon.inbox_size,
        )
    return accounts


def account_role(
    accounts: Mapping[str, Account],
    account: Account,
    *,
    config: Config,
    managers: Callable[[], Mapping[str, OrderManager]],
    guardians: Callable[[], Mapping[str, RiskGuardian]],
    kill_commands: MemoryObjectSendStream[InboundKillCommand],
) -> AccountRole | None:
    """With two accounts: what the guardian of ``account`` publishes and does on a trip.

    A tripped live account demotes (or kills, ``broker.live.on_circuit_open``) each
    strategy trading live; a tripped paper account kills each strategy trading paper.
    The other account's strategies keep trading. One account: None (engage global).
    """
    if len(accounts) < 2:  # one account: the v1 daemon, unchanged
        return None
    live = config.broker.live
    action = live.on_circuit_open if account.mode == "live" and live is not None else "kill"

    def strategies() -> list[str]:
        return [sid for sid, m in managers().items() if m.mode == account.mode]

    async def on_circuit_open() -> None:
        for sid in strategies():
            await kill_commands.send(circuit_action(sid, action, account.mode))

    return AccountRole(
        mode=account.mode,
        column=account.column,
        strategies=strategies,
        publishes=account.column is None,
        accounts=lambda: {m: g.account_state() for m, g in guardians().items()},
        on_circuit_open=on_circuit_open,
    )


def promotion_of(
    config: Config, sid: str, state_path: Path, accounts: Mapping[str, Account]
) -> Promotion | None:
    """What a promotion of ``sid`` is checked against (None: not a paper and a live account)."""
    if "paper" not in accounts or "live" not in accounts:
        return None

    async def record(strategy_id: str, account: str | None) -> PaperRecord:
        read = functools.partial(paper_record, state_path, strategy_id, account=account)
        return await anyio.to_thread.run_sync(read)

    return Promotion(
        rules=config.promotion, allocation=config.strategies[sid].allocation, record=record
    )


def reset_circuits(
    guardians: Mapping[str, RiskGuardian],
) -> Callable[[str | None], Awaitable[str]]:
    """``reset_circuit`` for the authority: it closes every account's circuit breaker."""

    async def reset(operator: str | None) -> str:
        outcomes = [(mode, await g.reset_circuit(operator)) for mode, g in guardians.items()]
        if len(outcomes) == 1:
            return outcomes[0][1]
        return "; ".join(f"{mode} account: {outcome}" for mode, outcome in outcomes)

    return reset
