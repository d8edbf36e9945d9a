"""The doctor's broker checks: trading mode, a login to the venue, and its clock.

Each account is checked: ``[broker]``, then the live account of ``[broker.live]``
when one is set (its checks named ``live ...``, its mode by
:func:`daemon.broker_mode.check_live_account`).

A broker endpoint whose mode disagrees with the config (paper keys, live URL) is not
contacted at all: sending keys to the wrong venue is what the check exists to prevent.
Otherwise the broker gets two GETs (``/v2/clock``, ``/v2/account``). Failures are
told apart by type (``requests``' exception classes, the ``OSError`` under them) and
HTTP status, never by wording.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import msgspec
import requests

from actors.core.errors import BrokerError
from daemon.broker_mode import LIVE_HOST, check_live_account, check_mode, url_host
from daemon.config import Config, SimSettings
from daemon.doctor.configuration import SecretFile
from daemon.doctor.probes import check_port, running_daemon
from daemon.doctor.results import CheckResult, skip
from daemon.error_reasons import error_chain

HTTP_TIMEOUT_S: Final = 5.0
SKEW_WARN_S: Final = 1.0
SKEW_FAIL_S: Final = 5.0
NTP_FIX: Final = "enable NTP (timedatectl set-ntp true) and check `timedatectl status`"


@dataclass(frozen=True)
class _Account:
    """One broker account as the checks see it: ``[broker]`` or ``[broker.live]``."""

    section: str
    """The config table: ``broker`` or ``broker.live``."""
    label: str
    """Put before each check's name: empty for ``[broker]``, ``live `` for the live account."""
    kind: str
    url: str | None
    timeout_s: float
    sim: SimSettings
    check_mode: Callable[[str, str], None]
    """Raises :class:`BrokerError` when the account disagrees with (url, key id)."""
    agrees: str
    """What a passing mode check says, e.g. ``paper mode``."""
    fix: Callable[[str], str]
    """How to fix a failing mode check, given the URL."""


def check_broker(config: Config, secrets: dict[str, SecretFile]) -> list[CheckResult]:
    """Each account's mode against its endpoint and key, then the venue's answer and clock.

    The ``[broker]`` account's checks are ``broker mode``, ``broker`` and ``clock``
    (``broker port`` for the built-in venue); with ``[broker.live]`` the live account's
    follow as ``live broker mode``, ``live broker``, ``live clock``, ``live broker port``.
    """
    results = _check_account(config, secrets, _broker_account(config))
    if config.broker.live is not None:
        results += _check_account(config, secrets, _live_account(config))
    return results


def _broker_account(config: Config) -> _Account:
    broker = config.broker

    def check(url: str, key_id: str) -> None:
        check_mode(mode=broker.mode, url=url, key_id=key_id, kind=broker.kind)

    return _Account(
        section="broker",
        label="",
        kind=broker.kind,
        url=broker.url,
        timeout_s=broker.request_timeout_s,
        sim=broker.sim,
        check_mode=check,
        agrees=f"{broker.mode} mode",
        fix=lambda url: _mode_fix(config, url),
    )


def _live_account(config: Config) -> _Account:
    live = config.broker.live
    assert live is not None

    def check(url: str, key_id: str) -> None:
        check_live_account(url=url, key_id=key_id, kind=live.kind, rehearsal=live.rehearsal)

    return _Account(
        section="broker.live",
        label="live ",
        kind=live.kind,
        url=live.url,
        timeout_s=live.request_timeout_s,
        sim=live.sim,
        check_mode=check,
        agrees="the rehearsal (a paper stand-in)" if live.rehearsal else "the live account",
        fix=lambda url: _live_fix(rehearsal=live.rehearsal, url=url),
    )


def _check_account(
    config: Config, secrets: dict[str, SecretFile], account: _Account
) -> list[CheckResult]:
    if account.kind == "sim":
        return _named(_check_sim_venue(config, account), account.label)
    assert account.url is not None
    url = account.url.rstrip("/")
    key_id = secrets[f"{account.section}.key_id_file"].secret
    secret_key = secrets[f"{account.section}.secret_key_file"].secret
    # An unreadable key id must not be blamed for a mode mismatch: check the URL rule
    # with a placeholder live-looking key; the secret line already names the file.
    mode = _mode_result(account, url=url, key_id=key_id if key_id is not None else "AK")
    if mode.status == "FAIL":
        what = "broker.mode" if account.section == "broker" else "the live account"
        why = f"{what} disagrees with {account.section}.url: keys are not sent there"
        return _named([mode, skip("broker", why), skip("clock", why)], account.label)
    if key_id is None or secret_key is None:
        why = "the broker keys cannot be read"
        return _named([mode, skip("broker", why), skip("clock", why)], account.label)
    headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key}
    venue = _ask_venue(url, headers, min(account.timeout_s, HTTP_TIMEOUT_S), account.section)
    return _named([mode, *venue], account.label)


def _ask_venue(
    url: str, headers: dict[str, str], timeout: float, section: str
) -> list[CheckResult]:
    """The venue's answer to ``/v2/clock`` and ``/v2/account``, and its clock against ours."""
    with requests.Session() as session:
        try:
            sent = time.time()
            clock = session.get(f"{url}/v2/clock", headers=headers, timeout=timeout)
            received = time.time()
            account = (
                session.get(f"{url}/v2/account", headers=headers, timeout=timeout)
                if clock.ok
                else clock
            )
        except requests.RequestException as exc:
            return [_http_failure(exc, url, section), skip("clock", "broker unreachable")]
    if not clock.ok or not account.ok:
        return [
            _http_refusal(clock if not clock.ok else account, url, section),
            skip("clock", "the broker refused the request"),
        ]
    return [_account_result(url, clock, account), _clock_result(clock, sent, received)]


def _named(results: list[CheckResult], label: str) -> list[CheckResult]:
    """The live account's checks carry ``live `` before their names."""
    if not label:
        return results
    return [msgspec.structs.replace(r, check=f"{label}{r.check}") for r in results]


def _check_sim_venue(config: Config, account: _Account) -> list[CheckResult]:
    settings = account.sim
    url = f"http://{settings.host}:{settings.port}"
    return [
        _mode_result(account, url=url, key_id=""),
        CheckResult(
            check="broker",
            status="PASS",
            detail="built-in paper venue (started by the daemon)",
        ),
        check_port(
            "broker port",
            settings.host,
            settings.port,
            user="the built-in paper venue",
            busy="another paper venue or a running tradeguard daemon uses it",
            fix=f"stop whatever listens there, or set {account.section}.sim.port "
            "(0 picks a free port)",
            owner=running_daemon(config),
        ),
        CheckResult(
            check="clock",
            status="PASS",
            detail="the built-in paper venue runs on this machine's clock",
        ),
    ]


def _mode_result(account: _Account, *, url: str, key_id: str) -> CheckResult:
    try:
        account.check_mode(url, key_id)
    except BrokerError as exc:
        return CheckResult(
            check="broker mode", status="FAIL", detail=str(exc), fix=account.fix(url)
        )
    return CheckResult(
        check="broker mode",
        status="PASS",
        detail=f"{account.agrees} agrees with {url}"
        + (" and the key id" if account.kind == "alpaca" else ""),
    )


def _mode_fix(config: Config, url: str) -> str:
    mode = config.broker.mode
    host = url_host(url)
    if config.broker.kind == "sim":
        return 'the built-in venue is paper only: set broker.mode = "paper"'
    if mode == "paper":
        return (
            "for paper trading set broker.url = https://paper-api.alpaca.markets (and "
            "stream_url wss://paper-api.alpaca.markets/stream); only if you mean to trade "
            'real money set broker.mode = "live" with live (AK...) keys'
        )
    if host != LIVE_HOST:
        return (
            f"live trading needs broker.url = https://{LIVE_HOST}; "
            'for paper set broker.mode = "paper"'
        )
    return (
        "put a live key pair (key id AK...) in broker.key_id_file / broker.secret_key_file, "
        'or set broker.mode = "paper" with the paper URL'
    )


def _live_fix(*, rehearsal: bool, url: str) -> str:
    if rehearsal:
        return (
            "a rehearsal is paper: set broker.live.url = https://paper-api.alpaca.markets "
            '(or the built-in venue, kind = "sim"); only to trade real money set '
            "broker.live.rehearsal = false with live (AK...) keys"
        )
    if url_host(url) != LIVE_HOST:
        return (
            f"the live account needs broker.live.url = https://{LIVE_HOST}; for a paper "
            "stand-in set broker.live.rehearsal = true"
        )
    return (
        "put a live key pair (key id AK...) in broker.live.key_id_file / "
        "broker.live.secret_key_file, or set broker.live.rehearsal = true for a paper stand-in"
    )


def _http_failure(exc: requests.RequestException, url: str, section: str) -> CheckResult:
    if isinstance(exc, requests.exceptions.SSLError):
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"TLS with {url} failed: {exc}",
            fix=f"check {section}.url (https for Alpaca) and the system CA certificates "
            "(apt-get install ca-certificates)",
        )
    if isinstance(exc, requests.Timeout):
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"no answer from {url} within {HTTP_TIMEOUT_S:g} s",
            fix=f"check {section}.url, the network and any proxy ($HTTPS_PROXY)",
        )
    return CheckResult(
        check="broker",
        status="FAIL",
        detail=f"cannot reach {url}: {_short(exc)}",
        fix=f"check {section}.url (the Alpaca base URL, without /v2) and that the venue is running",
    )


def _http_refusal(response: requests.Response, url: str, section: str) -> CheckResult:
    path = response.request.path_url if response.request is not None else "?"
    if response.status_code in {401, 403}:
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"the broker refused the keys (HTTP {response.status_code} on {path})",
            fix=f"put a key pair for this endpoint in {section}.key_id_file / "
            f"{section}.secret_key_file (paper keys PK... for paper-api, live keys AK... for api)",
        )
    if response.status_code == 404:
        return CheckResult(
            check="broker",
            status="FAIL",
            detail=f"no Alpaca trading API at {url} (HTTP 404 on {path})",
            fix=f"set {section}.url to the base URL without /v2, "
            "e.g. https://paper-api.alpaca.markets",
        )
    return CheckResult(
        check="broker",
        status="FAIL",
        detail=f"{url} answered HTTP {response.status_code} on {path}",
        fix=f"check the broker's status page, then {section}.url",
    )


def _account_result(url: str, clock: requests.Response, account: requests.Response) -> CheckResult:
    clock_body = _json_object(clock)
    body = _json_object(account)
    market = "open" if clock_body.get("is_open") else "closed"
    status = body.get("status", "?")
    blocked = [k for k in ("account_blocked", "trading_blocked") if body.get(k)]
    detail = f"{url} answered /v2/clock (market {market}) and /v2/account (status {status})"
    if blocked or status != "ACTIVE":
        return CheckResult(
            check="broker",
            status="WARN",
            detail=detail + ("; " + ", ".join(blocked) if blocked else ""),
            fix="the account cannot trade: see the broker's dashboard",
        )
    return CheckResult(check="broker", status="PASS", detail=detail)


def _clock_result(clock: requests.Response, sent: float, received: float) -> CheckResult:
    """Compare the broker's clock with ours (the request's midpoint, +- half the round trip)."""
    local = (sent + received) / 2
    uncertainty = (received - sent) / 2
    server: float | None = None
    source = "/v2/clock timestamp"
    stamp = _json_object(clock).get("timestamp")
    if isinstance(stamp, str):
        try:
            server = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            server = None
    if server is None and "Date" in clock.headers:
        try:
            # Date has whole seconds: the true time lies within the following second.
            server = parsedate_to_datetime(clock.headers["Date"]).timestamp() + 0.5
        except (TypeError, ValueError):
            server = None
        uncertainty += 0.5
        source = "HTTP Date header"
    if server is None:
        return CheckResult(
            check="clock",
            status="WARN",
            detail="the broker sent no time to compare with",
            fix="compare by hand; " + NTP_FIX,
        )
    return classify_skew(server - local, uncertainty=uncertainty, source=source)


def classify_skew(skew_s: float, *, uncertainty: float = 0.0, source: str) -> CheckResult:
    """Judge a clock difference (broker minus local): WARN above 1 s, FAIL above 5 s.

    Intents older than ``risk.max_intent_age_s`` are refused, so a wrong clock
    turns into refused or wrongly accepted intents.
    """
    beyond = abs(skew_s) - uncertainty
    direction = "behind" if skew_s > 0 else "ahead of"
    detail = (
        f"this machine's clock is {abs(skew_s):.2f} s (±{uncertainty:.2f} s) {direction} "
        f"the broker's ({source})"
    )
    if beyond > SKEW_FAIL_S:
        return CheckResult(
            check="clock",
            status="FAIL",
            detail=detail + f"; more than {SKEW_FAIL_S:g} s breaks the intent age checks",
            fix=NTP_FIX,
        )
    if beyond > SKEW_WARN_S:
        return CheckResult(check="clock", status="WARN", detail=detail, fix=NTP_FIX)
    return CheckResult(check="clock", status="PASS", detail=detail)


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _short(exc: requests.RequestException) -> str:
    """The innermost reason of a requests/urllib3 error, without the retry boilerplate."""
    for cause in error_chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_NONAME:
            return "name or service not known"
        if isinstance(cause, TimeoutError):
            return "timed out"
    return str(exc)
