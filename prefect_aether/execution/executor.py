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

Every `execute` is a fresh **execution** with its own `execution_id` (tag
`execution:<id>` on the parent run): by default every step runs. Finished
steps persist their result (as JSON) under execution id + step id + a hash of
the resolved inputs + a hash of the action's code, so `execute(plan,
resume=<execution_id> | "latest")` continues an earlier execution: its
succeeded steps are reused, the rest run. Results are reused across
executions only when asked (`reuse_within`), and two processes resuming the
same execution never both run a step (a lock per step result).
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from prefect.task_runners import TaskRunner

from prefect_aether._internal.dispatch import sync_compatible
from prefect_aether.catalog.policy import APPROVAL, needs_approval
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.exceptions import AetherUsageError, ApprovalRequired, PlanValidationError
from prefect_aether.execution._background import BackgroundExecutionHandle
from prefect_aether.execution._replan import Adaptive, Replanner
from prefect_aether.execution._results import StepResults
from prefect_aether.execution._run import PlanRun
from prefect_aether.execution._stream import Ending, Feed
from prefect_aether.execution.events import (
    PLAN_FLOW_NAME,
    ApprovalCallback,
    EventCallback,
    ExecutionEvent,
    ExecutionResult,
    Replan,
)
from prefect_aether.plan import CandidatePlan
from prefect_aether.settings import current_settings
from prefect_aether.validation.validate import RUN_MODES, validate_plan

__all__ = [
    "BackgroundExecutionHandle",
    "Ending",
    "ExecutionEvent",
    "ExecutionResult",
    "PlanExecutor",
    "Replan",
    "Replanner",
]

logger = logging.getLogger("prefect_aether.execute")

RunMode = Literal["task", "subflow"]
_EXECUTION_ID = re.compile(r"[0-9a-f]{32}")


class PlanExecutor:
    """Executes validated plans over a catalog as Prefect flow runs.

    Args:
        catalog: The actions the plans call.
        max_concurrency: Most steps running at once; the `max_concurrent_steps`
            setting (64) by default, and never more.
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
        reuse_within: Also reuse a step's result from *another* execution when its
            inputs and its action's code are the same and the result is younger than
            this (`extras.reuse_within`, in seconds, sets it per step). Off by default:
            an execution runs every step it does not resume.
        result_storage: Where step results persist (a Prefect storage block or
            slug); a private folder under PREFECT_HOME (`aether/results`) when None.
        result_serializer: `"json"` (default): results are plain JSON, and a value JSON
            cannot hold is not persisted (its step runs again on resume). `"pickle"`:
            such values are pickled; only use it with storage nobody else can write.
        task_runner: A Prefect task runner for task-mode steps (the plan's flow run uses
            it): `DaskTaskRunner()` from prefect-dask (`pip install prefect-aether[dask]`)
            runs them on a Dask cluster's workers, other processes or machines; by
            default they run in this process, concurrently on its event loop.
        allow_overwrite: Run plans that write where a step reads, or write one location
            from two unordered steps (`write_conflict` issues); refused by default.

    Examples:
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
        reuse_within: dt.timedelta | None = None,
        result_storage: Any = None,
        result_serializer: Literal["json", "pickle"] = "json",
        task_runner: TaskRunner[Any] | None = None,
        allow_overwrite: bool = False,
    ) -> None:
        ceiling = current_settings().max_concurrent_steps
        if max_concurrency is not None and not 1 <= max_concurrency <= ceiling:
            raise AetherUsageError(
                f"max_concurrency must be between 1 and {ceiling} (max_concurrent_steps), "
                f"got {max_concurrency}"
            )
        if run_as not in RUN_MODES:
            raise AetherUsageError(f"run_as must be one of {RUN_MODES}, got {run_as!r}")
        if result_serializer not in ("json", "pickle"):
            raise AetherUsageError(
                f"result_serializer must be 'json' or 'pickle', got {result_serializer!r}"
            )
        if reuse_within is not None and reuse_within.total_seconds() <= 0:
            raise AetherUsageError(f"reuse_within must be positive, got {reuse_within}")
        self.catalog = catalog
        self.max_concurrency = max_concurrency if max_concurrency is not None else ceiling
        self.fail_fast = fail_fast
        self.run_as = run_as
        self.tag_steps = tag_steps
        self.reuse_within = reuse_within
        self.result_storage = result_storage
        self.result_serializer = result_serializer
        if task_runner is not None and not isinstance(task_runner, TaskRunner):
            raise AetherUsageError(
                f"task_runner must be a Prefect task runner (such as prefect_dask's "
                f"DaskTaskRunner()), got {type(task_runner).__name__}"
            )
        self.task_runner = task_runner
        self.allow_overwrite = allow_overwrite
        self.results = StepResults(result_storage, allow_pickle=result_serializer == "pickle")

    def check(
        self,
        plan: CandidatePlan,
        user_inputs: Mapping[str, Any] | None = None,
        *,
        flow_ids: Iterable[str] | None = None,
    ) -> list[list[str]]:
        """Validate `plan` for execution (within `flow_ids` when given); return its levels.

        Raises:
            PlanValidationError: Structural issues, actions outside `flow_ids`, or
                missing user values.
        """
        result = validate_plan(
            plan,
            self.catalog,
            user_inputs=user_inputs,
            flow_ids=flow_ids,
            allow_overwrite=self.allow_overwrite,
        )
        if not result.ok:
            raise PlanValidationError(
                f"plan {plan.plan_id} cannot run:\n{result.summary()}", issues=result.issues
            )
        return result.levels

    async def aexecute(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        tags: Iterable[str] | None = None,
        flow_run_name: str | None = None,
        resume: str | None = None,
        execution_id: str | None = None,
        flow_ids: Iterable[str] | None = None,
        approved: bool = False,
        approval: ApprovalCallback | None = None,
        replanner: Replanner | None = None,
        max_replans: int = 0,
    ) -> ExecutionResult:
        """Validate `plan`, then run it as one parent flow run; never raises for a failing step.

        Args:
            plan: The plan.
            user_inputs: Values for `${user.*}` bindings.
            on_event: Called with every `ExecutionEvent` (sync or async); its
                exceptions are logged and never break execution.
            tags: Extra tags for the parent run and every step run.
            flow_run_name: Name of the parent run; `plan-<plan_id>` by default.
            resume: Continue an earlier execution of this plan (its id, or
                `"latest"`): its succeeded steps are reused, the others run.
            execution_id: Run as this execution (32 hex digits) instead of a new one:
                for callers that derive it, such as a flow whose Prefect retries
                must continue where the failed attempt stopped.
            flow_ids: The caller may only run actions of these groups (and global
                ones); checked here again, whatever planned or cached the plan.
            approved: A person approved this plan (needed when it holds actions
                tagged `aether:approval`).
            approval: Asked (sync or async) with the plan and the actions that need
                an approval when `approved` is False; True lets the plan run.
            replanner: Asked for a plan for the rest of the goal when a step fails
                after its retries (`Replanning` facts); its new steps run in the same
                parent flow run, validated with the completed ones, and steps tagged
                `aether:approval` among them ask `approval` again.
            max_replans: Most replans (0, the default: a failed step fails the plan).

        Raises:
            PlanValidationError: The plan is invalid or misses user values; no
                flow run is created.
            ApprovalRequired: The plan holds `aether:approval` actions and was not
                approved; nothing ran.
            AetherUsageError: `resume` names no execution of this plan.
            ExecutionInterrupted: The Prefect API stopped answering for longer
                than `api_outage_timeout`; resume the execution once it is back.
        """
        levels = self.check(plan, user_inputs, flow_ids=flow_ids)
        await self.require_approval(plan, approved=approved, approval=approval)
        identity = await self.execution_for(plan, resume=resume, execution_id=execution_id)
        run = PlanRun(
            self, plan.resolve_actions(self.catalog), dict(user_inputs or {}), levels, identity
        )
        run.on_event = on_event
        run.adaptive = self._adaptive(run, flow_ids, approval, replanner, max_replans)
        return await run.start(list(tags or ()), flow_run_name or f"plan-{plan.plan_id}")

    async def aexecute_streamed(
        self,
        feed: Feed,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        tags: Iterable[str] | None = None,
        flow_run_name: str | None = None,
        execution_id: str | None = None,
        flow_ids: Iterable[str] | None = None,
        replanner: Replanner | None = None,
        max_replans: int = 0,
    ) -> ExecutionResult | None:
        """Run a plan while it streams in (`prefect_aether._streaming.StepFeed`): the
        parent flow run starts with the first step `feed` clears, each further step
        joins as it is cleared, and the rest once the plan is whole; a plan invalid at
        the end stops what has not started (`ExecutionResult.stopped`). None, with no
        run, when planning ended before any step could start: the caller runs the
        whole plan as usual (approval, resume, recording).

        `feed` checks each step with this executor's `check`, within `flow_ids`; it
        clears no action that needs an approval.
        """
        await feed.first()
        early = feed.take()
        if not early:
            return None
        identity = await self.execution_for(CandidatePlan(steps=early), execution_id=execution_id)
        values = dict(user_inputs or {})
        run = PlanRun(self, CandidatePlan(steps=early), values, feed.levels, identity)
        run.on_event = on_event
        run.feed, run.streaming, run.streamed = feed, True, [s.id for s in early]
        run.named = flow_run_name is not None
        run.adaptive = self._adaptive(run, flow_ids, None, replanner, max_replans)
        return await run.start(list(tags or ()), flow_run_name or f"plan-streaming-{identity[:8]}")

    def _adaptive(
        self,
        run: PlanRun,
        flow_ids: Iterable[str] | None,
        approval: ApprovalCallback | None,
        replanner: Replanner | None,
        max_replans: int,
    ) -> Adaptive:
        """What `run` may do when a step fails (`_replan`)."""

        async def approve(new: CandidatePlan, whole: CandidatePlan) -> None:
            await self.require_approval(whole, approval=approval, new=new)

        return Adaptive(
            replanner=replanner,
            max_replans=max(0, max_replans),
            check=lambda whole: self.check(whole, run.user_inputs, flow_ids=flow_ids),
            approve=approve,
        )

    def approval_actions(self, plan: CandidatePlan) -> list[str]:
        """The plan's actions tagged `aether:approval`, sorted."""
        return sorted(
            {
                spec.name
                for step in plan.steps
                if (spec := self.catalog.get(step.action or step.action_ref or "")) is not None
                and needs_approval(spec)
            }
        )

    def check_approved(self, plan: CandidatePlan, *, approved: bool) -> None:
        """Raise `ApprovalRequired` when the plan needs an approval and `approved` is False."""
        actions = self.approval_actions(plan)
        if actions and not approved:
            raise _unapproved(plan, actions)

    async def require_approval(
        self,
        plan: CandidatePlan,
        *,
        approved: bool = False,
        approval: ApprovalCallback | None = None,
        new: CandidatePlan | None = None,
    ) -> None:
        """Raise `ApprovalRequired` unless the plan needs no approval or has one (with
        `new`, only `new`'s steps are asked about: a replan's, whose completed steps
        ran already)."""
        actions = self.approval_actions(new or plan)
        if not actions or approved:
            return
        if approval is None:
            raise _unapproved(plan, actions)
        named = ", ".join(actions)
        answer = approval(plan, actions)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is not True:
            raise ApprovalRequired(
                f"plan {plan.plan_id} (uses {named}) was not approved; nothing ran",
                actions=actions,
            )

    async def execution_for(
        self,
        plan: CandidatePlan,
        *,
        resume: str | None = None,
        execution_id: str | None = None,
    ) -> str:
        """The execution id a run of `plan` uses: a new one, `execution_id`, or the
        earlier execution `resume` names (`"latest"`: the newest of this plan).

        Raises:
            AetherUsageError: Both given, a malformed id, or no such execution.
        """
        if resume is not None and execution_id is not None:
            raise AetherUsageError("give resume or execution_id, not both")
        if execution_id is not None:
            if _EXECUTION_ID.fullmatch(execution_id) is None:
                raise AetherUsageError(
                    f"execution_id must be 32 lowercase hex digits, got {execution_id!r}"
                )
            return execution_id
        if resume is None:
            return uuid.uuid4().hex
        if resume != "latest" and _EXECUTION_ID.fullmatch(resume) is None:
            raise AetherUsageError(
                f"resume takes an execution id (32 hex digits) or 'latest', got {resume!r}"
            )
        found = await _executions_of(plan.plan_id, None if resume == "latest" else resume)
        if not found:
            which = "no earlier execution" if resume == "latest" else f"no execution {resume}"
            raise AetherUsageError(f"{which} of plan {plan.plan_id} to resume")
        return found[0]

    def execute_background(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        on_complete: Callable[[ExecutionResult], Any] | None = None,
        tags: Iterable[str] | None = None,
        flow_run_name: str | None = None,
        resume: str | None = None,
        flow_ids: Iterable[str] | None = None,
        approved: bool = False,
    ) -> BackgroundExecutionHandle:
        """Start `execute` in a background thread with its own event loop.

        The plan is validated first, in the caller's thread, so a bad plan
        raises `PlanValidationError` here (and one that needs an approval it was not
        given, `ApprovalRequired`). A crash inside becomes
        `ExecutionResult(ok=False)`, never an unhandled exception.

        Examples:
            >>> handle = PlanExecutor(ActionCatalog()).execute_background  # doctest: +SKIP
        """
        self.check(plan, user_inputs, flow_ids=flow_ids)
        self.check_approved(plan, approved=approved)

        async def main() -> ExecutionResult:
            return await self.aexecute(
                plan,
                user_inputs=user_inputs,
                on_event=on_event,
                tags=tags,
                flow_run_name=flow_run_name,
                resume=resume,
                flow_ids=flow_ids,
                approved=approved,
            )

        return BackgroundExecutionHandle.launch(plan.plan_id, main, on_complete)

    execute = sync_compatible(aexecute)


def _unapproved(plan: CandidatePlan, actions: list[str]) -> ApprovalRequired:
    return ApprovalRequired(
        f"plan {plan.plan_id} uses {', '.join(actions)}, tagged {APPROVAL}: a person must "
        "approve it first (approved=True after they did, or an approval= callback); "
        "nothing ran",
        actions=actions,
    )


async def _executions_of(plan_id: str, execution_id: str | None) -> list[str]:
    """Execution ids of `plan_id`'s runs on the Prefect API, newest first (only
    `execution_id`'s when given)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    wanted = [f"plan:{plan_id}"] + ([f"execution:{execution_id}"] if execution_id else [])
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PLAN_FLOW_NAME])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=wanted)),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=50,
        )
    found = []
    for run in runs:
        for tag in run.tags:
            if tag.startswith("execution:") and tag[10:] not in found:
                found.append(tag[10:])
    return found
