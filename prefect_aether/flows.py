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
import keyword
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Cancelled
from pydantic import Field, create_model

from prefect_aether._internal.text import sanitize
from prefect_aether.catalog.policy import check_source
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.schemas import coarse_type
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.context import NodePlanner, get_planner
from prefect_aether.exceptions import ExecutionError, PlanValidationError
from prefect_aether.execution._report import plan_markdown
from prefect_aether.execution.events import ExecutionResult
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.plan import CandidatePlan, step_dependencies
from prefect_aether.service import PlannerKind, PlannerService, user_input_schemas
from prefect_aether.settings import current_settings
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import validate_plan

__all__ = ["Approval", "execute_plan", "plan_and_execute", "user_input_model"]

# Namespace of execution ids derived from flow run ids (see `_execution`).
_EXECUTIONS = uuid.UUID("5b0e2f51-3c1a-4d8e-9a47-ae0000000000")
_PYTHON_TYPES: dict[str | None, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list[Any],
    "object": dict[str, Any],
    None: Any,
}


class Approval(RunInput):
    """The form a reviewer fills in to let a plan run (or not).

    Examples:
        >>> Approval(approve=False, comment="wrong region").approve
        False
    """

    approve: bool = Field(description="Run this plan?")
    approver: str = Field(default="", description="Your name, for the audit trail.")
    comment: str = Field(default="", description="Why (logged, and recorded with the decision).")


def user_input_model(
    schemas: dict[str, dict[str, Any]], needed_by: dict[str, list[str]] | None = None
) -> type[RunInput]:
    """A `RunInput` form with one typed field per missing `${user.<key>}` value.

    Field names in the form are the keys; each field carries the JSON schema of
    the slot it feeds (enums become drop-downs, bounds are checked).

    Examples:
        >>> Form = user_input_model({"csv_path": {"type": "string"}})
        >>> Form(csv_path="a.csv").model_dump(by_alias=True)
        {'csv_path': 'a.csv'}
    """
    fields: dict[str, Any] = {}
    for i, (key, schema) in enumerate(sorted(schemas.items())):
        where = ", ".join((needed_by or {}).get(key, []))
        # What the value is, and which step needs it: both, when both are known.
        said = [schema.get("description"), f"Needed by {where}." if where else None]
        description = " ".join(part for part in said if part) or None
        # The slot's own schema shapes the form, unless it points at definitions.
        extra = (
            {k: v for k, v in schema.items() if k not in ("title", "description")}
            if "$ref" not in str(schema)
            else {}
        )
        annotation = _PYTHON_TYPES.get(coarse_type(schema), Any)
        name = key if key.isidentifier() and not keyword.iskeyword(key) else f"field_{i}"
        fields[name] = (
            annotation,
            Field(alias=key, description=description, json_schema_extra=extra or None),
        )
    model: type[RunInput] = create_model("PlanInputs", __base__=RunInput, **fields)
    model._description = (  # type: ignore[assignment]
        "The plan needs these values before it can run."
    )
    return model


async def _ask_for_values(
    plan: CandidatePlan, catalog: ActionCatalog, missing: dict[str, list[str]], timeout: int
) -> dict[str, Any]:
    """Pause the run until a person submits the missing values in the Prefect UI."""
    schemas = user_input_schemas(plan, catalog)
    form = user_input_model({k: schemas.get(k, {}) for k in missing}, missing)
    get_run_logger().info(
        "Waiting for values of %s; fill in the form on this flow run in the Prefect UI: %s",
        ", ".join(sorted(missing)),
        _run_link(),
    )
    answer = await _pause(form, timeout, key="aether-user-inputs", waiting_for="the plan's inputs")
    values: dict[str, Any] = answer.model_dump(
        by_alias=True, include=set(type(answer).model_fields)
    )
    return values


async def _pause(form: type[Any], timeout: int, *, key: str, waiting_for: str) -> Any:
    poll = current_settings().pause_poll_interval
    # We time the wait ourselves and give the server's pause deadline a margin: once
    # that deadline passes, Prefect replaces any final state, and its message, with
    # "never resumed"; failing before it keeps the message below on the run.
    try:
        with anyio.fail_after(timeout):
            return await apause_flow_run(
                wait_for_input=form, timeout=timeout + 30 + 3 * poll, poll_interval=poll, key=key
            )
    except (TimeoutError, FlowPauseTimeout):
        raise ExecutionError(
            f"nobody provided {waiting_for} within {timeout} s (pause_timeout); "
            "the plan did not run"
        ) from None


def _run_link() -> str:
    """This flow run in the Prefect UI (its id when no UI URL is known)."""
    from prefect.settings import PREFECT_UI_URL

    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context is not None and context.flow_run else "?"
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else f"flow run {run_id}"


async def _record_decision(node: NodePlanner, plan: CandidatePlan, decision: Approval) -> None:
    """Log the decision, emit `prefect-aether.plan.approved|rejected`, and record it in the
    plan store: the audit trail of who let which plan run, and why."""
    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context is not None and context.flow_run else None
    verdict = "approved" if decision.approve else "rejected"
    who = sanitize(decision.approver, 200) or "someone (no name given)"
    comment = sanitize(decision.comment, 2000)
    get_run_logger().info(
        "plan %s %s by %s%s", plan.plan_id, verdict, who, f": {comment}" if comment else ""
    )
    emit_event(
        event=f"prefect-aether.plan.{verdict}",
        resource={
            "prefect.resource.id": f"prefect-aether.plan.{plan.plan_id}",
            "prefect.resource.name": f"plan-{plan.plan_id}",
        },
        related=(
            [
                {
                    "prefect.resource.id": f"prefect.flow-run.{run_id}",
                    "prefect.resource.role": "flow-run",
                }
            ]
            if run_id
            else []
        ),
        payload={"approved": decision.approve, "approver": who, "comment": comment},
    )
    store = node.service.store
    if store is not None:
        await store.record_approval(
            plan.plan_id,
            approved=decision.approve,
            approver=decision.approver,
            comment=decision.comment,
            flow_run_id=run_id,
        )


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
    }


def _execution(resume: str | None) -> dict[str, str]:
    """`resume` when asked; else an execution id derived from this flow run, so that a
    Prefect retry of the run (`retries=`) continues the execution the failed attempt
    started instead of running its finished steps again."""
    if resume is not None:
        return {"resume": resume}
    flow_run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
    return {"execution_id": uuid.uuid5(_EXECUTIONS, str(flow_run_id)).hex}


async def _run_plan(
    node: NodePlanner,
    plan: CandidatePlan,
    user_inputs: dict[str, Any],
    *,
    approve: bool,
    pause_timeout: int,
    planner: str,
    cached: bool = False,
    resume: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Ask for missing values, ask for approval, execute: the common tail of both flows."""
    catalog = node.catalog
    validation = validate_plan(plan, catalog, user_inputs=user_inputs)
    if validation.has_structural_errors:
        raise PlanValidationError(
            f"plan {plan.plan_id} cannot run:\n{validation.summary()}", issues=validation.issues
        )
    values = dict(user_inputs)
    if validation.missing_user_bindings:
        values.update(
            await _ask_for_values(plan, catalog, validation.missing_user_bindings, pause_timeout)
        )
    # An `aether:approval` action makes the approval a must, whatever `approve` says.
    approve = approve or bool(node.service.executor.approval_actions(plan))
    if approve:
        # Levels depend on the wiring only, not on the values just given.
        await acreate_markdown_artifact(
            markdown=plan_markdown(
                plan, validation.levels, step_dependencies(plan), user_inputs=values
            ),
            key=f"aether-approval-{plan.plan_id}",
            description=f"prefect-aether plan {plan.plan_id}, waiting for approval",
        )
        get_run_logger().info(
            "Waiting for an approval of plan %s (artifact aether-approval-%s); approve or "
            "reject it on this flow run in the Prefect UI: %s",
            plan.plan_id,
            plan.plan_id,
            _run_link(),
        )
        decision = await _pause(
            Approval.with_initial_data(
                description=f"Approve plan {plan.plan_id} ({len(plan.steps)} steps)? "
                "See the run's artifacts."
            ),
            pause_timeout,
            key="aether-approval",
            waiting_for="an approval",
        )
        await _record_decision(node, plan, decision)
        if not decision.approve:
            message = f"plan {plan.plan_id} rejected; nothing was executed"
            if decision.comment:
                message += f": {sanitize(decision.comment)}"
            get_run_logger().warning(message)
            return Cancelled(message=message)
    execution = _execution(resume)
    result = await node.execute(
        plan,
        user_inputs=values,
        resume=execution.get("resume"),
        execution_id=execution.get("execution_id"),
        approved=approve,
    )
    if not result.ok:
        first = next(iter(result.errors.items()), ("plan", "failed"))
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

    Returns:
        `ok`, `plan_id`, `planner`, `cached`, `plan_flow_run_id`, `outputs`, `errors`,
        `skipped`.
    """
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
        )


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
        # the settings allow, and is refused before anything is imported.
        check_source(catalog, settings)
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
) -> dict[str, Any] | State[Any]:
    result = await node.plan(goal, user_inputs=values, allow_partial=allow_partial, cache=cache)
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
    return await _run_plan(
        node,
        result.plan,
        values,
        approve=approve,
        pause_timeout=pause_timeout,
        planner=result.planner,
        cached=result.cached,
        resume=resume,
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
    candidate = CandidatePlan.from_dict(plan)
    async with _node(catalog, "heuristic", None, max_concurrency) as node:
        return await _run_plan(
            node,
            candidate,
            dict(user_inputs or {}),
            approve=approve,
            pause_timeout=pause_timeout,
            planner=str(candidate.extras.get("planner", "given")),
            resume=resume,
        )
