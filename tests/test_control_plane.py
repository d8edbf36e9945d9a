"""The control plane holds under Alpaca's real rate limit and under a flood of intents.

Real mosquitto, real alpaca-py against the paper venue at Alpaca's rate limit (200/min
at the venue, 190/min in the daemon) with 10-30 ms of jittered latency per request.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import (
    DaemonProcess,
    Mosquitto,
    Probe,
    poll_until,
    probe,
    realistic_venue,
    running_daemon,
    trading_tables,
    write_config,
)
from sim_harness import running_venue

from daemon.embedded_broker import find_mosquitto
from protocol.topics import Topics
from sim.venue import PaperVenue

pytestmark = pytest.mark.anyio

ENGAGE = {"type": "engage", "scope": "global", "reason": "drill", "source": "test"}


def market(intent_id: str, symbol: str = "AAPL") -> dict[str, Any]:
    return {"type": "order", "intent_id": intent_id, "symbol": symbol, "side": "buy", "qty": 1}


def decisions(bodies: list[Any]) -> list[dict[str, Any]]:
    return [b for b in bodies if isinstance(b, dict) and b.get("type") in ("accepted", "rejected")]


def posts_after(venue: PaperVenue, closed_at: float, slack_s: float = 0.2) -> list[float]:
    """POSTs that reached the venue later than one already on the wire at ``closed_at`` could."""
    return [ts - closed_at for ts in venue.order_post_arrivals if ts > closed_at + slack_s]


async def engage_and_time(p: Probe, t: Topics) -> tuple[float, dict[str, Any]]:
    """Publish a global engage; seconds until the retained engaged state arrives, and it."""
    start = len(p.received)
    sent = time.time()
    await p.publish(t.kill_command, ENGAGE)
    state = await p.expect(t.kill_state, lambda s: s["global"]["engaged"], start=start)
    return time.time() - sent, state


async def test_engage_with_orders_queued_behind_the_rate_limit(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.event("s1"), t.kill_state, t.audit) as p,
        ):
            for n in range(40):
                await p.publish(t.intent("s1"), market(f"q{n}"))
            await p.wait_until(lambda: len(decisions(p.bodies(t.event("s1")))) == 40)
            assert all(d["type"] == "accepted" for d in decisions(p.bodies(t.event("s1"))))
            # The bucket's burst goes out at once; the rest wait for tokens at 190/min.
            await poll_until(lambda: len(venue.order_post_arrivals) >= 10)
            await anyio.sleep(2.0)  # the scenario: the engage comes 2 s later
            sent_before = len(venue.order_post_arrivals)
            assert sent_before < 40, "nothing was left queued: the scenario did not happen"
            latency, state = await engage_and_time(p, t)
            closed_at = state["global"]["since"]
            assert state["global"]["settled"] is False
            # The state does not wait for in-flight POSTs; a later record says they settled.
            settled = await p.expect(
                t.kill_state, lambda s: s["global"]["engaged"] and s["global"]["settled"]
            )
            assert settled["global"]["since"] == closed_at
            await p.expect(t.audit, lambda a: a["type"] == "kill.settled" and a["ok"])
            assert daemon.gateway is not None
            assert not [c for ts, c in daemon.gateway.gate_passes if ts > closed_at]
            assert not posts_after(venue, closed_at)
            # Every queued order ended unsent, saying why; nothing is left open anywhere.
            await poll_until(
                lambda: all(
                    o.status in ("filled", "cancelled")
                    for o in daemon.managers["s1"].orders.values()
                )
            )
            unsent = [o for o in daemon.managers["s1"].orders.values() if o.broker_order_id is None]
            assert len(unsent) == 40 - len(venue.order_post_arrivals)
            assert all(o.status == "cancelled" for o in unsent)
            assert not venue.engine.open_orders()
            # The tight figure is `make bench`'s; here only that it did not wait for the POSTs.
            assert latency < 0.5, latency


def intent_lines(sid: str, count: int) -> str:
    """``count`` resting limit buys, one JSON document a line (``mosquitto_pub -l``)."""
    return "".join(
        f'{{"type":"order","intent_id":"{sid}-f{n}","symbol":"AAPL","side":"buy","qty":1,'
        f'"order_type":"limit","limit_price":1.0}}\n'
        for n in range(count)
    )


def flood(broker: Mosquitto, topic: str, lines: Path) -> subprocess.Popen[bytes]:
    """One client publishing every line of ``lines`` as fast as it can (QoS 1)."""
    pub = shutil.which("mosquitto_pub") or str(Path(find_mosquitto()).with_name("mosquitto_pub"))
    with lines.open("rb") as stdin:
        return subprocess.Popen(
            [pub, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic, "-l"],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) / 1024


@pytest.mark.slow
async def test_engage_holds_under_a_flood_of_30000_intents(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    sids = ("s1", "s2", "s3")
    per_client = 10_000
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            # The flood's accepted orders must pass the guardian: this is about the intake.
            risk_overrides={"max_capital_deployed": 1.0},
            **{sid: {} for sid in sids},
        )
        config = write_config(tmp_path, tables)
        daemon = DaemonProcess(config)
        files = []
        for sid in sids:
            path = tmp_path / f"{sid}.lines"
            path.write_text(intent_lines(sid, per_client))
            files.append(path)
        try:
            await anyio.to_thread.run_sync(daemon.start)
            assert daemon.process is not None
            # Two watchers: the kill state has a connection of its own, as a phone would,
            # so its arrival is not queued behind 30,000 events in the test's own client.
            async with (
                probe(mosquitto, f"{prefix}/v1/strategy/+/event", t.daemon_status) as p,
                probe(mosquitto, t.kill_state) as phone,
            ):
                clients = [
                    flood(mosquitto, t.intent(sid), f) for sid, f in zip(sids, files, strict=True)
                ]
                await anyio.sleep(1.0)  # the engage comes 1 s into the flood
                latency, state = await engage_and_time(phone, t)
                closed_at = state["global"]["since"]
                for client in clients:
                    assert await anyio.to_thread.run_sync(client.wait, 120) == 0
                # The broker holds what the daemon has not read yet: let it drain. A marker
                # sent after the flood is answered once everything queued before it was.
                marker = market("drained")  # valid: refused (engaged) and journaled once
                with anyio.fail_after(120):
                    while not any(
                        isinstance(b, dict) and b.get("intent_id") == "drained"
                        for b in p.bodies(t.event("s1"))
                    ):
                        await p.publish(t.intent("s1"), marker)
                        with anyio.move_on_after(2.0):
                            await p.expect(t.event("s1"), lambda b: b.get("intent_id") == "drained")
                await poll_until(lambda: not venue.engine.open_orders(), timeout=60)
                rss = peak_rss_mb(daemon.process.pid)
                code = await anyio.to_thread.run_sync(daemon.terminate, 60)
                log = daemon.log_text()
                assert code == 0, log[-3000:]
                stats = [
                    line
                    for line in map(_json, log.encode().splitlines())
                    if isinstance(line, dict) and line.get("event") == "mqtt.session_stats"
                ]
                assert stats, log[-3000:]
                received, overloaded = stats[-1]["received_intents"], stats[-1]["overloaded"]
                # Every intent the daemon received gets exactly one decision.
                events = f"{prefix}/v1/strategy/"

                def answered() -> list[dict[str, Any]]:
                    return [
                        d
                        for m in p.received
                        if m.topic.startswith(events)
                        for d in decisions([_json(m.payload)])
                    ]

                await p.wait_until(lambda: len(answered()) >= received, timeout=60)
                answers = answered()
                per_intent = Counter(d["intent_id"] for d in answers if not d.get("duplicate"))
                doubled = [i for i, n in per_intent.items() if n > 1]
                assert not doubled, doubled[:10]
                assert len(answers) == received
                codes = Counter(r["code"] for d in answers for r in d.get("reasons", []))
                assert codes["OVERLOADED"] == overloaded
                # The daemon stayed connected, and nothing reached the broker after the engage.
                assert "mqtt.disconnected" not in log
                offline = [m for m in p.received if m.topic == t.daemon_status]
                assert all(m.payload != b"offline" for m in offline[:-1])
                assert not posts_after(venue, closed_at)
                assert rss < 200, f"peak RSS {rss:.0f} MB"
                print(
                    f"flood: engage->state {latency * 1000:.1f} ms; received {received} of "
                    f"{len(sids) * per_client}; overloaded {overloaded}; codes {dict(codes)}; "
                    f"peak RSS {rss:.0f} MB"
                )
                assert latency < 1.0, latency  # the tight figure is `make bench`'s
        finally:
            daemon.stop_quietly()


def _json(payload: bytes) -> Any:
    import msgspec  # noqa: PLC0415

    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None


def resting(intent_id: str) -> dict[str, Any]:
    return {**market(intent_id), "order_type": "limit", "limit_price": 1.0}


async def test_orders_that_cannot_reach_the_broker_in_time_are_refused_broker_busy(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(realistic_venue()) as venue:
        # 60/min (a bucket of 5) and a 5 s deadline: about 8 orders fit, the rest cannot.
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            broker_overrides={"rate_limit_per_min": 60.0, "submit_deadline_s": 5.0},
        )
        async with (
            running_daemon(write_config(tmp_path, tables)) as daemon,
            probe(mosquitto, t.event("s1")) as p,
        ):
            # After READY the gateway polls the account once (3 requests): wait for it, or
            # it takes the tokens the admission counted on for these orders. (Known gap:
            # polls do not yet yield to queued orders in the bucket; see the session note.)
            await poll_until(lambda: daemon.guardian._basis is not None)
            for n in range(20):
                await p.publish(t.intent("s1"), resting(f"b{n}"))
            await p.wait_until(lambda: len(decisions(p.bodies(t.event("s1")))) == 20)
            answers = decisions(p.bodies(t.event("s1")))
            accepted = [a["intent_id"] for a in answers if a["type"] == "accepted"]
            busy = [
                a
                for a in answers
                if a["type"] == "rejected" and a["reasons"][0]["code"] == "BROKER_BUSY"
            ]
            assert 3 <= len(accepted) <= 12, accepted
            assert len(accepted) + len(busy) == 20
            assert "submit_deadline_s" in busy[0]["reasons"][0]["message"]
            # Every accepted order reaches the venue, each inside its deadline.
            await poll_until(lambda: len(venue.order_post_arrivals) == len(accepted), timeout=15)
            manager = daemon.managers["s1"]
            await poll_until(
                lambda: all(manager.orders[f"s1-{i}"].broker_order_id for i in accepted)
            )
            assert (
                max(venue.order_post_arrivals) - min(o.created_ts for o in manager.orders.values())
                <= 5.0
            )


async def test_an_order_still_unsent_at_its_deadline_expires_and_is_never_sent(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    # The venue answers each POST after 1.5 s: four gateway workers get through about
    # 2.7 orders a second, and an order accepted behind them can outlive a 2 s deadline.
    async with running_venue(realistic_venue(route_latency_s={"POST /v2/orders": 1.5})) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            broker_overrides={"submit_deadline_s": 2.0, "request_timeout_s": 5.0},
        )
        async with (
            running_daemon(write_config(tmp_path, tables)) as daemon,
            probe(mosquitto, t.event("s1")) as p,
        ):
            for n in range(12):
                await p.publish(t.intent("s1"), resting(f"x{n}"))
            manager = daemon.managers["s1"]
            await poll_until(
                lambda: (
                    len(manager.orders) == 12
                    and all(o.status in ("accepted", "expired") for o in manager.orders.values())
                ),
                timeout=30,
            )
            expired = [o for o in manager.orders.values() if o.status == "expired"]
            sent = [o for o in manager.orders.values() if o.status == "accepted"]
            assert expired, "no order outlived its deadline: the scenario did not happen"
            assert all(o.broker_order_id is None for o in expired)
            at_venue = {o.client_order_id for o in venue.engine.orders.values()}
            assert not at_venue & {o.client_order_id for o in expired}, "an expired order was sent"
            assert len(at_venue) == len(sent)
            events = [
                b
                for b in p.bodies(t.event("s1"))
                if b.get("type") == "order" and b.get("status") == "expired"
            ]
            assert len(events) == len(expired)
            assert all("never sent" in e["detail"] for e in events)
            # Sent ones left inside their deadline (arrival is taken before the venue's delay).
            first_accept = min(o.created_ts for o in manager.orders.values())
            assert all(ts - first_accept <= 2.0 + 0.5 for ts in venue.order_post_arrivals)


async def test_kill9_during_a_rate_limited_backlog_loses_and_doubles_nothing(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    intent_ids = [f"c{n:03d}" for n in range(200)]
    async with running_venue(realistic_venue()) as venue:
        config = write_config(tmp_path, trading_tables(mosquitto, prefix, tmp_path, venue.base_url))
        daemon = DaemonProcess(config)
        try:
            async with probe(mosquitto, t.event("s1"), t.daemon_status) as p:
                await anyio.to_thread.run_sync(daemon.start)
                for iid in intent_ids:
                    await p.publish(t.intent("s1"), resting(iid))
                # Crash while orders wait behind the 190/min bucket.
                await poll_until(lambda: len(venue.order_post_arrivals) >= 20)
                daemon.kill9()
                queued_at_crash = len(venue.order_post_arrivals)
                started = time.monotonic()
                start = len(p.received)
                await anyio.to_thread.run_sync(daemon.start)
                await p.expect(t.daemon_status, lambda b: b == "online", start=start, raw=False)
                online_after = time.monotonic() - started
                # The strategy re-sends what it has no answer for; every intent is decided.
                for iid in intent_ids:
                    await p.publish(t.intent("s1"), resting(iid))
                await p.wait_until(
                    lambda: (
                        {d["intent_id"] for d in decisions(p.bodies(t.event("s1")))}
                        >= set(intent_ids)
                    ),
                    timeout=60,
                )
                accepted = {
                    d["intent_id"]
                    for d in decisions(p.bodies(t.event("s1")))
                    if d["type"] == "accepted"
                }
                assert accepted, "nothing was accepted: the scenario did not happen"

                def settled() -> bool:
                    ended = {
                        b["intent_id"]
                        for b in p.bodies(t.event("s1"))
                        if b.get("type") == "order"
                        and b.get("status") in ("accepted", "expired", "rejected")
                    }
                    return ended >= accepted

                await poll_until(settled, timeout=90)
                at_venue = [o.client_order_id for o in venue.engine.orders.values()]
                assert len(at_venue) == len(set(at_venue)), "an order was doubled at the venue"
                assert set(at_venue) <= {f"s1-{iid}" for iid in accepted}, (
                    "an order nobody accepted"
                )
                finals = {
                    b["intent_id"]: b["status"]
                    for b in p.bodies(t.event("s1"))
                    if b.get("type") == "order"
                }
                for iid in accepted:
                    assert f"s1-{iid}" in at_venue or finals[iid] in ("expired", "rejected"), iid
                print(
                    f"crash: {queued_at_crash} POSTs before the kill; online {online_after:.2f} s "
                    f"after the restart began; {len(accepted)} accepted, {len(at_venue)} at venue"
                )
                assert online_after < 5.0, online_after
        finally:
            daemon.stop_quietly()


async def test_an_engage_behind_a_flood_of_bad_commands_is_not_lost(
    own_mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    """9,000 unreadable commands queued at the broker ahead of an engage: none is dropped.

    The control plane acknowledges a command only once routed and takes at most its
    Receive Maximum at a time: the broker holds the rest. Acknowledged on arrival, the
    commands beyond the client library's queue were acknowledged and thrown away, and
    an engage among them with them. Each refusal is still journaled and audited.
    """
    t = Topics(prefix)
    flood = 9_000  # within the broker's queue for one connection (10,000)
    lines = tmp_path / "bad.lines"
    lines.write_text("not a command\n" * flood)
    async with running_venue(realistic_venue()) as venue:
        tables = trading_tables(own_mosquitto, prefix, tmp_path, venue.base_url)
        async with (
            running_daemon(write_config(tmp_path, tables)) as daemon,
            probe(own_mosquitto, t.kill_state) as p,
        ):
            pub = shutil.which("mosquitto_pub") or str(
                Path(find_mosquitto()).with_name("mosquitto_pub")
            )
            with lines.open("rb") as source:
                # Returns once the broker has every one: the engage is queued behind them.
                await anyio.to_thread.run_sync(
                    lambda: subprocess.run(
                        [pub, "-p", str(own_mosquitto.port), "-q", "1", "-l", "-t", t.kill_command],
                        stdin=source,
                        check=True,
                    )
                )
            await engage_and_time(p, t)  # waits for the engaged state (10 s at most)

            def refused() -> int:
                rows = daemon.journal.query(
                    "SELECT count(*) FROM audit WHERE type = 'kill.invalid_command'"
                )
                return int(rows[0][0])

            await poll_until(lambda: refused() == flood)
