"""The ``tradeguard`` command line (docs/protocol.md).

Every command takes ``--config F``, before or after the command name (default
``$TRADEGUARD_CONFIG``, else the built-in defaults). Bad input and unusable
environments are a one-line error naming what is wrong, exit 2; never a traceback.
Admin codes never come from argv (``ps`` and shell history keep it): a prompt, one
line of stdin, or a file. The parser is :mod:`daemon.cli_parser`; this module runs
what it parsed.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from actors.core.errors import ConfigError, TradeguardError
from daemon.cli_parser import EXIT_USAGE, build_parser, one_line
from daemon.config import Config, load_config
from daemon.error_reasons import reason_of
from daemon.logs import configure_logging

if TYPE_CHECKING:
    from daemon.wiring import Daemon

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_DENIED = 3
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports it."""

MAX_CODE = 128


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
            why = reason_of(exc)
            raise ConfigError(f"--code-file: cannot read {args.code_file}: {why}") from exc
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

    print(shtab.complete(_parser(None), shell=shell), end="")
    return EXIT_OK


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"tradeguard: error: {one_line(message)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tradeguard`` console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = _parser(words).parse_args(words)
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


def _parser(words: Sequence[str] | None) -> argparse.ArgumentParser:
    """The parser of ``words``, or of any command line (None: for completion).

    ``sim`` gets the paper venue's options only when ``words`` may be ``sim``: the
    venue costs every other command a third of a second and a web framework.
    """
    if words is not None and "sim" not in words:
        return build_parser()
    from sim.cli import add_options  # noqa: PLC0415  # the venue only for `sim`

    return build_parser(sim_options=add_options)


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
        case "promote" | "demote":
            return _change_mode(command, args, config)
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


def _change_mode(command: str, args: argparse.Namespace, config: Config) -> int:
    from daemon import client_commands as cc  # noqa: PLC0415
    from protocol import messages as m  # noqa: PLC0415

    if command == "demote":
        demote = m.Demote(strategy_id=args.strategy, flatten=args.flatten, reason=args.reason)
        return cc.change_mode(config, demote)
    promote = m.Promote(strategy_id=args.strategy, code=_read_code(args), operator=args.operator)
    return cc.change_mode(config, promote)


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
    from sim.cli import run_options  # noqa: PLC0415  # the venue only for `sim`

    configure_logging("info")  # to stderr: stdout carries only the "listening" line
    try:
        return run_options(args)
    except (OSError, BaseExceptionGroup) as exc:
        # anyio wraps a failed bind in a group, which sim.cli's `except OSError` misses.
        error = _leaf(exc, OSError)
        if error is None:
            raise
        return _fail(f"cannot listen on {args.host}:{args.port}: {reason_of(error)}")


def _check_listen_host(host: str, *, option: str) -> None:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{option}: cannot listen on {host!r}: {reason_of(exc)}") from exc


def _loop_options() -> dict[str, bool]:
    """Uvloop when it is installed (a dependency on Linux): the asyncio loop in C."""
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


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
        anyio.run(daemon.run, backend="asyncio", backend_options=_loop_options())
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
    reason = reason_of(error)
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
        return _fail(f"--output: cannot write {output}: {reason_of(exc)}")
    uri = pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name="tradeguard")
    qr = qrcode.QRCode(border=1)
    qr.add_data(uri)
    qr.print_ascii(invert=True)
    print(f"secret written to {output} (mode 0600); set kill.totp_secret_file to it")
    print(f"secret: {secret}")
    print(f"uri:    {uri}")
    return EXIT_OK
