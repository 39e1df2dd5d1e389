"""How `PlannerService` runs what it planned (private to `service`): a plan-and-execute
plans first and gets the values a partial plan misses; an execution's start and end go
to the plan store; and, for a plan-and-execute with `max_replans`, the replanner
plans the rest of the goal after a failed step and stores each new plan with its
lineage (`extras.replan_of`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_aether._internal.callbacks import warn_in_run
from prefect_aether._streaming import StepFeed
from prefect_aether.catalog.policy import needs_approval
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.exceptions import ExecutionInterrupted
from prefect_aether.execution.events import ExecutionResult
from prefect_aether.execution.executor import PlanExecutor, Replanner
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning.base import STREAMED, PlanningCallback, PlanningContext, PlanResult
from prefect_aether.planning.inputs import user_input_schemas
from prefect_aether.replanning import Replanning
from prefect_aether.runinfo import RunInfo, holder
from prefect_aether.store import PlanStore

if TYPE_CHECKING:
    from prefect_aether.service import PlannerService

__all__ = [
    "Asked",
    "execute_recorded",
    "plan_for_execution",
    "record_end",
    "replanner_for",
    "stream_and_execute",
]

logger = logging.getLogger("prefect_aether.service")


async def execute_recorded(
    executor: PlanExecutor,
    store: PlanStore | None,
    plan: CandidatePlan,
    *,
    resume: str | None = None,
    execution_id: str | None = None,
    **options: Any,
) -> ExecutionResult:
    """Execute, recording the start and the end in `store` when there is one."""
    identity = await executor.execution_for(plan, resume=resume, execution_id=execution_id)
    record = (
        await store.start_execution(plan.plan_id, execution_id=identity, holder=holder())
        if store is not None
        else None
    )
    try:
        result = await executor.aexecute(plan, execution_id=identity, **options)
    except BaseException as exc:
        if store is not None and record is not None:
            await store.finish_execution(
                record,
                ok=False,
                flow_run_id=getattr(exc, "flow_run_id", None),
                error=f"{type(exc).__name__}: {exc}",
                status="Interrupted" if isinstance(exc, ExecutionInterrupted) else None,
            )
        raise
    if store is not None and record is not None:
        await record_end(store, record, result)
    return result


async def record_end(store: PlanStore, record: Any, result: ExecutionResult) -> None:
    """Record in `store` how the execution `record` ended."""
    first_error = next(iter(result.errors.items()), None)
    error = f"{first_error[0]}: {first_error[1]}" if first_error else None
    await store.finish_execution(
        record,
        ok=result.ok,
        flow_run_id=result.flow_run_id,
        output_preview=result.output_preview,
        error=f"stopped: {result.stopped}" if result.stopped else error,
    )


def replanner_for(
    plan_once: Callable[[PlanningContext], Awaitable[PlanResult]],
    store: PlanStore | None,
    *,
    goal: str,
    user_inputs: Mapping[str, Any],
    flow_ids: Iterable[str] | None,
    parent: CandidatePlan,
) -> Replanner:
    """The replanner of one plan-and-execute: plans the rest of `goal` with the facts of
    a failure, and stores the new plan (the completed steps and the new ones) under
    its own scope, so the plan cache never serves it for the goal."""
    groups = list(flow_ids) if flow_ids is not None else None

    async def replan(facts: Replanning) -> CandidatePlan | None:
        ctx = PlanningContext(
            goal=goal, user_inputs=dict(user_inputs), flow_ids=groups, replan=facts
        )
        result = await plan_once(ctx)
        if result.plan is None:
            return None
        lineage = {"replan_of": parent.plan_id, "failed_step": facts.failed_step}
        plan = result.plan.model_copy(update={"extras": {**result.plan.extras, **lineage}})
        if store is not None:
            whole = CandidatePlan(steps=[*facts.completed, *plan.steps], extras=plan.extras)
            await store.save_plan(
                whole,
                goal=goal,
                catalog_fingerprint=f"replan-of-{parent.plan_id}",
                input_keys=ctx.user_inputs,
                validation=result.validation,
                planner=f"{result.planner} (replan)",
                usage=result.usage,
            )
        return plan

    return replan


async def plan_for_execution(
    aplan: Callable[..., Awaitable[PlanResult]],
    catalog: ActionCatalog,
    goal: str,
    user_inputs: Mapping[str, Any] | None,
    allow_partial: bool,
    ask_missing: Callable[[dict[str, dict[str, Any]]], Awaitable[Mapping[str, Any]]] | None,
    on_event: PlanningCallback | None,
    plan_kwargs: Mapping[str, Any],
) -> tuple[PlanResult, dict[str, Any] | None]:
    """Plan (with `aplan`, `PlannerService.aplan`), then get the values a partial plan
    misses; None when it must not run."""
    values = dict(user_inputs or {})
    result = await aplan(
        goal, user_inputs=values, allow_partial=allow_partial, on_event=on_event, **plan_kwargs
    )
    plan, validation = result.plan, result.validation
    missing = validation.missing_user_bindings if validation is not None else {}
    if plan is not None and validation is not None and not validation.has_structural_errors:
        if not missing:
            return result, values
        if allow_partial and ask_missing is not None:
            schemas = user_input_schemas(plan, catalog)
            values.update(await ask_missing({k: schemas.get(k, {}) for k in missing}))
            return result, values
    # Nothing runs: say why where the caller looks (the run's log), not just in `result`.
    warn_in_run(f"nothing ran for {goal!r}: {why_nothing_runs(result)}", logger)
    return result, None


def why_nothing_runs(result: PlanResult) -> str:
    """Why the plan of `result` may not run, in one line."""
    validation = result.validation
    missing = validation.missing_user_bindings if validation is not None else {}
    if missing:
        return (
            f"it needs values nobody gave ({', '.join(sorted(missing))}); pass them in "
            "user_inputs, or allow_partial=True with an ask_missing handler"
        )
    if result.unserved:
        return f"no action can: {'; '.join(result.unserved)}"
    return validation.summary().splitlines()[-1] if validation else "no plan"


@dataclass(frozen=True)
class Asked:
    """One plan-and-execute as the caller asked for it (`PlannerService.plan_and_execute`'s
    planning arguments; `plan_kwargs` go to `aplan`)."""

    goal: str
    user_inputs: Mapping[str, Any] | None
    allow_partial: bool
    ask_missing: Callable[[dict[str, dict[str, Any]]], Awaitable[Mapping[str, Any]]] | None
    planning_events_cb: PlanningCallback | None
    max_replans: int
    plan_kwargs: Mapping[str, Any]

    @property
    def flow_ids(self) -> Any:
        return self.plan_kwargs.get("flow_ids")

    async def plan(self, service: PlannerService) -> tuple[PlanResult, dict[str, Any] | None]:
        """Plan, then get the values a partial plan misses (`plan_for_execution`)."""
        return await plan_for_execution(
            service.aplan,
            service.catalog,
            self.goal,
            self.user_inputs,
            self.allow_partial,
            self.ask_missing,
            self.planning_events_cb,
            self.plan_kwargs,
        )

    def replanner(
        self, service: PlannerService, parent: CandidatePlan, values: Mapping[str, Any]
    ) -> Replanner | None:
        """What replans the rest of the goal after a failed step (None: no replans)."""
        if self.max_replans <= 0:
            return None
        return service.replanner(
            self.goal,
            user_inputs=values,
            parent=parent,
            flow_ids=self.flow_ids,
            on_event=self.planning_events_cb,
        )


async def plan_and_execute(
    service: PlannerService, asked: Asked, *, stream: bool, **execute: Any
) -> tuple[PlanResult, ExecutionResult | None]:
    """`PlannerService.plan_and_execute`: plan (streamed into execution with `stream`
    when it may be, `stream_and_execute`), get the values a partial plan misses, then
    execute (`execute`: the rest of `aexecute_plan`'s options)."""
    if stream:
        streamed = await stream_and_execute(service, asked, **execute)
        if streamed is not None:
            return streamed
    result, values = await asked.plan(service)
    return await _execute_planned(service, asked, result, values, execute)


async def stream_and_execute(
    service: PlannerService, asked: Asked, **execute: Any
) -> tuple[PlanResult, ExecutionResult | None] | None:
    """`plan_and_execute(..., stream=True)`: plan with the LLM's answer streamed
    (`planning.base.STREAMED`) while the steps it clears run (`_streaming.StepFeed`,
    `PlanExecutor.aexecute_streamed`). When no step could start before planning ended,
    the whole plan runs as usual (`execute`: the rest of `aexecute_plan`'s options).

    None, having done nothing, when the plan is not streamed: the heuristic planner
    plans (it answers at once), or an action the caller may use needs an approval (such
    a plan waits whole for it)."""
    flow_ids = asked.flow_ids
    if service.planner_key == "heuristic":
        return None
    usable = service.catalog.list_actions(flow_ids=flow_ids, plannable=True)
    if any(needs_approval(spec) for spec in usable):
        logger.info(
            "not streamed into execution: actions the plan may use need an approval; "
            "the plan runs once whole and approved"
        )
        return None
    given = dict(asked.user_inputs or {})
    executor = service.executor
    feed = StepFeed(
        service.catalog, lambda plan, values: executor.check(plan, values, flow_ids=flow_ids), given
    )
    identity = uuid.uuid4().hex
    record: list[Any] = []

    async def planning() -> tuple[PlanResult, dict[str, Any] | None]:
        try:
            result, values = await asked.plan(service)
        except BaseException as exc:
            feed.finish(None, f"planning failed: {type(exc).__name__}: {exc}")
            raise
        plan = result.plan if values is not None else None
        if plan is not None and feed.early and service.store is not None:
            record.append(
                await service.store.start_execution(
                    plan.plan_id, execution_id=identity, holder=holder()
                )
            )
        why = None if plan is not None else f"no valid plan to run: {why_nothing_runs(result)}"
        feed.finish(plan, why, values)
        return result, values

    token = STREAMED.set(feed.hear)
    try:
        planned = asyncio.ensure_future(planning())
    finally:
        STREAMED.reset(token)

    async def replan(facts: Replanning) -> CandidatePlan | None:
        result, values = await planned
        replanner = asked.replanner(service, result.plan, values or given) if result.plan else None
        return await replanner(facts) if replanner is not None else None

    try:
        executed = await executor.aexecute_streamed(
            feed,
            user_inputs=given,
            on_event=execute.get("on_event"),
            tags=(execute.get("run") or RunInfo()).tags(),
            execution_id=identity,
            flow_ids=flow_ids,
            replanner=replan if asked.max_replans > 0 else None,
            max_replans=asked.max_replans,
        )
    except BaseException:
        planned.cancel()
        raise
    result, values = await planned
    if executed is not None:
        if service.store is not None and record:
            await record_end(service.store, record[0], executed)
        return result, executed
    return await _execute_planned(service, asked, result, values, execute)


async def _execute_planned(
    service: PlannerService,
    asked: Asked,
    result: PlanResult,
    values: dict[str, Any] | None,
    execute: Mapping[str, Any],
) -> tuple[PlanResult, ExecutionResult | None]:
    """Execute the plan of `result` with `values` (None: it may not run), replanning
    after a failed step up to `asked.max_replans` times."""
    if result.plan is None or values is None:
        return result, None
    executed = await service.aexecute_plan(
        result.plan,
        user_inputs=values,
        flow_ids=asked.flow_ids,
        replanner=asked.replanner(service, result.plan, values),
        max_replans=asked.max_replans,
        **execute,
    )
    return result, executed
