"""One execution of a plan: the parent flow, the scheduler and the steps (private)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, cast

from prefect import Flow, tags
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext, TagsContext
from prefect.logging import get_run_logger
from prefect.states import Completed, aget_state_exception

from prefect_aether._internal.callbacks import notify
from prefect_aether._internal.text import preview, sanitize
from prefect_aether.exceptions import ExecutionError, ExecutionInterrupted
from prefect_aether.execution import _report, _secrets, _steps
from prefect_aether.execution._options import Options, StepRecord
from prefect_aether.execution._replan import Adaptive, replan_after_failure, within_budget
from prefect_aether.execution._results import MISSING
from prefect_aether.execution._reuse import StepKeeper
from prefect_aether.execution._stream import Feed, follow
from prefect_aether.execution._watch import ApiOutage, watch_api
from prefect_aether.execution.events import (
    OUTPUT_PREVIEW_CHARS,
    PLAN_FLOW_NAME,
    EventCallback,
    ExecutionEvent,
    ExecutionPhase,
    ExecutionResult,
)
from prefect_aether.plan import CandidatePlan, PlanStep, step_dependencies

logger = logging.getLogger("prefect_aether.execute")
_SUMMARY_CHARS = 500


class PlanRun:
    """The state of one execution, shared by the parent flow function and the scheduler."""

    def __init__(
        self,
        executor: Options,
        plan: CandidatePlan,
        user_inputs: dict[str, Any],
        levels: list[list[str]],
        execution_id: str,
    ) -> None:
        self.executor = executor
        self.execution_id = execution_id
        self.results = executor.results
        self.keeper = StepKeeper(executor.results, execution_id, executor.reuse_within)
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
        # Each step's whole return value (`${step}`); `outputs` holds its output fields.
        self.values: dict[str, Any] = {}
        self.states: dict[str, State[Any]] = {}
        self.errors: dict[str, str] = {}
        self.skipped: list[str] = []
        self.reused: list[str] = []
        self.records = {sid: StepRecord() for sid in self.order}
        self.flow_run_id: str | None = None
        self.tags: list[str] = []
        # Values read from Secret blocks (`${secret.*}`), masked in errors and previews,
        # and the steps whose outputs hold one (as secret as the secret).
        self.secret_values: dict[str, str] = {}
        self.tainted: set[str] = set()
        self.client: PrefectClient | None = None
        self.run_name = f"plan-{self.plan_id}"
        # The results artifact, written while Prefect finishes the parent run.
        self.closing: asyncio.Future[Any] | None = None
        # Replanning after a failed step (`_replan`), and what stopped the run early.
        self.adaptive = Adaptive()
        self.stopped: str | None = None
        # The plan streaming in (`_stream`): steps join while it does; None: a whole plan.
        self.feed: Feed | None = None
        self.streaming = False
        self.named = True
        self.streamed: list[str] = []
        self.unplanned: list[str] = []
        self.plan_written: asyncio.Future[Any] | None = None

    # -- parent flow --------------------------------------------------------------------

    async def start(self, extra_tags: list[str], name: str) -> ExecutionResult:
        # A streamed plan's id is known once it is whole; its run is tagged then.
        plan_tag = [] if self.streaming else [f"plan:{self.plan_id}"]
        self.tags = [*extra_tags, *plan_tag, f"execution:{self.execution_id}"]
        self.run_name = name
        parent = _parent_flow(self.executor)
        # The run's parameters stay small whatever the plan and inputs weigh (Prefect caps
        # them at 512 KiB): the plan and the values live in this process and the store.
        summary = sanitize(f"{len(self.order)} steps: " + ", ".join(self.order), _SUMMARY_CHARS)
        # Our artifacts go through a client of our own, which outlives the parent run's.
        async with _report.api_client() as client:
            self.client = client
            current = _CURRENT.set(self)
            try:
                with tags(*self.tags):
                    call: Any = parent(
                        plan_id=self.plan_id,
                        execution_id=self.execution_id,
                        summary=summary,
                        return_state=True,
                    )
                    state = cast(State[Any], await self.watch_api(asyncio.ensure_future(call)))
                if self.closing is not None:
                    await self.closing_artifacts()
            finally:
                _CURRENT.reset(current)
                if self.closing is not None and not self.closing.done():
                    self.closing.cancel()
        self.flow_run_id = self.flow_run_id or (
            str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        )
        if state.is_completed():
            return self.result(ok=True)
        if not self.errors:
            exc = await aget_state_exception(state)
            self.errors["plan"] = f"{type(exc).__name__}: {exc}"
        return self.result(ok=False)

    async def watch_api(self, run: asyncio.Future[Any]) -> Any:
        """Await the parent flow run while the Prefect API answers (see `_watch`)."""
        try:
            return await watch_api(run)
        except ApiOutage as outage:
            raise ExecutionInterrupted(
                f"the Prefect API at {outage.url} did not answer for {outage.limit:g} s "
                f"(api_outage_timeout); execution {self.execution_id} of plan {self.plan_id} "
                "stopped. Its finished steps are kept: once the API is back, resume it "
                f"(`prefect-aether run PLAN --resume {self.execution_id}`, or "
                "`execute(plan, resume=...)`).",
                execution_id=self.execution_id,
                flow_run_id=self.flow_run_id,
            ) from None

    async def closing_artifacts(self) -> None:
        """Wait for the artifacts; they report the run, so failing to write them is
        logged, never a failure of the plan (its steps' outputs are in the result)."""
        assert self.closing is not None
        try:
            await self.closing
        except Exception as exc:
            logger.warning(
                "plan %s: its artifacts could not be written: %s",
                self.plan_id,
                sanitize(f"{type(exc).__name__}: {exc}", 300),
            )

    def last_step(self) -> str | None:
        """The plan's last step (an early step the final plan does without is none)."""
        planned = [sid for sid in self.order if sid not in self.unplanned]
        return planned[-1] if planned else None

    def result(self, *, ok: bool) -> ExecutionResult:
        outputs = self.outputs.get(self.last_step() or "", {})
        return ExecutionResult(
            ok=ok and not self.errors and not self.stopped,
            plan_id=self.plan_id,
            outputs=outputs,
            output_preview=_secrets.scrub(preview(outputs, 500), self.secret_values.values()),
            step_outputs=self.outputs,
            errors=self.errors,
            skipped=self.skipped,
            reused=self.reused,
            flow_run_id=self.flow_run_id,
            execution_id=self.execution_id,
            replans=self.adaptive.replans,
            stopped=self.stopped,
            streamed=self.streamed,
            unplanned=self.unplanned,
        )

    async def body(self) -> dict[str, Any]:
        context = FlowRunContext.get()
        if context is not None and context.flow_run is not None:
            self.flow_run_id = str(context.flow_run.id)
        # The plan artifact is written while the first steps start, not before them (a
        # streamed plan's once it is whole).
        if not self.streaming:
            self.plan_written = asyncio.ensure_future(
                _report.plan_artifact(
                    self.plan, self.levels, self.deps, self.user_inputs, self.plan_id, self.client
                )
            )
        await self.emit(
            "start",
            None,
            f"executing the plan as it streams in ({len(self.order)} steps may start)"
            if self.streaming
            else f"executing plan {self.plan_id} ({len(self.order)} steps)",
        )
        try:
            await self.schedule()
            while self.errors and not self.stopped and await replan_after_failure(self):
                await self.schedule()
        finally:
            # Written while Prefect finishes this run (`start` awaits it); the task keeps
            # this run's context, so the artifact belongs to this run.
            self.closing = asyncio.ensure_future(self.publish_results())
            pid = self.plan_id
            self.log().info(
                f"plan {pid}: artifacts aether-plan-{pid} (the plan) and aether-results-{pid} "
                f"(each step's state and output); `prefect-aether show {pid}` shows its history"
            )
        if self.stopped and not self.errors:
            await self.emit("failure", None, f"stopped: {self.stopped}")
            raise ExecutionError(f"plan {self.plan_id}: stopped: {self.stopped}")
        if self.errors:
            first = next(iter(self.errors.items()))
            await self.emit(
                "failure", None, f"{len(self.errors)} step(s) failed; first: {first[0]}"
            )
            raise ExecutionError(
                f"plan {self.plan_id}: step {first[0]!r} failed: {first[1]}", step_id=first[0]
            )
        await self.emit("success", None, f"plan {self.plan_id} succeeded")
        return self.outputs.get(self.last_step() or "", {})

    async def publish_results(self) -> None:
        if self.plan_written is not None:
            await self.plan_written
        rows = []
        for sid in self.order:
            record, step = self.records[sid], self.steps[sid]
            rows.append(
                (sid, step.action, record.state, record.duration(), record.preview, record.why)
            )
        await _report.results_artifact(self.plan_id, rows, self.client)

    # -- scheduling ---------------------------------------------------------------------

    async def schedule(self) -> None:
        """Run the steps that have not run, each once its upstream steps succeeded (after
        a replan, only the new ones: the others ran or failed already); while a plan
        streams in, its steps join as they may start (`_stream.follow`)."""
        running: dict[asyncio.Task[bool], str] = {}
        listening: asyncio.Task[Any] | None = None
        limit = self.executor.max_concurrency
        stopping = False
        try:
            while True:
                if self.feed is not None:
                    await follow(self)
                if not self.executor.fail_fast:
                    await self.skip_orphans(set(running.values()))
                ended = set(self.outputs) | set(self.errors) | set(self.skipped)
                ended |= self.adaptive.replaced | set(running.values())
                ready = [
                    sid
                    for sid in self.order
                    if sid not in ended and all(d in self.outputs for d in self.deps[sid])
                ]
                while ready and not stopping and (limit is None or len(running) < limit):
                    if self.stopped or not within_budget(self):
                        stopping = True
                        break
                    sid = ready.pop(0)
                    running[asyncio.ensure_future(self.run_step(sid))] = sid
                waits: set[asyncio.Future[Any]] = set(running)
                if self.feed is not None and self.streaming and not stopping:
                    if listening is None:
                        listening = asyncio.ensure_future(self.feed.changed.wait())
                    waits.add(listening)
                if not waits:
                    break
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if listening is not None and listening in done:
                    assert self.feed is not None
                    self.feed.changed.clear()
                    listening = None
                for finished in done:
                    if finished in running:
                        running.pop(cast("asyncio.Task[bool]", finished))
                        if not finished.result() and self.executor.fail_fast:
                            stopping = True
                if stopping:
                    break
            if running:
                await asyncio.wait(running)
        finally:
            for task_ in running:
                task_.cancel()
            if listening is not None:
                listening.cancel()
        started = set(self.outputs) | set(self.errors) | set(self.skipped) | self.adaptive.replaced
        await self.skip(
            [sid for sid in self.order if sid not in started],
            self.stopped or "an earlier step failed (fail_fast)",
        )

    async def skip_orphans(self, running: set[str]) -> None:
        """Skip the steps whose upstream failed or was skipped (in plan order, so a
        skipped step's own dependents follow it)."""
        for sid in self.order:
            if sid in running or sid in self.outputs or sid in self.errors:
                continue
            if sid in self.skipped or sid in self.adaptive.replaced:
                continue
            for dep in self.deps[sid]:
                if dep in self.errors:
                    await self.skip([sid], f"upstream {dep!r} failed")
                    break
                if dep in self.skipped:
                    await self.skip([sid], self.records[dep].why or f"upstream {dep!r} skipped")
                    break

    async def skip(self, step_ids: Iterable[str], reason: str) -> None:
        for sid in step_ids:
            if sid in self.skipped or sid in self.outputs or sid in self.errors:
                continue
            self.skipped.append(sid)
            self.records[sid].state, self.records[sid].why = "Skipped", reason
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
        self.log().info("step %s (action %s) started", sid, step.action)
        try:
            if spec is None:
                raise ExecutionError(f"action {step.action!r} is not in the catalog", step_id=sid)
            if spec.kind != "deployment" and flow is None:
                raise ExecutionError(
                    f"action {step.action!r} has no local flow to run", step_id=sid
                )
            inputs = _steps.resolve_inputs(step, self.user_inputs, self.outputs, self.values)
            keys = self.keeper.keys(step, spec, flow, inputs)
            async with self.results.locked(*keys) as holder:
                # Under the lock: a second process resuming this execution waits here,
                # then finds the result the first one wrote.
                stored = await self.keeper.read(step, keys)
                if stored is not MISSING:
                    value = _steps.restore(flow, stored)
                    state = await self.reuse(step, value)
                else:
                    state, value = await _steps.call_step(
                        step,
                        spec,
                        flow,
                        _steps.consumer_inputs(flow, inputs),
                        run_as=step.extras.get("run_as", self.executor.run_as),
                        task_runner=self.executor.task_runner,
                        run_tags=self.tags,
                        tag_steps=self.executor.tag_steps,
                        upstream=[self.states[d] for d in self.deps[step.id] if d in self.states],
                        secrets=self.secret_values,
                        tainted=any(dep in self.tainted for dep in self.deps[sid]),
                    )
                    await self.keeper.write(step, keys, value, holder, self.log())
                outputs = _steps.outputs_of(spec, value)
        except Exception as exc:
            record.ended = time.monotonic()
            record.state = "Failed"
            error = _secrets.scrub(f"{type(exc).__name__}: {exc}", self.secret_values.values())
            self.errors[sid] = record.why = error
            self.log().error(
                "step %s (action %s) failed after %.2f s: %s",
                sid,
                step.action,
                record.ended - (record.started or record.ended),
                sanitize(error, 300),
            )
            await self.emit("step_failure", sid, f"step {sid!r} failed: {error}", error=error)
            return False
        self.states[sid] = state
        self.outputs[sid] = outputs
        self.values[sid] = value
        if _secrets.reveals(value, self.secret_values.values()):
            self.tainted.add(sid)
        record.ended = time.monotonic()
        # Masked before it is cut: a secret across the cut must not show in part.
        shown = _secrets.scrub(preview(outputs, OUTPUT_PREVIEW_CHARS), self.secret_values.values())
        record.preview = sanitize(shown)
        reused = state.name == _steps.REUSED
        if reused:
            self.reused.append(sid)
        record.state = state.name or "Completed"
        self.log().info(
            "step %s (action %s) %s in %.2f s",
            sid,
            step.action,
            self.keeper.reuse_message(step) if reused else "finished",
            record.ended - (record.started or record.ended),
        )
        verb = "reused its persisted result" if reused else "succeeded"
        await self.emit(
            "step_success", sid, f"step {sid!r} {verb}", step_outputs=outputs, output_preview=shown
        )
        return True

    async def reuse(self, step: PlanStep, value: Any) -> State[Any]:
        """A step whose result this execution (or, when allowed, another) already has."""
        run_as = step.extras.get("run_as", self.executor.run_as)
        if run_as == "task":
            # A task run that ends Reused at once keeps the step and its edges in the graph.
            step_tags = [*self.tags, f"plan_step:{step.id}"] if self.executor.tag_steps else None
            runner = _steps.reused_task(step, step_tags, self.keeper.reuse_message(step))
            upstream = [self.states[d] for d in self.deps[step.id] if d in self.states]
            call: Any = runner(value, wait_for=_steps.wait_for(upstream), return_state=True)
            return cast(State[Any], await call)
        return Completed(name=_steps.REUSED, data=value, message=self.keeper.reuse_message(step))

    # -- events -------------------------------------------------------------------------

    async def emit(
        self,
        phase: ExecutionPhase,
        sid: str | None,
        message: str,
        *,
        step_outputs: dict[str, Any] | None = None,
        output_preview: str | None = None,
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
            output_preview=output_preview,
            error=error,
            flow_run_id=self.flow_run_id,
        )
        if sid is not None and phase in _EVENT_NAMES:
            payload: dict[str, Any] = {"message": sanitize(message)}
            record = self.records[sid]
            if record.started is not None and record.ended is not None:
                payload["duration_s"] = round(record.ended - record.started, 3)
            if step_outputs is not None:
                payload["output_preview"] = record.preview
            if error is not None:
                payload["error"] = sanitize(error)
            _report.emit_step_event(_EVENT_NAMES[phase], self.plan_id, sid, action or "", payload)
        await notify(self.on_event, event, self.log())

    def log(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        try:
            return get_run_logger()
        except Exception:
            return logger


_CURRENT: ContextVar[PlanRun] = ContextVar("aether_plan_run")
_PARENT_FLOWS: weakref.WeakKeyDictionary[Options, Flow[..., Any]] = weakref.WeakKeyDictionary()


def _parent_flow(executor: Options) -> Flow[..., Any]:
    """The `aether-plan` flow of an executor (its task runner), built once: a `Flow`
    costs ~10 ms to build. Each run is named by the `PlanRun` it runs."""
    parent = _PARENT_FLOWS.get(executor)
    if parent is None:
        parent = _PARENT_FLOWS[executor] = Flow(
            aether_plan,
            name=PLAN_FLOW_NAME,
            flow_run_name=_plan_run_name,
            description="A prefect-aether plan: one child run per step.",
            validate_parameters=False,
            persist_result=False,
            task_runner=executor.task_runner,
        )
    return parent


def _plan_run_name() -> str:
    return _CURRENT.get().run_name


async def aether_plan(plan_id: str, execution_id: str, summary: str) -> dict[str, Any]:
    """The parent flow run of a plan execution, the `PlanRun` that started it.

    A module function (the run is found in a context variable), so that a task runner
    shipping the flow run's context to other processes ships a reference to it, not
    the execution's state."""
    run = _CURRENT.get()
    # The run's tags are for the parent run; steps choose theirs (see `tag_steps`).
    with TagsContext(current_tags=set()):
        return await run.body()


# One Prefect event per step, when it ends: an event costs ~0.8 ms of this process's CPU
# plus the server's work to store it, and the step's own run emits its `Running` event.
_EVENT_NAMES = {
    "step_success": "succeeded",
    "step_failure": "failed",
    "step_skipped": "skipped",
}
