"""Sync and async entry points the way Prefect 3 names them (private): `aplan` is the
coroutine, `plan` runs it to the end in sync code and is `aplan` in async code
(Prefect's own `async_dispatch`, as for `pause_flow_run` / `apause_flow_run`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.utilities.asyncutils import run_coro_as_sync

R = TypeVar("R")


def sync_compatible(
    amethod: Callable[..., Coroutine[Any, Any, R]],
) -> Callable[..., R | Coroutine[Any, Any, R]]:
    """The public method of an `a`-prefixed async method: in a sync flow, task or script
    it runs `amethod` and returns its result; in async code (an async flow, a coroutine)
    it returns the coroutine, so `await obj.plan(...)` keeps working.

    Examples:
        >>> class Greeter:
        ...     async def agreet(self, name: str) -> str:
        ...         return f"hello {name}"
        ...     greet = sync_compatible(agreet)
        >>> Greeter().greet("ada")
        'hello ada'
    """

    @functools.wraps(amethod)
    def method(self: Any, *args: Any, **kwargs: Any) -> R:
        return run_coro_as_sync(amethod(self, *args, **kwargs))  # type: ignore[no-any-return]

    name = amethod.__name__.removeprefix("a")
    method.__name__ = name
    method.__qualname__ = f"{amethod.__qualname__.rpartition('.')[0]}.{name}".lstrip(".")
    method.__doc__ = (
        f"`{amethod.__name__}` for sync code (in async code, this is `{amethod.__name__}`).\n\n"
        + (amethod.__doc__ or "")
    )
    return async_dispatch(amethod)(method)
