"""Admin codes (docs/protocol.md): TOTP (RFC 6238) or a static code under a salted scrypt hash.

Codes are compared in constant time, never logged and never stored in clear.
Each TOTP step is accepted once (the last accepted step is persisted by the
caller). Five failures inside 60 s lock every release for 60 s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec
import pyotp

from actors.core.errors import ConfigError

TOTP_STEP_S: Final = 30
TOTP_DIGITS: Final = 6
TOTP_MIN_SECRET_BYTES: Final = 14
"""112 bits: what pyotp (after NIST SP 800-63B) requires of a TOTP secret."""
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1


def hash_code(code: str, *, salt: bytes | None = None) -> str:
    """Hash a static admin code for ``kill.admin_code_hash``.

    The result reads ``scrypt$N$r$p$<salt b64>$<hash b64>``.
    """
    if len(code) < 6:
        raise ConfigError("admin code: use at least 6 characters")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(code.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


class _ParsedHash(msgspec.Struct, frozen=True):
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(encoded: str) -> _ParsedHash:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ConfigError("kill.admin_code_hash: expected the output of `tradeguard hash-code`")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise ConfigError("kill.admin_code_hash: malformed scrypt hash") from exc
    if n < 2**10 or n > 2**20 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ConfigError("kill.admin_code_hash: scrypt parameters out of range")
    return _ParsedHash(n, r, p, salt, digest)


def check_hash_format(encoded: str) -> None:
    """Raise :class:`ConfigError` unless ``encoded`` is a usable scrypt hash."""
    _parse_hash(encoded)


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one attempt.

    Attributes:
        ok: whether the code authorises the action.
        detail: why not (or which method succeeded); never contains the code.
        totp_step: the TOTP step accepted, to persist as used.
    """

    ok: bool
    detail: str
    totp_step: int | None = None


MAX_CALLERS = 1024
"""Callers whose failures are remembered at once (quiet ones are forgotten beyond)."""


class AdminCodeVerifier:
    """Checks admin codes, remembers used TOTP steps and enforces the lockout.

    Args:
        totp_secret: base32 TOTP secret, or None.
        code_hash: ``scrypt$...`` hash of a static code, or None.
        last_totp_step: the last accepted step (persisted), so a restart cannot replay it.
        max_failures: failures inside ``window_s`` that trigger the lockout.
        window_s: the failure-counting window.
        lockout_s: how long releases are refused after too many failures.
        clock: time source (seconds).
    """

    def __init__(
        self,
        *,
        totp_secret: str | None,
        code_hash: str | None,
        last_totp_step: int | None = None,
        max_failures: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare the verifier; a bad secret or hash is a :class:`ConfigError`."""
        self._totp: pyotp.TOTP | None = None
        if totp_secret is not None:
            try:
                decoded = base64.b32decode(totp_secret.upper() + "=" * (-len(totp_secret) % 8))
            except ValueError as exc:
                raise ConfigError("kill.totp_secret_file: not a base32 TOTP secret") from exc
            if len(decoded) < TOTP_MIN_SECRET_BYTES:
                raise ConfigError(
                    f"kill.totp_secret_file: the secret has {len(decoded) * 8} bits, at least "
                    f"{TOTP_MIN_SECRET_BYTES * 8} are needed (`tradeguard totp-setup` makes one)"
                )
            self._totp = pyotp.TOTP(totp_secret, digits=TOTP_DIGITS, interval=TOTP_STEP_S)
        self._hash = _parse_hash(code_hash) if code_hash is not None else None
        self.last_totp_step = last_totp_step
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._clock = clock
        # Per caller: a login's own admin topic (``admin/USER``), ``homeassistant``, or ``""``
        # for the shared kill/command topic. One leaked login cannot lock out the others.
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    @property
    def configured(self) -> bool:
        """Whether any code can ever succeed."""
        return self._totp is not None or self._hash is not None

    def locked(self, caller: str = "") -> bool:
        """Whether ``caller``'s releases are locked out right now."""
        return self._clock() < self._locked_until.get(caller, 0.0)

    def verify(self, code: str | None, *, caller: str = "") -> Verdict:
        """Check one attempt; every failure counts towards ``caller``'s lockout.

        Args:
            code: the code given, if any.
            caller: who is asking, as far as the broker vouches for it (a login's own
                admin topic); failures and lockouts are counted per caller.
        """
        now = self._clock()
        locked_until = self._locked_until.get(caller, 0.0)
        if now < locked_until:
            return Verdict(
                ok=False,
                detail=f"locked out for {locked_until - now:.0f} s after repeated failures",
            )
        verdict = self._check(code, now)
        if not verdict.ok:
            if caller not in self._failures and len(self._failures) >= MAX_CALLERS:
                self._forget_quiet_callers(now)
            failures = self._failures.setdefault(caller, deque())
            failures.append(now)
            while failures and now - failures[0] > self._window_s:
                failures.popleft()
            if len(failures) >= self._max_failures:
                self._locked_until[caller] = now + self._lockout_s
                del self._failures[caller]
                return Verdict(
                    ok=False,
                    detail=f"{verdict.detail}; {self._max_failures} failures: "
                    f"locked out for {self._lockout_s:.0f} s",
                )
        return verdict

    def _forget_quiet_callers(self, now: float) -> None:
        """Bound memory: drop callers with no failure in the window and no lockout."""
        for caller in list(self._failures):
            failures = self._failures[caller]
            if not failures or now - failures[-1] > self._window_s:
                del self._failures[caller]
        for caller, until in list(self._locked_until.items()):
            if until <= now:
                del self._locked_until[caller]

    def _check(self, code: str | None, now: float) -> Verdict:
        if not self.configured:
            return Verdict(
                ok=False,
                detail="no admin code is configured (kill.totp_secret_file "
                "or kill.admin_code_hash)",
            )
        if code is None or not code.strip():
            return Verdict(ok=False, detail="missing code")
        code = code.strip()
        if len(code) > 128:
            return Verdict(ok=False, detail="wrong code")
        if self._totp is not None and code.isdigit() and len(code) == TOTP_DIGITS:
            step_now = int(now // TOTP_STEP_S)
            for step in (step_now - 1, step_now, step_now + 1):
                expected = self._totp.generate_otp(step)
                if hmac.compare_digest(expected.encode(), code.encode()):
                    if self.last_totp_step is not None and step <= self.last_totp_step:
                        return Verdict(ok=False, detail="TOTP code already used")
                    self.last_totp_step = step
                    return Verdict(ok=True, detail="totp", totp_step=step)
        if self._hash is not None:
            h = self._hash
            digest = hashlib.scrypt(
                code.encode(), salt=h.salt, n=h.n, r=h.r, p=h.p, dklen=len(h.digest)
            )
            if hmac.compare_digest(digest, h.digest):
                return Verdict(ok=True, detail="static code")
        return Verdict(ok=False, detail="wrong code")
