"""Calling user callbacks (private): sync or async, and never allowed to break the caller."""

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
