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
