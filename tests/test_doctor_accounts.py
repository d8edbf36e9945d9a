"""``tradeguard doctor`` with a live account beside the paper one (``[broker.live]``).

The live account's checks come after the ``[broker]`` account's, named ``live broker
mode``, ``live broker``, ``live clock`` (``live broker port`` for the built-in venue
standing in). Real files, a real paper venue standing in for the live account.
"""

from __future__ import annotations

import json
import socket
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from harness import write_config
from sim_harness import fast_config, running_venue

from daemon.config import load_config
from daemon.doctor import diagnose, run_doctor
from daemon.doctor.results import CheckResult

SECRET = "live-venue-secret-5d1e"
WRONG_SECRET = "not-the-live-secret-0b7"
PAPER_KEY = "PKLIVEDOCTOR1"
LIVE_KEY = "AKLIVEDOCTOR1"


def _secret(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _results(tmp_path: Path, live: dict[str, Any], **tables: Any) -> dict[str, CheckResult]:
    """The doctor's results for the embedded paper venue plus ``[broker.live]`` = ``live``."""
    base: dict[str, dict[str, Any]] = {
        "mqtt": {"port": 0},
        "broker.sim": {"port": 0},
        "broker.live": {k: v for k, v in live.items() if k != "sim"},
        "broker.live.sim": live.get("sim", {}),
        "state": {"path": str(tmp_path / "state" / "state.db")},
        "strategies.s1": {},
    }
    base.update(tables)
    results = diagnose(load_config(write_config(tmp_path, base)))
    return {r.check: r for r in results}


def _alpaca(tmp_path: Path, url: str, key: str, *, rehearsal: bool) -> dict[str, Any]:
    return {
        "url": url,
        "stream_url": url.replace("http", "ws") + "/stream",
        "key_id_file": _secret(tmp_path / "live-key-id", key),
        "secret_key_file": _secret(tmp_path / "live-secret", SECRET),
        "rehearsal": rehearsal,
    }


def test_a_rehearsal_venue_is_checked_on_its_own_port(tmp_path: Path) -> None:
    results = _results(tmp_path, {"kind": "sim", "rehearsal": True, "sim": {"port": 0}})
    # The [broker] account's checks keep their names; the live account's follow.
    assert results["broker mode"].status == "PASS"
    mode = results["live broker mode"]
    assert mode.status == "PASS", mode
    assert mode.detail == "the rehearsal (a paper stand-in) agrees with http://127.0.0.1:0"
    assert results["live broker"].status == "PASS"
    assert results["live broker port"].status == "PASS"
    assert results["live clock"].status == "PASS"


def test_a_busy_rehearsal_port_names_its_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        results = _results(tmp_path, {"kind": "sim", "rehearsal": True, "sim": {"port": port}})
    assert results["live broker port"].status == "WARN"
    assert "broker.live.sim.port" in (results["live broker port"].fix or "")
    assert results["broker port"].status == "PASS"


@pytest.mark.parametrize(
    ("url", "key", "rehearsal", "detail", "fix"),
    [
        (
            "https://paper-api.alpaca.markets",
            LIVE_KEY,
            False,
            "broker.live.url is not https://api.alpaca.markets",
            "broker.live.rehearsal = true",
        ),
        (
            "https://api.alpaca.markets",
            PAPER_KEY,
            False,
            "broker.live.key_id_file is not a live key",
            "broker.live.key_id_file",
        ),
        (
            "https://api.alpaca.markets",
            PAPER_KEY,
            True,
            "broker.live.url points at live trading",
            "a rehearsal is paper",
        ),
    ],
)
def test_a_live_account_that_disagrees_gets_no_keys(  # noqa: PLR0917
    tmp_path: Path, url: str, key: str, rehearsal: bool, detail: str, fix: str
) -> None:
    results = _results(tmp_path, _alpaca(tmp_path, url, key, rehearsal=rehearsal))
    mode = results["live broker mode"]
    assert mode.status == "FAIL", mode
    assert detail in mode.detail
    assert fix in (mode.fix or "")
    # Nothing is sent to a venue the account disagrees with.
    assert results["live broker"].status == "SKIP"
    assert results["live clock"].status == "SKIP"
    assert results["secret broker.live.key_id_file"].status == "PASS"
    assert results["secret broker.live.secret_key_file"].status == "PASS"


def test_an_unreadable_live_key_is_named(tmp_path: Path) -> None:
    live = _alpaca(tmp_path, "https://api.alpaca.markets", LIVE_KEY, rehearsal=False)
    live["key_id_file"] = str(tmp_path / "absent")
    results = _results(tmp_path, live)
    assert results["secret broker.live.key_id_file"].status == "FAIL"
    assert results["live broker mode"].status == "PASS"
    assert results["live broker"].status == "SKIP"
    assert "cannot be read" in results["live broker"].detail


@pytest.mark.anyio
async def test_a_rehearsal_account_at_a_venue_is_asked_and_its_secrets_hidden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_venue(fast_config(key_id=PAPER_KEY, secret_key=SECRET)) as venue:
        live = _alpaca(tmp_path, venue.base_url, PAPER_KEY, rehearsal=True)
        live["stream_url"] = venue.stream_url
        good = await anyio.to_thread.run_sync(partial(_results, tmp_path, live))
        _secret(Path(live["secret_key_file"]), WRONG_SECRET)
        config = load_config(tmp_path / "tradeguard.toml")
        capsys.readouterr()
        code = await anyio.to_thread.run_sync(partial(run_doctor, config, as_json=True))
    assert good["live broker mode"].status == "PASS"
    assert good["live broker"].status == "PASS", good["live broker"]
    assert "status ACTIVE" in good["live broker"].detail
    assert good["live clock"].status == "PASS", good["live clock"]
    # An in-process venue logs to stdout too: keep the doctor's JSON list only.
    lines = capsys.readouterr().out.splitlines()
    output = "\n".join(lines[lines.index("[") : len(lines) - lines[::-1].index("]")])
    refused = {r["check"]: r for r in json.loads(output)}
    assert code == 1
    assert refused["live broker"]["status"] == "FAIL"
    assert "refused the keys (HTTP 401" in refused["live broker"]["detail"]
    assert "broker.live.secret_key_file" in refused["live broker"]["fix"]
    assert refused["live clock"]["status"] == "SKIP"
    for secret in (SECRET, WRONG_SECRET, PAPER_KEY):
        assert secret not in output
