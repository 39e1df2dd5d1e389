"""Deployable flows: plan a goal and execute it, or execute a given plan.

Deploy them like any Prefect flow (`flows/prefect.yaml` schedules a daily
goal). Each run plans over the actions its `catalog` parameter names, asks a
person for missing `${user.*}` values through a typed form in the Prefect UI
(`pause_flow_run(wait_for_input=...)`), optionally waits for an approval of
the plan, then runs the plan as a child flow run with one run per step.

Examples:
    >>> from prefect_aether.flows import plan_and_execute
    >>> plan_and_execute.name
    'aether-plan-and-execute'
"""

# No `from __future__ import annotations` here: `.serve()` pickles these flows by value
# into a new process, where string annotations cannot be resolved and pydantic refuses
# the parameter model ("Plan_And_ExecuteModel is not fully defined").
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.states import Cancelled

from prefect_aether._internal.text import sanitize
from prefect_aether.catalog.policy import check_source
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.context import NodePlanner, get_planner
from prefect_aether.exceptions import AetherUsageError, ExecutionError, PlanValidationError
from prefect_aether.execution._report import approval_markdown, plan_markdown
from prefect_aether.execution.events import ApprovalCallback, EventCallback, ExecutionResult
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.flows._forms import (
    Approval,
    ask_for_values,
    pause,
    record_decision,
    run_link,
    user_input_model,
)
from prefect_aether.plan import CandidatePlan, step_dependencies
from prefect_aether.service import PlannerKind, PlannerService
from prefect_aether.settings import current_settings
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import validate_plan

__all__ = ["Approval", "execute_plan", "plan_and_execute", "user_input_model"]

# Namespace of execution ids derived from flow run ids (see `_execution`).
_EXECUTIONS = uuid.UUID("5b0e2f51-3c1a-4d8e-9a47-ae0000000000")


def _summary(result: ExecutionResult, planner: str, cached: bool) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "plan_id": result.plan_id,
        "planner": planner,
        "cached": cached,
        "plan_flow_run_id": result.flow_run_id,
        "execution_id": result.execution_id,
        "reused": result.reused,
        "outputs": result.outputs,
        "errors": result.errors,
        "skipped": result.skipped,
        "replans": [r.model_dump() for r in result.replans],
    }


def _execution(resume: str | None) -> dict[str, str]:
    """`resume` when asked; else an execution id derived from this flow run, so that a
    Prefect retry of the run (`retries=`) continues the execution the failed attempt
    started instead of running its finished steps again."""
    if resume is not None:
        return {"resume": resume}
    flow_run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
    return {"execution_id": uuid.uuid5(_EXECUTIONS, str(flow_run_id)).hex}


async def approve_then_execute(
    node: NodePlanner,
    plan: CandidatePlan,
    user_inputs: dict[str, Any],
    *,
    approve: bool,
    pause_timeout: int,
    planner: str,
    cached: bool = False,
    resume: str | None = None,
    execution_id: str | None = None,
    on_event: EventCallback | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any] | State[Any]:
    """Ask for missing values, ask for approval, execute: the common tail of both flows
    and of the MCP server's runs (`execution_id`, `on_event` and the `run` fields of
    `NodePlanner.execute` are theirs)."""
    catalog = node.catalog
    validation = validate_plan(plan, catalog, user_inputs=user_inputs)
    if validation.has_structural_errors:
        raise PlanValidationError(
            f"plan {plan.plan_id} cannot run:\n{validation.summary()}", issues=validation.issues
        )
    values = dict(user_inputs)
    if validation.missing_user_bindings:
        values.update(
            await ask_for_values(plan, catalog, validation.missing_user_bindings, pause_timeout)
        )
    # An `aether:approval` action makes the approval a must, whatever `approve` says.
    approve = approve or bool(node.service.executor.approval_actions(plan))
    if approve:
        decision = await ask_approval(node, plan, values, validation.levels, pause_timeout)
        if not decision.approve:
            message = f"plan {plan.plan_id} rejected; nothing was executed"
            if decision.comment:
                message += f": {sanitize(decision.comment)}"
            get_run_logger().warning(message)
            return Cancelled(message=message)
    execution = {"execution_id": execution_id} if execution_id else _execution(resume)
    result = await node.aexecute(
        plan,
        user_inputs=values,
        on_event=on_event,
        resume=execution.get("resume"),
        execution_id=execution.get("execution_id"),
        approved=approve,
        **(run or {}),
    )
    if not result.ok:
        why = f"stopped: {result.stopped}" if result.stopped else "failed"
        first = next(iter(result.errors.items()), ("plan", why))
        raise ExecutionError(
            f"plan {plan.plan_id} failed at step {first[0]!r}: {first[1]}",
            step_id=first[0] if first[0] != "plan" else None,
        )
    return _summary(result, planner, cached)


@flow(name="aether-plan-and-execute", persist_result=True, log_prints=True)
async def plan_and_execute(
    goal: str,
    user_inputs: dict[str, Any] | None = None,
    catalog: CatalogSource | None = None,
    planner: PlannerKind = "auto",
    approve: bool = False,
    allow_partial: bool = True,
    max_concurrency: int | None = None,
    llm_block: str | None = None,
    resume: str | None = None,
    cache: bool = True,
    pause_timeout: int = 3600,
    max_replans: int = 0,
) -> dict[str, Any] | State[Any]:
    """Plan a goal over your flows and deployments, then run the plan.

    Args:
        goal: What to do, in plain words.
        user_inputs: Values for `${user.*}` bindings known up front.
        catalog: Modules, entrypoints and deployments the plan may use: by
            default all that the `catalog_*` settings list; a parameter may only
            name what they list (anything else fails the run before any import).
        planner: `auto` (the LLM when one is configured, else heuristic),
            `heuristic` or `llm`.
        approve: Publish the plan as an artifact and wait for an approval (always
            done for a plan with an `aether:approval` action).
        allow_partial: Accept a plan that needs values nobody gave, and ask for
            them with a form; otherwise such a plan fails the run.
        max_concurrency: Most steps running at once.
        llm_block: Name of a saved `LLMConfig` block to plan with.
        resume: Continue an earlier execution of the plan (its execution id, or
            `"latest"`): its succeeded steps are reused. By default every run is a
            fresh execution, so a scheduled run does its work again; a Prefect retry
            of this flow run continues the same execution by itself.
        cache: Reuse the stored plan of the same goal on the same catalog (with the
            plan store on, the `store_enabled` setting); no planner call then.
        pause_timeout: Seconds to wait for a form (values or approval).
        max_replans: When a step fails after its retries, plan the rest of the goal
            again, at most this many times, in the same plan run (completed steps are
            kept, the failed action is not used again). A replan that adds an
            `aether:approval` action pauses the plan's run (`aether-plan`) for an
            approval, as the first plan does; rejected, the replan does not run.

    Returns:
        `ok`, `plan_id`, `planner`, `cached`, `plan_flow_run_id`, `outputs`, `errors`,
        `skipped`, `replans`.
    """
    _check_pause_timeout(pause_timeout)
    async with _node(catalog, planner, llm_block, max_concurrency) as node:
        return await _plan_then_run(
            node,
            goal,
            dict(user_inputs or {}),
            allow_partial=allow_partial,
            cache=cache,
            approve=approve,
            pause_timeout=pause_timeout,
            resume=resume,
            max_replans=max_replans,
        )


async def ask_approval(
    node: NodePlanner,
    plan: CandidatePlan,
    values: dict[str, Any],
    levels: list[list[str]],
    pause_timeout: int,
    *,
    what: str = "plan",
) -> Approval:
    """Publish `plan` as an artifact, pause this flow run for an approval form, and
    record the decision (`what` names the plan in the log line: a replan says so)."""
    # Levels depend on the wiring only, not on the values just given.
    await acreate_markdown_artifact(
        markdown=plan_markdown(plan, levels, step_dependencies(plan), user_inputs=values),
        key=f"aether-approval-{plan.plan_id}",
        description=f"prefect-aether {what} {plan.plan_id}, waiting for approval",
    )
    get_run_logger().info(
        "Waiting for an approval of %s %s (artifact aether-approval-%s); approve or "
        "reject it on this flow run in the Prefect UI: %s",
        what,
        plan.plan_id,
        plan.plan_id,
        run_link(),
    )
    decision: Approval = await pause(
        Approval.with_initial_data(description=approval_markdown(plan, values, run_link())),
        pause_timeout,
        key=f"aether-approval-{plan.plan_id}",
        waiting_for="an approval",
    )
    await record_decision(node, plan, decision)
    return decision


def replan_approval(
    node: NodePlanner, values: dict[str, Any], pause_timeout: int
) -> ApprovalCallback:
    """The approval a replan that adds `aether:approval` actions asks for in a
    deployable flow: a new pause of the plan's run, with the same form and record, of
    the whole replan (the completed steps and the new ones)."""

    async def approve(plan: CandidatePlan, actions: list[str]) -> bool:
        levels = node.service.executor.check(plan, values)
        decision = await ask_approval(node, plan, values, levels, pause_timeout, what="replan")
        return bool(decision.approve)

    return approve


def _check_pause_timeout(seconds: int) -> None:
    if seconds < 1:
        raise AetherUsageError(f"pause_timeout must be at least 1 second, got {seconds}")


@asynccontextmanager
async def _node(
    catalog: CatalogSource | None,
    planner: PlannerKind,
    llm_block: str | None,
    max_concurrency: int | None,
) -> AsyncIterator[NodePlanner]:
    """A planner for this flow run: its catalog built, its LLM loaded, its store open."""
    settings = current_settings()
    if catalog is not None:
        # A run parameter is untrusted and importing runs code: it may only narrow what
        # the settings allow, and is refused before anything is imported. Policy is the
        # operator's: the deployment's own `catalog` keeps its tags and roles.
        check_source(catalog, settings)
        operator = await _deployment_catalog()
        if operator is not None:
            catalog = catalog.under(operator)
    source = catalog or CatalogSource.from_settings()
    actions = await source.build()
    llm = None
    if llm_block:
        from prefect_aether.blocks import LLMConfig

        config: LLMConfig = await LLMConfig.aload(llm_block)
        llm = config.get_llm()
    store = PlanStore() if settings.store_enabled else None
    service = PlannerService(
        actions,
        planner=planner,
        llm=llm,
        executor=PlanExecutor(actions, max_concurrency=max_concurrency),
        store=store,
    )
    try:
        yield get_planner(service=service)
    finally:
        if store is not None:
            await store.close()


async def _deployment_catalog() -> CatalogSource | None:
    """For a run of a deployment, the operator's side of its catalog: the deployment's
    own `catalog` default (set when deploying), or an empty source when it has none;
    None for a flow called directly (its caller is the operator)."""
    context = FlowRunContext.get()
    deployment_id = context.flow_run.deployment_id if context and context.flow_run else None
    if deployment_id is None:
        return None
    async with get_client() as client:
        deployment = await client.read_deployment(deployment_id)
    default = (deployment.parameters or {}).get("catalog")
    return CatalogSource.model_validate(default) if isinstance(default, dict) else CatalogSource()


async def _plan_then_run(
    node: NodePlanner,
    goal: str,
    values: dict[str, Any],
    *,
    allow_partial: bool,
    cache: bool,
    approve: bool,
    pause_timeout: int,
    resume: str | None,
    max_replans: int = 0,
) -> dict[str, Any] | State[Any]:
    if max_replans < 0:
        raise AetherUsageError(f"max_replans must be 0 or more, got {max_replans}")
    result = await node.aplan(goal, user_inputs=values, allow_partial=allow_partial, cache=cache)
    if result.cached:
        get_run_logger().info(
            "Reusing stored plan %s (plan cache)", result.plan and result.plan.plan_id
        )
    validation = result.validation
    if result.plan is None and result.unserved:
        raise PlanValidationError(
            f"no plan for {goal!r}: no action can: {'; '.join(result.unserved)}",
            issues=validation.issues if validation else [],
        )
    if result.plan is None or validation is None:
        detail = validation.summary() if validation else "no action matches the goal"
        raise PlanValidationError(
            f"no plan for {goal!r}: {detail}", issues=validation.issues if validation else []
        )
    if validation.missing_user_bindings and not allow_partial:
        raise PlanValidationError(
            f"the plan for {goal!r} needs values nobody gave and allow_partial is off: "
            f"{', '.join(sorted(validation.missing_user_bindings))}",
            issues=validation.issues,
        )
    return await approve_then_execute(
        node,
        result.plan,
        values,
        approve=approve,
        pause_timeout=pause_timeout,
        planner=result.planner,
        cached=result.cached,
        resume=resume,
        run=(
            {
                "replanner": node.service.replanner(goal, user_inputs=values, parent=result.plan),
                "max_replans": max_replans,
                "approval": replan_approval(node, values, pause_timeout),
            }
            if max_replans
            else None
        ),
    )


@flow(name="aether-execute-plan", persist_result=True, log_prints=True)
async def execute_plan(
    plan: dict[str, Any],
    user_inputs: dict[str, Any] | None = None,
    catalog: CatalogSource | None = None,
    approve: bool = False,
    max_concurrency: int | None = None,
    resume: str | None = None,
    pause_timeout: int = 3600,
) -> dict[str, Any] | State[Any]:
    """Validate and run a plan (a `CandidatePlan` as JSON), asking for missing values.

    Args:
        plan: The plan: `{"steps": [...]}`.
        user_inputs: Values for `${user.*}` bindings.
        catalog: Where the plan's actions come from (see `plan_and_execute`).
        approve: Wait for an approval before running (always done for a plan
            with an `aether:approval` action).
        max_concurrency: Most steps running at once.
        resume: Continue an earlier execution (its id, or `"latest"`); a fresh
            execution by default (a Prefect retry of this run continues its own).
        pause_timeout: Seconds to wait for a form (values or approval).
    """
    _check_pause_timeout(pause_timeout)
    candidate = CandidatePlan.from_dict(plan)
    async with _node(catalog, "heuristic", None, max_concurrency) as node:
        return await approve_then_execute(
            node,
            candidate,
            dict(user_inputs or {}),
            approve=approve,
            pause_timeout=pause_timeout,
            planner=str(candidate.extras.get("planner", "given")),
            resume=resume,
        )
