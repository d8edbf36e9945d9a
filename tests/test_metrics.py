"""Prometheus metrics: every family is exposed and moves with traffic."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from harness import Mosquitto, poll_until, probe, running_daemon, trading_tables, write_config
from prometheus_client.parser import text_string_to_metric_families
from sim_harness import fast_config, running_venue

from protocol.topics import Topics

pytestmark = pytest.mark.anyio

FAMILIES = {
    "tradeguard_intents": "counter",
    "tradeguard_decision_latency_seconds": "histogram",
    "tradeguard_order_updates": "counter",
    "tradeguard_orders_open": "gauge",
    "tradeguard_kill_engaged": "gauge",
    "tradeguard_circuit_state": "gauge",
    "tradeguard_equity": "gauge",
    "tradeguard_daily_drawdown": "gauge",
    "tradeguard_total_drawdown": "gauge",
    "tradeguard_broker_connected": "gauge",
    "tradeguard_mqtt_reconnects": "counter",
    "tradeguard_broker_errors": "counter",
    "tradeguard_rate_limit_waits": "counter",
    "tradeguard_journal_commits": "counter",
    "tradeguard_journal_commit_seconds": "counter",
}


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    for name, kind in FAMILIES.items():
        assert types.get(name) == kind, (name, types.get(name))
    return samples


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all((k, v) in sample_labels for k, v in labels.items())
    )


async def test_every_family_present_and_moving(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    t = Topics(prefix)
    async with running_venue(fast_config(rate_limit_per_min=10**6)) as venue:
        tables = trading_tables(
            mosquitto,
            prefix,
            tmp_path,
            venue.base_url,
            broker_overrides={"rate_limit_per_min": 600.0},
        )
        tables["metrics"] = {"enabled": True, "port": 0}
        config = write_config(tmp_path, tables)
        async with (
            running_daemon(config) as daemon,
            probe(mosquitto, t.event("s1"), t.kill_state) as p,
        ):
            assert daemon.metrics_port is not None
            before = await scrape(daemon.metrics_port)
            for n in range(60):
                await p.publish(
                    t.intent("s1"),
                    {
                        "type": "order",
                        "intent_id": f"m{n}",
                        "symbol": "AAPL",
                        "side": "buy",
                        "qty": 1,
                    },
                )
            await p.publish(t.intent("s1"), b"not json")
            await p.publish(
                t.intent("s1"),
                {
                    "type": "order",
                    "intent_id": "old",
                    "symbol": "AAPL",
                    "side": "buy",
                    "qty": 1,
                    "ts": 1.0,
                },
            )
            await p.wait_until(
                lambda: (
                    sum(
                        1
                        for b in p.bodies(t.event("s1"))
                        if b.get("type") == "order" and b.get("status") == "filled"
                    )
                    >= 60
                )
            )
            venue.inject_errors("GET /v2/account", 503, 3)
            await p.publish(t.kill_command, "ENGAGE")
            await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            gateway = daemon.gateway
            await poll_until(lambda: gateway.broker_errors >= 1, timeout=15)
            after = await scrape(daemon.metrics_port)
    grew = {
        "accepted": total(after, "tradeguard_intents_total", outcome="accepted")
        - total(before, "tradeguard_intents_total", outcome="accepted"),
        "invalid": total(after, "tradeguard_intents_total", reason="INVALID_INTENT"),
        "stale": total(after, "tradeguard_intents_total", reason="STALE_INTENT"),
        "latency": total(after, "tradeguard_decision_latency_seconds_count")
        - total(before, "tradeguard_decision_latency_seconds_count"),
        "filled": total(after, "tradeguard_order_updates_total", status="filled"),
        "commits": total(after, "tradeguard_journal_commits_total")
        - total(before, "tradeguard_journal_commits_total"),
        "commit_time": total(after, "tradeguard_journal_commit_seconds_total")
        - total(before, "tradeguard_journal_commit_seconds_total"),
        "waits": total(after, "tradeguard_rate_limit_waits_total"),
        "errors": total(after, "tradeguard_broker_errors_total"),
    }
    assert grew["accepted"] == 60
    assert grew["invalid"] == 1
    assert grew["stale"] == 1
    assert grew["latency"] == 61
    assert grew["filled"] == 60
    assert grew["commits"] > 0
    assert grew["commit_time"] > 0
    assert grew["waits"] > 0
    assert grew["errors"] >= 1
    assert total(after, "tradeguard_kill_engaged", scope="global") == 1.0
    assert total(before, "tradeguard_kill_engaged", scope="global") == 0.0
    assert total(after, "tradeguard_equity") > 0
    assert total(after, "tradeguard_circuit_state", state="closed") == 1.0
    assert total(after, "tradeguard_broker_connected") in (0.0, 1.0)
    assert ("tradeguard_mqtt_reconnects_total", ()) in after
