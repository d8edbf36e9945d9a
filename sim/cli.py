"""``tradeguard sim``: run the paper venue in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import sys

import anyio
import structlog

from sim.config import ClockMode, SimConfig
from sim.errors import SimConfigError
from sim.venue import PaperVenue

log = structlog.get_logger(__name__)

CLOCK_MODES: tuple[ClockMode, ...] = ("always-open", "us-equities")


def run(
    *,
    host: str,
    port: int,
    seed: int,
    clock: str,
    key_id: str | None,
    secret_key: str | None,
    control: bool = False,
    rate_limit_per_min: int = 200,
    starting_cash: float = 100_000.0,
    state: str | None = None,
    cash_account: bool = False,
) -> int:
    """Serve the venue until SIGTERM or SIGINT.

    Prints one line saying where it listens, e.g.
    ``tradeguard sim listening on http://127.0.0.1:8790 (stream ws://127.0.0.1:8790/stream)``.

    Args:
        host: Interface to bind.
        port: Port to bind (0: any free port).
        seed: Seed of prices, ids and partial fills.
        clock: ``always-open`` or ``us-equities``.
        key_id: Only accept this key (with ``secret_key``); None: any non-empty pair.
        secret_key: See ``key_id``.
        control: Serve the ``/_sim`` control API.
        rate_limit_per_min: Requests per minute per key before 429 (Alpaca's is 200).
        starting_cash: Cash of a fresh paper account.
        state: SQLite file keeping the account across restarts (None: nothing persists).
        cash_account: A cash account (multiplier 1, no shorting) instead of margin.

    Returns:
        0 after a clean stop, 2 on bad arguments.
    """
    if clock not in CLOCK_MODES:
        print(f"error: --clock must be one of {', '.join(CLOCK_MODES)}", file=sys.stderr)
        return 2
    if not starting_cash > 0:
        print("error: --cash must be > 0", file=sys.stderr)
        return 2
    if rate_limit_per_min < 1:
        print("error: --rate-limit must be at least 1", file=sys.stderr)
        return 2
    if (key_id is None) != (secret_key is None):
        print("error: --key-id and --secret-key go together", file=sys.stderr)
        return 2
    config = SimConfig(
        host=host,
        port=port,
        seed=seed,
        clock=clock,
        key_id=key_id,
        secret_key=secret_key,
        control_enabled=control,
        rate_limit_per_min=rate_limit_per_min,
        starting_cash=starting_cash,
        state_path=state,
        cash_account=cash_account,
    )
    try:
        anyio.run(_serve, config, backend="asyncio")
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
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
