"""Wiring: the one place where channels are created and actors are connected.

Start-up order: journal (state loaded before any intent is answered), embedded
mosquitto if configured, then the actors; READY=1 once the MQTT session is
subscribed. Shutdown (SIGTERM/SIGINT or :meth:`Daemon.request_stop`): stop
taking intents, let the order managers finish what they hold under a shielded
timeout, stop the other actors, publish ``offline``, disconnect, stop mosquitto.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from actors.admin_code import AdminCodeVerifier, hash_code
from actors.audit import AuditTrail
from actors.base import TradingHalt
from actors.broker_gateway import BrokerGateway
from actors.channels import (
    BrokerStatus,
    Channel,
    InboundIntent,
    Publish,
)
from actors.home_assistant import HomeAssistantDiscovery
from actors.kill_sources import KillSources
from actors.kill_switch import KillSwitchAuthority
from actors.order_manager import OrderManager
from actors.risk_guardian import RiskGuardian
from daemon.account_wiring import (
    Account,
    account_desk,
    account_role,
    account_strategies,
    all_recovered,
    initial_modes,
    load_accounts,
    promotion_of,
    quote_refresher,
    reset_circuits,
    resolve_endpoints,
    start_venues,
)
from daemon.config import Config, read_secret, resolve_path
from daemon.embedded_broker import BrokerAccess, EmbeddedMosquitto, prepare_logins
from daemon.endpoints import GENERATED_CODE_FILE, control_endpoint, demo_code, mqtt_endpoint
from daemon.journal import (
    Journal,
    JournalWriter,
    load_gate,
    load_last_totp_step,
    load_modes,
    load_risk_state,
)
from daemon.links import Links
from daemon.metrics import Metrics
from daemon.mqtt_session import MqttSession
from daemon.notify import SystemdNotifier
from daemon.state_lock import StateFolderLock
from daemon.supervisor import Plan, Supervised, log_loop_exception, supervise
from daemon.version import tradeguard_version
from protocol.messages import AuditRecord
from protocol.topics import Topics

log = structlog.get_logger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005


class Daemon:
    """The tradeguard daemon: builds everything from a config and runs it.

    Args:
        config: the validated configuration.
        notifier: systemd notifier (a no-op outside systemd).
        announce: called with one line once the daemon is ready (the CLI prints it).
    """

    def __init__(
        self,
        config: Config,
        *,
        notifier: SystemdNotifier | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        """Open the journal and load persisted state; nothing runs yet."""
        self.config = config
        self.version = tradeguard_version()
        self.notifier = notifier or SystemdNotifier()
        self._announce = announce
        self.halt = TradingHalt()
        self.topics = Topics(config.mqtt.topic_prefix)
        self.state_path = resolve_path(config, config.state.path)
        self.state_lock = StateFolderLock(self.state_path.parent)
        self._stop = anyio.Event()
        self.ready = anyio.Event()
        self.session: MqttSession | None = None
        self.authority: KillSwitchAuthority | None = None
        self.guardian: RiskGuardian | None = None
        self.managers: dict[str, OrderManager] = {}
        self.gateway: BrokerGateway | None = None
        self.journal_writer: JournalWriter | None = None
        self.metrics = Metrics()
        self.metrics.bind(self)
        self.metrics_port: int | None = None
        self.mqtt_port: int | None = None
        self.broker_url: str | None = None
        self.venue: Any = None
        self.live_venue: Any = None
        self.gateways: dict[str, BrokerGateway] = {}
        self.guardians: dict[str, RiskGuardian] = {}
        self.state_lock.acquire()  # one daemon per journal: before the journal is opened
        try:
            self._open(config)
            self._resolve_broker()
        except BaseException:
            # A daemon that failed to build must not keep the folder from the next one.
            if hasattr(self, "journal"):
                self.journal.close()
            self.state_lock.release()
            raise

    def _open(self, config: Config) -> None:
        """Make the embedded broker's logins, open the journal, load state, set up releases."""
        self.broker_access: BrokerAccess | None = None
        if config.mqtt.is_embedded:
            # The daemon logs in to its own broker with a generated login (no anonymous users).
            self.config, self.broker_access = prepare_logins(config, self.state_path.parent)
        self.journal = Journal(self.state_path)
        self.gate = load_gate(self.journal)
        self.accounts = load_accounts(self.journal, config)
        self.modes = initial_modes(config, load_modes(self.journal), self.accounts)
        kill = config.kill
        code_hash = kill.admin_code_hash
        self.demo_code_file: Path | None = None
        if not kill.totp_secret_file and not code_hash:
            # No release method configured (the built-in defaults among others): a switch
            # that nobody can release would stop trading for good, so make an admin code.
            self.demo_code_file = self.state_path.parent / GENERATED_CODE_FILE
            code_hash = hash_code(demo_code(self.demo_code_file))
        self.verifier = AdminCodeVerifier(
            totp_secret=read_secret(config, kill.totp_secret_file, key="kill.totp_secret_file")
            if kill.totp_secret_file
            else None,
            code_hash=code_hash,
            last_totp_step=load_last_totp_step(self.journal),
            max_failures=kill.max_failures,
            window_s=kill.failure_window_s,
            lockout_s=kill.lockout_s,
        )

    @property
    def primary(self) -> Account:
        """The ``[broker]`` account."""
        return next(a for a in self.accounts.values() if a.column is None)

    def request_stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._stop.set()

    async def run(self) -> None:
        """Run until stopped; returns after a clean shutdown."""
        asyncio.get_running_loop().set_exception_handler(log_loop_exception)
        # The journal and the HTTP calls run in threads, and SQLite and sockets hand the GIL
        # back at every step. With the event loop busy, each hand-back waits up to the switch
        # interval (5 ms by default): a commit of 500 rows could take seconds under a flood.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        try:
            async with anyio.create_task_group() as root:
                root.start_soon(self._watch_signals)
                root.start_soon(self.notifier.run_watchdog)
                port = self.config.mqtt.port
                if self.config.mqtt.is_embedded:
                    mosquitto = EmbeddedMosquitto(
                        state_dir=self.state_path.parent,
                        port=port,
                        binary=self.config.mqtt.mosquitto_binary,
                        access=self.broker_access,
                    )
                    port = await root.start(mosquitto.run)
                self.mqtt_port = port
                if self.config.metrics.enabled:
                    self.metrics_port = await root.start(
                        self.metrics.serve, self.config.metrics.host, self.config.metrics.port
                    )
                await self._start_broker(root)
                await self._run_actors(port)
                root.cancel_scope.cancel()
        finally:
            self.journal.close()
            self.state_lock.release()
            self.notifier.close()

    async def _start_broker(self, root: anyio.abc.TaskGroup) -> None:
        """Start the embedded paper venue of each account that has one."""
        await start_venues(root, self.config, self.accounts, self.state_path.parent)
        self.venue = self.primary.venue
        self.live_venue = self.accounts["live"].venue if "live" in self.accounts else None
        assert self.primary.endpoint is not None
        self.broker_url = self.primary.endpoint.url

    def _resolve_broker(self) -> None:
        """Resolve every account's endpoint and keys and check its mode, before anything starts.

        A mismatch is then a one-line error at start-up, not a daemon trading on the
        wrong account.
        """
        resolve_endpoints(self.config, self.accounts)
        if self.primary.endpoint is not None:
            self.broker_url = self.primary.endpoint.url

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("daemon.signal", signal=signal.Signals(signum).name)
                self._stop.set()
                return

    async def _run_actors(self, mqtt_port: int) -> None:
        """Build every actor over its channels, then hand them to the supervisor."""
        links = Links(self.config)
        writer = JournalWriter(self.journal, halt=self.halt)
        self.journal_writer = writer
        trail_out = links.control_outbound.sender.clone()
        trail = AuditTrail(
            records=links.audit_records.receiver,
            submit=links.audit_records.sender,
            journal=writer,
            outbound=trail_out,
            topics=self.topics,
            halt=self.halt,
        )
        services = self._account_actors(links, writer, trail)
        guardians, gateways = self.guardians, self.gateways
        guardian, gateway = guardians[self.primary.mode], gateways[self.primary.mode]
        ha = self._home_assistant(links)
        sources_out = links.control_outbound.sender.clone()
        sources = self._kill_sources(links, trail, ha, sources_out)
        authority_out = links.control_outbound.sender.clone()
        authority = self._authority(links, writer, guardian, sources, authority_out)
        ready = anyio.Event()
        managers, desks = self._managers(
            links, writer=writer, guardians=guardians, gateways=gateways, trail=trail, ready=ready
        )
        loopback = links.outbound.sender.clone()
        session = self._session(links, mqtt_port, ha, loopback)
        self.session, self.authority, self.guardian = session, authority, guardian
        self.managers, self.gateway = managers, gateway
        await supervise(
            Plan(
                writer=writer,
                session=session,
                services=[
                    Supervised(authority, [authority_out]),
                    Supervised(sources, [sources_out]),
                    Supervised(trail, [trail_out]),
                    *services,
                ],
                desks=desks,
                tasks=[
                    functools.partial(self._announce_ready, session),
                    functools.partial(all_recovered, gateways.values(), ready),
                ],
                stop_intake=functools.partial(self._stop_intake, session, links.intents),
                shared=[
                    links.outbound.sender,
                    links.control_outbound.sender,
                    loopback,
                    links.kill_commands.sender,
                ],
                close_writer=writer.close_input,
                shutdown_timeout_s=self.config.daemon.shutdown_timeout_s,
            )
        )
        log.info("daemon.stopped")

    def _account_actors(
        self, links: Links, writer: JournalWriter, trail: AuditTrail
    ) -> list[Supervised]:
        """Each account's gateway and guardian (in ``self.gateways``, ``self.guardians``)."""
        guardians: dict[str, RiskGuardian] = {}
        gateways = {
            mode: self._gateway(links, trail, account, functools.partial(guardians.get, mode))
            for mode, account in self.accounts.items()
        }
        services: list[Supervised] = []
        for mode, account in self.accounts.items():
            out = links.outbound.sender.clone()
            guardians[mode] = self._guardian(
                links, account, writer=writer, trail=trail, outbound=out, gateway=gateways[mode]
            )
            services += [Supervised(guardians[mode], [out]), Supervised(gateways[mode])]
        self.gateways, self.guardians = gateways, guardians
        return services

    def _guardian(
        self,
        links: Links,
        account: Account,
        *,
        writer: JournalWriter,
        trail: AuditTrail,
        outbound: MemoryObjectSendStream[Publish],
        gateway: BrokerGateway,
    ) -> RiskGuardian:
        """The guardian of one account: its equity, drawdowns, circuit and exposure."""
        config = self.config
        circuit_state, session_state = load_risk_state(self.journal, account.column)
        kill_commands = links.kill_commands.sender.clone()
        return RiskGuardian(
            risk=config.risk,
            strategies=account_strategies(config, account.column),
            broker_mode="live" if account.mode == "live" else "paper",
            broker_kind=config.broker.live.kind
            if account.column is not None and config.broker.live is not None
            else config.broker.kind,
            gate=self.gate,
            topics=self.topics,
            outbound=outbound,
            version=self.version,
            halt=self.halt,
            journal=writer,
            kill_commands=kill_commands,
            circuit=circuit_state,
            session=session_state,
            audit=trail.record,
            books=account.books,
            quotes=gateway.quotes,
            refresh_quotes=quote_refresher(gateway, self.config.risk.quote_max_age_s),
            account=account_role(
                self.accounts,
                account,
                config=config,
                managers=lambda: self.managers,
                guardians=lambda: self.guardians,
                kill_commands=kill_commands,
            ),
        )

    def _home_assistant(self, links: Links) -> HomeAssistantDiscovery | None:
        settings = self.config.homeassistant
        if not settings.enabled:
            return None
        return HomeAssistantDiscovery(settings, self.topics, links.strategies, self.version)

    def _kill_sources(
        self,
        links: Links,
        trail: AuditTrail,
        ha: HomeAssistantDiscovery | None,
        outbound: MemoryObjectSendStream[Publish],
    ) -> KillSources:
        return KillSources(
            gate=self.gate,
            heartbeats=links.heartbeats.receiver,
            triggers=links.triggers.receiver,
            commands=links.kill_commands.sender.clone(),
            outbound=outbound,
            audit=trail.record,
            trigger_configs=self.config.kill.triggers,
            heartbeat_timeouts={
                sid: s.heartbeat_timeout_s
                for sid, s in self.config.strategies.items()
                if s.heartbeat_timeout_s is not None
            },
            home_assistant=ha,
            halt=self.halt,
        )

    def _authority(
        self,
        links: Links,
        writer: JournalWriter,
        guardian: RiskGuardian,
        sources: KillSources,
        outbound: MemoryObjectSendStream[Publish],
    ) -> KillSwitchAuthority:
        listeners = [
            *(account.kill_changes.sender.send for account in self.accounts.values()),
            *(c.sender.send for c in links.kill_changes.values()),
            sources.on_kill_change,
        ]
        return KillSwitchAuthority(
            gate=self.gate,
            journal=writer,
            verifier=self.verifier,
            topics=self.topics,
            strategies=links.strategies,
            commands=links.kill_commands.receiver,
            outbound=outbound,
            listeners=listeners,
            approvals={sid: c.sender.send for sid, c in links.kill_changes.items()},
            is_pending=lambda sid, intent_id: (sid, intent_id) in guardian.pending_approvals,
            reset_circuit=reset_circuits(self.guardians),
            settlements=links.settlements.receiver,
            settlement_sources=len(self.accounts),
            # With a login the broker is a secured one (ACL: each login writes only its own
            # admin/USER topic), so lockouts can count per login. On an open broker anyone
            # could name any USER: one shared count then, or a USER per attempt would do.
            per_user_lockout=self.config.mqtt.username is not None,
            halt=self.halt,
        )

    def _gateway(
        self,
        links: Links,
        trail: AuditTrail,
        account: Account,
        guardian: Callable[[], RiskGuardian | None],
    ) -> BrokerGateway:
        """The broker gateway of one account.

        ``guardian`` gives the account's risk guardian, built after the gateway (it reads
        the gateway's quotes); it takes the account status and the external orders.
        """

        def external_order(strategy_id: str, client_order_id: str) -> None:
            log.warning("order.external", strategy_id=strategy_id, client_order_id=client_order_id)
            if (desk := guardian()) is not None:
                desk.note_external_order(client_order_id)
            trail.record(
                AuditRecord(
                    type="order.external",
                    ok=False,
                    ts=time.time(),
                    strategy_id=strategy_id,
                    source="broker",
                    detail=f"order {client_order_id} is at the {account.mode} broker account "
                    "but not in the journal",
                )
            )

        def on_status(status: BrokerStatus) -> None:
            if (desk := guardian()) is not None:
                desk.on_broker_status(status)

        endpoint = account.endpoint
        assert endpoint is not None
        broker = self.config.broker
        return BrokerGateway(
            url=endpoint.url,
            stream_url=endpoint.stream_url,
            data_url=endpoint.data_url,
            key_id=endpoint.key_id,
            secret_key=endpoint.secret_key,
            gate=self.gate,
            strategies=links.strategies,
            submissions=account.submissions.receiver,
            cancels=account.cancels.receiver,
            kill_changes=account.kill_changes.receiver,
            updates={sid: c.sender for sid, c in links.updates.items()},
            tracked=account.tracked(),
            on_status=on_status,
            on_external=external_order,
            halt=self.halt,
            settlements=links.settlements.sender,
            request_timeout_s=account.settings.request_timeout_s,
            rate_limit_per_min=account.settings.rate_limit_per_min,
            reconcile_interval_s=broker.reconcile_interval_s,
            submit_deadline_s=broker.submit_deadline_s,
            account_poll_s=broker.account_poll_s,
            account=account.column,
        )

    def _managers(
        self,
        links: Links,
        *,
        writer: JournalWriter,
        guardians: dict[str, RiskGuardian],
        gateways: dict[str, BrokerGateway],
        trail: AuditTrail,
        ready: anyio.Event,
    ) -> tuple[dict[str, OrderManager], list[Supervised]]:
        """One order manager per strategy; each desk closes the outbound it was handed."""
        managers: dict[str, OrderManager] = {}
        desks: list[Supervised] = []
        for sid in links.strategies:
            outbound = links.outbound.sender.clone()
            manager = OrderManager(
                strategy_id=sid,
                intents=links.intents[sid].receiver,
                kill_changes=links.kill_changes[sid].receiver,
                updates=links.updates[sid].receiver,
                outbound=outbound,
                journal=writer,
                desks={
                    mode: account_desk(account, sid, guardians[mode], gateways[mode], self.config)
                    for mode, account in self.accounts.items()
                },
                mode=self.modes[sid],
                gate=self.gate,
                topics=self.topics,
                broker_ready=ready,
                audit=trail.record,
                halt=self.halt,
                metrics=self.metrics,
                approval_timeout_s=self.config.strategies[sid].approval_timeout_s,
                submit_deadline_s=self.config.broker.submit_deadline_s,
                promotion=promotion_of(self.config, sid, self.state_path, self.accounts),
            )
            managers[sid] = manager
            desks.append(Supervised(manager, [outbound]))
        return managers, desks

    def _session(
        self,
        links: Links,
        mqtt_port: int,
        ha: HomeAssistantDiscovery | None,
        loopback: MemoryObjectSendStream[Publish],
    ) -> MqttSession:
        config = self.config
        data_endpoint = mqtt_endpoint(config, port=mqtt_port)
        return MqttSession(
            endpoint=data_endpoint,
            control_endpoint=control_endpoint(config, data_endpoint),
            topics=self.topics,
            strategies=links.strategies,
            outbound=links.outbound.receiver,
            control_outbound=links.control_outbound.receiver,
            loopback=loopback,
            intents={sid: c.sender for sid, c in links.intents.items()},
            kill_commands=links.kill_commands.sender,
            heartbeats=links.heartbeats.sender,
            triggers=links.triggers.sender,
            trigger_topics=frozenset(t.topic for t in config.kill.triggers),
            extra_subscriptions=ha.watched_topics() if ha else frozenset(),
            halt=self.halt,
            reconnect_min_s=config.mqtt.reconnect_min_s,
            reconnect_max_s=config.mqtt.reconnect_max_s,
            metrics=self.metrics,
        )

    async def _stop_intake(
        self,
        session: MqttSession,
        intents: dict[str, Channel[InboundIntent]],
        desks: anyio.CancelScope,
    ) -> None:
        """On stop: take no more intents, give in-flight work a bounded time, then cut it off."""
        await self._stop.wait()
        log.info("daemon.stopping")
        self.notifier.stopping()
        session.close_intake()
        for channel in intents.values():
            channel.sender.close()
        timeout = self.config.daemon.shutdown_timeout_s
        await anyio.sleep(timeout)
        log.warning("daemon.shutdown_timeout", waited_s=timeout)
        desks.cancel()

    async def _announce_ready(self, session: MqttSession) -> None:
        assert self.gateway is not None
        self.notifier.status("reconciling with the broker")
        for gateway in self.gateways.values():
            await gateway.recovered.wait()
        await session.connected.wait()
        await session.control_connected.wait()
        line = (
            f"tradeguard {self.version} ready: mqtt 127.0.0.1:{self.mqtt_port}"
            if self.config.mqtt.is_embedded
            else f"tradeguard {self.version} ready: mqtt {self.config.mqtt.host}:{self.mqtt_port}"
        )
        line += (
            f" prefix {self.topics.prefix!r}; broker {self.config.broker.kind} {self.broker_url}"
            f" ({self.config.broker.mode}); state {self.state_path}"
        )
        if self.demo_code_file is not None:
            line += f"; admin code in {self.demo_code_file}"
        # What is built by now (modules, the books loaded from the journal) lives as long
        # as the daemon: out of the collector's full passes, which scanned it every time
        # and held the loop 50-70 ms (measured with 10,000 open orders).
        gc.collect()
        gc.freeze()
        self.notifier.ready(line)
        session.mark_ready()
        self.ready.set()
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # uvloop or asyncio
        log.info("daemon.ready", mqtt_port=self.mqtt_port, prefix=self.topics.prefix, loop=loop)
        if self._announce is not None:
            self._announce(line)
