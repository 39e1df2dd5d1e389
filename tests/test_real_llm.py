"""The LLM planner against a real model: llama.cpp's server and Qwen2.5-Coder-1.5B-Instruct
on loopback (tests/llama.py installs both; the scripted server stays for faults).

A planning call takes 30-60 s on two cores, so these tests are few and each plans once
or twice; temperature 0 makes the answers repeatable on one machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from prefect_aether import ActionCatalog, CandidatePlan, PlanningContext
from prefect_aether.plan import iter_bindings
from prefect_aether.planning.auto import AutoPlanner
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import ActionPlanner

ROOT = Path(__file__).resolve().parent.parent
REALWORLD = Path(os.environ.get("AETHER_REALWORLD_DIR", ROOT.parent / "shared" / "realworld"))
DEMO_GOAL = "revenue by region, monthly trend, detect anomalies, then build the report and save it"


@pytest.fixture(autouse=True)
def long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small model on two cores: a round takes up to a minute.
    monkeypatch.setenv("PREFECT_INTEGRATIONS_AETHER_PLANNING_TIMEOUT", "400")


def planner(base_url: str, catalog: ActionCatalog, max_iter: int) -> ActionPlanner:
    """The LLM planner over the real model; the model is asked for every goal, also where
    the heuristic draft would be trusted in its place (`trust_draft`)."""
    llm = OpenAICompatibleLLM(base_url, "qwen2.5-coder-1.5b", timeout=240, max_retries=0)
    return ActionPlanner(catalog, llm, max_iter=max_iter, trust_draft=False)


def shape(plan: CandidatePlan) -> tuple[list[str], set[tuple[str, str, str]]]:
    """A plan by what it does: its actions, and which action's output feeds which input."""
    action = {s.id: s.action for s in plan.steps}
    edges = {
        (action.get(b.step_id or "", "?"), s.action, name)
        for s in plan.steps
        for name, value in s.inputs.items()
        for _, b in iter_bindings({name: value})
        if b.kind == "step_output"
    }
    return sorted(action.values()), edges


def catalog_of(path: Path) -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(str(path))
    return catalog


async def test_the_demo_goal_plans_like_the_hand_written_plan(real_llm: str) -> None:
    catalog = catalog_of(ROOT / "flows" / "pipeline.py")
    events: list[Any] = []
    ctx = PlanningContext(goal=DEMO_GOAL, user_inputs={"title": "Sales 2026", "output_dir": "out"})
    result = await planner(real_llm, catalog, 2).plan(ctx, on_event=events.append)
    assert result.plan is not None, [e.message for e in events]
    hand_written = CandidatePlan.from_dict(json.loads((ROOT / "flows" / "plan.json").read_text()))
    assert shape(result.plan) == shape(hand_written)
    # LLM plans say why each step is there.
    assert all(step.extras.get("reason") for step in result.plan.steps)
    assert result.usage["prompt_tokens"] > 0


def realworld_goals() -> list[tuple[Path, dict[str, Any]]]:
    """The real-world set's goals with their catalogs, in the set's own order (its files
    are read here: the project names none of its goals)."""
    found = []
    for path in sorted((REALWORLD / "goals").glob("*.json")):
        for goal in json.loads(path.read_text()):
            found.append((REALWORLD / "catalogs" / f"{path.stem}.py", goal))
    return found


@pytest.mark.skipif(not (REALWORLD / "catalogs").is_dir(), reason="no real-world set")
async def test_a_real_world_goal_goes_through_a_repair_round(real_llm: str) -> None:
    # The goals with the longest gold plans are the likeliest to need a repair from a
    # 1.5B model; the first of them that does shows the round on real answers.
    longest = sorted(
        (g for g in realworld_goals() if g[1]["expect"].get("plan")),
        key=lambda g: -len(g[1]["expect"]["plan"]["steps"]),
    )
    for catalog_file, goal in longest[:3]:
        events: list[Any] = []
        ctx = PlanningContext(goal=goal["goal"], user_inputs=goal.get("user_inputs") or {})
        await planner(real_llm, catalog_of(catalog_file), 2).plan(ctx, on_event=events.append)
        rounds = [e for e in events if e.phase == "llm_request"]
        if len(rounds) == 2:
            break
    assert len(rounds) == 2, "none of the three longest real-world goals needed a repair"
    checked = [e for e in events if e.phase == "validation"]
    # The first real answer had issues, and the repair prompt named them.
    assert checked[0].validation is not None
    assert not checked[0].validation.ok
    # Every answer kept the strict schema: each decoded into a plan.
    assert all(e.plan_dict is not None for e in checked)


@pytest.mark.skipif(not (REALWORLD / "catalogs").is_dir(), reason="no real-world set")
async def test_an_impossible_goal_comes_back_with_unserved(real_llm: str) -> None:
    # The set's first goal that no action of its catalog can serve.
    catalog_file, goal = next(g for g in realworld_goals() if g[1]["expect"].get("abstain"))
    catalog = catalog_of(catalog_file)
    events: list[Any] = []
    result = await AutoPlanner(catalog, planner(real_llm, catalog, 1)).plan(
        PlanningContext(goal=goal["goal"]), on_event=events.append
    )
    assert any(e.phase == "llm_response" for e in events)  # the model was asked
    assert result.plan is None
    assert result.unserved
