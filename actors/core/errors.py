"""The one error hierarchy of tradeguard: everything raised on purpose derives from here."""

from __future__ import annotations


class TradeguardError(Exception):
    """Base of every error tradeguard raises on purpose."""


class ConfigError(TradeguardError):
    """A configuration file or value is invalid; the message names the key."""


class SecretError(ConfigError):
    """A secret file named by the configuration cannot be read."""


class JournalError(TradeguardError):
    """The journal cannot be opened, read or written."""


class BrokerError(TradeguardError):
    """The broker could not be reached or answered something we cannot use."""


class EmbeddedBrokerError(TradeguardError):
    """The built-in mosquitto could not be started."""


class ActorDiedError(TradeguardError):
    """An actor crashed more often than its restart policy allows."""


class BrokerConnectionError(TradeguardError):
    """The MQTT broker could not be reached (tools and the CLI)."""


class StateFolderInUseError(JournalError):
    """Another daemon holds the state folder (one daemon per journal).

    Attributes:
        folder: the state folder.
        pid: the process id written by the holder (None if it could not be read).
    """

    def __init__(self, folder: str, pid: int | None) -> None:
        """Say who holds ``folder``."""
        holder = f"tradeguard PID {pid}" if pid is not None else "another tradeguard process"
        super().__init__(f"state folder {folder} is in use by {holder} (one daemon per journal)")
        self.folder = folder
        self.pid = pid
