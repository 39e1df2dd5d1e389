"""`planner="auto"` never makes a plan worse than the heuristic planner's, and a planning
call is bounded in time however the LLM server behaves (scripted faults)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_aether import ActionCatalog, LLMError, PlannerService, PlanningContext
from prefect_aether.planning.auto import AutoPlanner
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import ActionPlanner
from prefect_aether.store import PlanStore
from tests.llm_server import Reply, ScriptedLLMServer

ROOT = Path(__file__).resolve().parent.parent
GOAL = "revenue by region from the sales csv"


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(str(ROOT / "flows" / "pipeline.py"))
    return catalog


def llm(server: ScriptedLLMServer, **kwargs: Any) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(server.base_url, "m", **{"max_retries": 0, **kwargs})


def auto(server: ScriptedLLMServer, catalog: ActionCatalog, **kwargs: Any) -> AutoPlanner:
    return AutoPlanner(catalog, ActionPlanner(catalog, llm(server, **kwargs), max_iter=2))


INVALID = json.dumps({"steps": [{"id": "x", "action": "no_such_action", "inputs": {}}]})


@pytest.mark.parametrize(
    ("replies", "why"),
    [
        ([Reply.chat("not json at all"), Reply.chat("still not json")], "no acceptable plan"),
        ([Reply.chat(INVALID), Reply.chat(INVALID)], "no acceptable plan"),
        ([Reply.chat(json.dumps({"steps": []})), Reply.chat("{}")], "no acceptable plan"),
        ([Reply.error(500, "boom")], "the LLM failed (LLMError: LLM server answered HTTP 500"),
        ([Reply.error(401, "bad key")], "the LLM failed (LLMError: LLM server answered HTTP 401"),
        ([Reply(body=b'{"choices": []}')], "the LLM failed (LLMError: LLM answer has no choices"),
    ],
)
async def test_auto_keeps_the_heuristic_plan_when_the_llm_fails_in_any_way(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog, replies: list[Reply], why: str
) -> None:
    ctx = PlanningContext(goal=GOAL, user_inputs={"csv": "x.csv"})
    offline = await HeuristicPlanner(catalog).plan(ctx)
    assert offline.plan is not None
    llm_server.script(*replies)
    result = await auto(llm_server, catalog).plan(ctx)
    assert result.plan == offline.plan
    assert result.planner == "heuristic"
    # The LLM planner's own draft standing (its fallback event) comes first; auto's last.
    fallback = [e for e in result.events if e.phase == "fallback"][-1]
    assert why in fallback.message
    assert fallback.message.endswith("using the heuristic planner's plan")
    assert "\n" not in fallback.message


async def test_a_late_llm_yields_the_heuristic_plan_within_the_deadline(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_PLANNING_TIMEOUT", "1")
    llm_server.script(Reply(body=Reply.chat(INVALID).body, delay=5))
    started = time.monotonic()
    result = await auto(llm_server, catalog, timeout=30).plan(PlanningContext(goal=GOAL))
    assert time.monotonic() - started < 4
    assert result.plan is not None
    assert result.planner == "heuristic"
    assert "planning took longer than 1 s (planning_timeout)" in result.events[-2].message or any(
        "planning took longer than 1 s" in e.message for e in result.events
    )


async def test_a_trickling_server_cannot_hold_auto_past_the_llm_timeout(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog
) -> None:
    """One byte every 0.15 s: each read is quick, the whole answer would take a minute.
    `timeout` bounds the whole request, so `auto` falls back after it."""
    llm_server.script(Reply(body=Reply.chat(INVALID).body, trickle=0.15))
    started = time.monotonic()
    result = await auto(llm_server, catalog, timeout=2).plan(PlanningContext(goal=GOAL))
    assert time.monotonic() - started < 5
    assert result.planner == "heuristic"
    assert result.plan is not None
    assert any(e.phase == "fallback" for e in result.events)


@flow(name="read_rows")
def read_rows(path: str) -> list[dict[str, str]]:
    """Read the rows of a CSV file."""
    return []


@flow(name="count_rows")
def count_rows(rows: list[dict[str, str]]) -> int:
    """Count rows."""
    return len(rows)


async def test_a_strictly_better_llm_plan_is_taken(llm_server: ScriptedLLMServer) -> None:
    small = ActionCatalog()
    small.register(read_rows)
    small.register(count_rows)
    # The goal names no file: the heuristic plan asks for one; the LLM's is complete.
    ctx = PlanningContext(goal="count the rows", user_inputs={"file": "data.csv"})
    offline = await HeuristicPlanner(small).plan(ctx)
    assert offline.validation is not None
    assert offline.validation.missing_user_bindings
    assert not offline.validation.ok
    steps = [
        {"id": "read", "action": "read_rows", "inputs": {"path": "${user.file}"}},
        {"id": "count", "action": "count_rows", "inputs": {"rows": "${read}"}},
    ]
    llm_server.script(Reply.chat(json.dumps({"steps": steps, "unserved": []})))
    result = await auto(llm_server, small).plan(ctx)
    assert result.planner == "llm"
    assert result.plan is not None
    assert [s.id for s in result.plan.steps] == ["read", "count"]
    assert result.validation is not None
    assert result.validation.ok


async def test_a_worse_llm_plan_is_not_taken_and_the_line_says_how_it_is_worse(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog
) -> None:
    ctx = PlanningContext(goal="revenue by region")
    offline = await HeuristicPlanner(catalog).plan(ctx)
    assert offline.validation is not None
    assert offline.validation.ok
    steps = [
        {"id": "load", "action": "load_sales", "inputs": {"limit": "${user.limit}"}},
        {"id": "clean", "action": "clean_sales", "inputs": {"rows": "${load.rows}"}},
        {"id": "regions", "action": "revenue_by_region", "inputs": {"records": "${clean.records}"}},
    ]
    llm_server.script(Reply.chat(json.dumps({"steps": steps, "unserved": []})))
    result = await auto(llm_server, catalog).plan(ctx)
    assert result.planner == "heuristic"
    assert result.plan == offline.plan
    fallback = [e for e in result.events if e.phase == "fallback"][-1]
    assert fallback.message == (
        "the LLM's plan is less complete than the heuristic planner's (limit left to give); "
        "using the heuristic planner's plan"
    )


async def test_a_trickling_answer_is_cut_at_the_timeout(llm_server: ScriptedLLMServer) -> None:
    llm_server.script(Reply(body=Reply.chat("{}").body, trickle=0.2))
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"no complete answer .* within 1 s"):
        await llm(llm_server, timeout=1).chat([{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("usage", ["lots", [1, 2], {"prompt_tokens": "many"}])
async def test_usage_that_is_not_an_object_is_ignored(
    llm_server: ScriptedLLMServer, usage: Any
) -> None:
    payload = json.loads(Reply.chat("ok").body)
    payload["usage"] = usage
    llm_server.script(Reply(body=json.dumps(payload).encode()))
    content, usage = await llm(llm_server).chat([{"role": "user", "content": "hi"}])
    assert (content, usage) == ("ok", {})


async def test_each_retry_is_a_planning_event(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog
) -> None:
    steps = [{"id": "load", "action": "load_sales", "inputs": {"path": "x.csv"}}]
    llm_server.script(Reply.error(503, "busy"), Reply.chat(json.dumps({"steps": steps})))
    planner = ActionPlanner(catalog, llm(llm_server, max_retries=1, backoff_seconds=0.01))
    events: list[Any] = []
    result = await planner.plan(PlanningContext(goal="load the sales"), on_event=events.append)
    assert result.plan is not None
    retries = [e.message for e in events if e.message.startswith("retry ")]
    assert len(retries) == 1
    assert "retry 1 of 1" in retries[0]
    assert "HTTP 503" in retries[0]


async def test_the_plan_cache_tells_planners_and_models_apart(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog, tmp_path: Path
) -> None:
    store = PlanStore(f"sqlite+aiosqlite:///{tmp_path}/cache.db")
    steps = [{"id": "load", "action": "load_sales", "inputs": {"path": "${user.csv}"}}]
    offline = PlannerService(catalog, planner="heuristic", store=store)
    first = await offline.plan("load the sales", user_inputs={"csv": "a.csv"})
    assert first.plan is not None
    assert (await offline.plan("load the sales", user_inputs={"csv": "b.csv"})).cached
    # Configuring an LLM plans afresh; so does another model on the same server.
    for model in ("m1", "m2"):
        llm_server.script(Reply.chat(json.dumps({"steps": steps})))
        service = PlannerService(
            catalog, planner="llm", llm=OpenAICompatibleLLM(llm_server.base_url, model), store=store
        )
        fresh = await service.plan("load the sales", user_inputs={"csv": "a.csv"})
        assert not fresh.cached
        assert len(llm_server.requests) == 1
        again = await service.plan("load the sales", user_inputs={"csv": "a.csv"})
        assert again.cached
    # A planner passed in is its own kind: never served the heuristic planner's plans.
    llm_server.script(Reply.chat(json.dumps({"steps": steps})))
    custom = ActionPlanner(catalog, OpenAICompatibleLLM(llm_server.base_url, "m1"))
    passed = PlannerService(catalog, planner=custom, store=store)
    assert passed.planner_key.startswith(
        "custom:prefect_aether.planning.llm_planner.ActionPlanner|"
    )
    assert not (await passed.plan("load the sales", user_inputs={"csv": "a.csv"})).cached
    assert len(llm_server.requests) == 1
    # Trusting a heuristic draft that does the whole goal, or asking the model anyway,
    # are two planners too.
    trusting = ActionPlanner(catalog, custom.llm, trust_draft=True)
    asking = ActionPlanner(catalog, custom.llm, trust_draft=False)
    keys = {PlannerService(catalog, planner=p).planner_key for p in (trusting, asking)}
    assert len(keys) == 2
    await store.close()


async def test_auto_does_not_ask_the_llm_when_the_heuristic_plan_does_the_whole_goal(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A valid, complete plan that serves every part of the goal ranks highest: no LLM
    # plan could be taken over it, so the LLM is not asked (the default setting).
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_PLANNER_TRUST_DRAFT", "true")
    llm_server.script()
    ctx = PlanningContext(goal=GOAL, user_inputs={"csv": "x.csv"})
    result = await auto(llm_server, catalog).plan(ctx)
    assert llm_server.requests == []
    assert result.plan is not None
    assert result.planner == "heuristic"
    fallback = [e for e in result.events if e.phase == "fallback"][-1]
    assert "does the whole goal (the LLM was not asked)" in fallback.message


async def test_a_plan_that_leaves_out_what_the_goal_asked_for_is_not_better(
    llm_server: ScriptedLLMServer, catalog: ActionCatalog
) -> None:
    # The heuristic plan computes the revenue and says the email is beyond its actions.
    # An answer that "serves everything" by loading the sales alone ranks higher by its
    # own word (nothing unserved), but leaves out what the goal asked for: not taken.
    goal = "compute revenue by region, then email it to the board"
    ctx = PlanningContext(goal=goal, user_inputs={"csv": "x.csv"})
    offline = await HeuristicPlanner(catalog).plan(ctx)
    assert offline.plan is not None
    assert offline.unserved
    load = {"id": "load", "action": "load_sales", "inputs": {"path": "${user.csv}"}}
    llm_server.script(Reply.chat(json.dumps({"steps": [load], "unserved": []})))
    result = await auto(llm_server, catalog).plan(ctx)
    assert len(llm_server.requests) == 1
    assert result.plan == offline.plan
    fallback = [e for e in result.events if e.phase == "fallback"][-1]
    assert "leaves out what the goal asked for (clean_sales, revenue_by_region)" in (
        fallback.message
    )
    # Every action of the heuristic plan, and by its word serving more: taken.
    same = [{"id": s.id, "action": s.action, "inputs": s.inputs} for s in offline.plan.steps]
    llm_server.script(Reply.chat(json.dumps({"steps": same, "unserved": []})))
    taken = await auto(llm_server, catalog).plan(ctx)
    assert taken.planner == "llm"
