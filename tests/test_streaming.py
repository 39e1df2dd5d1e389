"""Steps that start while the LLM's plan streams in (`plan_and_execute(stream=True)`),
against a real Prefect server and a scripted server that streams its answer slowly
(tests/chain_flows.py: five steps that read and compute, handing one model down)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from prefect_aether import ActionCatalog, ApprovalRequired, OpenAICompatibleLLM, PlannerService
from prefect_aether.catalog.policy import action_tags
from prefect_aether.planning.llm_planner import ActionPlanner
from tests import chain_flows
from tests.llm_server import Reply, ScriptedLLMServer

pytestmark = pytest.mark.usefixtures("prefect_server")

CHAIN = [
    ("fetch", "fetch-weather", {"city": "Oslo"}),
    ("tidy", "tidy-weather", {"weather": "${fetch}"}),
    ("score", "score-weather", {"weather": "${tidy}"}),
    ("chart", "chart-weather", {"weather": "${score}"}),
    ("file", "file-chart", {"weather": "${chart}"}),
]
GOAL = "fetch the weather of Oslo, then tidy it, then score it, then chart it, then file the chart"


def answer(steps: list[tuple[str, str, dict[str, Any]]]) -> str:
    return json.dumps(
        {
            "steps": [
                {"id": i, "action": a, "inputs": x, "wait_for": [], "reason": f"{a} is asked"}
                for i, a, x in steps
            ],
            "unserved": [],
        }
    )


def service(server: ScriptedLLMServer, *extra: Any, draft: bool = True) -> PlannerService:
    catalog = ActionCatalog()
    for f in [
        chain_flows.fetch_weather,
        chain_flows.tidy_weather,
        chain_flows.score_weather,
        chain_flows.chart_weather,
        chain_flows.file_chart,
        *extra,
    ]:
        catalog.register(f)
    llm = OpenAICompatibleLLM(server.base_url, "m", max_retries=0)
    if not draft:
        return PlannerService(catalog, planner=ActionPlanner(catalog, llm, use_draft=False))
    return PlannerService(catalog, planner="llm", llm=llm)


def started_at(events: list[tuple[float, Any]]) -> dict[str, float]:
    return {e.step_id: t for t, e in events if e.phase == "step_start"}


async def test_a_streamed_plan_starts_its_first_step_before_the_answer_ends(
    llm_server: ScriptedLLMServer,
) -> None:
    # About 4 s of answer: 70 chunks of 8 characters, 0.05 s apart.
    llm_server.script(Reply.streamed(answer(CHAIN), chunk=8, pause=0.05))
    events: list[tuple[float, Any]] = []
    planned, result = await service(llm_server).aplan_and_execute(
        GOAL,
        stream=True,
        execution_events_cb=lambda e: events.append((time.monotonic(), e)),
    )
    assert llm_server.requests[0].body["stream"] is True
    assert planned.plan is not None
    assert result is not None
    assert result.ok, result.errors
    assert result.stopped is None
    # A step is complete in the stream once the next one begins (the last, once the list
    # ends): each started while the answer was still coming, the first long before.
    (answer_ended,) = llm_server.streamed_at
    starts = started_at(events)
    assert starts["fetch"] < answer_ended - 2.0
    assert starts["chart"] < answer_ended
    assert result.streamed == ["fetch", "tidy", "score", "chart", "file"]
    assert result.outputs["notes"] == ["fetched", "tidy", "scored", "charted", "filed"]
    assert result.plan_id == planned.plan.plan_id
    phases = [e.phase for _, e in events]
    assert phases.index("planned") > phases.index("step_start")
    assert sorted(starts) == sorted(s for s, _, _ in CHAIN)
    # The parent run carries the whole plan's id once it is in.
    async with get_client() as client:
        (parent,) = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[result.flow_run_id]))
        )
    assert f"plan:{planned.plan.plan_id}" in parent.tags
    assert parent.name == f"plan-{planned.plan.plan_id}"
    assert f"execution:{result.execution_id}" in parent.tags


async def test_a_streamed_plan_invalid_at_the_end_stops_what_has_not_started(
    llm_server: ScriptedLLMServer,
) -> None:
    # `score` lacks its required input: it never starts, nor `chart` that binds it; the
    # repair rounds (never streamed) fix nothing, and the plan is invalid at the end (no
    # draft to stand instead).
    broken = [*CHAIN[:2], ("score", "score-weather", {}), CHAIN[3]]
    llm_server.script(
        Reply.streamed(answer(broken), chunk=8, pause=0.03),
        Reply.chat(answer(broken)),
        Reply.chat(answer(broken)),
    )
    events: list[tuple[float, Any]] = []
    planned, result = await service(llm_server, draft=False).aplan_and_execute(
        GOAL, stream=True, execution_events_cb=lambda e: events.append((time.monotonic(), e))
    )
    assert planned.plan is None
    assert result is not None
    assert not result.ok
    assert result.stopped is not None
    assert result.stopped.startswith("no valid plan to run")
    assert "score" in result.stopped
    assert "weather" in result.stopped
    assert result.streamed == ["fetch", "tidy"]
    assert sorted(result.step_outputs) == ["fetch", "tidy"]
    assert sorted(started_at(events)) == ["fetch", "tidy"]
    assert [r.body.get("stream") for r in llm_server.requests] == [True, None, None]
    async with get_client() as client:
        (parent,) = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[result.flow_run_id]))
        )
    assert parent.state is not None
    assert parent.state.is_failed()


@flow(name="save-weather")
def save_weather(weather: chain_flows.Weather, path: str) -> str:
    """Save weather readings to a file."""
    return f"saved {weather.city} to {path}"


async def test_writes_wait_for_the_whole_plan(llm_server: ScriptedLLMServer) -> None:
    steps = [*CHAIN[:2], ("save", "save-weather", {"weather": "${tidy}", "path": "w.json"})]
    llm_server.script(Reply.streamed(answer(steps), chunk=8, pause=0.03))
    events: list[tuple[float, Any]] = []
    _, result = await service(llm_server, save_weather).aplan_and_execute(
        "fetch the weather of Oslo, tidy it and save it to w.json",
        stream=True,
        execution_events_cb=lambda e: events.append((time.monotonic(), e)),
    )
    assert result is not None
    assert result.ok, result.errors
    assert result.streamed == ["fetch", "tidy"]
    (answer_ended,) = llm_server.streamed_at
    starts = started_at(events)
    assert starts["fetch"] < answer_ended
    assert starts["save"] > answer_ended
    assert "Oslo" in json.dumps(result.outputs)


@action_tags("aether:approval")
@flow(name="publish-weather")
def publish_weather(weather: chain_flows.Weather) -> str:
    """Publish weather readings to the public site."""
    return weather.city


async def test_a_plan_that_may_need_an_approval_is_never_streamed_into_execution(
    llm_server: ScriptedLLMServer,
) -> None:
    steps = [*CHAIN[:2], ("publish", "publish-weather", {"weather": "${tidy}"})]
    llm_server.script(Reply.chat(answer(steps)))
    events: list[Any] = []
    with pytest.raises(ApprovalRequired, match="publish-weather"):
        await service(llm_server, publish_weather).aplan_and_execute(
            "fetch the weather of Oslo, tidy it and publish it",
            stream=True,
            execution_events_cb=events.append,
        )
    assert "stream" not in llm_server.requests[0].body
    assert [e for e in events if e.phase == "step_start"] == []


async def test_auto_keeps_a_streamed_llm_plan_on_a_tie(llm_server: ScriptedLLMServer) -> None:
    # The heuristic planner has a plan of the same rank; its steps have not run, the
    # streamed ones have: the LLM's plan stays, and no step runs twice.
    llm_server.script(Reply.streamed(answer(CHAIN), chunk=16, pause=0.02))
    chain = service(llm_server)
    auto = PlannerService(chain.catalog, planner="auto", llm=chain.llm)
    planned, result = await auto.aplan_and_execute(GOAL, stream=True)
    assert planned.planner == "llm"
    assert result is not None
    assert result.ok, result.errors
    assert result.streamed == ["fetch", "tidy", "score", "chart", "file"]
    assert result.unplanned == []
    assert sorted(result.step_outputs) == sorted(s for s, _, _ in CHAIN)
