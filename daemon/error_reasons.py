"""What went wrong with a file, a socket or a certificate, in the words of one line."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator


def reason_of(error: BaseException) -> str:
    """What went wrong, without the where (asyncio puts the address into ``strerror``).

    ``ssl.SSLError`` is an ``OSError`` whose errno is OpenSSL's, not the OS's: it is
    named by library and reason (``SSL: CERTIFICATE_VERIFY_FAILED``).
    """
    if isinstance(error, ssl.SSLError):
        return f"{error.library}: {error.reason}" if error.reason else str(error)
    if isinstance(error, OSError) and error.errno and not isinstance(error, socket.gaierror):
        return os.strerror(error.errno)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what it was raised from or while handling, innermost last.

    Libraries that re-raise their own error keep the original one there: aiomqtt
    raises its ``MqttError`` ``from None`` while handling the ``OSError`` of a failed
    connect (its ``__context__``); requests raises ``ConnectionError`` while handling
    urllib3's ``MaxRetryError``, raised from the connection error, raised from the
    socket's ``OSError``.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
