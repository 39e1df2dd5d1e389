"""A plan executing in the background, on an event loop of its own in a thread
(private; `prefect_aether.execution.executor` re-exports `BackgroundExecutionHandle`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from prefect_aether._internal.callbacks import notify
from prefect_aether.execution.events import ExecutionResult

__all__ = ["BackgroundExecutionHandle"]

logger = logging.getLogger("prefect_aether.execute")


class BackgroundExecutionHandle:
    """A plan executing in the background.

    Examples:
        >>> handle = BackgroundExecutionHandle("abc")
        >>> handle.plan_id, handle.done()
        ('abc', False)
    """

    def __init__(self, plan_id: str) -> None:
        self.id = uuid.uuid4().hex
        self.plan_id = plan_id
        self._result: ExecutionResult | None = None
        self._finished = threading.Event()
        self._cancelled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[ExecutionResult] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def launch(
        cls,
        plan_id: str,
        main: Callable[[], Awaitable[ExecutionResult]],
        on_complete: Callable[[ExecutionResult], Any] | None = None,
    ) -> BackgroundExecutionHandle:
        """Run `main` (which executes plan `plan_id`) on an event loop of its own in a
        background thread; an exception it raises becomes a failed `ExecutionResult`."""
        handle = cls(plan_id)
        handle._start(main, on_complete)
        return handle

    def _start(
        self,
        main: Callable[[], Awaitable[ExecutionResult]],
        on_complete: Callable[[ExecutionResult], Any] | None,
    ) -> None:
        ready = threading.Event()

        async def runner() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.ensure_future(main())
            ready.set()
            try:
                result = await self._task
            except asyncio.CancelledError:
                self._cancelled = True
                result = self._failed("CancelledError: execution was cancelled")
            except Exception as exc:
                result = self._failed(f"{type(exc).__name__}: {exc}")
            self._result = result
            await notify(on_complete, result, logger)

        def target() -> None:
            try:
                asyncio.run(runner())
            finally:
                ready.set()
                self._finished.set()

        self._thread = threading.Thread(
            target=target, name=f"aether-plan-{self.plan_id}", daemon=True
        )
        self._thread.start()
        ready.wait()

    def _failed(self, error: str) -> ExecutionResult:
        return ExecutionResult(ok=False, plan_id=self.plan_id, errors={"plan": error})

    def done(self) -> bool:
        """Whether the execution has finished (in any way)."""
        return self._finished.is_set()

    def cancelled(self) -> bool:
        """Whether the execution was cancelled."""
        return self._cancelled

    def cancel(self) -> bool:
        """Ask the execution to stop; returns False when it had already finished."""
        if self.done() or self._loop is None or self._task is None:
            return False
        self._loop.call_soon_threadsafe(self._task.cancel)
        return True

    def wait(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the execution ends and return its result.

        Raises:
            TimeoutError: It did not end within `timeout` seconds.
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"plan {self.plan_id} still running after {timeout} s")
        assert self._result is not None
        return self._result
