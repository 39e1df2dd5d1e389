"""How `PlannerService` runs what it planned (private to `service`): a plan-and-execute
plans first and gets the values a partial plan misses; an execution's start and end go
to the plan store; and, for a plan-and-execute with `max_replans`, the replanner
plans the rest of the goal after a failed step and stores each new plan with its
lineage (`extras.replan_of`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from prefect_aether._internal.callbacks import warn_in_run
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.exceptions import ExecutionInterrupted
from prefect_aether.execution.events import ExecutionResult
from prefect_aether.execution.executor import PlanExecutor, Replanner
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning.base import PlanningCallback, PlanningContext, PlanResult
from prefect_aether.planning.inputs import user_input_schemas
from prefect_aether.replanning import Replanning
from prefect_aether.runinfo import holder
from prefect_aether.store import PlanStore

__all__ = ["execute_recorded", "plan_for_execution", "replanner_for"]

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
        first_error = next(iter(result.errors.items()), None)
        error = f"{first_error[0]}: {first_error[1]}" if first_error else None
        await store.finish_execution(
            record,
            ok=result.ok,
            flow_run_id=result.flow_run_id,
            output_preview=result.output_preview,
            error=f"stopped: {result.stopped}" if result.stopped else error,
        )
    return result


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
    why = (
        f"it needs values nobody gave ({', '.join(sorted(missing))}); pass them in "
        "user_inputs, or allow_partial=True with an ask_missing handler"
        if missing
        else f"no action can: {'; '.join(result.unserved)}"
        if result.unserved
        else (validation.summary().splitlines()[-1] if validation else "no plan")
    )
    warn_in_run(f"nothing ran for {goal!r}: {why}", logger)
    return result, None
