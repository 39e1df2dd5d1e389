"""The deployable flows with a person in the loop: typed forms, approval, timeouts."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.flow_runs import resume_flow_run
from prefect.input.run_input import keyset_from_paused_state

from prefect_aether.blocks import LLMConfig
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.flows import execute_plan, plan_and_execute, user_input_model
from prefect_aether.store import PlanStore
from tests.llm_server import Reply, ScriptedLLMServer

pytestmark = pytest.mark.usefixtures("prefect_server")

SOURCE = CatalogSource(modules=["tests.hitl_flows"])
PLAN = {
    "steps": [
        {
            "id": "hi",
            "action": "greet",
            "inputs": {"name": "${user.name}", "times": "${user.times}", "tone": "${user.tone}"},
        },
        {"id": "loud", "action": "shout", "inputs": {"text": "${hi.result}"}},
    ]
}


@pytest.fixture(autouse=True)
def fast_pause_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_PAUSE_POLL_INTERVAL", "1")


async def paused_run(tag: str, timeout: float = 60) -> FlowRun:
    """Wait until the run tagged `tag` is paused, and return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with get_client() as client:
        while asyncio.get_running_loop().time() < deadline:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
            )
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            if paused:
                return paused[0]
            await asyncio.sleep(0.3)
    raise AssertionError(f"no run tagged {tag!r} paused within {timeout} s")


async def form_schema(run: FlowRun) -> dict[str, Any]:
    assert run.state is not None
    keyset = keyset_from_paused_state(run.state)
    async with get_client() as client:
        schema = await client.read_flow_run_input(run.id, keyset["schema"])
    return dict(json.loads(schema))


async def plan_runs_under(parent: UUID) -> list[FlowRun]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["aether-plan"]))
        )
        links = {
            r.id: await client.read_task_run(r.parent_task_run_id)
            for r in runs
            if r.parent_task_run_id
        }
    return [r for r in runs if r.id in links and links[r.id].flow_run_id == parent]


def test_the_form_is_typed_from_the_slot_schemas() -> None:
    form = user_input_model(
        {
            "name": {"type": "string"},
            "times": {"type": "integer", "minimum": 1},
            "tone": {"enum": ["plain", "loud"], "type": "string"},
            "2nd-key": {},
        },
        {"name": ["hi.name"]},
    )
    schema = form.model_json_schema()
    props = schema["properties"]
    assert props["times"]["type"] == "integer"
    assert props["times"]["minimum"] == 1
    assert props["tone"]["enum"] == ["plain", "loud"]
    assert props["name"]["description"] == "Needed by hi.name."
    assert "2nd-key" in props
    assert form(name="a", times=2, tone="loud", **{"2nd-key": [1]}).model_dump(by_alias=True) == {
        "2nd-key": [1],
        "name": "a",
        "times": 2,
        "tone": "loud",
    }
    with pytest.raises(ValueError, match="times"):
        form(name="a", times="many", tone="loud", **{"2nd-key": 1})


async def test_missing_values_pause_for_a_typed_form_then_the_plan_runs() -> None:
    tag = f"test:{uuid.uuid4().hex[:8]}"
    with tags(tag, "user:ada"):
        running = asyncio.ensure_future(
            execute_plan(PLAN, user_inputs={"times": 2}, catalog=SOURCE, return_state=True)
        )
    run = await paused_run(tag)
    schema = await form_schema(run)
    assert sorted(schema["properties"]) == ["name", "tone"]
    assert schema["properties"]["tone"]["enum"] == ["plain", "loud"]
    assert set(schema["required"]) == {"name", "tone"}
    assert await plan_runs_under(run.id) == []
    await resume_flow_run(run.id, run_input={"name": "grace", "tone": "loud"})
    state = await asyncio.wait_for(running, 90)
    assert state.is_completed(), state.message
    report = await state.aresult()
    assert report["ok"] is True
    assert report["outputs"] == {"result": "HELLO GRACE HELLO GRACE!"}
    plan_runs = await plan_runs_under(run.id)
    assert [str(r.id) for r in plan_runs] == [report["plan_flow_run_id"]]
    assert "user:ada" in plan_runs[0].tags
    assert "graph:aether-execute-plan" in plan_runs[0].tags


async def test_rejected_plan_ends_the_run_and_nothing_executes() -> None:
    tag = f"test:{uuid.uuid4().hex[:8]}"
    with tags(tag):
        running = asyncio.ensure_future(
            plan_and_execute(
                "greet someone",
                user_inputs={"name": "ada"},
                catalog=SOURCE,
                approve=True,
                return_state=True,
            )
        )
    run = await paused_run(tag)
    schema = await form_schema(run)
    assert sorted(schema["properties"]) == ["approver", "comment", "decision"]
    # Nothing chosen by default: the reviewer must pick approve or reject.
    assert schema["required"] == ["decision"]
    assert "default" not in schema["properties"]["decision"]
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]
    # The form itself shows the plan: its steps, actions and the values they will get.
    assert run.state is not None
    async with get_client() as client:
        description = json.loads(
            await client.read_flow_run_input(
                run.id, keyset_from_paused_state(run.state)["description"]
            )
        )
    assert "| greet | greet |" in description
    assert "ada" in description
    assert "/v2/runs/flow-run/" in description
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="aether-approval-"))
        )
    [approval] = [a for a in artifacts if a.flow_run_id == run.id]
    # The values the plan will use are on the approval screen, escaped.
    assert '| name | greet | \\"ada\\" |' in str(approval.data)
    await resume_flow_run(
        run.id,
        run_input={"decision": "reject", "approver": "rita", "comment": "not \x1b[31mtoday"},
    )
    state = await asyncio.wait_for(running, 60)
    assert state.is_cancelled()
    assert state.message is not None
    assert "rejected; nothing was executed: not [31mtoday" not in state.message
    assert "rejected; nothing was executed: not today" in state.message
    assert await plan_runs_under(run.id) == []
    logs = await run_logs(run.id, "rejected by")
    assert "Waiting for an approval of plan" in logs
    assert f"/runs/flow-run/{run.id}" in logs
    assert "rejected by rita: not today" in logs
    [decision] = await decisions(run.id)
    assert (decision["approved"], decision["approver"], decision["comment"]) == (
        False,
        "rita",
        "not today",
    )
    [event] = await plan_events("prefect-aether.plan.rejected", run.id)
    assert event.payload == {"approved": False, "approver": "rita", "comment": "not today"}


async def run_logs(flow_run_id: UUID, until: str) -> str:
    """The flow run's log messages, once one contains `until` (logs arrive in batches)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    for _ in range(100):
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        text = "\n".join(log.message for log in logs)
        if until in text:
            break
        await asyncio.sleep(0.2)
    return text


async def decisions(flow_run_id: UUID) -> list[dict[str, Any]]:
    store = PlanStore()
    try:
        found = []
        for plan_id in {plan.plan_id for plan in await store.list_plans(limit=200)}:
            found += await store.approvals_of(plan_id)
        return [d for d in found if d["flow_run_id"] == str(flow_run_id)]
    finally:
        await store.close()


async def plan_events(name: str, flow_run_id: UUID) -> list[Any]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    for _ in range(100):
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[name]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
        if page.events:
            return list(page.events)
        await asyncio.sleep(0.2)
    return []


async def test_approved_plan_runs() -> None:
    tag = f"test:{uuid.uuid4().hex[:8]}"
    with tags(tag):
        running = asyncio.ensure_future(
            plan_and_execute(
                "greet someone",
                catalog=SOURCE,
                approve=True,
                planner="heuristic",
                return_state=True,
            )
        )
    run = await paused_run(tag)
    assert sorted((await form_schema(run))["properties"]) == ["name"]
    await resume_flow_run(run.id, run_input={"name": "lin"})
    run = await paused_run(tag)
    assert sorted((await form_schema(run))["properties"]) == ["approver", "comment", "decision"]
    comment = "looks fine, see https://evil.example/steal or www.evil.example"
    await resume_flow_run(
        run.id,
        run_input={"decision": "approve", "approver": "mallory@evil.example", "comment": comment},
    )
    state = await asyncio.wait_for(running, 90)
    assert state.is_completed(), state.message
    report = await state.aresult()
    assert report["outputs"] == {"result": "hello lin"}
    assert report["planner"] == "heuristic"
    logs = await run_logs(run.id, "approved by")
    # The new UI links URLs, addresses and www. names in log lines: none is left whole.
    assert "approved by mallory\u200b@evil.example: looks fine, see https\u200b://" in logs
    for link in ("https://", "www.evil", "mallory@evil"):
        assert link not in logs
    [decision] = await decisions(run.id)
    assert decision["approved"] is True
    [event] = await plan_events("prefect-aether.plan.approved", run.id)
    assert event.payload["comment"] == comment


async def test_nobody_answering_ends_the_run_with_a_clear_message() -> None:
    state = await execute_plan(PLAN, catalog=SOURCE, pause_timeout=2, return_state=True)
    assert state.is_failed()
    with pytest.raises(
        Exception, match=r"nobody provided the plan's inputs within 2 s \(pause_timeout\)"
    ):
        await state.aresult()


async def test_a_goal_without_a_plan_fails_the_run_clearly() -> None:
    state = await plan_and_execute(
        "launch the rockets", catalog=SOURCE, planner="heuristic", return_state=True
    )
    assert state.is_failed()
    with pytest.raises(Exception, match="no plan for 'launch the rockets'"):
        await state.aresult()


async def test_a_daily_run_with_the_same_goal_and_catalog_calls_the_llm_once(
    llm_server: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PREFECT_INTEGRATIONS_AETHER_STORE_URL", f"sqlite+aiosqlite:///{tmp_path}/daily.db"
    )
    await LLMConfig(base_url=llm_server.base_url, model="m", max_retries=0).save(
        "daily-llm", overwrite=True
    )
    plan = {"steps": [{"id": "hi", "action": "greet", "inputs": {"name": "${user.name}"}}]}
    llm_server.script(Reply.chat(json.dumps(plan)))
    reports = []
    for day in ("monday", "tuesday", "wednesday"):
        report = await plan_and_execute(
            "greet the team",
            user_inputs={"name": day},
            catalog=SOURCE,
            llm_block="daily-llm",
        )
        reports.append(report)
    assert len(llm_server.requests) == 1
    assert [r["cached"] for r in reports] == [False, True, True]
    # `auto`: the LLM's plan ties with the heuristic planner's, which stands.
    assert [r["planner"] for r in reports] == ["heuristic", "heuristic", "heuristic"]
    assert [r["outputs"]["result"] for r in reports] == [
        "hello monday",
        "hello tuesday",
        "hello wednesday",
    ]
    # Each run executed afresh (resume is off for the deployable flow).
    assert len({r["plan_flow_run_id"] for r in reports}) == 3
    store = PlanStore()
    try:
        history = await store.history(goal="greet the team")
        assert [e.status for _, e in history] == ["Completed"] * 3
    finally:
        await store.close()


async def test_a_prefect_retry_of_the_flow_continues_its_execution(tmp_path: Path) -> None:
    from tests.exec_flows import executions

    log = str(tmp_path)
    plan = {
        "steps": [
            {"id": "a", "action": "emit_number", "inputs": {"value": 61, "log_dir": log}},
            {"id": "b", "action": "fail_once", "inputs": {"value": "${a.result}", "log_dir": log}},
        ]
    }
    retried = execute_plan.with_options(retries=1, retry_delay_seconds=0)
    summary = await retried(plan, catalog=CatalogSource(modules=["tests.exec_flows"]))
    assert summary["ok"] is True
    assert summary["reused"] == ["a"]
    # The failed attempt ran a; the retry is the same execution, so a is reused.
    assert executions(tmp_path, "emit_number-61") == 1
    assert executions(tmp_path, "fail_once") == 2
    # Two separate runs of the flow are two executions: a runs again.
    second = await execute_plan(plan, catalog=CatalogSource(modules=["tests.exec_flows"]))
    assert second["ok"] is True
    assert executions(tmp_path, "emit_number-61") == 2


REPLAN_SOURCE = CatalogSource(
    entrypoints=[
        "tests.adaptive_flows:load_holdings",
        "tests.adaptive_flows:fetch_rates",
        "tests.adaptive_flows:fetch_rates_paid",
        "tests.adaptive_flows:value_portfolio",
    ]
)


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_replan_that_adds_an_approval_action_pauses_the_plan_run_again(
    decision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first plan needs no approval; its rates feed fails, and the only other feed is
    # tagged aether:approval: the replan pauses the plan's run for a person again.
    monkeypatch.setenv("AETHER_TEST_RUN_LOG", str(tmp_path))
    holdings = tmp_path / "h.csv"
    holdings.write_text("asset,units\ngold,3\noil,10\n")
    tag = f"test:{uuid.uuid4().hex[:8]}"
    with tags(tag):
        running = asyncio.ensure_future(
            plan_and_execute(
                f"load the holdings from {holdings}, fetch the rates of market 'EU', "
                "then value the portfolio",
                catalog=REPLAN_SOURCE,
                planner="heuristic",
                max_replans=1,
                return_state=True,
            )
        )
    run = await paused_run(tag)
    assert run.name.startswith("plan-")  # the plan's own run (`aether-plan`) waits
    assert sorted((await form_schema(run))["properties"]) == ["approver", "comment", "decision"]
    assert len(list(tmp_path.glob("fetch-rates.*"))) == 1
    assert list(tmp_path.glob("fetch-rates-paid.*")) == []
    await resume_flow_run(run.id, run_input={"decision": decision, "approver": "ops"})
    state = await asyncio.wait_for(running, 90)
    paid = len(list(tmp_path.glob("fetch-rates-paid.*")))
    if decision == "approve":
        assert state.is_completed(), state.message
        report = await state.aresult()
        assert report["ok"] is True
        assert len(report["replans"]) == 1
        assert paid == 1
    else:
        assert state.is_failed()
        assert paid == 0
    assert len(list(tmp_path.glob("load-holdings.*"))) == 1
    [recorded] = await decisions(run.id)
    assert recorded["approved"] is (decision == "approve")
