"""The ``tradeguard`` command line (CONTRACT §9 and §11).

Every command takes ``--config F``, before or after the command name (default
``$TRADEGUARD_CONFIG``, else the built-in defaults). Bad input and unusable
environments are a one-line error naming what is wrong, exit 2; never a traceback.
Admin codes never come from argv (``ps`` and shell history keep it): a prompt, one
line of stdin, or a file.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
from rich_argparse import RawDescriptionRichHelpFormatter

from actors.core.errors import ConfigError, TradeguardError
from daemon.config import Config, load_config
from daemon.logs import configure_logging
from daemon.version import tradeguard_version
from protocol.messages import INTENT_ID_PATTERN, STRATEGY_ID_PATTERN

if TYPE_CHECKING:
    from daemon.wiring import Daemon

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports it."""


MAX_TEXT = 200
"""Longest ``--reason`` / ``--operator`` a command message carries (``ShortText``)."""
MAX_CODE = 128

DESCRIPTION = """\
Execution and risk daemon for algorithmic traders, driven over MQTT.

Every command takes --config F, before or after the command name (default:
$TRADEGUARD_CONFIG, else the built-in defaults). Commands that need an admin code
read it from a prompt, from one line of stdin (--code-stdin, or whenever stdin is
not a terminal) or from a file (--code-file PATH), never from the command line.
Bad input is one line naming what is wrong, exit 2."""

CODE_ON_ARGV = (
    "argument --code: codes are never taken from the command line (ps and shell history "
    "keep them): type it at the prompt, pipe one line with --code-stdin, or use "
    "--code-file PATH"
)
SHELLS = ("bash", "zsh")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", RawDescriptionRichHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, exit 2."""
        self.exit(EXIT_USAGE, f"tradeguard: error: {_one_line(message)}\n")


class _RefuseCode(argparse.Action):
    """``--code C`` is refused before anything runs, without echoing the code."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        del namespace, values, option_string
        parser.error(CODE_ON_ARGV)


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


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if re.fullmatch(pattern, text) is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return text

    return check


def _text(limit: int) -> Callable[[str], str]:
    def check(text: str) -> str:
        if len(text) > limit:
            raise argparse.ArgumentTypeError(f"at most {limit} characters, got {len(text)}")
        return text

    return check


def _key(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


_strategy_id = _matching(STRATEGY_ID_PATTERN, "a strategy id (1-32 of [A-Za-z0-9_-])")
_intent_id = _matching(INTENT_ID_PATTERN, "an intent id (1-64 of [A-Za-z0-9._:-])")
_short_text = _text(MAX_TEXT)


def _add_sim_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``tradeguard sim``: the paper venue's options."""
    p = sub.add_parser("sim", parents=[common], help="run the Alpaca-compatible paper venue")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--port", type=_port, default=8790, help="port to listen on, 0 for any (default: 8790)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the prices (default: 0)")
    p.add_argument(
        "--clock",
        choices=["always-open", "us-equities"],
        default="always-open",
        help="market hours: always open, or the NYSE calendar (default: always-open)",
    )
    p.add_argument(
        "--key-id", default=None, type=_key, help="accept only this key id (default: any)"
    )
    p.add_argument(
        "--secret-key", default=None, type=_key, help="accept only this secret key (default: any)"
    )
    p.add_argument("--control", action="store_true", help="enable the /_sim control endpoint")
    p.add_argument(
        "--rate-limit",
        type=_at_least_one,
        default=200,
        help="requests per minute per key (default: 200)",
    )
    p.add_argument(
        "--cash",
        type=_positive_amount,
        default=100_000.0,
        help="starting cash of the account (default: 100000)",
    )
    p.add_argument(
        "--state",
        metavar="PATH",
        default=None,
        help="SQLite file that keeps the account, orders and positions across restarts "
        "(default: none, the account lives in memory)",
    )
    p.add_argument(
        "--cash-account",
        action="store_true",
        help="a cash account (no margin, no shorting) instead of Alpaca's 2x margin account",
    )


def _build_parser() -> argparse.ArgumentParser:
    config_help = "config file (default: $TRADEGUARD_CONFIG, else the built-in defaults)"
    parser = _Parser(prog="tradeguard", description=DESCRIPTION)
    parser.add_argument("--config", metavar="F", help=config_help)
    parser.add_argument(
        "--version",
        action="version",
        version=f"tradeguard {tradeguard_version()}",
        help="print the version and exit",
    )
    # After the command name too; SUPPRESS keeps a --config given before it when absent here.
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="F", default=argparse.SUPPRESS, help=config_help)
    # --code C is refused on every command, with a pointer to the ways that keep a code out
    # of ps and shell history, and without echoing it; hidden from help and completion.
    for each in (parser, common):
        each.add_argument("--code", nargs="?", action=_RefuseCode, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    sub.add_parser("run", parents=[common], help="run the daemon in the foreground")

    p = sub.add_parser("kill", parents=[common], help="engage the kill switch")
    p.add_argument(
        "--strategy", metavar="SID", type=_strategy_id, help="engage for this strategy only"
    )
    p.add_argument("--flatten", action="store_true", help="close positions after cancelling")
    p.add_argument(
        "--reason", default="cli", type=_short_text, help="why, for the audit (default: cli)"
    )

    p = sub.add_parser("disengage", parents=[common], help="release the kill switch (admin code)")
    p.add_argument(
        "--strategy", metavar="SID", type=_strategy_id, help="release this strategy's switch"
    )
    _add_code_options(p)

    _add_admin_commands(sub, common)

    p = sub.add_parser("status", parents=[common], help="print kill, daemon and strategy state")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    _add_sim_parser(sub, common)

    sub.add_parser("schema", parents=[common], help="print the JSON Schema of every v1 message")

    p = sub.add_parser("orders", parents=[common], help="list recent orders from the journal")
    p.add_argument("--strategy", metavar="SID", type=_strategy_id, help="this strategy only")
    p.add_argument(
        "--limit", type=_at_least_one, default=50, help="at most this many (default: 50)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--wide",
        action="store_true",
        help="never shorten a column, whatever the terminal's width (always so when piped)",
    )

    p = sub.add_parser("doctor", parents=[common], help="check the set-up and say how to fix it")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = sub.add_parser("positions", parents=[common], help="list positions from the journal")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "demo-strategy", parents=[common], help="trade a few symbols through the daemon"
    )
    p.add_argument(
        "--strategy",
        default="demo",
        metavar="SID",
        type=_strategy_id,
        help="trade as this strategy (default: demo)",
    )
    p.add_argument(
        "--rounds", type=_at_least_one, default=3, help="buy-and-sell rounds (default: 3)"
    )

    p = sub.add_parser("check-config", parents=[common], help="validate a config file as run would")
    p.add_argument(
        "file", metavar="F", nargs="?", help="the file (default: --config, $TRADEGUARD_CONFIG)"
    )

    sub.add_parser(
        "hash-code", parents=[common], help="hash a static admin code (read from stdin or a prompt)"
    )

    p = sub.add_parser("totp-setup", parents=[common], help="create a TOTP secret for phone apps")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write the secret")
    p.add_argument(
        "--account",
        default="kill-switch",
        help="account name shown in the authenticator app (default: kill-switch)",
    )

    p = sub.add_parser(
        "completion",
        parents=[common],
        help="print a shell completion script",
        description="Print a completion script. Bash: tradeguard completion bash > "
        "/etc/bash_completion.d/tradeguard. Zsh: tradeguard completion zsh > "
        '"${fpath[1]}/_tradeguard".',
    )
    p.add_argument("shell", choices=SHELLS, help="the shell: bash or zsh")
    return parser


def _add_code_options(p: argparse.ArgumentParser) -> None:
    """How a command reads its admin code, and who the audit names."""
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--code-stdin",
        action="store_true",
        help="read the admin code from the first line of stdin (the default when stdin "
        "is not a terminal; a terminal gets a prompt that does not echo)",
    )
    how.add_argument(
        "--code-file",
        metavar="PATH",
        help="read the admin code from the first line of this file",
    )
    p.add_argument(
        "--operator",
        default=None,
        type=_short_text,
        help="who you are, for the audit (on a secured broker the audit names the login)",
    )


def _add_admin_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Commands for operators: circuit reset, pause/resume, approvals."""
    p = sub.add_parser(
        "reset-circuit", parents=[common], help="close the drawdown circuit breaker (admin code)"
    )
    _add_code_options(p)

    p = sub.add_parser("pause", parents=[common], help="pause a strategy (reduce-only)")
    p.add_argument(
        "--strategy", required=True, metavar="SID", type=_strategy_id, help="the strategy"
    )
    p.add_argument(
        "--reason", default="cli", type=_short_text, help="why, for the audit (default: cli)"
    )

    p = sub.add_parser("resume", parents=[common], help="resume a paused strategy (admin code)")
    p.add_argument(
        "--strategy", required=True, metavar="SID", type=_strategy_id, help="the strategy"
    )
    _add_code_options(p)

    for verb in ("approve", "deny"):
        p = sub.add_parser(
            verb, parents=[common], help=f"{verb} an intent waiting for a person (admin code)"
        )
        p.add_argument(
            "--strategy",
            required=True,
            metavar="SID",
            type=_strategy_id,
            help="the strategy of the intent",
        )
        p.add_argument(
            "--intent",
            required=True,
            metavar="INTENT_ID",
            type=_intent_id,
            help="the intent id (tradeguard orders, or the approval/pending topic)",
        )
        _add_code_options(p)


def _read_code(args: argparse.Namespace) -> str:
    """The admin code: from ``--code-file``, else stdin (one line), else a prompt.

    Raises:
        ConfigError: no usable code (empty, unreadable, too long).
    """
    if args.code_file is not None:
        try:
            with Path(args.code_file).open(encoding="utf-8") as handle:
                code = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--code-file: cannot read {args.code_file}: {_reason(exc)}") from exc
        where = f"--code-file: {args.code_file} holds no code on its first line"
    elif args.code_stdin or not sys.stdin.isatty():
        code = sys.stdin.readline().strip()
        where = "no admin code on stdin (one line)"
    else:
        try:
            code = getpass.getpass("admin code: ").strip()
        except EOFError:
            code = ""
        where = "no admin code typed"
    if not code:
        raise ConfigError(where)
    if len(code) > MAX_CODE:
        raise ConfigError(f"an admin code is at most {MAX_CODE} characters, got {len(code)}")
    return code


def _completion(shell: str) -> int:
    import shtab  # noqa: PLC0415  # only for this command

    print(shtab.complete(_build_parser(), shell=shell), end="")
    return EXIT_OK


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"tradeguard: error: {_one_line(message)}", file=sys.stderr)
    return code


def _one_line(message: str) -> str:
    """An error is one line even when it quotes a value holding a line break."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tradeguard`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except TradeguardError as exc:
        return _fail(str(exc))
    except BaseExceptionGroup as group:
        # anyio task groups wrap errors; a tradeguard error inside is still one line.
        error = _leaf(group, TradeguardError)
        if error is None:
            raise
        return _fail(str(error), EXIT_FAIL)
    except KeyboardInterrupt:
        # Ctrl-C is how `run` and `sim` are meant to stop; for the others it is not a success
        # (an interrupted `kill` has not been confirmed).
        return EXIT_OK if args.command in ("run", "sim") else EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command == "check-config":
        return _check_config(args.file or args.config)
    # Loaded first even for the commands below that need none: a bad --config is bad input.
    given = load_config(args.config) if args.config is not None else None
    if command == "schema":
        from protocol.codec import json_schema  # noqa: PLC0415  # keep start-up light

        print(json.dumps(json_schema(), indent=2, sort_keys=True))
        return EXIT_OK
    if command == "hash-code":
        return _hash_code()
    if command == "totp-setup":
        return _totp_setup(Path(args.output), args.account)
    if command == "completion":
        return _completion(args.shell)
    if command == "sim":
        return _sim(args)
    config = given or load_config(None)
    if command == "run":
        return _run(config)
    if command == "doctor":
        from daemon.doctor import run_doctor  # noqa: PLC0415

        return run_doctor(config, as_json=args.json)
    return _dispatch_client(command, args, config)


def _dispatch_client(command: str, args: argparse.Namespace, config: Config) -> int:
    """Commands that read the journal or talk to a running daemon."""
    from daemon import client_commands as cc  # noqa: PLC0415  # only these commands need it

    configure_logging("warning", json=False)
    match command:
        case "status":
            return cc.status(config, as_json=args.json)
        case "kill":
            return cc.kill(
                config, strategy_id=args.strategy, flatten=args.flatten, reason=args.reason
            )
        case "disengage":
            return cc.disengage(
                config, strategy_id=args.strategy, code=_read_code(args), operator=args.operator
            )
        case "orders":
            return cc.orders(
                config,
                strategy_id=args.strategy,
                limit=args.limit,
                as_json=args.json,
                wide=args.wide,
            )
        case "positions":
            return cc.positions(config, as_json=args.json)
        case "reset-circuit" | "pause" | "resume" | "approve" | "deny":
            return _admin(command, args, config)
        case "demo-strategy":
            return cc.demo_strategy(config, strategy_id=args.strategy, rounds=args.rounds)
        case _:
            return _fail(f"unknown command {command!r}")


def _admin(command: str, args: argparse.Namespace, config: Config) -> int:
    from daemon import client_commands as cc  # noqa: PLC0415
    from protocol import messages as m  # noqa: PLC0415

    if command == "pause":
        pause = m.Pause(strategy_id=args.strategy, reason=args.reason)
        return cc.admin(config, pause, audit_type="strategy.pause")
    code = _read_code(args)
    match command:
        case "reset-circuit":
            msg: m.ResetCircuit | m.Resume | m.Approve | m.Deny = m.ResetCircuit(
                code=code, operator=args.operator
            )
            return cc.admin(config, msg, audit_type="circuit.reset")
        case "resume":
            msg = m.Resume(strategy_id=args.strategy, code=code, operator=args.operator)
            return cc.admin(config, msg, audit_type="strategy.resume")
        case _:
            kind = m.Approve if command == "approve" else m.Deny
            msg = kind(
                strategy_id=args.strategy,
                intent_id=args.intent,
                code=code,
                operator=args.operator,
            )
            return cc.admin(config, msg, audit_type=f"approval.{command}")


def _check_config(path: str | None) -> int:
    """Validate as ``run`` does (:func:`daemon.preflight.check_setup`), starting nothing."""
    from daemon.preflight import check_setup  # noqa: PLC0415

    config = load_config(path)
    check_setup(config)
    name = path or config.source or "built-in defaults"
    print(f"{name}: valid ({len(config.strategies)} strategies)")
    return EXIT_OK


def _sim(args: argparse.Namespace) -> int:
    _check_listen_host(args.host, option="--host")
    from sim.cli import run as run_sim  # noqa: PLC0415  # the venue is optional at run time

    configure_logging("info")  # to stderr: stdout carries only the "listening" line
    try:
        return run_sim(
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
    except (OSError, BaseExceptionGroup) as exc:
        # anyio wraps a failed bind in a group, which sim.cli's `except OSError` misses.
        error = _leaf(exc, OSError)
        if error is None:
            raise
        return _fail(f"cannot listen on {args.host}:{args.port}: {_reason(error)}")


def _check_listen_host(host: str, *, option: str) -> None:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{option}: cannot listen on {host!r}: {_reason(exc)}") from exc


def _run(config: Config) -> int:
    """Run the daemon; a failure to start is one line and exit 2, a later failure exit 1."""
    from daemon.preflight import check_setup  # noqa: PLC0415

    check_setup(config)
    # Before the heavy imports: a library's import-time warning becomes a log event too.
    configure_logging(config.log.level, json=config.log.json)
    from daemon.wiring import Daemon  # noqa: PLC0415  # heavy imports only for `run`

    def announce(line: str) -> None:
        print(line, flush=True)

    daemon = Daemon(config, announce=announce)
    try:
        anyio.run(daemon.run, backend="asyncio")
    except (OSError, TradeguardError, BaseExceptionGroup) as exc:
        error = _leaf(exc, (TradeguardError, OSError))
        if error is None:
            raise
        started = daemon.ready.is_set()
        message = (
            str(error) if isinstance(error, TradeguardError) else _start_failure(daemon, error)
        )
        return _fail(message, EXIT_FAIL if started else EXIT_USAGE)
    return EXIT_OK


def _start_failure(daemon: Daemon, error: BaseException) -> str:
    """Say which listener of the start-up failed (the daemon binds them in this order)."""
    config = daemon.config
    reason = _reason(error)
    if config.mqtt.is_embedded and daemon.mqtt_port is None:
        return f"mqtt.port: the embedded mosquitto cannot listen on {config.mqtt.port}: {reason}"
    if config.metrics.enabled and daemon.metrics_port is None:
        metrics = config.metrics
        return f"metrics.port: cannot listen on {metrics.host}:{metrics.port}: {reason}"
    if config.broker.kind == "sim" and daemon.broker_url is None:
        sim = config.broker.sim
        return f"broker.sim.port: the paper venue cannot listen on {sim.host}:{sim.port}: {reason}"
    return reason


def _leaf(
    error: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """The first ``kind`` error in ``error`` (which may be a group), or None."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
        return None
    return error if isinstance(error, kind) else None


def _reason(error: BaseException) -> str:
    """What went wrong, without the where (asyncio puts the address into ``strerror``)."""
    if isinstance(error, OSError) and error.errno and not isinstance(error, socket.gaierror):
        return os.strerror(error.errno)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _hash_code() -> int:
    from actors.admin_code import hash_code  # noqa: PLC0415

    if sys.stdin.isatty():
        code = getpass.getpass("admin code: ")
        if getpass.getpass("again: ") != code:
            return _fail("the two codes differ")
    else:
        code = sys.stdin.readline().strip()
    print(hash_code(code))
    return EXIT_OK


def _totp_setup(output: Path, account: str) -> int:
    import pyotp  # noqa: PLC0415
    import qrcode  # noqa: PLC0415

    if output.exists():
        return _fail(f"{output} exists: refusing to overwrite a TOTP secret")
    secret = pyotp.random_base32(32)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret + "\n")
    except OSError as exc:
        return _fail(f"--output: cannot write {output}: {_reason(exc)}")
    uri = pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name="tradeguard")
    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    qr.print_ascii(invert=True)
    print(f"secret written to {output} (mode 0600); set kill.totp_secret_file to it")
    print(f"secret: {secret}")
    print(f"uri:    {uri}")
    return EXIT_OK
