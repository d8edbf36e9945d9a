"""The doctor's configuration checks: the config file, its secret files, the kill release.

Secrets are read to test them, never printed: :func:`daemon.doctor.diagnose` redacts
every value read here from the whole output.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from actors.admin_code import check_hash_format
from actors.core.errors import ConfigError, TradeguardError
from daemon.config import Config, read_secret, resolve_path
from daemon.doctor.probes import mode_of
from daemon.doctor.results import CheckResult
from daemon.endpoints import GENERATED_CODE_FILE
from daemon.preflight import check_setup

SECRET_KEYS: Final = (
    ("mqtt", "password_file"),
    ("broker", "key_id_file"),
    ("broker", "secret_key_file"),
    ("broker.live", "key_id_file"),
    ("broker.live", "secret_key_file"),
    ("kill", "totp_secret_file"),
)
CREDENTIAL_SOURCE_DIR: Final = Path("/etc/tradeguard/credentials")
"""Where systemd/tradeguard.service loads its ``LoadCredential=`` files from: bare secret
names are looked up here too when ``$CREDENTIALS_DIRECTORY`` is unset (a shell)."""


@dataclass(frozen=True)
class SecretFile:
    """One configured secret file: where it was found and its value (never printed)."""

    key: str
    value: str
    path: Path | None
    secret: str | None
    error: str | None


def load_secrets(config: Config) -> dict[str, SecretFile]:
    """Every secret file the config names, by key (``mqtt.password_file``...), read."""
    loaded = (_load_secret(config, section, name) for section, name in _configured_secrets(config))
    return {s.key: s for s in loaded}


def check_config(config: Config) -> CheckResult:
    """Whether ``run`` would accept the config, and whether others may change the file."""
    try:
        check_setup(config)  # what `run` refuses at start, the doctor names too
    except TradeguardError as exc:
        return CheckResult(
            check="config",
            status="FAIL",
            detail=f"`tradeguard run` would refuse it: {exc}",
            fix="fix the key named (`tradeguard check-config` checks the file as `run` does)",
        )
    if config.source is None:
        return CheckResult(
            check="config",
            status="PASS",
            detail="built-in defaults (no --config and no $TRADEGUARD_CONFIG)",
        )
    mode = mode_of(Path(config.source))
    if mode is not None and mode & (stat.S_IWGRP | stat.S_IWOTH):
        return CheckResult(
            check="config",
            status="WARN",
            detail=f"loaded and valid: {config.source}, but group/others may write it "
            f"(mode {mode:04o}) and so change the risk limits",
            fix=f"chmod go-w {config.source}",
        )
    return CheckResult(check="config", status="PASS", detail=f"loaded and valid: {config.source}")


def _configured_secrets(config: Config) -> list[tuple[str, str]]:
    return [
        (section, name)
        for section, name in SECRET_KEYS
        if _setting(config, section, name) is not None
    ]


def _setting(config: Config, section: str, name: str) -> str | None:
    """``section.name`` of the config (``broker.live.key_id_file``); None when unset or absent."""
    value: Any = config
    for part in (*section.split("."), name):
        value = getattr(value, part, None)
    return value if isinstance(value, str) else None


def _load_secret(config: Config, section: str, name: str) -> SecretFile:
    key = f"{section}.{name}"
    value = _setting(config, section, name)
    assert value is not None  # only configured secrets are loaded
    path = _locate_secret(config, value)
    try:
        secret = read_secret(config, str(path) if path is not None else value, key=key)
    except ConfigError as exc:
        return SecretFile(key=key, value=value, path=path, secret=None, error=str(exc))
    return SecretFile(key=key, value=value, path=path, secret=secret, error=None)


def _locate_secret(config: Config, value: str) -> Path | None:
    """The file :func:`read_secret` would read, or the unit's credential source in a shell."""
    bare = "/" not in value
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates: list[Path] = []
    if bare and credentials:
        candidates.append(Path(credentials) / value)
    candidates.append(resolve_path(config, value))
    if bare and not credentials:
        candidates.append(CREDENTIAL_SOURCE_DIR / value)
    for candidate in candidates:
        try:
            if candidate.exists():
                return candidate
        except OSError:
            return candidate  # read_secret will say why it cannot be read
    return None


def check_secret_file(secret: SecretFile) -> CheckResult:
    """Whether a secret file can be read, and by whom else."""
    check = f"secret {secret.key}"
    if secret.error is not None:
        if secret.path is None:
            where = (
                f"create it holding only the secret (chmod 600), or set {secret.key} "
                "to the right path"
            )
            if "/" not in secret.value:
                where += (
                    f"; under systemd a bare name is a LoadCredential= name "
                    f"({CREDENTIAL_SOURCE_DIR}/{secret.value})"
                )
            return CheckResult(check=check, status="FAIL", detail=secret.error, fix=where)
        return CheckResult(
            check=check,
            status="FAIL",
            detail=secret.error,
            fix=f"write the secret into {secret.path} and make it readable by the daemon's "
            f"user only (chown; chmod 600 {secret.path})",
        )
    assert secret.path is not None
    detail = f"readable: {secret.path}"
    if secret.path.is_relative_to(CREDENTIAL_SOURCE_DIR) and not os.environ.get(
        "CREDENTIALS_DIRECTORY"
    ):
        detail += " (the unit's LoadCredential= source; $CREDENTIALS_DIRECTORY is unset)"
    mode = mode_of(secret.path)
    if mode is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return CheckResult(
            check=check,
            status="WARN",
            detail=f"{detail}, but group/others may read it (mode {mode:04o})",
            fix=f"chmod 600 {secret.path}",
        )
    return CheckResult(check=check, status="PASS", detail=detail)


def check_kill(config: Config) -> list[CheckResult]:
    """How the kill switch is released, and whether a configured admin code hash is usable."""
    kill = config.kill
    results: list[CheckResult] = []
    if kill.totp_secret_file is None and kill.admin_code_hash is None:
        code = resolve_path(config, config.state.path).absolute().parent / GENERATED_CODE_FILE
        made = "present" if code.exists() else "made at the first start"
        results.append(
            CheckResult(
                check="kill release",
                status="PASS",
                detail="released with the admin code the daemon generates when neither "
                f"kill.totp_secret_file nor kill.admin_code_hash is set: {code} (mode 0600, "
                f"{made})",
            )
        )
    else:
        ways = [
            name
            for name, value in (
                ("TOTP", kill.totp_secret_file),
                ("admin code", kill.admin_code_hash),
            )
            if value is not None
        ]
        results.append(
            CheckResult(
                check="kill release", status="PASS", detail="released with " + " or ".join(ways)
            )
        )
    if kill.admin_code_hash is not None:
        try:
            check_hash_format(kill.admin_code_hash)
        except ConfigError as exc:
            results.append(
                CheckResult(
                    check="admin code hash",
                    status="FAIL",
                    detail=str(exc),
                    fix="set kill.admin_code_hash to the output of `tradeguard hash-code`",
                )
            )
        else:
            results.append(
                CheckResult(check="admin code hash", status="PASS", detail="a usable scrypt hash")
            )
    return results
