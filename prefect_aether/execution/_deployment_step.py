"""A step as a run of a deployment on the Prefect API (private to `_steps`).

The deployment's worker or `serve` process runs it, wherever that is; the plan's
parent run links it as a child run with `wait_for` edges to the upstream steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State

from prefect_aether.catalog.specs import ActionSpec
from prefect_aether.exceptions import ExecutionError
from prefect_aether.plan import PlanStep


def run_inputs(states: Sequence[State[Any]]) -> list[Any]:
    """The same references as `wait_for`, as task inputs written by hand."""
    from prefect.client.schemas.objects import FlowRunResult, TaskRunResult
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    parent = context.flow_run.id if context is not None and context.flow_run else None
    found: list[Any] = []
    for state in states:
        details = state.state_details
        if details.flow_run_id is not None and details.flow_run_id != parent:
            found.append(FlowRunResult(id=details.flow_run_id))
        elif details.task_run_id is not None:
            found.append(TaskRunResult(id=details.task_run_id))
    return found


async def call_deployment(
    spec: ActionSpec,
    step: PlanStep,
    step_tags: list[str],
    inputs: dict[str, Any],
    upstream: list[State[Any]],
    *,
    poll_interval: float,
) -> tuple[State[Any], Any]:
    """Run a deployment as a child flow run of the plan, named after the step, and wait.

    This is `run_deployment` as a subflow, plus `wait_for` edges to the upstream
    steps (so the run graph shows them) and the step's policy: past
    `timeout_seconds` the run is cancelled and the step fails; a failed run is
    retried `retries` times as a new run (`<step>-retry-<n>`), `retry_delay_seconds`
    apart. The deployment's worker or `serve` process runs it, on whichever
    machine that is.

    Returns:
        The child flow run's final state and the run's result.
    """
    from prefect._internal.engine import dynamic_key_for_task_run
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import MissingResult
    from prefect.states import Pending, Scheduled
    from pydantic_core import to_jsonable_python

    name = spec.name
    parameters = to_jsonable_python(inputs)
    context = FlowRunContext.get()
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(name)
        parent_task_run_id = None
        if context is not None and context.flow_run is not None:
            link = Task(name=step.id, fn=lambda: None, version=deployment.version)
            link.task_key = f"prefect_aether.deployment.{spec.name}"
            parent = await client.create_task_run(
                task=link,
                flow_run_id=context.flow_run.id,
                dynamic_key=str(dynamic_key_for_task_run(context, link)),
                task_inputs={"wait_for": run_inputs(upstream)},
                state=Pending(),
            )
            parent_task_run_id = parent.id
        retries = int(step.extras.get("retries") or 0)
        for attempt in range(retries + 1):
            flow_run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=parameters,
                state=Scheduled(),
                name=step.id if attempt == 0 else f"{step.id}-retry-{attempt}",
                tags=step_tags,
                parent_task_run_id=parent_task_run_id,
            )
            flow_run = await _wait_for_run(client, flow_run, step, name, poll_interval)
            final: State[Any] = flow_run.state
            if final.is_completed() or attempt == retries:
                break
            await asyncio.sleep(_retry_delay(step.extras.get("retry_delay_seconds"), attempt))
    # The child flow run's own state: downstream steps wait for that flow run.
    state = final
    if not state.is_completed():
        return state, None
    try:
        value = await state.aresult()
    except MissingResult as exc:
        raise ExecutionError(
            f"step {step.id!r}: deployment {name!r} finished but its result cannot be read "
            f"({exc}); give its flow persist_result=True and result storage this process "
            "can read",
            step_id=step.id,
        ) from None
    return state, value


def _retry_delay(delay: Any, attempt: int) -> float:
    """Seconds before retry `attempt + 1`: a number, or Prefect's list form."""
    if isinstance(delay, list | tuple):
        return float(delay[min(attempt, len(delay) - 1)]) if delay else 0.0
    return float(delay or 0)


async def _wait_for_run(
    client: Any, flow_run: Any, step: PlanStep, name: str, poll_interval: float
) -> Any:
    """Poll a deployment run until it ends; cancel it and fail past the step's timeout."""
    from prefect.states import Cancelling

    timeout = step.extras.get("timeout_seconds")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(timeout) if timeout else None
    while True:
        flow_run = await client.read_flow_run(flow_run.id)
        if flow_run.state is not None and flow_run.state.is_final():
            return flow_run
        if deadline is not None and loop.time() >= deadline:
            await client.set_flow_run_state(flow_run.id, Cancelling(), force=True)
            raise ExecutionError(
                f"step {step.id!r}: deployment {name!r} run {flow_run.id} did not finish "
                f"within {timeout} s; it was cancelled",
                step_id=step.id,
            )
        remaining = deadline - loop.time() if deadline is not None else poll_interval
        await asyncio.sleep(max(0.0, min(poll_interval, remaining)))
