"""`PlannerService`: one object that plans, asks for missing values and executes.

It wires together the catalog, a planner chosen from settings (the LLM planner when
an LLM is configured, else, or when the LLM cannot be reached, the heuristic planner)
and a `PlanExecutor`. It never executes an invalid plan, nor a partial one when partial
plans are not allowed. Who asked and why travels as run tags (`user:`, `session:`,
`agent:`, `app:`, `origin:`, `visibility:`, `importance:`).

Examples:
    >>> from prefect_aether import ActionCatalog
    >>> service = PlannerService(ActionCatalog(), planner="heuristic")
    >>> service.planner_kind
    'heuristic'
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

from prefect_aether._internal.budget import Budget, spending
from prefect_aether._internal.dispatch import sync_compatible
from prefect_aether._recorded import (
    Asked,
    execute_recorded,
    plan_and_execute,
    plan_for_execution,
    replanner_for,
)
from prefect_aether.catalog.policy import is_manual
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.exceptions import AetherUsageError
from prefect_aether.execution.events import ApprovalCallback, EventCallback, ExecutionResult
from prefect_aether.execution.executor import BackgroundExecutionHandle, PlanExecutor, Replanner
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning._memory import cache_scope, cached_plan, worked_examples
from prefect_aether.planning.auto import AutoPlanner
from prefect_aether.planning.base import checked_goal
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.inputs import ParsedInputs, parse_inputs, user_input_schemas
from prefect_aether.planning.llm import llm_from_settings
from prefect_aether.planning.llm_planner import (
    ActionPlanner,
    ChatModel,
    EventLog,
    PlanningCallback,
    PlanningContext,
    PlanResult,
)
from prefect_aether.runinfo import Identity, RunInfo
from prefect_aether.settings import current_settings
from prefect_aether.store import PlanStore

__all__ = [
    "Budget",
    "Identity",
    "MissingInputsHandler",
    "Planner",
    "PlannerService",
    "RunInfo",
    "user_input_schemas",
]

logger = logging.getLogger("prefect_aether.service")

PlannerKind = Literal["auto", "heuristic", "llm"]
MissingInputsHandler = Callable[[dict[str, dict[str, Any]]], Awaitable[Mapping[str, Any]]]
"""Asked for the `${user.*}` values a plan still needs (key → JSON schema); returns them."""


class Planner(Protocol):
    """Anything with the planner interface (`ActionPlanner`, `HeuristicPlanner`)."""

    async def plan(
        self, ctx: PlanningContext, *, on_event: PlanningCallback | None = None
    ) -> PlanResult: ...


class PlannerService:
    """Plan goals over a catalog and execute the plans as Prefect flow runs.

    Args:
        catalog: The actions.
        planner: `"auto"` (the LLM planner when an LLM is given or configured in
            settings, else the heuristic planner), `"heuristic"`, `"llm"`, or a
            planner object.
        llm: The LLM for `"auto"`/`"llm"`; from settings when omitted.
        executor: Runs the plans; `PlanExecutor(catalog)` by default.
        store: Keep plans and executions here: planning the same goal (normalized)
            on the same catalog with the same user input keys reuses the stored
            plan without calling the planner, past executions of the goal
            become `memory_snippets`, and executions are recorded.

    Raises:
        AetherUsageError: `planner="llm"` without an LLM, or an unknown planner kind.

    Examples:
        >>> from prefect_aether import ActionCatalog
        >>> PlannerService(ActionCatalog()).executor.fail_fast
        True
    """

    def __init__(
        self,
        catalog: ActionCatalog,
        *,
        planner: PlannerKind | Planner = "auto",
        llm: ChatModel | None = None,
        executor: PlanExecutor | None = None,
        store: PlanStore | None = None,
    ) -> None:
        self.catalog = catalog
        self.executor = executor or PlanExecutor(catalog)
        self.store = store
        self.llm = llm
        self._planner: Planner | None = None
        if isinstance(planner, str):
            if planner not in ("auto", "heuristic", "llm"):
                raise AetherUsageError(
                    f"planner must be 'auto', 'heuristic', 'llm' or a planner, got {planner!r}"
                )
            if self.llm is None and planner != "heuristic":
                self.llm = llm_from_settings()
            if planner == "llm" and self.llm is None:
                raise AetherUsageError(
                    "planner='llm' needs an LLM: pass llm=..., or set "
                    "PREFECT_INTEGRATIONS_AETHER_LLM_BASE_URL and ..._LLM_MODEL"
                )
            self.planner_kind: str = (
                "heuristic" if planner == "heuristic" or self.llm is None else planner
            )
        else:
            self._planner = planner
            self.planner_kind = "custom"

    @property
    def planner(self) -> Planner:
        """The planner in use."""
        if self._planner is None:
            if self.planner_kind == "heuristic" or self.llm is None:
                self._planner = HeuristicPlanner(self.catalog)
            else:
                settings = current_settings()
                llm_planner = ActionPlanner(
                    self.catalog,
                    self.llm,
                    max_iter=settings.planner_max_iter,
                    retrieval_threshold=settings.planner_retrieval_threshold,
                    top_k=settings.planner_top_k,
                )
                self._planner = (
                    AutoPlanner(self.catalog, llm_planner)
                    if self.planner_kind == "auto"
                    else llm_planner
                )
        return self._planner

    # -- planning -----------------------------------------------------------------------

    async def aplan(
        self,
        goal: str,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        external_slots: Mapping[str, Any] | None = None,
        flow_ids: Iterable[str] | None = None,
        instruction: str | None = None,
        allow_partial: bool = True,
        preferred_external_keys: Iterable[str] | None = None,
        memory_snippets: Iterable[str] | None = None,
        artifact_snippets: Iterable[str] | None = None,
        on_event: PlanningCallback | None = None,
        cache: bool = True,
    ) -> PlanResult:
        """Plan `goal`; see `PlanningContext` for the arguments (`cache=False` skips the
        plan store's cache)."""
        ctx = PlanningContext(
            goal=goal,
            user_inputs=dict(user_inputs or {}),
            external_slots=dict(external_slots or {}),
            flow_ids=list(flow_ids) if flow_ids is not None else None,
            instruction=instruction,
            allow_partial_plans=allow_partial,
            preferred_external_keys=list(preferred_external_keys or []) or None,
            memory_snippets=list(memory_snippets or []),
            artifact_snippets=list(artifact_snippets or []),
        )
        return await self.aplan_with_context(ctx, on_event=on_event, cache=cache)

    async def aplan_with_context(
        self,
        ctx: PlanningContext,
        *,
        on_event: PlanningCallback | None = None,
        cache: bool = True,
    ) -> PlanResult:
        """Plan with a ready context.

        With `planner="auto"`, an unreachable LLM (connection refused, timeouts,
        5xx after retries) makes the heuristic planner take over, with a
        `fallback` event saying why; with `planner="llm"` the `LLMError` is raised.
        With a store, a cached plan is returned without planning (unless
        `cache=False`), and every new plan is stored.
        """
        checked_goal(ctx.goal)
        emit = EventLog(on_event)
        if self.store is not None:
            if cache:
                hit = await cached_plan(self.store, self.catalog, ctx, emit, self.planner_key)
                if hit is not None:
                    return hit
            settings = current_settings()
            if not ctx.memory_snippets:
                limit = settings.history_snippets
                manual = [s.name for s in self.catalog if is_manual(s)]
                snippets = (
                    await self.store.memory_snippets(ctx.goal, limit=limit, exclude_actions=manual)
                    if limit
                    else []
                )
                ctx = ctx.model_copy(update={"memory_snippets": snippets})
            if not ctx.examples and settings.planner_examples:
                examples = await worked_examples(
                    self.store, self.catalog, ctx, settings.planner_examples
                )
                ctx = ctx.model_copy(update={"examples": examples})
        result = await self._plan_once(ctx, emit)
        if self.store is not None and result.plan is not None:
            await self.store.save_plan(
                result.plan,
                goal=ctx.goal,
                catalog_fingerprint=cache_scope(self.catalog, ctx, self.planner_key),
                input_keys=ctx.user_inputs,
                validation=result.validation,
                planner=result.planner,
                usage=result.usage,
            )
        return result

    async def _plan_once(self, ctx: PlanningContext, emit: EventLog) -> PlanResult:
        # `auto` never raises for the LLM (`AutoPlanner` falls back); `llm` does.
        result = await self.planner.plan(ctx, on_event=emit)
        return result.model_copy(update={"events": emit.events})

    def replanner(
        self,
        goal: str,
        *,
        user_inputs: Mapping[str, Any],
        parent: CandidatePlan,
        flow_ids: Iterable[str] | None = None,
        on_event: PlanningCallback | None = None,
    ) -> Replanner:
        """What `execute_plan(..., replanner=...)` asks when a step of `parent` fails:
        this service's planner plans the rest of `goal` (the plan cache is skipped), and
        each new plan is stored with its parent (`extras.replan_of`)."""
        return replanner_for(
            lambda ctx: self._plan_once(ctx, EventLog(on_event)),
            self.store,
            goal=goal,
            user_inputs=user_inputs,
            flow_ids=flow_ids,
            parent=parent,
        )

    @property
    def planner_key(self) -> str:
        """The planner as the plan cache tells plans apart: its kind (a planner passed
        in: its class), and for an LLM its base URL, model and whether it trusts a
        heuristic draft that does the whole goal (`planner_trust_draft`)."""
        llm = self.llm
        kind = self.planner_kind
        if kind == "custom":
            planner = type(self.planner)
            kind = f"custom:{planner.__module__}.{planner.__qualname__}"
            llm = getattr(self.planner, "llm", None) or llm
        elif kind == "heuristic" or llm is None:
            return "heuristic"
        if llm is None:
            return kind
        base = getattr(llm, "base_url", type(llm).__name__)
        asked = getattr(self.planner, "llm_planner", self.planner)  # auto asks its LLM planner
        trusts = "|trusts-draft" if getattr(asked, "trust_draft", False) else ""
        return f"{kind}|{base}|{getattr(llm, 'model', '')}{trusts}"

    async def aparse_inputs(
        self,
        message: str,
        missing_keys: Iterable[str],
        *,
        plan: CandidatePlan | None = None,
        instruction: str | None = None,
    ) -> ParsedInputs:
        """Read values for `missing_keys` from a user's message (with the LLM when there is one).

        With `plan`, each value is checked against the schema of the slot it feeds.
        """
        schemas = user_input_schemas(plan, self.catalog) if plan is not None else {}
        return await parse_inputs(
            message, list(missing_keys), schemas=schemas, llm=self.llm, instruction=instruction
        )

    # -- execution ----------------------------------------------------------------------

    async def aexecute_plan(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        run: RunInfo | None = None,
        flow_run_name: str | None = None,
        resume: str | None = None,
        execution_id: str | None = None,
        flow_ids: Iterable[str] | None = None,
        approved: bool = False,
        approval: ApprovalCallback | None = None,
        replanner: Replanner | None = None,
        max_replans: int = 0,
    ) -> ExecutionResult:
        """Execute a valid plan as one flow run tagged with `run`'s tags.

        With a store, the execution is recorded (start, end, flow run, outputs).
        `resume` continues an earlier execution (its id or `"latest"`);
        `execution_id` names this one; `flow_ids`, `approved` and `approval` are
        checked as `PlanExecutor.execute` does; `replanner` and `max_replans` replan
        after a failed step as it does.

        Raises:
            PlanValidationError: The plan is invalid, uses actions outside
                `flow_ids` or misses user values; nothing runs.
            ApprovalRequired: The plan needs a person's approval it did not get.
            ExecutionInterrupted: The Prefect API went away mid-plan; the store
                records the execution as `Interrupted`.
        """
        self.executor.check(plan, user_inputs, flow_ids=flow_ids)
        await self.executor.require_approval(plan, approved=approved, approval=approval)
        return await execute_recorded(
            self.executor,
            self.store,
            plan,
            resume=resume,
            execution_id=execution_id,
            user_inputs=user_inputs,
            on_event=on_event,
            tags=(run or RunInfo()).tags(),
            flow_run_name=flow_run_name,
            flow_ids=flow_ids,
            approved=True,
            approval=approval,
            replanner=replanner,
            max_replans=max_replans,
        )

    def execute_background(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        on_complete: Callable[[ExecutionResult], Any] | None = None,
        run: RunInfo | None = None,
        resume: str | None = None,
        flow_ids: Iterable[str] | None = None,
        approved: bool = False,
    ) -> BackgroundExecutionHandle:
        """Start `execute_plan` in the background; a bad plan (or one that needs an approval
        it was not given) raises here, before anything runs.

        With a store, the background thread records the execution through its
        own connection (database connections belong to one event loop).
        """
        self.executor.check(plan, user_inputs, flow_ids=flow_ids)
        self.executor.check_approved(plan, approved=approved)
        url, timeout = (self.store.url, self.store.timeout) if self.store else (None, None)

        async def main() -> ExecutionResult:
            store = PlanStore(url, timeout=timeout) if url is not None else None
            try:
                return await execute_recorded(
                    self.executor,
                    store,
                    plan,
                    resume=resume,
                    user_inputs=user_inputs,
                    on_event=on_event,
                    tags=(run or RunInfo()).tags(),
                    flow_ids=flow_ids,
                    approved=True,
                )
            finally:
                if store is not None:
                    await store.close()

        return BackgroundExecutionHandle.launch(plan.plan_id, main, on_complete)

    async def aplan_and_execute(
        self,
        goal: str,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        ask_missing: MissingInputsHandler | None = None,
        planning_events_cb: PlanningCallback | None = None,
        execution_events_cb: EventCallback | None = None,
        run: RunInfo | None = None,
        approved: bool = False,
        approval: ApprovalCallback | None = None,
        max_replans: int = 0,
        budget: Budget | None = None,
        stream: bool = False,
        **plan_kwargs: Any,
    ) -> tuple[PlanResult, ExecutionResult | None]:
        """Plan `goal`, then execute the plan if it may run.

        A plan runs when it is valid. A partial plan (it needs `${user.*}`
        values nobody gave) runs only with `allow_partial=True` and an
        `ask_missing` handler that supplies the values; otherwise the result
        comes back with no execution (`None`) and the plan result says what is
        missing. `plan_kwargs` go to `plan` (`instruction`, `flow_ids`, ...); the
        executor checks `flow_ids` again. A plan with `aether:approval` actions runs
        only `approved` or when `approval` says so (else `ApprovalRequired`).

        With `max_replans`, a step that fails after its retries makes the planner plan
        the rest of the goal (completed steps are bound, never run again; the failed
        action is not used again) in the same parent flow run, up to that many times;
        each new plan is validated, stored with its parent, and asks for approval
        again when it adds `aether:approval` actions. `budget` bounds the whole call
        (LLM calls, tokens, seconds; settings `budget_*` by default): past it, nothing
        further starts, and `ExecutionResult.stopped` says which budget.

        With `stream=True` and an LLM planner, steps start while the LLM's answer
        streams in: each once it is complete in the stream, reads and computes only
        (writes and effects wait for the whole plan), and is valid with the steps it
        binds (`prefect_aether._streaming`); a plan invalid at the end stops what has not
        started. Never when an action the plan may use needs an approval (the plan
        waits whole for it); the heuristic planner ignores `stream`.
        """
        with spending(budget):
            asked = Asked(
                goal,
                user_inputs,
                allow_partial,
                ask_missing,
                planning_events_cb,
                max_replans,
                plan_kwargs,
            )
            return await plan_and_execute(
                self,
                asked,
                stream=stream,
                on_event=execution_events_cb,
                run=run,
                approved=approved,
                approval=approval,
            )

    async def aplan_and_execute_background(
        self,
        goal: str,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        ask_missing: MissingInputsHandler | None = None,
        planning_events_cb: PlanningCallback | None = None,
        execution_events_cb: EventCallback | None = None,
        on_complete: Callable[[ExecutionResult], Any] | None = None,
        run: RunInfo | None = None,
        approved: bool = False,
        **plan_kwargs: Any,
    ) -> tuple[PlanResult, BackgroundExecutionHandle | None]:
        """Like `plan_and_execute`, but the execution runs in the background."""
        result, values = await plan_for_execution(
            self.aplan,
            self.catalog,
            goal,
            user_inputs,
            allow_partial,
            ask_missing,
            planning_events_cb,
            plan_kwargs,
        )
        if result.plan is None or values is None:
            return result, None
        handle = self.execute_background(
            result.plan,
            user_inputs=values,
            on_event=execution_events_cb,
            on_complete=on_complete,
            run=run,
            flow_ids=plan_kwargs.get("flow_ids"),
            approved=approved,
        )
        return result, handle

    plan = sync_compatible(aplan)
    plan_with_context = sync_compatible(aplan_with_context)
    parse_inputs = sync_compatible(aparse_inputs)
    execute_plan = sync_compatible(aexecute_plan)
    plan_and_execute = sync_compatible(aplan_and_execute)
    plan_and_execute_background = sync_compatible(aplan_and_execute_background)
