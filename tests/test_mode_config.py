"""Per-strategy mode in the config: ``[broker.live]``, ``strategies.SID.mode``, the live guard.

Every rule is one refusal naming its key, and every refusal has an accepted
neighbour: what the rule allows is checked beside what it refuses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.admin_code import hash_code
from actors.core.errors import BrokerError, ConfigError
from daemon.account_wiring import resolve_live
from daemon.broker_mode import LIVE_HOST, check_live_account, check_mode
from daemon.config import (
    LiveAccountConfig,
    PromotionConfig,
    builtin_defaults,
    has_live_account,
    parse_config,
    strategy_mode,
)
from daemon.preflight import check_setup

LIVE_URL = f"https://{LIVE_HOST}"
PAPER_URL = "https://paper-api.alpaca.markets"
CODE_HASH = hash_code("correct-horse-7")
KILL = f"[kill]\nadmin_code_hash = '{CODE_HASH}'\n"
LIVE_ALPACA = (
    "[broker.live]\n"
    f"url = '{LIVE_URL}'\n"
    f"stream_url = 'wss://{LIVE_HOST}/stream'\n"
    "key_id_file = 'live-key'\n"
    "secret_key_file = 'live-secret'\n"
)
REHEARSAL = "[broker.live]\nkind = 'sim'\nrehearsal = true\n"
LIVE_BROKER = (
    "[broker]\nkind = 'alpaca'\nmode = 'live'\n"
    f"url = '{LIVE_URL}'\nstream_url = 'wss://{LIVE_HOST}/stream'\n"
    "key_id_file = 'key'\nsecret_key_file = 'secret'\n"
)


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the live account


def test_defaults_have_one_account_and_the_promotion_evidence() -> None:
    config = builtin_defaults()
    assert config.broker.live is None
    assert not has_live_account(config)
    assert config.promotion == PromotionConfig()
    assert strategy_mode(config, "demo") == "paper"


def test_a_live_account_beside_the_paper_one_is_accepted() -> None:
    config = parse_config(LIVE_ALPACA)
    live = config.broker.live
    assert live is not None
    assert (live.kind, live.url, live.key_id_file) == ("alpaca", LIVE_URL, "live-key")
    assert (live.request_timeout_s, live.rate_limit_per_min) == (10.0, 190.0)
    assert (live.rehearsal, live.on_circuit_open) == (False, "demote")
    assert live.sim.port == 8791
    assert config.broker.mode == "paper"
    assert has_live_account(config)


def test_the_live_account_has_its_own_rate_limit_and_circuit_action() -> None:
    config = parse_config(
        LIVE_ALPACA + "rate_limit_per_min = 120\nrequest_timeout_s = 4\non_circuit_open = 'kill'\n"
    )
    live = config.broker.live
    assert live is not None
    assert (live.rate_limit_per_min, live.request_timeout_s) == (120.0, 4.0)
    assert live.on_circuit_open == "kill"
    assert config.broker.rate_limit_per_min == 190.0


def test_a_rehearsal_venue_is_accepted_on_its_own_port() -> None:
    live = parse_config(REHEARSAL).broker.live
    assert live is not None
    assert (live.kind, live.rehearsal, live.sim.port) == ("sim", True, 8791)
    # Its own table keeps the default port unless it names one.
    live = parse_config(REHEARSAL + "[broker.live.sim]\nseed = 7\n").broker.live
    assert live is not None
    assert (live.sim.port, live.sim.seed) == (8791, 7)
    assert parse_config(REHEARSAL + "[broker.live.sim]\nport = 0\n[broker.sim]\nport = 0\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[broker]\nmode = 'live'\n" + LIVE_ALPACA,
            "broker.live: the [broker] account is then the paper one: set broker.mode = 'paper'",
        ),
        ("[broker.live]\n", "broker.live.url: required when broker.live.kind is 'alpaca'"),
        (
            LIVE_ALPACA.replace("stream_url", "#"),
            "broker.live.stream_url: required when broker.live.kind is 'alpaca'",
        ),
        (
            LIVE_ALPACA.replace("key_id_file", "#"),
            "broker.live.key_id_file: required when broker.live.kind is 'alpaca'",
        ),
        (
            LIVE_ALPACA.replace("secret_key_file", "#"),
            "broker.live.secret_key_file: required when broker.live.kind is 'alpaca'",
        ),
        ("[broker.live]\nkind = 'sim'\n", "broker.live.kind: the embedded paper venue ('sim')"),
        (
            "[broker.live]\nkind = 'sim'\nrehearsal = false\n",
            "set broker.live.rehearsal = true",
        ),
        (
            REHEARSAL + "[broker.live.sim]\nport = 8790\n",
            "broker.live.sim.port: 8790 is broker.sim.port too",
        ),
        (
            REHEARSAL + "[broker.sim]\nport = 9000\n[broker.live.sim]\nport = 9000\n",
            "broker.live.sim.port: 9000 is broker.sim.port too",
        ),
        ("[broker.live]\nkind = 'ibkr'\n", "broker.live.kind"),
        ("[broker.live]\non_circuit_open = 'panic'\n", "broker.live.on_circuit_open"),
        ("[broker.live]\nrate_limit_per_min = 0\n", "broker.live.rate_limit_per_min"),
        ("[broker.live]\nmode = 'live'\n", "broker.live.mode: unknown key"),
        (REHEARSAL + "[broker.live.sim]\nportt = 1\n", "broker.live.sim.portt: unknown key"),
        ("[promotion]\nmin_sessions = -1\n", "promotion.min_sessions"),
        ("[promotion]\nmax_drawdown = 2\n", "promotion.max_drawdown"),
        ("[promotion]\nquiet = 3\n", "promotion.quiet: unknown key"),
    ],
)
def test_live_account_refusals_name_the_key(text: str, message: str) -> None:
    assert message in refusal(text)


def test_the_port_rule_is_only_for_two_embedded_venues() -> None:
    # A paper account at Alpaca and the rehearsal venue on 8790: nothing collides.
    text = (
        f"[broker]\nkind = 'alpaca'\nurl = '{PAPER_URL}'\nstream_url = 'wss://x/stream'\n"
        "key_id_file = 'k'\nsecret_key_file = 's'\n"
        + REHEARSAL
        + "[broker.live.sim]\nport = 8790\n"
    )
    live = parse_config(text).broker.live
    assert live is not None
    assert live.sim.port == 8790


def test_the_promotion_evidence_is_configurable() -> None:
    config = parse_config(
        "[promotion]\nmin_sessions = 10\nmin_filled_orders = 40\nmax_drawdown = 0.02\n"
        "quiet_sessions = 5\n"
    )
    assert config.promotion == PromotionConfig(
        min_sessions=10, min_filled_orders=40, max_drawdown=0.02, quiet_sessions=5
    )


# ---------------------------------------------------------------- strategies.SID.mode


def test_a_live_strategy_beside_a_paper_one_with_a_code_on_record() -> None:
    config = parse_config(
        KILL + LIVE_ALPACA + "[strategies.s1]\nmode = 'live'\nlive_allocation = 0.5\n"
        "[strategies.s2]\nmode = 'paper'\n[strategies.s3]\n"
    )
    assert strategy_mode(config, "s1") == "live"
    assert strategy_mode(config, "s2") == "paper"
    assert strategy_mode(config, "s3") == "paper"  # broker.mode
    assert config.strategies["s1"].live_allocation == 0.5


def test_a_totp_secret_is_a_code_on_record_too() -> None:
    config = parse_config(
        "[kill]\ntotp_secret_file = 'totp'\n" + REHEARSAL + "[strategies.s1]\nmode = 'live'\n"
    )
    assert strategy_mode(config, "s1") == "live"


def test_one_live_account_makes_every_strategy_live() -> None:
    config = parse_config(KILL + LIVE_BROKER + "[strategies.s1]\n[strategies.s2]\nmode = 'live'\n")
    assert has_live_account(config)
    assert strategy_mode(config, "s1") == "live"
    assert strategy_mode(config, "s2") == "live"
    # A live_allocation with the one live account is accepted.
    assert parse_config(KILL + LIVE_BROKER + "[strategies.s1]\nlive_allocation = 0.2\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            KILL + "[strategies.s1]\nmode = 'live'\n",
            (
                "strategies.s1.mode: 'live' needs a live account ([broker.live], or "
                "broker.mode = 'live')"
            ),
        ),
        (
            LIVE_ALPACA + "[strategies.s1]\nmode = 'live'\n",
            (
                "strategies.s1.mode: 'live' needs an admin code on record "
                "(kill.admin_code_hash or kill.totp_secret_file)"
            ),
        ),
        (
            LIVE_BROKER + "[strategies.s1]\nmode = 'live'\n",
            "strategies.s1.mode: 'live' needs an admin code on record",
        ),
        (
            KILL + LIVE_BROKER + "[strategies.s1]\nmode = 'paper'\n",
            "strategies.s1.mode: 'paper' needs a paper account (broker.mode = 'paper'",
        ),
        (
            "[strategies.s1]\nlive_allocation = 0.1\n",
            "strategies.s1.live_allocation: there is no live account",
        ),
        ("[strategies.s1]\nmode = 'demo'\n", "strategies.s1.mode"),
        ("[strategies.s1]\nlive_allocation = 1.5\n", "strategies.s1.live_allocation"),
        (
            LIVE_ALPACA + "[strategies.a]\nallocation = 0.2\nlive_allocation = 0.7\n"
            "[strategies.b]\nallocation = 0.4\n",
            "strategies: live allocations (live_allocation, else allocation) add up to 1.10",
        ),
    ],
)
def test_strategy_mode_refusals_name_the_key(text: str, message: str) -> None:
    assert message in refusal(text)


def test_paper_needs_no_code_and_the_mode_defaults_to_the_broker_s() -> None:
    config = parse_config(LIVE_ALPACA + "[strategies.s1]\nmode = 'paper'\n[strategies.s2]\n")
    assert strategy_mode(config, "s1") == "paper"
    assert strategy_mode(config, "s2") == "paper"
    assert strategy_mode(config, "not-configured") == "paper"


def test_live_allocations_within_the_account_are_accepted() -> None:
    config = parse_config(
        LIVE_ALPACA + "[strategies.a]\nallocation = 0.5\nlive_allocation = 0.1\n"
        "[strategies.b]\nallocation = 0.4\nlive_allocation = 0.9\n"
    )
    assert {s.live_allocation for s in config.strategies.values()} == {0.1, 0.9}


# ---------------------------------------------------------------- the live guard


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (
            {"url": PAPER_URL, "key_id": "AKLIVE", "kind": "alpaca", "rehearsal": False},
            f"broker.live.url is not https://{LIVE_HOST}",
        ),
        (
            {"url": LIVE_URL, "key_id": "PKPAPER", "kind": "alpaca", "rehearsal": False},
            "the key id in broker.live.key_id_file is not a live key (AK...)",
        ),
        (
            {"url": "http://127.0.0.1:8791", "key_id": "", "kind": "sim", "rehearsal": False},
            "broker.live.kind: the built-in paper venue (kind 'sim') stands in",
        ),
        (
            {"url": LIVE_URL, "key_id": "PKPAPER", "kind": "alpaca", "rehearsal": True},
            "broker.live.rehearsal is true (a paper stand-in) but broker.live.url points at live",
        ),
        (
            {
                "url": "HTTPS://API.alpaca.markets:443/v2",
                "key_id": "AK",
                "kind": "alpaca",
                "rehearsal": True,
            },
            "broker.live.url points at live trading",
        ),
    ],
)
def test_the_live_account_guard_refuses(kwargs: dict[str, str | bool], words: str) -> None:
    with pytest.raises(BrokerError) as info:
        check_live_account(**kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": LIVE_URL, "key_id": "AKLIVE", "kind": "alpaca", "rehearsal": False},
        {"url": f"{LIVE_URL}/", "key_id": "AKLIVE", "kind": "alpaca", "rehearsal": False},
        {"url": PAPER_URL, "key_id": "PKPAPER", "kind": "alpaca", "rehearsal": True},
        {"url": "http://127.0.0.1:8791", "key_id": "", "kind": "sim", "rehearsal": True},
    ],
)
def test_the_live_account_guard_accepts(kwargs: dict[str, str | bool]) -> None:
    check_live_account(**kwargs)  # type: ignore[arg-type]


def test_the_one_account_guard_keeps_its_words() -> None:
    with pytest.raises(BrokerError, match=r"^broker.mode is 'live' but broker.url is not"):
        check_mode(mode="live", url=PAPER_URL, key_id="AK", kind="alpaca")
    with pytest.raises(BrokerError, match=r"key id in broker.key_id_file is not a live key"):
        check_mode(mode="live", url=LIVE_URL, key_id="PK", kind="alpaca")
    with pytest.raises(BrokerError, match=r"^broker.mode is 'paper' but broker.url points"):
        check_mode(mode="paper", url=LIVE_URL, key_id="PK", kind="alpaca")
    check_mode(mode="live", url=LIVE_URL, key_id="AK1", kind="alpaca")


def test_the_live_account_struct_defaults() -> None:
    live = LiveAccountConfig()
    assert (live.kind, live.rehearsal, live.on_circuit_open, live.sim.port) == (
        "alpaca",
        False,
        "demote",
        8791,
    )


# ---------------------------------------------------------------- check-config as run


@pytest.mark.parametrize(
    ("url", "key_id", "rehearsal", "words"),
    [
        (PAPER_URL, "AKLIVEKEY", False, "broker.live"),  # a live account on the paper URL
        (LIVE_URL, "PKPAPERKEY", False, "AK"),  # the live URL with a paper key
        (LIVE_URL, "AKLIVEKEY", True, "rehearsal"),  # a rehearsal pointed at live trading
    ],
)
def test_check_config_refuses_the_live_accounts_that_run_refuses(
    tmp_path: Path, url: str, key_id: str, rehearsal: bool, words: str
) -> None:
    (tmp_path / "live-key").write_text(key_id + "\n")
    (tmp_path / "live-secret").write_text("secret\n")
    text = (
        "[strategies.s1]\n"
        "[broker.live]\n"
        f"url = '{url}'\nstream_url = 'wss://{url.split('://')[1]}/stream'\n"
        f"key_id_file = 'live-key'\nsecret_key_file = 'live-secret'\n"
        f"rehearsal = {'true' if rehearsal else 'false'}\n"
    )
    config = parse_config(text, source=str(tmp_path / "tradeguard.toml"))
    with pytest.raises(BrokerError) as preflight:
        check_setup(config)
    with pytest.raises(BrokerError) as start:
        resolve_live(config)
    assert str(preflight.value) == str(start.value)
    assert words in str(preflight.value)
