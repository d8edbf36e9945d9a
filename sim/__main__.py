"""``python -m sim``: the paper venue's command line (the options of ``tradeguard sim``)."""

from __future__ import annotations

import argparse
import sys

import structlog

from sim.cli import add_options, run_options


def main(argv: list[str] | None = None) -> int:
    """Parse the options of :func:`sim.cli.add_options` and serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m sim", description="Run tradeguard's Alpaca-compatible paper venue."
    )
    add_options(parser)
    args = parser.parse_args(argv)
    # stdout carries only the "listening on" line; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    return run_options(args)


if __name__ == "__main__":
    sys.exit(main())
