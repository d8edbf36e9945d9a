"""Paper venue: a local Alpaca-compatible broker."""
