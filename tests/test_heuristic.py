from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefect_aether import ActionCatalog
from prefect_aether.heuristic import HeuristicPlanner
from prefect_aether.planner import PlanningContext, PlanningEvent

ROOT = Path(__file__).resolve().parent.parent

LOAD = ("load_sales", "load_sales", {})
CLEAN = ("clean_sales", "clean_sales", {"rows": "${load_sales.rows}"})
REGIONS = ("revenue_by_region", "revenue_by_region", {"records": "${clean_sales.records}"})
TREND = ("monthly_trend", "monthly_trend", {"records": "${clean_sales.records}"})
ANOMALIES = ("detect_anomalies", "detect_anomalies", {"records": "${clean_sales.records}"})
REPORT = (
    "build_report",
    "build_report",
    {
        "title": "${user.title}",
        "region_totals": "${revenue_by_region.totals}",
        "top_region": "${revenue_by_region.top_region}",
        "growth_pct": "${monthly_trend.growth_pct}",
    },
)
SAVE = ("save_report", "save_report", {"markdown": "${build_report.markdown}"})

GOALS: list[tuple[str, dict[str, Any], list[tuple[str, str, dict[str, Any]]], bool]] = [
    # goal, user inputs, exact plan, complete (no missing user values)
    ("load the sales data", {}, [LOAD], True),
    (
        "load sales from my csv",
        {"path": "x.csv"},
        [("load_sales", "load_sales", {"path": "${user.path}"})],
        True,
    ),
    ("clean the sales data", {}, [LOAD, CLEAN], True),
    ("compute revenue by region", {}, [LOAD, CLEAN, REGIONS], True),
    ("show the monthly trend", {}, [LOAD, CLEAN, TREND], True),
    ("detect anomalies in the sales", {}, [LOAD, CLEAN, ANOMALIES], True),
    (
        "load the sales, clean them, then compute revenue by region",
        {},
        [LOAD, CLEAN, REGIONS],
        True,
    ),
    ("revenue by region and monthly trend", {}, [LOAD, CLEAN, REGIONS, TREND], True),
    ("monthly trend; revenue by region", {}, [LOAD, CLEAN, TREND, REGIONS], True),
    ("build a report", {}, [LOAD, CLEAN, REGIONS, TREND, REPORT], False),
    ("build a report", {"title": "Q3"}, [LOAD, CLEAN, REGIONS, TREND, REPORT], True),
    ("save the report", {}, [LOAD, CLEAN, REGIONS, TREND, REPORT, SAVE], False),
    (
        "save the report to the out folder",
        {"output_dir": "out"},
        [
            LOAD,
            CLEAN,
            REGIONS,
            TREND,
            REPORT,
            ("save_report", "save_report", {**SAVE[2], "output_dir": "${user.output_dir}"}),
        ],
        False,
    ),
]


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    from prefect.utilities.importtools import load_script_as_module

    catalog = ActionCatalog()
    catalog.register_module(load_script_as_module(str(ROOT / "flows" / "pipeline.py")))
    return catalog


@pytest.mark.parametrize(("goal", "user_inputs", "expected", "complete"), GOALS)
async def test_exact_plans_on_the_demo_catalog(
    catalog: ActionCatalog,
    goal: str,
    user_inputs: dict[str, Any],
    expected: list[tuple[str, str, dict[str, Any]]],
    complete: bool,
) -> None:
    result = await HeuristicPlanner(catalog).plan(
        PlanningContext(goal=goal, user_inputs=user_inputs)
    )
    assert result.plan is not None
    assert result.validation is not None
    assert [(s.id, s.action, s.inputs) for s in result.plan.steps] == expected
    assert result.validation.ok is complete
    assert result.validation.is_partial_ok() is not complete
    assert result.plan.extras == {"goal": goal, "planner": "heuristic"}
    assert result.planner == "heuristic"


async def test_same_input_same_plan(catalog: ActionCatalog) -> None:
    ctx = PlanningContext(goal="revenue by region and monthly trend")
    first = await HeuristicPlanner(catalog).plan(ctx)
    second = await HeuristicPlanner(catalog).plan(ctx)
    assert first.plan is not None
    assert second.plan is not None
    assert first.plan.plan_id == second.plan.plan_id


async def test_events_match_the_llm_planner(catalog: ActionCatalog) -> None:
    events: list[PlanningEvent] = []
    await HeuristicPlanner(catalog).plan(
        PlanningContext(goal="load the sales"), on_event=events.append
    )
    assert [e.phase for e in events] == ["start", "validation", "success"]
    assert events[-1].plan_dict is not None


async def test_a_failing_event_callback_never_breaks_planning(catalog: ActionCatalog) -> None:
    seen: list[str] = []

    async def callback(event: PlanningEvent) -> None:
        seen.append(event.phase)
        raise RuntimeError("callback bug")

    result = await HeuristicPlanner(catalog).plan(
        PlanningContext(goal="load the sales"), on_event=callback
    )
    assert result.plan is not None
    assert seen == ["start", "validation", "success"]


async def test_unknown_goal_fails_cleanly(catalog: ActionCatalog) -> None:
    result = await HeuristicPlanner(catalog).plan(PlanningContext(goal="launch the rocket"))
    assert result.plan is None
    assert result.events[-1].phase == "failure"
    assert result.events[-1].message == "no action matches the goal"


async def test_partial_plan_refused_when_not_allowed(catalog: ActionCatalog) -> None:
    ctx = PlanningContext(goal="build a report", allow_partial_plans=False)
    result = await HeuristicPlanner(catalog).plan(ctx)
    assert result.plan is None
    assert result.validation is not None
    assert result.validation.missing_user_bindings == {"title": ["build_report.title"]}


async def test_backward_chaining_depth_is_bounded(catalog: ActionCatalog) -> None:
    result = await HeuristicPlanner(catalog, max_depth=1).plan(
        PlanningContext(goal="compute revenue by region")
    )
    assert result.plan is not None
    assert [(s.id, s.inputs) for s in result.plan.steps] == [
        ("clean_sales", {"rows": "${user.rows}"}),
        ("revenue_by_region", {"records": "${clean_sales.records}"}),
    ]
