"""The paper venue's command line: ``python -m sim`` and ``tradeguard sim``.

Both parse with :func:`add_options` (one definition of the options and of the
values each accepts) and serve with :func:`run_options`, in the foreground until
SIGTERM/SIGINT. The daemon's command line imports this module only for ``sim``.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys

import anyio
import structlog

from sim.config import ClockMode, SimConfig
from sim.errors import SimConfigError
from sim.venue import PaperVenue

log = structlog.get_logger(__name__)

CLOCK_MODES: tuple[ClockMode, ...] = ("always-open", "us-equities")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: any free port), got {port}")
    return port


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _key(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the venue's options (docs/protocol.md, plus ``--state``, ``--cash-account``)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=8790, help="port to listen on, 0 for any (default: 8790)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the prices (default: 0)"
    )
    parser.add_argument(
        "--clock",
        choices=CLOCK_MODES,
        default="always-open",
        help="market hours: always open, or the NYSE calendar (default: always-open)",
    )
    parser.add_argument(
        "--key-id", default=None, type=_key, help="accept only this key id (default: any)"
    )
    parser.add_argument(
        "--secret-key", default=None, type=_key, help="accept only this secret key (default: any)"
    )
    parser.add_argument("--control", action="store_true", help="enable the /_sim control endpoint")
    parser.add_argument(
        "--rate-limit",
        type=_at_least_one,
        default=200,
        help="requests per minute per key (default: 200)",
    )
    parser.add_argument(
        "--cash",
        type=_positive_amount,
        default=100_000.0,
        help="starting cash of the account (default: 100000)",
    )
    parser.add_argument(
        "--state",
        metavar="PATH",
        default=None,
        help="SQLite file that keeps the account, orders and positions across restarts "
        "(default: none, the account lives in memory)",
    )
    parser.add_argument(
        "--cash-account",
        action="store_true",
        help="a cash account (no margin, no shorting) instead of Alpaca's 2x margin account",
    )


def run_options(args: argparse.Namespace) -> int:
    """Serve the venue that the options of :func:`add_options` describe until SIGTERM/SIGINT.

    Prints one line saying where it listens, e.g.
    ``tradeguard sim listening on http://127.0.0.1:8790 (stream ws://127.0.0.1:8790/stream)``.

    Args:
        args: the parsed options: ``--key-id`` only with ``--secret-key`` (None: any
            non-empty pair), ``--state`` a SQLite file keeping the account across
            restarts (None: nothing persists).

    Returns:
        0 after a clean stop, 2 on bad arguments.
    """
    if (args.key_id is None) != (args.secret_key is None):
        print("error: --key-id and --secret-key go together", file=sys.stderr)
        return 2
    config = SimConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        clock=args.clock,
        key_id=args.key_id,
        secret_key=args.secret_key,
        control_enabled=args.control,
        rate_limit_per_min=args.rate_limit,
        starting_cash=args.cash,
        state_path=args.state,
        cash_account=args.cash_account,
    )
    try:
        anyio.run(_serve, config, backend="asyncio")
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 2
    except SimConfigError as exc:
        print(f"error: --state: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(config: SimConfig) -> None:
    venue = PaperVenue(config)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            base_url = await tg.start(venue.run)
            print(
                f"tradeguard sim listening on {base_url} (stream {venue.stream_url})",
                flush=True,
            )
            async for signum in signals:
                log.info("sim.venue.signal", signal=signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break
