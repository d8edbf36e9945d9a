"""Dependencies run one way, checked over every import in the tree (module level or not).

``protocol`` <- pure cores (``actors/core``) <- actors <- ``daemon`` (config, journal,
MQTT session, supervisor, wiring, CLI). No actor imports another actor; only the
wiring imports ``sim``; only the Alpaca adapter imports alpaca-py; only the MQTT
session imports aiomqtt. Sizes: no module over 600 lines, no function over 60.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "actors", "daemon", "sim")
ACTORS = frozenset(
    {
        "actors.audit",
        "actors.broker_gateway",
        "actors.kill_switch",
        "actors.order_manager",
        "actors.risk_guardian",
    }
)
"""The actor modules (the rest of ``actors`` is their base, channels, cores and the Home
Assistant message builder, which the kill-switch authority uses)."""
ALPACA_ADAPTER = frozenset({"actors.alpaca_adapter"})
MQTT_SESSION_PREFIX = "daemon.mqtt_"
STRATEGY_CLIENT = "protocol.client"
"""The strategies' own MQTT client (a library for strategy authors) may use aiomqtt."""
NOT_PURE = frozenset(
    {"anyio", "asyncio", "sqlite3", "socket", "requests", "aiohttp", "structlog", "threading"}
)
CLI = frozenset({"daemon.cli", "daemon.cli_parser"})
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = modules()


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(name: str, path: Path) -> list[str]:
    found = []
    for target in sorted(imports(path)):
        top = target.split(".")[0]
        if under(name, "protocol"):
            if top in {"actors", "daemon", "sim"}:
                found.append(f"protocol imports {target}")
            if top == "aiomqtt" and name != STRATEGY_CLIENT:
                found.append(f"{name} imports aiomqtt")
        elif under(name, "actors.core"):
            if top in {"daemon", "sim"} or (
                under(target, "actors") and not under(target, "actors.core")
            ):
                found.append(f"core {name} imports {target}")
            if top in NOT_PURE or top in {"alpaca", "aiomqtt"}:
                found.append(f"core {name} imports {target} (not pure)")
        elif under(name, "actors"):
            if top in {"daemon", "sim"}:
                found.append(f"{name} imports {target}")
            if name in ACTORS and target in ACTORS and target != name:
                found.append(f"actor {name} imports actor {target}")
        elif (
            under(name, "daemon")
            and top == "sim"
            and name not in {"daemon.wiring", "daemon.account_wiring"}  # the wiring's own part
            # The command line is the top layer: `tradeguard sim` runs the venue's own
            # command line (sim.cli), lazily, and nothing else of sim.
            and not (name in CLI and under(target, "sim.cli"))
        ):
            found.append(f"{name} imports {target} (only the wiring may)")
        if top == "alpaca" and name not in ALPACA_ADAPTER:
            found.append(f"{name} imports alpaca-py")
        if top == "aiomqtt" and not (
            name.startswith(MQTT_SESSION_PREFIX) or name == STRATEGY_CLIENT
        ):
            found.append(f"{name} imports aiomqtt")
    return found


def test_the_tree_has_the_layers() -> None:
    assert {"protocol.messages", "actors.core.book", "actors.base", "daemon.wiring"} <= set(MODULES)
    assert set(MODULES) >= ACTORS


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_one_way(name: str) -> None:
    assert violations(name, MODULES[name]) == []


def test_the_check_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from daemon.journal import Journal\n    import alpaca\n")
    assert violations("actors.kill_switch", bad) == [
        "actors.kill_switch imports alpaca-py",
        "actors.kill_switch imports daemon.journal",
        "actors.kill_switch imports daemon.journal.Journal",
    ]
    actor = tmp_path / "actor.py"
    actor.write_text("from actors.risk_guardian import RiskGuardian\nimport anyio\n")
    assert violations("actors.order_manager", actor) == [
        "actor actors.order_manager imports actor actors.risk_guardian"
    ]
    assert violations("actors.core.book", actor) == [
        "core actors.core.book imports actors.risk_guardian",
        "core actors.core.book imports actors.risk_guardian.RiskGuardian",
        "core actors.core.book imports anyio (not pure)",
    ]


def long_functions(path: Path) -> list[str]:
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


SOURCES = {**MODULES, **{f"bench.{p.stem}": p for p in sorted((REPO / "bench").glob("*.py"))}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_modules_and_functions_stay_small(name: str) -> None:
    path = SOURCES[name]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)}: {lines} lines"
    assert long_functions(path) == []
