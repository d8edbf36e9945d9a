"""The ``tradeguard`` command line's parser: commands, options, and what each accepts.

Bad input is one line naming what is wrong, exit 2 (:class:`CommandParser`). The
options of ``tradeguard sim`` are the paper venue's own (:func:`sim.cli.add_options`),
handed in by the caller: this module does not import the venue.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

from rich_argparse import RawDescriptionRichHelpFormatter

from daemon.version import tradeguard_version
from protocol.messages import INTENT_ID_PATTERN, STRATEGY_ID_PATTERN

EXIT_USAGE: Final = 2

MAX_TEXT: Final = 200
"""Longest ``--reason`` / ``--operator`` a command message carries (``ShortText``)."""

DESCRIPTION: Final = """\
Execution and risk daemon for algorithmic traders, driven over MQTT.

Every command takes --config F, before or after the command name (default:
$TRADEGUARD_CONFIG, else the built-in defaults). Commands that need an admin code
read it from a prompt, from one line of stdin (--code-stdin, or whenever stdin is
not a terminal) or from a file (--code-file PATH), never from the command line.
Bad input is one line naming what is wrong, exit 2."""

CODE_ON_ARGV: Final = (
    "argument --code: codes are never taken from the command line (ps and shell history "
    "keep them): type it at the prompt, pipe one line with --code-stdin, or use "
    "--code-file PATH"
)
SHELLS: Final = ("bash", "zsh")
CONFIG_HELP: Final = "config file (default: $TRADEGUARD_CONFIG, else the built-in defaults)"


def one_line(message: str) -> str:
    """An error is one line even when it quotes a value holding a line break."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class CommandParser(argparse.ArgumentParser):
    """Rich help; an error is one line and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Format help with rich (descriptions keep their line breaks)."""
        kwargs.setdefault("formatter_class", RawDescriptionRichHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, exit 2."""
        self.exit(EXIT_USAGE, f"tradeguard: error: {one_line(message)}\n")


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


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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


_strategy_id = _matching(STRATEGY_ID_PATTERN, "a strategy id (1-32 of [A-Za-z0-9_-])")
_intent_id = _matching(INTENT_ID_PATTERN, "an intent id (1-64 of [A-Za-z0-9._:-])")
_short_text = _text(MAX_TEXT)


def build_parser(
    *, sim_options: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """The whole command line; commands are added in the order ``--help`` lists them.

    Args:
        sim_options: adds the paper venue's options to ``sim`` (:func:`sim.cli.add_options`);
            None leaves ``sim`` without them, which only suits a command line that
            cannot be ``sim``.
    """
    parser = CommandParser(prog="tradeguard", description=DESCRIPTION)
    parser.add_argument("--config", metavar="F", help=CONFIG_HELP)
    parser.add_argument(
        "--version",
        action="version",
        version=f"tradeguard {tradeguard_version()}",
        help="print the version and exit",
    )
    # After the command name too; SUPPRESS keeps a --config given before it when absent here.
    common = CommandParser(add_help=False)
    common.add_argument("--config", metavar="F", default=argparse.SUPPRESS, help=CONFIG_HELP)
    # --code C is refused on every command, with a pointer to the ways that keep a code out
    # of ps and shell history, and without echoing it; hidden from help and completion.
    for each in (parser, common):
        each.add_argument("--code", nargs="?", action=_RefuseCode, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=CommandParser, metavar="COMMAND"
    )
    sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    _add_operator_commands(sub, common)
    p = sub.add_parser("sim", parents=[common], help="run the Alpaca-compatible paper venue")
    if sim_options is not None:
        sim_options(p)
    sub.add_parser("schema", parents=[common], help="print the JSON Schema of every v1 message")
    _add_inspection_commands(sub, common)
    _add_setup_commands(sub, common)
    return parser


def _add_operator_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Commands sent to a running daemon: kill, release, admin commands, status."""
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
    _add_mode_commands(sub, common)

    p = sub.add_parser("status", parents=[common], help="print kill, daemon and strategy state")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_inspection_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The journal's orders and positions, the doctor, and a demo strategy."""
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


def _add_setup_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Tools for setting up: config check, admin codes, shell completion."""
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


def _add_mode_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """A strategy's trading mode: promote (paper to live, admin code), demote (no code)."""
    p = sub.add_parser(
        "promote",
        parents=[common],
        help="move a strategy from paper to live trading (admin code; needs its paper record)",
    )
    p.add_argument("strategy", metavar="SID", type=_strategy_id, help="the strategy")
    _add_code_options(p)

    p = sub.add_parser(
        "demote",
        parents=[common],
        help="move a strategy from live back to paper trading (cancels its live orders first)",
    )
    p.add_argument("strategy", metavar="SID", type=_strategy_id, help="the strategy")
    p.add_argument(
        "--flatten", action="store_true", help="also close its live positions before switching"
    )
    p.add_argument(
        "--reason", default="cli", type=_short_text, help="why, for the audit (default: cli)"
    )
