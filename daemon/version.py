"""The tradeguard version, from the installed distribution."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def tradeguard_version() -> str:
    """The installed version, or ``0+unknown`` when running from a bare checkout."""
    try:
        return version("tradeguard")
    except PackageNotFoundError:
        return "0+unknown"
