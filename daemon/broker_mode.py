"""Does the configured trading mode agree with the endpoint and the keys?

Kept apart from the broker gateway so that ``check-config`` and ``doctor`` can ask
without importing alpaca-py (and pandas behind it).
"""

from __future__ import annotations

from typing import Final

from actors.core.errors import BrokerError

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
        if host != LIVE_HOST:
            raise BrokerError(f"broker.mode is 'live' but broker.url is not https://{LIVE_HOST}")
        if not key_id.startswith("AK"):
            raise BrokerError(
                "broker.mode is 'live' but the key id in broker.key_id_file "
                "is not a live key (AK...)"
            )
