"""One retry helper for the serial and SCPI drivers: bounded attempts, waits through the driver's clock.

A driver marks the faults worth retrying with its own exception types; every retry is logged
and counted through `on_retry`, and the last fault is re-raised for the driver to wrap in its
own `InstrumentError` subclass.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

T = TypeVar("T")


def with_retries(
    action: Callable[[], T],
    *,
    attempts: int,
    wait_s: float,
    sleep: Callable[[float], None],
    retry_on: tuple[type[BaseException], ...],
    on_retry: Callable[[int, BaseException], None],
) -> T:
    """Run `action` up to `attempts` times, sleeping `wait_s` between tries; re-raise the last retryable fault.

    The first attempt runs without the retry machinery (the hot path of a healthy instrument).
    `on_retry(attempt_number, exception)` is called before each retry.
    """
    try:
        return action()
    except retry_on as exc:
        if attempts <= 1:
            raise
        on_retry(1, exc)
    sleep(wait_s)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        on_retry(state.attempt_number + 1, exc if exc is not None else RuntimeError("unknown"))

    retrying = Retrying(
        stop=stop_after_attempt(attempts - 1),
        wait=wait_fixed(wait_s),
        sleep=sleep,
        retry=retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(action)
