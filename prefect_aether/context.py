"""Where code runs in Prefect, and a planner bound to it.

`NodeContext.from_runtime()` reads Prefect's run context inside a flow, a
subflow or a task. `get_planner()` returns a `NodePlanner` that plans and
executes on behalf of that run: the plan's flow run carries the caller's
identity, session, agent and app, plus `graph:<flow>`, `node:<run name>` and
`run:<flow run id>` tags that lead back to the run that asked.

Examples:
    >>> from prefect import flow
    >>> @flow
    ... def agent_step() -> str:
    ...     return NodeContext.from_runtime().graph_id
    >>> agent_step()  # doctest: +SKIP
    'agent-step'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext
from pydantic import BaseModel, Field

from prefect_aether._internal.dispatch import sync_compatible
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.exceptions import AetherUsageError
from prefect_aether.execution.events import ApprovalCallback, EventCallback, ExecutionResult
from prefect_aether.execution.executor import BackgroundExecutionHandle, Replanner
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning.inputs import ParsedInputs
from prefect_aether.planning.llm_planner import PlanningCallback, PlanningContext, PlanResult
from prefect_aether.runinfo import Identity, Importance, Origin, RunInfo, Visibility
from prefect_aether.service import MissingInputsHandler, PlannerService
from prefect_aether.settings import current_settings

__all__ = ["NodeContext", "NodePlanner", "get_planner"]


def _tag_value(tags: Iterable[str], prefix: str) -> str | None:
    """The value of the first `prefix:<value>` tag, if any."""
    for tag in tags:
        if tag.startswith(f"{prefix}:") and len(tag) > len(prefix) + 1:
            return tag[len(prefix) + 1 :]
    return None


class NodeContext(BaseModel):
    """The Prefect run a piece of code runs in, seen as a node of a graph.

    Examples:
        >>> ctx = NodeContext(run_id="r1", graph_id="etl", node_id="etl-run",
        ...                   session_id="r1", identity=Identity(user_id="ada"))
        >>> ctx.node_tags()
        ['graph:etl', 'node:etl-run', 'run:r1']
    """

    run_id: str = Field(description="The flow run id.")
    graph_id: str = Field(description="The flow's name.")
    node_id: str = Field(description="The task run name inside a task, else the flow run name.")
    task_run_id: str | None = Field(default=None, description="The task run id, inside a task.")
    deployment_id: str | None = Field(default=None, description="The flow run's deployment.")
    session_id: str = Field(description="`session:<id>` tag, else the root flow run id.")
    agent_id: str | None = Field(default=None, description="From an `agent:<id>` tag.")
    app_id: str | None = Field(default=None, description="From an `app:<id>` tag.")
    identity: Identity = Field(description="From `user:`/`org:` tags, else the local user.")
    tags: list[str] = Field(default_factory=list, description="Tags of the flow (and task) run.")

    @classmethod
    def from_runtime(cls) -> NodeContext:
        """Read the current flow or task run.

        Raises:
            AetherUsageError: Not inside a Prefect flow run or task run.
        """
        flow_ctx = FlowRunContext.get()
        task_ctx = TaskRunContext.get()
        flow_run = flow_ctx.flow_run if flow_ctx is not None else None
        if flow_run is None:
            where = "a task run outside any flow" if task_ctx is not None else "no Prefect run"
            raise AetherUsageError(
                f"NodeContext.from_runtime() / get_planner() must be called inside a Prefect "
                f"flow run or a task run within one; this code runs in {where}"
            )
        flow_name = flow_ctx.flow.name if flow_ctx is not None and flow_ctx.flow else ""
        task_run = task_ctx.task_run if task_ctx is not None else None
        tags = list(dict.fromkeys([*flow_run.tags, *(task_run.tags if task_run else [])]))
        user = _tag_value(tags, "user")
        identity = (
            Identity(user_id=user, org_id=_tag_value(tags, "org"))
            if user
            else Identity.local().model_copy(update={"org_id": _tag_value(tags, "org")})
        )
        session = _tag_value(tags, "session") or _root_flow_run_id(str(flow_run.id))
        return cls(
            run_id=str(flow_run.id),
            graph_id=flow_name,
            node_id=task_run.name if task_run is not None else flow_run.name,
            task_run_id=str(task_run.id) if task_run is not None else None,
            deployment_id=str(flow_run.deployment_id) if flow_run.deployment_id else None,
            session_id=session,
            agent_id=_tag_value(tags, "agent"),
            app_id=_tag_value(tags, "app"),
            identity=identity,
            tags=tags,
        )

    def node_tags(self) -> list[str]:
        """The tags that lead from a plan's runs back to this node."""
        return [f"graph:{self.graph_id}", f"node:{self.node_id}", f"run:{self.run_id}"]


def _root_flow_run_id(run_id: str) -> str:
    """The top flow run above the current one (Prefect's runtime walks the parents)."""
    from prefect.runtime import flow_run

    root = flow_run.root_flow_run_id
    return str(root) if root else run_id


class NodePlanner:
    """A `PlannerService` acting for one node: every plan it runs is tagged for it.

    Identity, session, agent and app come from the node unless a call passes
    its own; origin is `agent` when there is an agent id, else `user`.

    Examples:
        >>> from prefect_aether import ActionCatalog
        >>> ctx = NodeContext(run_id="r", graph_id="g", node_id="n", session_id="s",
        ...                   identity=Identity(user_id="ada"))
        >>> planner = NodePlanner(PlannerService(ActionCatalog(), planner="heuristic"), ctx)
        >>> planner.run_info().tags()
        ['user:ada', 'session:s', 'origin:user', 'graph:g', 'node:n', 'run:r']
    """

    def __init__(self, service: PlannerService, context: NodeContext) -> None:
        self.service = service
        self.context = context

    @property
    def catalog(self) -> ActionCatalog:
        """The service's catalog."""
        return self.service.catalog

    def run_info(
        self,
        *,
        identity: Identity | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        origin: Origin | None = None,
        visibility: Visibility | None = None,
        importance: Importance | None = None,
        tags: Iterable[str] | None = None,
    ) -> RunInfo:
        """The node's run info, with the given fields overriding it."""
        agent = agent_id or self.context.agent_id
        return RunInfo(
            identity=identity or self.context.identity,
            session_id=session_id or self.context.session_id,
            agent_id=agent,
            app_id=app_id or self.context.app_id,
            origin=origin or ("agent" if agent else "user"),
            visibility=visibility,
            importance=importance,
            extra_tags=[*self.context.node_tags(), *(tags or [])],
        )

    async def aplan(self, goal: str, **kwargs: Any) -> PlanResult:
        """`PlannerService.plan`."""
        return await self.service.aplan(goal, **kwargs)

    async def aplan_with_context(
        self, ctx: PlanningContext, *, on_event: PlanningCallback | None = None
    ) -> PlanResult:
        """`PlannerService.plan_with_context`."""
        return await self.service.aplan_with_context(ctx, on_event=on_event)

    async def aparse_inputs(
        self, message: str, missing_keys: Iterable[str], **kwargs: Any
    ) -> ParsedInputs:
        """`PlannerService.parse_inputs`."""
        return await self.service.aparse_inputs(message, missing_keys, **kwargs)

    async def aexecute(
        self,
        plan: CandidatePlan,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        on_event: EventCallback | None = None,
        resume: str | None = None,
        execution_id: str | None = None,
        flow_ids: Iterable[str] | None = None,
        approved: bool = False,
        approval: ApprovalCallback | None = None,
        replanner: Replanner | None = None,
        max_replans: int = 0,
        **run: Any,
    ) -> ExecutionResult:
        """Execute `plan` for this node; `run` overrides fields of `run_info`
        (`resume`, `execution_id`, `flow_ids`, `approved`, `approval`, `replanner` and
        `max_replans` as in `PlanExecutor.execute`)."""
        return await self.service.aexecute_plan(
            plan,
            user_inputs=user_inputs,
            on_event=on_event,
            run=self.run_info(**run),
            resume=resume,
            execution_id=execution_id,
            flow_ids=flow_ids,
            approved=approved,
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
        **run: Any,
    ) -> BackgroundExecutionHandle:
        """Start `execute` in the background."""
        return self.service.execute_background(
            plan,
            user_inputs=user_inputs,
            on_event=on_event,
            on_complete=on_complete,
            run=self.run_info(**run),
        )

    async def aplan_and_execute(
        self,
        goal: str,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        ask_missing: MissingInputsHandler | None = None,
        run: Mapping[str, Any] | None = None,
        **plan_kwargs: Any,
    ) -> tuple[PlanResult, ExecutionResult | None]:
        """`PlannerService.plan_and_execute` for this node (`max_replans`, `budget` and
        `stream` in `plan_kwargs` too); `run` overrides `run_info` fields."""
        return await self.service.aplan_and_execute(
            goal,
            user_inputs=user_inputs,
            allow_partial=allow_partial,
            ask_missing=ask_missing,
            run=self.run_info(**dict(run or {})),
            **plan_kwargs,
        )

    async def aplan_and_execute_background(
        self,
        goal: str,
        *,
        user_inputs: Mapping[str, Any] | None = None,
        allow_partial: bool = False,
        ask_missing: MissingInputsHandler | None = None,
        run: Mapping[str, Any] | None = None,
        **plan_kwargs: Any,
    ) -> tuple[PlanResult, BackgroundExecutionHandle | None]:
        """`PlannerService.plan_and_execute_background` for this node."""
        return await self.service.aplan_and_execute_background(
            goal,
            user_inputs=user_inputs,
            allow_partial=allow_partial,
            ask_missing=ask_missing,
            run=self.run_info(**dict(run or {})),
            **plan_kwargs,
        )

    plan = sync_compatible(aplan)
    plan_with_context = sync_compatible(aplan_with_context)
    parse_inputs = sync_compatible(aparse_inputs)
    execute = sync_compatible(aexecute)
    plan_and_execute = sync_compatible(aplan_and_execute)
    plan_and_execute_background = sync_compatible(aplan_and_execute_background)


def get_planner(
    *, catalog: ActionCatalog | None = None, service: PlannerService | None = None
) -> NodePlanner:
    """A `NodePlanner` for the current flow or task run.

    Args:
        catalog: Plan over these actions (a service is built for it from settings).
        service: Use this service. With neither, the catalog is built from the
            `catalog_modules` setting (deployments need the async
            `CatalogSource.build`; pass the catalog it returns).

    Raises:
        AetherUsageError: Called outside any Prefect run, or no catalog at all.

    Examples:
        >>> get_planner()  # doctest: +SKIP
    """
    context = NodeContext.from_runtime()
    if service is None:
        if catalog is None:
            settings = current_settings()
            if not settings.catalog_modules:
                raise AetherUsageError(
                    "get_planner() needs catalog=..., service=..., or the "
                    "PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES setting"
                )
            catalog = CatalogSource(modules=settings.catalog_modules).build_local()
        service = PlannerService(catalog)
    return NodePlanner(service, context)
