"""Retrying calls to a server: timeouts, dropped connections, 5xx and 429 answers, with exponential backoff.

For engines that talk to servers (``server``)::

    from evalsuite.engines.retry import retry_with_backoff

    response = retry_with_backoff(lambda: client.post(url, json=body, timeout=60).raise_for_status(),
                                  what=f"POST {url}")

A transient failure (:func:`is_transient`) is retried after 0.5 s, 1 s, 2 s, ... (at most ``max_delay``,
each multiplied by a random factor in [0.5, 1] so that many clients do not retry in step; a server's
``Retry-After`` is honoured). After ``attempts`` tries it becomes one :class:`EngineError` naming what
failed and how often. Any other exception (a 4xx answer, a bug) is raised at once, unchanged.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from evalsuite.errors import EngineError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Exception class names of httpx and openai that mean "the server did not answer in time or at all".
_TRANSIENT_NAMES = {
    "TimeoutException", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "NetworkError",
    "ConnectError", "ReadError", "WriteError", "RemoteProtocolError", "APITimeoutError", "APIConnectionError",
}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (httpx ``HTTPStatusError``, openai ``APIStatusError``), if any."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: a timeout, a lost connection, a 5xx answer, or 429 (too many requests)."""
    status = status_of(exc)
    if status is not None:
        return status >= 500 or status == 429
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    try:
        return float(headers.get("retry-after")) if headers is not None and headers.get("retry-after") else None
    except (TypeError, ValueError):  # an HTTP date instead of seconds: fall back to our own delay
        return None


def _describe(exc: BaseException) -> str:
    status = status_of(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + (f": {text}" if text else "")


def retry_with_backoff(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    retryable: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """``call()``, retried on transient failures; :class:`EngineError` once ``attempts`` tries have failed."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    rng = rng or random.Random()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - sorted into transient (retried) and other (re-raised)
            if not retryable(exc):
                raise
            if attempt == attempts:
                raise EngineError(
                    f"{what} failed {attempts} times in a row, last with {_describe(exc)}: check that the "
                    "server is up and not overloaded (fewer concurrent requests, a longer timeout)"
                ) from exc
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
            delay = min(max_delay, max(delay, _retry_after(exc) or 0.0))
            log.warning("%s: %s; retry %d of %d in %.1f s", what, _describe(exc), attempt, attempts - 1, delay)
        sleep(delay)
    raise AssertionError("unreachable")
