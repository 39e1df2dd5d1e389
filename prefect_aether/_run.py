"""One execution of a plan: the parent flow, the scheduler and the steps (private)."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from prefect import Flow, tags
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext, TagsContext
from prefect.logging import get_run_logger
from prefect.results import (
    ResultStore,
    aget_default_result_storage,
    aresolve_result_storage,
)
from prefect.states import Completed, aget_state_exception
from pydantic import BaseModel

from prefect_aether import _report, _steps
from prefect_aether._callbacks import notify
from prefect_aether.exceptions import ExecutionError
from prefect_aether.execute import (
    PLAN_FLOW_NAME,
    EventCallback,
    ExecutionEvent,
    ExecutionPhase,
    ExecutionResult,
)
from prefect_aether.plan import CandidatePlan, step_dependencies
from prefect_aether.settings import AetherSettings

if TYPE_CHECKING:
    from prefect_aether.execute import PlanExecutor

logger = logging.getLogger("prefect_aether.execute")


class _StepRecord(BaseModel):
    state: str = "Pending"
    started: float | None = None
    ended: float | None = None
    preview: str = ""


class PlanRun:
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
        self.deps = step_dependencies(plan)
        self.on_event: EventCallback | None = None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.states: dict[str, State[Any]] = {}
        self.errors: dict[str, str] = {}
        self.skipped: list[str] = []
        self.reused: list[str] = []
        self.records = {sid: _StepRecord() for sid in self.order}
        self.flow_run_id: str | None = None
        self.tags: list[str] = []
        self._store: ResultStore | None = None

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
            if spec is None:
                raise ExecutionError(f"action {step.action!r} is not in the catalog", step_id=sid)
            inputs = _steps.resolve_inputs(step, self.user_inputs, self.outputs)
            key = _steps.cache_key(self.plan_id, step, spec, inputs)
            run_as = step.extras.get("run_as", self.executor.run_as)
            step_tags = [*self.tags, f"plan_step:{sid}"]
            upstream = [self.states[d] for d in self.deps[sid] if d in self.states]
            if spec.kind == "deployment":
                poll = AetherSettings().deployment_poll_interval
                state, value = await self.run_resumable(
                    key,
                    lambda: _steps.call_deployment(
                        spec, step, step_tags, inputs, upstream, poll_interval=poll
                    ),
                )
            elif flow is None:
                raise ExecutionError(
                    f"action {step.action!r} has no local flow to run", step_id=sid
                )
            elif run_as == "subflow":

                async def start_subflow() -> tuple[State[Any], Any]:
                    assert flow is not None
                    done = await _steps.call_subflow(flow, step, step_tags, inputs, upstream)
                    return done, await done.aresult(raise_on_failure=False)

                state, value = await self.run_resumable(key, start_subflow)
            else:
                runner = _steps.step_task(
                    flow,
                    step,
                    key=key,
                    step_tags=step_tags if self.executor.tag_steps else None,
                    refresh=not self.executor.resume,
                    result_storage=self.executor.result_storage,
                )
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

    async def run_resumable(
        self, key: str, start: Callable[[], Awaitable[tuple[State[Any], Any]]]
    ) -> tuple[State[Any], Any]:
        """Run a child flow run (a subflow or a deployment), resuming from the result store.

        Child flows are called straight from the plan's flow: wrapping them in a
        task would add a task run per step, and on a SQLite-backed server the
        extra writes cost seconds per step (bench/execute.py).
        """
        store = await self.result_store()
        if self.executor.resume and await store.aexists(key):
            record = await store.aread(key)
            reused: State[Any] = Completed(
                name="Cached", data=record.result, message="reused persisted result"
            )
            return reused, record.result
        state, value = await start()
        if state.is_completed():
            await store.awrite(obj=value, key=key)
        return state, value

    async def result_store(self) -> ResultStore:
        if self._store is None:
            storage = self.executor.result_storage
            resolved = (
                await aget_default_result_storage()
                if storage is None
                else await aresolve_result_storage(storage)
            )
            self._store = ResultStore(result_storage=resolved)
        return self._store

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
        await notify(self.on_event, event, self.log())

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
