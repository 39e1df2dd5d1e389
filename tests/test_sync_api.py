"""Sync entry points as Prefect 3 names them: `plan` / `aplan`, `execute` / `aexecute`.
Called from sync code (a script, a sync flow) they run to the end; from async code they
are the coroutine."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import pytest
from prefect import flow

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor, get_planner
from prefect_aether.service import PlannerService

pytestmark = pytest.mark.usefixtures("prefect_server")

GOAL = "revenue by region, then build the report"


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    actions = ActionCatalog()
    actions.register_module("flows/pipeline.py")
    return actions


def test_a_script_plans_and_executes_without_asyncio(catalog: ActionCatalog) -> None:
    service = PlannerService(catalog, planner="heuristic", store=None)
    result = service.plan(GOAL, user_inputs={"title": "Q3"})
    assert not inspect.isawaitable(result)
    assert result.plan is not None
    execution = PlanExecutor(catalog).execute(result.plan, user_inputs={"title": "Q3"})
    assert execution.ok, execution.errors
    assert "Q3" in execution.outputs["markdown"]


def test_a_sync_flow_uses_get_planner_without_asyncio(
    catalog: ActionCatalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"

    @flow
    def nightly_report() -> dict[str, object]:
        planner = get_planner(catalog=catalog)
        plan_result, execution = planner.plan_and_execute(
            "revenue by region, then build the report and save it",
            user_inputs={"title": "Nightly", "output_dir": str(out)},
            cache=False,
        )
        assert plan_result.plan is not None
        assert execution is not None
        return execution.outputs

    outputs = nightly_report()
    assert outputs["path"] == str(out / "report.md")
    report = (out / "report.md").read_text()
    assert "Nightly" in report
    # No anomaly step ran: the report does not claim there were none.
    assert "Anomalous records: not checked" in report

    @flow
    def partial() -> object:
        # `title` is missing and nobody is asked: nothing runs, and the log says why.
        planner = get_planner(catalog=catalog)
        return planner.plan_and_execute("build the report", cache=False)[1]

    with caplog.at_level(logging.WARNING):
        assert partial() is None
    assert any(
        "needs values nobody gave" in r.getMessage() and "title" in r.getMessage()
        for r in caplog.records
    )


async def test_async_code_still_awaits_the_same_names(catalog: ActionCatalog) -> None:
    service = PlannerService(catalog, planner="heuristic", store=None)
    pending = service.plan(GOAL)
    assert inspect.isawaitable(pending)
    result = await pending
    assert result.plan is not None
    plan = CandidatePlan.from_dict(
        {"steps": [{"id": "load", "action": "load_sales", "inputs": {}}]}
    )
    assert (await PlanExecutor(catalog).execute(plan)).ok
    assert (await service.aplan(GOAL)).plan == result.plan
