"""tradeguard daemon host: actor base, supervisor, wiring, config, journal, MQTT session, CLI."""
