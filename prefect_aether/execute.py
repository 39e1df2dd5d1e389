"""Run a validated plan as one dynamic Prefect flow run.

One plan is one parent flow run (flow `aether-plan`, tagged `plan:<plan_id>`);
each step is a child run named after the step and tagged
`plan_step:<step_id>`. A step starts as soon as every step it reads from has
succeeded, so independent steps run concurrently (bounded by
`max_concurrency`), and the dependency edges show in the Prefect run graph.

Step modes (`run_as`, per executor and per step in `step.extras`):

- `"task"` (default): a task run that calls the action's function with
  Prefect's own parameter validation. Costs a few ms per step and runs truly
  concurrently on any server.
- `"subflow"`: a child flow run of the registered flow. Costs ~100 ms or
  more per step, and concurrent child flow runs contend on a SQLite-backed
  server; use it when each step must be its own flow run.

Finished steps persist their result under plan id + step id + a hash of the
resolved inputs, so executing the same plan again resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, cast

from prefect import Flow, tags
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext, TagsContext
from prefect.logging import get_run_logger
from prefect.states import aget_state_exception
from pydantic import BaseModel, Field

from prefect_aether import _report, _steps
from prefect_aether.catalog import ActionCatalog
from prefect_aether.exceptions import AetherUsageError, ExecutionError, PlanValidationError
from prefect_aether.plan import CandidatePlan, iter_bindings
from prefect_aether.validate import RUN_MODES, validate_plan

__all__ = [
    "BackgroundExecutionHandle",
    "ExecutionEvent",
    "ExecutionResult",
    "PlanExecutor",
]

logger = logging.getLogger("prefect_aether.execute")

ExecutionPhase = Literal[
    "start", "step_start", "step_success", "step_failure", "step_skipped", "success", "failure"
]
EventCallback = Callable[["ExecutionEvent"], Awaitable[None] | None]
RunMode = Literal["task", "subflow"]
PLAN_FLOW_NAME = "aether-plan"


class ExecutionEvent(BaseModel):
    """Something that happened while a plan ran.

    Example:
        >>> ExecutionEvent(phase="step_start", plan_id="abc", step_id="load").phase
        'step_start'
    """

    phase: ExecutionPhase = Field(description="What happened.")
    plan_id: str = Field(description="The plan being executed.")
    step_id: str | None = Field(default=None, description="The step concerned, if any.")
    action: str | None = Field(default=None, description="The step's action, if any.")
    message: str = Field(default="", description="Human-readable summary.")
    step_outputs: dict[str, Any] | None = Field(
        default=None, description="The step's outputs (step_success only)."
    )
    error: str | None = Field(default=None, description="'ExceptionType: message' on failure.")
    flow_run_id: str | None = Field(default=None, description="The plan's parent flow run.")


class ExecutionResult(BaseModel):
    """The outcome of executing a plan.

    Example:
        >>> ExecutionResult(ok=True, plan_id="abc").errors
        {}
    """

    ok: bool = Field(description="Every step succeeded.")
    plan_id: str = Field(description="The executed plan.")
    outputs: dict[str, Any] = Field(
        default_factory=dict, description="Outputs of the plan's last step."
    )
    step_outputs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Outputs of every step that succeeded."
    )
    errors: dict[str, str] = Field(
        default_factory=dict, description="Step id (or 'plan') to 'ExceptionType: message'."
    )
    skipped: list[str] = Field(default_factory=list, description="Steps that never started.")
    reused: list[str] = Field(
        default_factory=list, description="Steps whose persisted result was reused (resume)."
    )
    flow_run_id: str | None = Field(default=None, description="The parent flow run.")


class PlanExecutor:
    """Executes validated plans over a catalog as Prefect flow runs.

    Args:
        catalog: The actions the plans call.
        max_concurrency: Most steps running at once (None: no limit).
        fail_fast: On the first failure, start no further step; otherwise only
            the dependents of a failed step are skipped.
        run_as: Default step mode, `"task"` or `"subflow"`.
        tag_steps: Also tag task-mode step runs (`plan:<id>`, `plan_step:<id>` and the
            caller's tags). Off by default: Prefect treats task run tags as tag
            concurrency limits and makes a write to the API for each tagged task
            run; on a SQLite-backed server (the embedded one, or a default
            `prefect server start`) concurrent writes contend and back off for
            seconds, which serializes the plan. Turn it on against PostgreSQL or
            Prefect Cloud. Subflow steps are always tagged (flow runs have no
            tag concurrency); the parent run is always tagged.
        resume: Reuse the persisted result of a step that already succeeded with the
            same plan and inputs. False runs every step again and overwrites them.
        result_storage: Where step results persist (a Prefect storage block or
            slug); Prefect's default local storage when None.

    Example:
        >>> import asyncio
        >>> from prefect import flow
        >>> from prefect_aether import ActionCatalog, CandidatePlan
        >>> @flow(name="square", version="1")
        ... def square(x: int) -> int:
        ...     return x * x
        >>> catalog = ActionCatalog()
        >>> _ = catalog.register(square)
        >>> plan = CandidatePlan.from_dict({"steps": [
        ...     {"id": "a", "action": "square", "inputs": {"x": 3}},
        ...     {"id": "b", "action": "square", "inputs": {"x": "${a.result}"}},
        ... ]})
        >>> result = asyncio.run(PlanExecutor(catalog).execute(plan))  # doctest: +SKIP
        >>> result.outputs  # doctest: +SKIP
        {'result': 81}
    """

    def __init__(
        self,
        catalog: ActionCatalog,
        *,
        max_concurrency: int | None = None,
        fail_fast: bool = True,
        run_as: RunMode = "task",
        tag_steps: bool = False,
        resume: bool = True,
        result_storage: Any = None,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise AetherUsageError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")
        if run_as not in RUN_MODES:
            raise AetherUsageError(f"run_as must be one of {RUN_MODES}, got {run_as!r}")
        self.catalog = catalog
        self.max_concurrency = max_concurrency
        self.fail_fast = fail_fast
        self.run_as = run_as
        self.tag_steps = tag_steps
        self.resume = resume
        self.result_storage = result_storage

    def check(
        self, plan: CandidatePlan, user_inputs: Mapping[str, Any] | None = None
    ) -> list[list[str]]:
        """Validate `plan` for execution; return its levels.

        Raises:
            PlanValidationError: Structural issues or missing user values.
        """
        result = validate_plan(plan, self.catalog, user_inputs=user_inputs)
        if not result.ok:
            raise PlanValidationError(
                f"plan {plan.plan_id} cannot run:\n{result.summary()}", issues=result.issues
            )
        return result.levels

    async def execute(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        tags: Iterable[str] | None = None,
        flow_run_name: str | None = None,
    ) -> ExecutionResult:
        """Validate `plan`, then run it as one parent flow run; never raises for a failing step.

        Args:
            plan: The plan.
            user_inputs: Values for `${user.*}` bindings.
            on_event: Called with every `ExecutionEvent` (sync or async); its
                exceptions are logged and never break execution.
            tags: Extra tags for the parent run and every step run.
            flow_run_name: Name of the parent run; `plan-<plan_id>` by default.

        Raises:
            PlanValidationError: The plan is invalid or misses user values; no
                flow run is created.
        """
        levels = self.check(plan, user_inputs)
        run = _PlanRun(self, plan.resolve_actions(self.catalog), dict(user_inputs or {}), levels)
        run.on_event = on_event
        return await run.start(list(tags or ()), flow_run_name or f"plan-{plan.plan_id}")

    def execute_background(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        on_complete: Callable[[ExecutionResult], Any] | None = None,
        tags: Iterable[str] | None = None,
        flow_run_name: str | None = None,
    ) -> BackgroundExecutionHandle:
        """Start `execute` in a background thread with its own event loop.

        The plan is validated first, in the caller's thread, so a bad plan
        raises `PlanValidationError` here. A crash inside becomes
        `ExecutionResult(ok=False)`, never an unhandled exception.

        Example:
            >>> handle = PlanExecutor(ActionCatalog()).execute_background  # doctest: +SKIP
        """
        self.check(plan, user_inputs)
        handle = BackgroundExecutionHandle(plan.plan_id)

        async def main() -> ExecutionResult:
            return await self.execute(
                plan,
                user_inputs=user_inputs,
                on_event=on_event,
                tags=tags,
                flow_run_name=flow_run_name,
            )

        handle._start(main, on_complete)
        return handle


class BackgroundExecutionHandle:
    """A plan executing in the background.

    Example:
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
                result = self._failed("cancelled", "CancelledError: execution was cancelled")
            except Exception as exc:
                result = self._failed("crashed", f"{type(exc).__name__}: {exc}")
            self._result = result
            if on_complete is not None:
                try:
                    outcome = on_complete(result)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    logger.exception("on_complete callback of plan %s failed", self.plan_id)

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

    def _failed(self, what: str, error: str) -> ExecutionResult:
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


class _StepRecord(BaseModel):
    state: str = "Pending"
    started: float | None = None
    ended: float | None = None
    preview: str = ""


class _PlanRun:
    """The state of one execution, shared by the parent flow function and the scheduler."""

    def __init__(
        self,
        executor: PlanExecutor,
        plan: CandidatePlan,
        user_inputs: dict[str, Any],
        levels: list[list[str]],
    ) -> None:
        self.executor = executor
        self.plan = plan
        self.plan_id = plan.plan_id
        self.user_inputs = user_inputs
        self.steps = {s.id: s for s in plan.steps}
        self.levels = levels
        self.order = [sid for level in levels for sid in level]
        self.position = {sid: i for i, sid in enumerate(self.order)}
        self.deps = {
            s.id: list(dict.fromkeys(b.step_id for _, b in iter_bindings(s.inputs) if b.step_id))
            for s in plan.steps
        }
        self.on_event: EventCallback | None = None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.states: dict[str, State[Any]] = {}
        self.errors: dict[str, str] = {}
        self.skipped: list[str] = []
        self.reused: list[str] = []
        self.records = {sid: _StepRecord() for sid in self.order}
        self.flow_run_id: str | None = None
        self.tags: list[str] = []

    # -- parent flow --------------------------------------------------------------------

    async def start(self, extra_tags: list[str], name: str) -> ExecutionResult:
        self.tags = [*extra_tags, f"plan:{self.plan_id}"]

        async def aether_plan(plan: dict[str, Any], user_inputs: dict[str, Any]) -> dict[str, Any]:
            # The tags above are for the parent run; steps choose theirs (see `tag_steps`).
            with TagsContext(current_tags=set()):
                return await self.body()

        parent: Flow[..., Any] = Flow(
            aether_plan,
            name=PLAN_FLOW_NAME,
            flow_run_name=name,
            description="A prefect-aether plan: one child run per step.",
            validate_parameters=False,
            persist_result=False,
        )
        with tags(*self.tags):
            call: Any = parent(
                plan=self.plan.to_dict(), user_inputs=self.user_inputs, return_state=True
            )
            state = cast(State[Any], await call)
        self.flow_run_id = self.flow_run_id or (
            str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        )
        if state.is_completed():
            return self.result(ok=True)
        if not self.errors:
            exc = await aget_state_exception(state)
            self.errors["plan"] = f"{type(exc).__name__}: {exc}"
        return self.result(ok=False)

    def result(self, *, ok: bool) -> ExecutionResult:
        last = self.order[-1]
        return ExecutionResult(
            ok=ok and not self.errors,
            plan_id=self.plan_id,
            outputs=self.outputs.get(last, {}),
            step_outputs=self.outputs,
            errors=self.errors,
            skipped=self.skipped,
            reused=self.reused,
            flow_run_id=self.flow_run_id,
        )

    async def body(self) -> dict[str, Any]:
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            self.flow_run_id = str(context.flow_run.id)
        # The plan artifact is written while the first steps start, not before them.
        plan_artifact = asyncio.ensure_future(
            acreate_markdown_artifact(
                markdown=_report.plan_markdown(self.plan, self.levels, self.deps),
                key=f"aether-plan-{self.plan_id}",
                description=f"prefect-aether plan {self.plan_id}",
            )
        )
        await self.emit("start", None, f"executing plan {self.plan_id} ({len(self.order)} steps)")
        try:
            await self.schedule()
        finally:
            await plan_artifact
            await self.publish_results()
        if self.errors:
            first = next(iter(self.errors.items()))
            await self.emit(
                "failure", None, f"{len(self.errors)} step(s) failed; first: {first[0]}"
            )
            raise ExecutionError(
                f"plan {self.plan_id}: step {first[0]!r} failed: {first[1]}", step_id=first[0]
            )
        await self.emit("success", None, f"plan {self.plan_id} succeeded")
        return self.outputs.get(self.order[-1], {})

    async def publish_results(self) -> None:
        rows = []
        for sid in self.order:
            record = self.records[sid]
            duration = (
                round(record.ended - record.started, 3)
                if record.started is not None and record.ended is not None
                else None
            )
            rows.append(
                {
                    "step": sid,
                    "action": self.steps[sid].action,
                    "state": record.state,
                    "duration_s": duration,
                    "output": record.preview,
                }
            )
        await acreate_table_artifact(
            table=rows,
            key=f"aether-results-{self.plan_id}",
            description=f"prefect-aether step results of plan {self.plan_id}",
        )

    # -- scheduling ---------------------------------------------------------------------

    async def schedule(self) -> None:
        waiting = {sid: set(self.deps[sid]) for sid in self.order}
        dependents: dict[str, list[str]] = {sid: [] for sid in self.order}
        for sid, deps in self.deps.items():
            for dep in deps:
                dependents[dep].append(sid)
        ready = [sid for sid in self.order if not waiting[sid]]
        running: dict[asyncio.Task[bool], str] = {}
        limit = self.executor.max_concurrency
        stopping = False
        try:
            while ready or running:
                while ready and not stopping and (limit is None or len(running) < limit):
                    sid = ready.pop(0)
                    running[asyncio.ensure_future(self.run_step(sid))] = sid
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in sorted(done, key=lambda t: self.position[running[t]]):
                    sid = running.pop(finished)
                    if finished.result():
                        for child in dependents[sid]:
                            waiting[child].discard(sid)
                            if not waiting[child]:
                                bisect.insort(ready, child, key=self.position.__getitem__)
                    elif self.executor.fail_fast:
                        stopping = True
                    else:
                        await self.skip(
                            self.descendants(sid, dependents), f"upstream {sid!r} failed"
                        )
                if stopping:
                    break
            if running:
                await asyncio.wait(running)
        finally:
            for task_ in running:
                task_.cancel()
        started = set(self.outputs) | set(self.errors) | set(self.skipped)
        await self.skip(
            [sid for sid in self.order if sid not in started], "an earlier step failed (fail_fast)"
        )

    def descendants(self, sid: str, dependents: dict[str, list[str]]) -> list[str]:
        found: dict[str, None] = {}
        stack = list(dependents[sid])
        while stack:
            child = stack.pop()
            if child not in found:
                found[child] = None
                stack.extend(dependents[child])
        return sorted(found, key=self.position.__getitem__)

    async def skip(self, step_ids: Iterable[str], reason: str) -> None:
        for sid in step_ids:
            if sid in self.skipped or sid in self.outputs or sid in self.errors:
                continue
            self.skipped.append(sid)
            self.records[sid].state = "Skipped"
            await self.emit("step_skipped", sid, f"step {sid!r} skipped: {reason}")

    # -- one step -----------------------------------------------------------------------

    async def run_step(self, sid: str) -> bool:
        step = self.steps[sid]
        spec = self.executor.catalog.get(step.action)
        flow = self.executor.catalog.get_flow(step.action)
        record = self.records[sid]
        record.started = time.monotonic()
        record.state = "Running"
        await self.emit("step_start", sid, f"step {sid!r} ({step.action}) started")
        try:
            if spec is None or flow is None:
                raise ExecutionError(
                    f"action {step.action!r} has no local flow to run", step_id=sid
                )
            inputs = _steps.resolve_inputs(step, self.user_inputs, self.outputs)
            key = _steps.cache_key(self.plan_id, step, spec, inputs)
            run_as = step.extras.get("run_as", self.executor.run_as)
            step_tags = [*self.tags, f"plan_step:{sid}"]
            runner = _steps.step_task(
                flow,
                step,
                run_as=run_as,
                key=key,
                step_tags=step_tags,
                tag_task=self.executor.tag_steps,
                refresh=not self.executor.resume,
                result_storage=self.executor.result_storage,
            )
            upstream = [self.states[d] for d in self.deps[sid] if d in self.states]
            call: Any = runner(inputs, wait_for=upstream, return_state=True)
            state = cast(State[Any], await call)
            value = await state.aresult(raise_on_failure=False)
            if not state.is_completed():
                raise (
                    value
                    if isinstance(value, BaseException)
                    else ExecutionError(
                        f"step {sid!r} ended {state.type.value}: {state.message}", step_id=sid
                    )
                )
        except Exception as exc:
            record.ended = time.monotonic()
            record.state = "Failed"
            error = f"{type(exc).__name__}: {exc}"
            self.errors[sid] = error
            await self.emit("step_failure", sid, f"step {sid!r} failed: {error}", error=error)
            return False
        self.states[sid] = state
        outputs = _steps.outputs_of(spec, value)
        self.outputs[sid] = outputs
        record.ended = time.monotonic()
        record.preview = _report.preview(outputs)
        if state.name == "Cached":
            self.reused.append(sid)
        record.state = state.name or "Completed"
        verb = "reused its persisted result" if state.name == "Cached" else "succeeded"
        await self.emit(
            "step_success",
            sid,
            f"step {sid!r} {verb}",
            step_outputs=outputs,
        )
        return True

    # -- events -------------------------------------------------------------------------

    async def emit(
        self,
        phase: ExecutionPhase,
        sid: str | None,
        message: str,
        *,
        step_outputs: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        action = self.steps[sid].action if sid else None
        event = ExecutionEvent(
            phase=phase,
            plan_id=self.plan_id,
            step_id=sid,
            action=action,
            message=message,
            step_outputs=step_outputs,
            error=error,
            flow_run_id=self.flow_run_id,
        )
        if sid is not None and phase.startswith("step_"):
            payload: dict[str, Any] = {"message": _report.sanitize(message)}
            if step_outputs is not None:
                payload["output_preview"] = _report.preview(step_outputs)
            if error is not None:
                payload["error"] = _report.sanitize(error)
            _report.emit_step_event(_EVENT_NAMES[phase], self.plan_id, sid, action or "", payload)
        if self.on_event is None:
            return
        try:
            outcome = self.on_event(event)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            self.log().exception("on_event callback failed on %s for plan %s", phase, self.plan_id)

    def log(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        try:
            return get_run_logger()
        except Exception:
            return logger


_EVENT_NAMES = {
    "step_start": "started",
    "step_success": "succeeded",
    "step_failure": "failed",
    "step_skipped": "skipped",
}
