"""Prometheus metrics: every family is exposed and moves with traffic."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import anyio
import pytest
from harness import (
    Mosquitto,
    base_tables,
    poll_until,
    probe,
    running_daemon,
    trading_tables,
    write_config,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sim_harness import fast_config, running_venue

from daemon.version import tradeguard_version
from protocol.topics import Topics

pytestmark = pytest.mark.anyio

FAMILIES = {
    "tradeguard_build_info": "gauge",
    "tradeguard_intents": "counter",
    "tradeguard_intent_reasons": "counter",
    "tradeguard_intents_received": "counter",
    "tradeguard_intents_overloaded": "counter",
    "tradeguard_decision_latency_seconds": "histogram",
    "tradeguard_order_updates": "counter",
    "tradeguard_orders_open": "gauge",
    "tradeguard_kill_engaged": "gauge",
    "tradeguard_circuit_state": "gauge",
    "tradeguard_equity_dollars": "gauge",
    "tradeguard_daily_drawdown_ratio": "gauge",
    "tradeguard_total_drawdown_ratio": "gauge",
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
        # The exposition format version travels in the content type.
        assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
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
            # Far over every size limit: one intent, rejected for several reasons.
            await p.publish(
                t.intent("s1"),
                {
                    "type": "order",
                    "intent_id": "huge",
                    "symbol": "AAPL",
                    "side": "buy",
                    "qty": 1_000_000,
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
            huge = await p.expect(
                t.event("s1"),
                lambda b: b.get("type") == "rejected" and b.get("intent_id") == "huge",
            )
            huge_codes = {reason["code"] for reason in huge["reasons"]}
            venue.inject_errors("GET /v2/account", 503, 3)
            await p.publish(t.kill_command, "ENGAGE")
            await p.expect(t.kill_state, lambda s: s["global"]["engaged"])
            gateway = daemon.gateway
            await poll_until(lambda: gateway.broker_errors >= 1, timeout=15)
            after = await scrape(daemon.metrics_port)
    grew = {
        "accepted": total(after, "tradeguard_intents_total", outcome="accepted")
        - total(before, "tradeguard_intents_total", outcome="accepted"),
        "rejected": total(after, "tradeguard_intents_total", outcome="rejected")
        - total(before, "tradeguard_intents_total", outcome="rejected"),
        "invalid": total(after, "tradeguard_intent_reasons_total", code="INVALID_INTENT"),
        "stale": total(after, "tradeguard_intent_reasons_total", code="STALE_INTENT"),
        "reasons": total(after, "tradeguard_intent_reasons_total")
        - total(before, "tradeguard_intent_reasons_total"),
        "received": total(after, "tradeguard_intents_received_total")
        - total(before, "tradeguard_intents_received_total"),
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
    # Once per intent by outcome, however many reasons; once per code in the reasons family.
    assert len(huge_codes) >= 2, huge_codes
    assert grew["rejected"] == 3
    assert grew["reasons"] == len(huge_codes) + 2
    for code in huge_codes:
        assert total(after, "tradeguard_intent_reasons_total", strategy="s1", code=code) >= 1
    assert grew["received"] == 63
    assert grew["invalid"] == 1
    assert grew["stale"] == 1
    assert grew["latency"] == 62
    assert grew["filled"] == 60
    assert grew["commits"] > 0
    assert grew["commit_time"] > 0
    assert grew["waits"] > 0
    assert grew["errors"] >= 1
    assert total(after, "tradeguard_kill_engaged", scope="global") == 1.0
    assert total(before, "tradeguard_kill_engaged", scope="global") == 0.0
    assert total(after, "tradeguard_equity_dollars") > 0
    assert 0 <= total(after, "tradeguard_daily_drawdown_ratio") <= 1
    assert total(after, "tradeguard_build_info", version=tradeguard_version()) == 1.0
    assert ("tradeguard_intents_overloaded_total", ()) in after
    assert total(after, "tradeguard_circuit_state", state="closed") == 1.0
    assert total(after, "tradeguard_broker_connected") in (0.0, 1.0)
    assert ("tradeguard_mqtt_reconnects_total", ()) in after


async def fetch(port: int, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response,
    ):
        assert response.status == 200
        return response.headers["Content-Type"], await response.text()


async def test_scrape_passes_promtool_and_openmetrics(
    mosquitto: Mosquitto, prefix: str, tmp_path: Path
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: `make test-tools` installs Debian's prometheus as root")
    t = Topics(prefix)
    tables = base_tables(mosquitto, prefix, tmp_path)
    tables["metrics"] = {"enabled": True, "port": 0}
    async with (
        running_daemon(write_config(tmp_path, tables)) as daemon,
        probe(mosquitto, t.event("s1"), t.event("nosuch")) as p,
    ):
        assert daemon.metrics_port is not None
        # Every labelled family gets samples: an accepted, a rejected and an unknown strategy.
        await p.publish(
            t.intent("s1"),
            {"type": "order", "intent_id": "a", "symbol": "AAPL", "side": "buy", "qty": 1},
        )
        await p.publish(t.intent("s1"), b"not json")
        await p.publish(
            t.intent("nosuch"),
            {"type": "order", "intent_id": "b", "symbol": "AAPL", "side": "buy", "qty": 1},
        )
        await p.expect(t.event("s1"), lambda b: b.get("type") == "accepted")
        await p.expect(t.event("s1"), lambda b: b.get("type") == "rejected")
        await p.expect(t.event("nosuch"), lambda b: b.get("type") == "rejected")
        content_type, text = await fetch(daemon.metrics_port)
        om_type, om_text = await fetch(daemon.metrics_port, "application/openmetrics-text")
    assert content_type == CONTENT_TYPE_PLAIN_0_0_4
    assert 'tradeguard_intent_reasons_total{code="UNKNOWN_STRATEGY",strategy="?"} 1.0' in text
    checked = await anyio.run_process(
        [promtool, "check", "metrics"], input=text.encode(), check=False
    )
    output = (checked.stdout + checked.stderr).decode()
    assert (checked.returncode, output) == (0, ""), output
    # A scraper that asks for OpenMetrics gets it, units included.
    assert om_type == OPENMETRICS
    parsed = openmetrics_families(om_text)  # type: ignore[no-untyped-call]  # unannotated upstream
    families = {family.name: family for family in parsed}
    assert families["tradeguard_equity_dollars"].unit == "dollars"
    assert families["tradeguard_daily_drawdown_ratio"].unit == "ratio"
    assert families["tradeguard_build"].type == "info"
