"""tradeguard wire protocol: every v1 message, topic and codec."""
