"""Adaptive execution against a real Prefect server: replanning after a failed step (in
the same parent flow run, completed steps never run again, counted by real runs), the
replan limit, approval asked again, and a budget stop for each budget
(tests/adaptive_flows.py; the scripted LLM server plays the model)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from prefect_aether import (
    ActionCatalog,
    Budget,
    CandidatePlan,
    OpenAICompatibleLLM,
    PlannerService,
    PlanStore,
)
from tests import adaptive_flows
from tests.adaptive_flows import runs
from tests.llm_server import Reply, ScriptedLLMServer

pytestmark = pytest.mark.usefixtures("prefect_server")

FLOWS = [
    adaptive_flows.load_holdings,
    adaptive_flows.fetch_rates,
    adaptive_flows.fetch_rates_mirror,
    adaptive_flows.value_portfolio,
]


@pytest.fixture
def run_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("AETHER_TEST_RUN_LOG", str(folder))
    return folder


@pytest.fixture
def holdings(tmp_path: Path) -> Path:
    path = tmp_path / "h.csv"
    path.write_text("asset,units\ngold,3\noil,10\n")
    return path


def catalog_of(*flows: Any) -> ActionCatalog:
    catalog = ActionCatalog()
    for f in flows:
        catalog.register(f)
    return catalog


def goal(holdings: Path) -> str:
    return (
        f"load the holdings from {holdings}, fetch the rates of market 'EU', "
        "then value the portfolio"
    )


async def test_a_replan_reaches_the_goal_without_running_a_completed_step_again(
    run_log: Path, holdings: Path, tmp_path: Path
) -> None:
    store = PlanStore(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}")
    service = PlannerService(catalog_of(*FLOWS), planner="heuristic", store=store)
    events: list[Any] = []
    planned, result = await service.aplan_and_execute(
        goal(holdings), max_replans=2, execution_events_cb=events.append
    )
    assert planned.plan is not None
    assert [s.action for s in planned.plan.steps] == [
        "load-holdings",
        "fetch-rates",
        "value-portfolio",
    ]
    assert result is not None
    assert result.ok, result.errors
    assert result.outputs == {"result": 11.0}
    [replan] = result.replans
    assert replan.failed_step == "fetch_rates"
    assert "the rates feed for EU is down" in replan.error
    assert replan.steps_reused == ["load_holdings"]
    assert replan.new_steps == ["fetch_rates_mirror", "value_portfolio_r1"]
    # Real runs: what completed ran once; the failed action was not tried again.
    assert {a: runs(run_log, a) for a in ("load-holdings", "fetch-rates")} == {
        "load-holdings": 1,
        "fetch-rates": 1,
    }
    assert runs(run_log, "fetch-rates-mirror") == runs(run_log, "value-portfolio") == 1
    assert any(e.phase == "replanned" for e in events)
    # One parent flow run, Completed, with every step as a child run.
    async with get_client() as client:
        [parent] = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[result.flow_run_id]))
        )
        assert parent.state is not None
        assert parent.state.is_completed()
        wanted = {"load_holdings", "fetch_rates", "fetch_rates_mirror", "value_portfolio_r1"}
        names: set[str] = set()
        for _ in range(40):  # task runs reach the API a moment after they end
            children = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[parent.id]))
            )
            names = {t.name.split("-")[0] for t in children}
            if wanted <= names:
                break
            await asyncio.sleep(0.25)
        assert wanted <= names
        replanned: list[Any] = []
        for _ in range(40):  # events are stored a moment after they are emitted
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["prefect-aether.plan.replanned"]),
                    resource=EventResourceFilter(
                        id=[f"prefect-aether.plan.{planned.plan.plan_id}"]
                    ),
                ),
                limit=50,
            )
            replanned = page.events
            if replanned:
                break
            await asyncio.sleep(0.25)
    assert [e.payload["failed_step"] for e in replanned] == ["fetch_rates"]
    # The new plan is stored with its parent.
    stored = await store.get_plan(replan.plan_id)
    assert stored is not None
    assert stored.plan.extras["replan_of"] == planned.plan.plan_id
    assert [s.id for s in stored.plan.steps] == [
        "load_holdings",
        "fetch_rates_mirror",
        "value_portfolio_r1",
    ]
    await store.close()


async def test_without_replans_a_failed_step_fails_the_plan_as_before(
    run_log: Path, holdings: Path
) -> None:
    service = PlannerService(catalog_of(*FLOWS), planner="heuristic")
    _, result = await service.aplan_and_execute(goal(holdings))
    assert result is not None
    assert not result.ok
    assert result.replans == []
    assert set(result.errors) == {"fetch_rates"}
    assert runs(run_log, "fetch-rates-mirror") == 0


async def test_the_replan_limit_holds(
    run_log: Path, holdings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AETHER_TEST_MIRROR_DOWN", "1")
    service = PlannerService(catalog_of(*FLOWS), planner="heuristic")
    _, result = await service.aplan_and_execute(goal(holdings), max_replans=1)
    assert result is not None
    assert not result.ok
    assert len(result.replans) == 1
    # The replan's own step failed; no second replan.
    assert set(result.errors) == {"fetch_rates_mirror"}
    assert runs(run_log, "fetch-rates") == runs(run_log, "fetch-rates-mirror") == 1
    assert runs(run_log, "load-holdings") == 1


async def test_a_replan_that_adds_an_approval_action_asks_again(
    run_log: Path, holdings: Path
) -> None:
    flows = [f for f in FLOWS if f is not adaptive_flows.fetch_rates_mirror]
    service = PlannerService(
        catalog_of(*flows, adaptive_flows.fetch_rates_paid), planner="heuristic"
    )
    asked: list[list[str]] = []

    def refuse(plan: CandidatePlan, actions: list[str]) -> bool:
        asked.append(actions)
        return False

    _, refused = await service.aplan_and_execute(goal(holdings), max_replans=1, approval=refuse)
    assert asked == [["fetch-rates-paid"]]
    assert refused is not None
    assert not refused.ok
    assert refused.replans == []
    assert runs(run_log, "fetch-rates-paid") == 0
    _, approved = await service.aplan_and_execute(
        goal(holdings), max_replans=1, approval=lambda plan, actions: True
    )
    assert approved is not None
    assert approved.ok, approved.errors
    assert runs(run_log, "fetch-rates-paid") == 1


def llm_answer(steps: list[dict[str, Any]], **tokens: int) -> Reply:
    return Reply.chat(json.dumps({"steps": steps, "unserved": []}), **tokens)


def first_plan(holdings: Path) -> list[dict[str, Any]]:
    return [
        {"id": "load", "action": "load-holdings", "inputs": {"path": str(holdings)}},
        {"id": "rates", "action": "fetch-rates", "inputs": {"market": "EU"}},
        {
            "id": "value",
            "action": "value-portfolio",
            "inputs": {"holdings": "${load}", "rates": "${rates}"},
        },
    ]


REST = [
    {"id": "mirror", "action": "fetch-rates-mirror", "inputs": {"market": "EU"}},
    {
        "id": "value",
        "action": "value-portfolio",
        "inputs": {"holdings": "${load}", "rates": "${mirror}"},
    },
]


def llm_service(server: ScriptedLLMServer) -> PlannerService:
    llm = OpenAICompatibleLLM(server.base_url, "m", max_retries=0)
    return PlannerService(catalog_of(*FLOWS), planner="llm", llm=llm)


async def test_the_llm_replans_from_the_facts_of_the_failure(
    llm_server: ScriptedLLMServer, run_log: Path, holdings: Path
) -> None:
    llm_server.script(llm_answer(first_plan(holdings)), llm_answer(REST))
    _, result = await llm_service(llm_server).aplan_and_execute(goal(holdings), max_replans=1)
    assert result is not None
    assert result.ok, result.errors
    assert result.replans[0].steps_reused == ["load"]
    assert result.replans[0].new_steps == ["mirror", "value_r1"]
    prompt = llm_server.requests[1].body["messages"][1]["content"]
    assert "This is a replan" in prompt
    assert "the rates feed for EU is down" in prompt  # quoted as data
    assert "- load (load-holdings)" in prompt
    assert "Do not use these actions again: fetch-rates" in prompt
    assert runs(run_log, "load-holdings") == 1


async def test_each_budget_stops_before_the_next_llm_call_or_step(
    llm_server: ScriptedLLMServer, run_log: Path, holdings: Path, tmp_path: Path
) -> None:
    service = llm_service(llm_server)
    # LLM calls: the first plan took the only call; the replan is not asked for.
    llm_server.script(llm_answer(first_plan(holdings)), llm_answer(REST))
    _, calls = await service.aplan_and_execute(
        goal(holdings), max_replans=1, budget=Budget(llm_calls=1)
    )
    assert calls is not None
    assert calls.stopped == "budget llm_calls: 1 of 1 LLM calls used"
    assert not calls.ok
    assert len(llm_server.requests) == 1
    assert runs(run_log, "fetch-rates-mirror") == 0
    # Tokens: the plan's answer spent them all; no step starts.
    llm_server.script(llm_answer(first_plan(holdings), prompt_tokens=900, completion_tokens=200))
    _, tokens = await service.aplan_and_execute(goal(holdings), budget=Budget(tokens=1_000))
    assert tokens is not None
    assert tokens.stopped is not None
    assert tokens.stopped.startswith("budget tokens: ")
    assert tokens.skipped == ["load", "rates", "value"]
    assert runs(run_log, "load-holdings") == 1  # the first call's, none since
    # Seconds: spent before the first step starts; recorded in the store too.
    store = PlanStore(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}")
    timed = PlannerService(catalog_of(*FLOWS), planner="heuristic", store=store)
    _, late = await timed.aplan_and_execute(goal(holdings), budget=Budget(seconds=0.001))
    assert late is not None
    assert late.stopped is not None
    assert late.stopped.startswith("budget seconds: ")
    assert runs(run_log, "load-holdings") == 1
    [record] = await store.executions_of(late.plan_id)
    assert record.error is not None
    assert record.error.startswith("stopped: budget seconds")
    await store.close()


def test_the_cli_replans_with_max_replans(run_log: Path, holdings: Path) -> None:
    from typer.testing import CliRunner

    from prefect_aether.cli import app

    here = Path(adaptive_flows.__file__)
    args = ["run", "--goal", goal(holdings), "--planner", "heuristic"]
    for name in ("load_holdings", "fetch_rates", "fetch_rates_mirror", "value_portfolio"):
        args += ["-e", f"{here}:{name}"]
    result = CliRunner().invoke(app, [*args, "--max-replans", "1"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "replan 1: step 'fetch_rates' failed" in said
    assert "value_portfolio_r1" in said
    assert "replanned after fetch_rates failed: ran fetch_rates_mirror, value_portfolio_r1" in said
    assert "skipped, because a step they need failed (a replan took over): value_portfolio" in said
    assert runs(run_log, "load-holdings") == 1
    # Without --goal there is nothing to replan for: refused in one line.
    refused = CliRunner().invoke(app, ["run", str(here), *args[5:], "--max-replans", "1"])
    assert refused.exit_code == 2
    assert "--max-replans takes a number of replans from 0 up, with --goal" in refused.output


async def test_the_deployable_flow_replans_with_max_replans(run_log: Path, holdings: Path) -> None:
    from prefect_aether import CatalogSource
    from prefect_aether.flows import plan_and_execute

    source = CatalogSource(modules=["tests.adaptive_flows"])
    report = await plan_and_execute(
        goal(holdings), catalog=source, planner="heuristic", max_replans=1, cache=False
    )
    assert isinstance(report, dict)
    assert report["ok"], report["errors"]
    assert [r["failed_step"] for r in report["replans"]] == ["fetch_rates"]
    assert runs(run_log, "load-holdings") == 1
    # The mirror took over; the paid feed (an approval action) was never run.
    assert runs(run_log, "fetch-rates-mirror") == 1
    assert runs(run_log, "fetch-rates-paid") == 0
