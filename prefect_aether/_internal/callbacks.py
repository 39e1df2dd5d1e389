"""Calling user callbacks (private): sync or async, and never allowed to break the caller;
and warnings that reach the run's log."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any


async def notify(
    callback: Callable[[Any], Awaitable[None] | None] | None,
    event: Any,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Call `callback(event)`, awaiting it when it is async; log its exceptions."""
    if callback is None:
        return
    try:
        outcome = callback(event)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log.exception("callback %s failed", getattr(callback, "__name__", repr(callback)))


def warn_in_run(message: str, fallback: logging.Logger) -> None:
    """Warn in the current flow or task run's log (the Prefect UI shows it), or on
    `fallback` outside any run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().warning(message)
    except MissingContextError:
        fallback.warning(message)
