"""Configuration: every error names its key; check-config exits 2; secrets come from files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyotp
import pytest
from harness import VENV_BIN

from actors.admin_code import hash_code
from actors.core.errors import ConfigError, SecretError
from daemon.config import builtin_defaults, load_config, parse_config, read_secret


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[risk]\nmax_notional = -1", "risk.max_notional: expected a number > 0"),
        ("[risk]\nmax_notional = 'lots'", "risk.max_notional: expected a number, got a string"),
        ("[risk]\nmax_notionl = 5", "risk.max_notionl: unknown key"),
        ("[mqtt]\nport = 70000", "mqtt.port: expected an integer <= 65535"),
        ("[broker]\nkind = 'ibkr'", "broker.kind"),
        ("[strategies.s1]\nallocation = 1.5", "strategies.s1.allocation"),
        ("[strategies.'bad id']\n", "strategies.bad id: a strategy id"),
        ("[strategies.s1]\nmax_notional = 0", "strategies.s1.max_notional: expected a number > 0"),
        ("[risk]\nwarn_daily_drawdown = 0.5", "risk.warn_daily_drawdown: must not exceed"),
        ("[broker]\nkind = 'alpaca'", "broker.url: required"),
        ("[[kill.triggers]]\ntopic = 'x'\nscope = 'strategy'", "kill.triggers[0].strategy_id"),
        (
            "[strategies.a]\nallocation = 0.6\n[strategies.b]\nallocation = 0.6",
            "allocations add up",
        ),
        ("not toml at all ===", "not valid TOML"),
        ("[[kill.triggers]]\ntopic = 'a/#/b'", "kill.triggers[0].topic: 'a/#/b': # is only"),
        ("[[kill.triggers]]\ntopic = 'a/b+'", "kill.triggers[0].topic: 'a/b+': + and #"),
        ("[homeassistant]\ndiscovery_prefix = 'ha/#'", "homeassistant.discovery_prefix"),
        ("[homeassistant]\nnode_id = 'a/b'", "homeassistant.node_id"),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert message in str(info.value)


def test_defaults_match_the_contract() -> None:
    config = builtin_defaults()
    risk = config.risk
    assert (risk.max_daily_drawdown, risk.max_total_drawdown, risk.warn_daily_drawdown) == (
        0.03,
        0.10,
        0.02,
    )
    assert (risk.max_capital_deployed, risk.max_positions, risk.max_risk_per_trade) == (
        0.8,
        20,
        0.02,
    )
    assert (risk.max_notional, risk.min_price, risk.max_price_deviation) == (25000.0, 5.0, 0.05)
    assert (risk.max_intent_age_s, risk.max_intents_per_second, risk.duplicate_window_s) == (
        5.0,
        20.0,
        2.0,
    )
    assert config.mqtt.is_embedded
    assert config.broker.kind == "sim"
    assert config.mqtt.topic_prefix == "tradeguard"
    assert "demo" in config.strategies


def test_a_file_without_strategies_trades_nothing() -> None:
    assert parse_config("[mqtt]\nhost = '127.0.0.1'").strategies == {}


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[strategies.s1]\nallocation = 0.1\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk]\nmax_notional = -3\n")
    tg = str(VENV_BIN / "tradeguard")
    ok = subprocess.run(
        [tg, "check-config", str(good)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    no = subprocess.run([tg, "check-config", str(bad)], capture_output=True, text=True, check=False)
    assert no.returncode == 2
    assert no.stderr.strip().count("\n") == 0
    assert "risk.max_notional" in no.stderr
    missing = subprocess.run(
        [tg, "check-config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "cannot read config file" in missing.stderr
    run_bad = subprocess.run(
        [tg, "run", "--config", str(bad)], capture_output=True, text=True, check=False
    )
    assert run_bad.returncode == 2
    assert "risk.max_notional" in run_bad.stderr


def test_secrets_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = parse_config(
        "[mqtt]\npassword_file = 'mqtt-password'", source=str(tmp_path / "c.toml")
    )
    assert read_secret(config, "mqtt-password", key="mqtt.password_file") == "s3cret"
    with pytest.raises(SecretError, match=r"mqtt\.password_file"):
        read_secret(config, "absent", key="mqtt.password_file")


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("abc")
    path = tmp_path / "c.toml"
    path.write_text("[state]\npath = 'st/state.db'\n")
    config = load_config(path)
    assert read_secret(config, "./secret.txt", key="k") == "abc"


def _alpaca(mode: str, url: str, key_file: str = "key", secret_file: str = "secret") -> str:
    return (
        f'[broker]\nkind = "alpaca"\nmode = "{mode}"\nurl = "{url}"\n'
        f'stream_url = "wss://paper-api.alpaca.markets/stream"\n'
        f'key_id_file = "{key_file}"\nsecret_key_file = "{secret_file}"\n'
    )


PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (_alpaca("paper", LIVE_URL), "broker.url points at live trading"),
        (_alpaca("live", LIVE_URL), "broker.key_id_file is not a live key"),
        (_alpaca("live", PAPER_URL, key_file="ak-key"), "broker.url is not"),
        (_alpaca("paper", PAPER_URL, key_file="absent"), "broker.key_id_file: file 'absent'"),
        (_alpaca("paper", PAPER_URL, secret_file="absent"), "broker.secret_key_file: file"),
        (_alpaca("paper", PAPER_URL, secret_file="empty"), "broker.secret_key_file:"),
        (_alpaca("paper", "paper-api.alpaca.markets"), "broker.url:"),
        ('[broker]\nkind = "sim"\nmode = "live"\n', "broker.mode:"),
        ('[kill]\ntotp_secret_file = "absent"\n', "kill.totp_secret_file: file 'absent'"),
        ('[kill]\ntotp_secret_file = "short-totp"\n', "kill.totp_secret_file: the secret has 40"),
        ('[kill]\ntotp_secret_file = "key"\n', "kill.totp_secret_file: not a base32"),
        ('[kill]\nadmin_code_hash = "plain"\n', "kill.admin_code_hash"),
        ('[mqtt]\nhost = "127.0.0.1"\npassword_file = "absent"\n', "mqtt.password_file: file"),
        (
            '[mqtt]\nhost = "127.0.0.1"\ncontrol_password_file = "absent"\n',
            "mqtt.control_password_file: file 'absent' not found",
        ),
        ('[mqtt]\nhost = "127.0.0.1"\ntls = true\nca_file = "absent"\n', "mqtt.ca_file:"),
        ('[mqtt]\nhost = "127.0.0.1"\ntls = true\ncert_file = "key"\n', "mqtt.cert_file:"),
        ('[mqtt]\nhost = "127.0.0.1"\ntls = true\nca_file = "key"\n', "mqtt.ca_file: cannot load"),
        ("[mqtt]\ntls = true\n", "mqtt.tls: the embedded mosquitto"),
        ('[mqtt]\nmosquitto_binary = "absent"\n', "mqtt.mosquitto_binary:"),
        ('[mqtt]\nhost = "127.0.0.1"\nport = 0\n', "mqtt.port:"),
        ('[mqtt]\nhost = " "\n', "mqtt.host: empty"),
        ('[state]\npath = "."\n', "state.path:"),
        ('[metrics]\nenabled = true\nhost = "no-such-host.invalid"\n', "metrics.host:"),
        ('[broker.sim]\nhost = "no-such-host.invalid"\n', "broker.sim.host:"),
    ],
)
def test_check_config_and_run_refuse_the_same_configs(
    tmp_path: Path, table: str, words: str
) -> None:
    (tmp_path / "key").write_text("PKTEST\n")
    (tmp_path / "ak-key").write_text("AKTEST\n")
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "short-totp").write_text("JBSWY3DP\n")
    config = tmp_path / "c.toml"
    state = "" if "[state]" in table else '[state]\npath = "st/state.db"\n'
    config.write_text(f"{state}{table}[strategies.s1]\nallocation = 0.1\n")
    tg = str(VENV_BIN / "tradeguard")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRADEGUARD_CONFIG", "CREDENTIALS_DIRECTORY")
    }
    check = subprocess.run(
        [tg, "check-config", str(config)], capture_output=True, text=True, check=False, env=env
    )
    assert check.returncode == 2, check.stdout + check.stderr
    assert check.stderr.count("\n") == 1
    assert words in check.stderr
    run = subprocess.run(
        [tg, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=env,
    )
    assert (run.returncode, run.stderr) == (2, check.stderr)
    assert not (tmp_path / "st").exists()  # refused before anything was created


def test_check_config_accepts_what_run_needs_and_says_which_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("AKLIVE\n")
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "totp").write_text(pyotp.random_base32(32) + "\n")
    config = tmp_path / "c.toml"
    config.write_text(
        f"{_alpaca('live', LIVE_URL)}[kill]\ntotp_secret_file = 'totp'\n"
        f"admin_code_hash = '{hash_code('correct-horse')}'\n[strategies.s1]\n"
    )
    tg = str(VENV_BIN / "tradeguard")
    env = {k: v for k, v in os.environ.items() if k != "TRADEGUARD_CONFIG"}
    ok = subprocess.run(
        [tg, "check-config", str(config)], capture_output=True, text=True, check=False, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"{config}: valid (1 strategies)\n"
    # Without F: --config (before or after the command), then $TRADEGUARD_CONFIG.
    for argv, extra in (
        (["--config", str(config), "check-config"], {}),
        (["check-config", "--config", str(config)], {}),
        (["check-config"], {"TRADEGUARD_CONFIG": str(config)}),
    ):
        out = subprocess.run(
            [tg, *argv], capture_output=True, text=True, check=False, env={**env, **extra}
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == f"{config}: valid (1 strategies)\n"
    defaults = subprocess.run(
        [tg, "check-config"], capture_output=True, text=True, check=False, env=env, cwd=tmp_path
    )
    assert defaults.stdout == "built-in defaults: valid (1 strategies)\n"
