"""``python -m sim``: the paper venue's command line (mirrors ``tradeguard sim``)."""

from __future__ import annotations

import argparse
import sys

import structlog

from sim.cli import CLOCK_MODES, run


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments of CONTRACT section 9 (plus ``--state``, ``--cash-account``)."""
    parser = argparse.ArgumentParser(
        prog="python -m sim", description="Run tradeguard's Alpaca-compatible paper venue."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=CLOCK_MODES, default="always-open")
    parser.add_argument("--key-id", default=None)
    parser.add_argument("--secret-key", default=None)
    parser.add_argument("--control", action="store_true", help="serve the /_sim control API")
    parser.add_argument("--rate-limit", type=int, default=200, help="requests/min per key")
    parser.add_argument("--cash", type=float, default=100_000.0, help="starting cash")
    parser.add_argument("--state", default=None, help="SQLite file the account persists in")
    parser.add_argument(
        "--cash-account", action="store_true", help="cash account (no margin, no shorting)"
    )
    args = parser.parse_args(argv)
    # stdout carries only the "listening on" line; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    return run(
        host=args.host,
        port=args.port,
        seed=args.seed,
        clock=args.clock,
        key_id=args.key_id,
        secret_key=args.secret_key,
        control=args.control,
        rate_limit_per_min=args.rate_limit,
        starting_cash=args.cash,
        state=args.state,
        cash_account=args.cash_account,
    )


if __name__ == "__main__":
    sys.exit(main())
