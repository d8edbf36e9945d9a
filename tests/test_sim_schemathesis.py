"""schemathesis over Alpaca's OpenAPI spec: no server errors, no response-schema violations.

A bounded run (fixed seed, 100 examples per operation, all phases, about half a
minute) against every operation the paper venue serves, through ``python -m sim``
as a user starts it. The spec comes from ``$TRADEGUARD_ALPACA_SPEC`` (default
``../shared/alpaca/trading-api.json``); the test is skipped, saying why, when the
spec or the schemathesis command is missing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from sim_harness import spec_path

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(rb"tradeguard sim listening on (http://\S+) ")
SERVED = (
    r"^/v2/(account|account/configurations|account/activities"
    r"|account/activities/\{activity_type\}|account/portfolio/history|clock|calendar"
    r"|assets|assets/\{symbol_or_asset_id\}|orders|orders/\{order_id\}"
    r"|orders:by_client_order_id|positions|positions/\{symbol_or_asset_id\})$"
)
EXAMPLES_PER_OPERATION = 100
RUN_TIMEOUT_S = 240


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    tmp_path: Path,
) -> None:
    spec = spec_path()
    if not spec.is_file():
        pytest.skip(f"Alpaca spec not found at {spec} (set TRADEGUARD_ALPACA_SPEC)")
    command = Path(sys.executable).parent / "schemathesis"
    if not command.is_file():
        pytest.skip(f"schemathesis is not installed at {command} (pip install -e '.[dev]')")
    # Rate limit lifted: thousands of generated requests test the schemas, not the limit.
    venue = await anyio.open_process(
        [
            *(sys.executable, "-m", "sim", "--port", "0", "--rate-limit", "100000000"),
            *("--key-id", "st-key", "--secret-key", "st-secret"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    async with venue:
        assert venue.stdout is not None
        output = b""
        with anyio.fail_after(20):
            while (match := LISTENING.search(output)) is None:
                output += await venue.stdout.receive()
        with anyio.fail_after(RUN_TIMEOUT_S):
            result = await anyio.run_process(
                [
                    str(command),
                    "run",
                    str(spec),
                    "--url",
                    match.group(1).decode(),
                    "-H",
                    "APCA-API-KEY-ID: st-key",
                    "-H",
                    "APCA-API-SECRET-KEY: st-secret",
                    "--checks",
                    "not_a_server_error,response_schema_conformance",
                    "--include-path-regex",
                    SERVED,
                    "--max-examples",
                    str(EXAMPLES_PER_OPERATION),
                    "--seed",
                    "1",
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                    "--generation-database",
                    "none",
                    "--no-color",
                    # One worker: CPython 3.11's ast module is not thread-safe, and
                    # schemathesis compiles code while generating.
                    "--workers",
                    "1",
                    "--report-dir",
                    str(tmp_path),
                ],
                cwd=tmp_path,
                check=False,
            )
        venue.terminate()
        report = result.stdout.decode(errors="replace")
        assert result.returncode == 0, report[-6000:]
        assert re.search(r"\b[1-9][0-9]* generated, [1-9][0-9]* passed\b", report), report[-3000:]
        assert "failed" not in report.split("SUMMARY")[-1], report[-3000:]
