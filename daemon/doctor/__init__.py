"""``tradeguard doctor``: check a set-up before trading and say how to fix what is wrong.

Every check yields one :class:`CheckResult` (PASS, WARN, FAIL or SKIP), and every
FAIL and WARN carries a fix. The checks look, they never change anything: the
journal is opened read-only, ports are probed by binding and releasing them,
the MQTT login is a clean session that publishes nothing, and the broker gets
two GETs. Secrets are read to test them but never printed: every value read is
also redacted from the output, whatever message it might have slipped into.

One module per area: :mod:`~daemon.doctor.configuration` (the config file, secret
files, the kill release), :mod:`~daemon.doctor.state` (state folder, journal),
:mod:`~daemon.doctor.mqtt` and :mod:`~daemon.doctor.broker` (mode, venue, clock).
"""

from __future__ import annotations

import json
import sys
from typing import Final

import msgspec

from daemon.config import Config
from daemon.doctor.broker import check_broker, classify_skew
from daemon.doctor.configuration import check_config, check_kill, check_secret_file, load_secrets
from daemon.doctor.mqtt import check_mqtt
from daemon.doctor.results import CheckResult, Status
from daemon.doctor.state import check_state

EXIT_OK: Final = 0
EXIT_FAIL: Final = 1
REDACTED: Final = "[redacted]"


def run_doctor(config: Config, *, as_json: bool) -> int:
    """Run every check, print the results, and return the exit code.

    Args:
        config: the validated configuration (a bad file never gets here).
        as_json: print a JSON list of ``{check, status, detail, fix}`` instead of a table.

    Returns:
        0 when no check failed (warnings allowed), 1 when any failed.
    """
    results = diagnose(config)
    if as_json:
        sys.stdout.write(json.dumps(msgspec.to_builtins(results), indent=2) + "\n")
    else:
        _print_table(results)
    return EXIT_FAIL if any(r.status == "FAIL" for r in results) else EXIT_OK


def diagnose(config: Config) -> list[CheckResult]:
    """Run every check and return the results in output order (secrets redacted)."""
    secrets = load_secrets(config)
    results = [check_config(config)]
    results += check_state(config)
    results += [check_secret_file(s) for s in secrets.values()]
    results += check_kill(config)
    results += check_mqtt(config, secrets)
    results += check_broker(config, secrets)
    return _redact(results, [s.secret for s in secrets.values() if s.secret])


def _redact(results: list[CheckResult], secrets: list[str]) -> list[CheckResult]:
    """Remove every secret value from the output, wherever a message may have quoted it."""
    values = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def scrub(text: str | None) -> str | None:
        if text is None:
            return None
        for value in values:
            text = text.replace(value, REDACTED)
        return text

    return [
        msgspec.structs.replace(r, detail=scrub(r.detail) or "", fix=scrub(r.fix)) for r in results
    ]


_STYLES: Final[dict[Status, str]] = {
    "PASS": "green",
    "WARN": "yellow",
    "FAIL": "bold red",
    "SKIP": "dim",
}


def _print_table(results: list[CheckResult]) -> None:
    from rich.console import Console  # noqa: PLC0415  # only for the table view
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table("check", "status", "detail and fix", show_lines=True)
    for r in results:
        # Text, not markup: details quote paths and error messages with brackets.
        text = Text(r.detail)
        if r.fix:
            text.append("\nfix: ", style="bold cyan")
            text.append(r.fix)
        table.add_row(Text(r.check), Text(r.status, style=_STYLES[r.status]), text)
    console = Console()
    console.print(table)
    counts = {s: sum(r.status == s for r in results) for s in _STYLES}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    console.print(Text(f"{len(results)} checks: {summary}"))


__all__ = ["CheckResult", "classify_skew", "diagnose", "run_doctor"]
