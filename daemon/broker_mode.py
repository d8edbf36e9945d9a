"""Does the configured trading mode agree with the endpoint and the keys?

Kept apart from the broker gateway so that ``check-config`` and ``doctor`` can ask
without importing alpaca-py (and pandas behind it).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from actors.core.errors import BrokerError
from daemon.config import BrokerConfig, Config, LiveAccountConfig, read_secret

LIVE_HOST: Final = "api.alpaca.markets"
"""Alpaca's live trading host: the only host ``live`` mode may use, and ``paper`` never."""


def url_host(url: str) -> str:
    """The lower-case host of ``url`` (no scheme, port or path)."""
    return url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()


def check_mode(*, mode: str, url: str, key_id: str, kind: str) -> None:
    """Refuse a mode that disagrees with the endpoint or the keys.

    ``live`` needs the live URL and an ``AK`` key; ``paper`` never the live URL;
    the built-in venue is paper only.

    Args:
        mode: ``broker.mode`` (``paper`` or ``live``).
        url: the trading base URL.
        key_id: the key id read from ``broker.key_id_file`` (empty for the built-in venue).
        kind: ``broker.kind`` (``sim`` or ``alpaca``).

    Raises:
        BrokerError: one line saying what disagrees.
    """
    host = url_host(url)
    if kind == "sim" and mode != "paper":
        raise BrokerError("broker.mode: the built-in paper venue (kind 'sim') is paper only")
    if mode == "paper" and host == LIVE_HOST:
        raise BrokerError(f"broker.mode is 'paper' but broker.url points at live trading ({url})")
    if mode == "live":
        _check_live(url=url, key_id=key_id, account="broker", why="broker.mode is 'live'")


def check_live_account(*, url: str, key_id: str, kind: str, rehearsal: bool) -> None:
    """Refuse a ``[broker.live]`` account that is not what ``rehearsal`` says it is.

    The live account (``rehearsal = false``) follows the ``live`` rules of
    :func:`check_mode`: kind ``alpaca``, the live URL and an ``AK`` key. A rehearsal
    account is a paper stand-in: it never points at the live host, and it is the only
    place the built-in venue (kind ``sim``) may stand in for the live account.

    Args:
        url: ``broker.live.url`` (for kind ``sim``, the embedded venue's loopback URL).
        key_id: the key id read from ``broker.live.key_id_file`` (empty for kind ``sim``).
        kind: ``broker.live.kind`` (``sim`` or ``alpaca``).
        rehearsal: ``broker.live.rehearsal``.

    Raises:
        BrokerError: one line, naming the ``broker.live`` key that disagrees.
    """
    if rehearsal:
        if url_host(url) == LIVE_HOST:
            raise BrokerError(
                f"broker.live.rehearsal is true (a paper stand-in) but broker.live.url "
                f"points at live trading ({url})"
            )
        return
    if kind != "alpaca":
        raise BrokerError(
            "broker.live.kind: the built-in paper venue (kind 'sim') stands in for the live "
            "account only in a rehearsal (broker.live.rehearsal = true)"
        )
    _check_live(
        url=url,
        key_id=key_id,
        account="broker.live",
        why="broker.live is the live account (rehearsal = false)",
    )


def _check_live(*, url: str, key_id: str, account: str, why: str) -> None:
    """The live rules: the live host and an ``AK`` key, else one line naming ``account``."""
    if url_host(url) != LIVE_HOST:
        raise BrokerError(f"{why} but {account}.url is not https://{LIVE_HOST}")
    if not key_id.startswith("AK"):
        raise BrokerError(
            f"{why} but the key id in {account}.key_id_file is not a live key (AK...)"
        )


class Endpoint(NamedTuple):
    """Where an account is and how to log in."""

    url: str
    stream_url: str
    data_url: str
    key_id: str
    secret_key: str


def alpaca_endpoint(
    config: Config, account: BrokerConfig | LiveAccountConfig, *, key: str
) -> Endpoint:
    """An Alpaca-compatible account's URLs and keys (``key``: its table, for errors).

    Raises:
        SecretError: a key file cannot be read.
    """
    # parse_config has made sure that kind "alpaca" names all four.
    assert account.url is not None
    assert account.stream_url is not None
    assert account.key_id_file is not None
    assert account.secret_key_file is not None
    return Endpoint(
        account.url.rstrip("/"),
        account.stream_url,
        (account.data_url or "https://data.alpaca.markets").rstrip("/"),
        read_secret(config, account.key_id_file, key=f"{key}.key_id_file"),
        read_secret(config, account.secret_key_file, key=f"{key}.secret_key_file"),
    )
