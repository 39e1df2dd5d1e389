"""NodeContext and get_planner inside real flow, subflow and task runs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from prefect import flow, tags, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from prefect_aether import ActionCatalog, CandidatePlan
from prefect_aether.context import NodeContext, get_planner
from prefect_aether.exceptions import AetherUsageError
from prefect_aether.service import PlannerService

pytestmark = pytest.mark.usefixtures("prefect_server")

PLAN = CandidatePlan.from_dict(
    {
        "steps": [
            {"id": "hi", "action": "greet", "inputs": {"name": "${user.name}"}},
            {
                "id": "loud",
                "action": "shout",
                "inputs": {"text": "${hi.result}"},
                "extras": {"run_as": "subflow"},
            },
        ]
    }
)


@pytest.fixture(scope="module")
def service() -> PlannerService:
    catalog = ActionCatalog()
    catalog.register_module("tests.hitl_flows")
    return PlannerService(catalog, planner="heuristic")


def test_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(AetherUsageError, match="inside a Prefect flow run"):
        NodeContext.from_runtime()
    with pytest.raises(AetherUsageError, match="runs in no Prefect run"):
        get_planner(catalog=ActionCatalog())


async def read_tags(flow_run_id: str) -> list[str]:
    async with get_client() as client:
        return list((await client.read_flow_run(UUID(flow_run_id))).tags)


async def test_identity_session_agent_app_and_node_tags_reach_every_plan_run(
    service: PlannerService,
) -> None:
    @flow(name="support-agent", flow_run_name="triage-42")
    async def agent_flow() -> tuple[NodeContext, Any]:
        node = get_planner(service=service)
        result = await node.execute(PLAN, user_inputs={"name": "ada"})
        return node.context, result

    with tags("user:ada", "org:acme", "session:chat-7", "agent:triage-bot", "app:helpdesk"):
        ctx, result = await agent_flow()
    assert result.ok
    assert result.outputs == {"result": "HELLO ADA!"}
    assert ctx.identity.user_id == "ada"
    assert ctx.identity.org_id == "acme"
    assert ctx.identity.mode == "tags"
    assert (ctx.session_id, ctx.agent_id, ctx.app_id) == ("chat-7", "triage-bot", "helpdesk")
    assert (ctx.graph_id, ctx.node_id) == ("support-agent", "triage-42")
    expected = {
        "user:ada",
        "org:acme",
        "session:chat-7",
        "agent:triage-bot",
        "app:helpdesk",
        "origin:agent",
        "graph:support-agent",
        "node:triage-42",
        f"run:{ctx.run_id}",
        f"plan:{PLAN.plan_id}",
    }
    plan_tags = await read_tags(result.flow_run_id)
    assert set(plan_tags) >= expected
    # The plan run is a child of the agent's run, and the subflow step carries the tags too.
    async with get_client() as client:
        plan_run = await client.read_flow_run(UUID(result.flow_run_id))
        assert plan_run.parent_task_run_id is not None
        link = await client.read_task_run(plan_run.parent_task_run_id)
        assert str(link.flow_run_id) == ctx.run_id
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(result.flow_run_id)])
            )
        )
    assert [c.name for c in children] == ["loud"]
    assert set(children[0].tags) >= expected | {"plan_step:loud"}


async def test_overrides_local_identity_and_root_session(service: PlannerService) -> None:
    @task(task_run_name="pick-{who}")
    def inside_task(who: str) -> NodeContext:
        return NodeContext.from_runtime()

    @flow(name="inner-graph")
    async def inner() -> tuple[NodeContext, NodeContext, Any]:
        node = get_planner(service=service)
        result = await node.execute(
            PLAN, user_inputs={"name": "bo"}, session_id="override", origin="schedule"
        )
        return node.context, inside_task("bo"), result

    @flow(name="outer-graph")
    async def outer() -> tuple[str, tuple[NodeContext, NodeContext, Any]]:
        return NodeContext.from_runtime().run_id, await inner()

    root_id, (ctx, task_ctx, result) = await outer()
    assert ctx.identity.mode == "local"
    assert ctx.session_id == root_id
    assert ctx.graph_id == "inner-graph"
    assert task_ctx.node_id == "pick-bo"
    assert task_ctx.task_run_id is not None
    assert task_ctx.run_id == ctx.run_id
    plan_tags = await read_tags(result.flow_run_id)
    assert "session:override" in plan_tags
    assert "origin:schedule" in plan_tags
    assert f"user:{ctx.identity.user_id}" in plan_tags
    assert not any(t.startswith("agent:") for t in plan_tags)


def test_get_planner_builds_the_catalog_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES", '["tests.hitl_flows"]')

    @flow
    def uses_default() -> list[str]:
        return [spec.name for spec in get_planner().catalog]

    assert uses_default() == ["greet", "shout"]
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES", "[]")

    @flow
    def no_catalog() -> None:
        get_planner()

    with pytest.raises(AetherUsageError, match="CATALOG_MODULES"):
        no_catalog()
