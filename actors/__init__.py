"""tradeguard actors: one module per actor."""
