"""Deployments as actions, end to end: `prefect server start` + a separate `serve` process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.deployments import arun_deployment

from prefect_aether import ActionCatalog, CandidatePlan, CatalogError
from prefect_aether.execute import PlanExecutor
from tests import hitl_flows
from tests.conftest import use_server
from tests.processes import BIN, ROOT, PrefectServer


@pytest.fixture
def server(real_server: PrefectServer) -> Iterator[PrefectServer]:
    with use_server(real_server):
        yield real_server


def executions(runs: Path, name: str) -> int:
    return len(list(runs.glob(f"{name}.*")))


async def test_deployments_become_typed_actions(server: PrefectServer) -> None:
    catalog = ActionCatalog()
    specs = await catalog.register_deployments(tags=["aether-test"])
    assert sorted(s.name for s in specs) == ["count-words/words", "make-title/titles"]
    words = catalog.get("count-words/words")
    assert words is not None
    assert words.kind == "deployment"
    assert words.ref == "deployment:count-words/words"
    assert words.description.startswith("Count the words of a text")
    assert [(s.name, s.type, s.required, s.default) for s in words.inputs] == [
        ("text", "string", True, None),
        ("minimum", "integer", False, 2),
    ]
    assert [o.name for o in words.outputs] == ["result"]
    assert catalog.get("deployment:make-title/titles") is not None
    # Prefect stores the string 'None' for a flow without a docstring.
    titles = catalog.get("make-title/titles")
    assert titles is not None
    assert titles.description == ""
    assert titles.inputs[0].json_schema["type"] == "array"

    with pytest.raises(CatalogError, match="'nope/missing' does not exist"):
        await ActionCatalog().register_deployments(names=["nope/missing"])
    with pytest.raises(CatalogError, match="no deployment"):
        await ActionCatalog().register_deployments(tags=["no-such-tag"])


async def test_plan_mixing_deployments_and_local_flows_runs_as_child_runs(
    server: PrefectServer,
) -> None:
    catalog = ActionCatalog()
    await catalog.register_deployments(names=["count-words/words", "make-title/titles"])
    catalog.register_module(hitl_flows)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "count", "action": "count-words/words", "inputs": {"text": "${user.text}"}},
                {
                    "id": "title",
                    "action": "make-title/titles",
                    "inputs": {"words": "${count.result.words}"},
                },
                {"id": "loud", "action": "shout", "inputs": {"text": "${title.result}"}},
            ]
        }
    )
    before = executions(server.runs, "count-words")
    result = await PlanExecutor(catalog).execute(
        plan, user_inputs={"text": "a plan for many machines"}, tags=["team:data"]
    )
    assert result.ok, result.errors
    assert result.step_outputs["count"]["result"].total == 4
    assert result.outputs == {"result": "PLAN FOR MANY MACHINES!"}
    assert executions(server.runs, "count-words") == before + 1

    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(result.flow_run_id)])
            )
        )
        by_name = {c.name: c for c in children}
        assert sorted(by_name) == ["count", "title"]
        for name in ("count", "title"):
            assert by_name[name].deployment_id is not None
            assert set(by_name[name].tags) >= {
                f"plan:{plan.plan_id}",
                f"plan_step:{name}",
                "team:data",
            }
        # The title run waits for the count run (its flow run, the node the run graph
        # draws): an edge in the run graph.
        link = await client.read_task_run(by_name["title"].parent_task_run_id)
        upstream = link.task_inputs["wait_for"]
        assert [str(u.id) for u in upstream] == [str(by_name["count"].id)]

    # Resuming the execution reuses the deployment steps' results: no new deployment run.
    again = await PlanExecutor(catalog).execute(
        plan, user_inputs={"text": "a plan for many machines"}, resume=result.execution_id
    )
    assert again.ok
    assert set(again.reused) >= {"count", "title"}
    assert executions(server.runs, "count-words") == before + 1


async def test_deployment_without_persisted_result_fails_the_step_clearly(
    server: PrefectServer,
) -> None:
    catalog = ActionCatalog()
    await catalog.register_deployments(tags=["aether-forgetful"])
    plan = CandidatePlan.from_dict(
        {"steps": [{"id": "f", "action": "forgetful/forgetful", "inputs": {"text": "x"}}]}
    )
    result = await PlanExecutor(catalog).execute(plan)
    assert not result.ok
    assert "persist_result=True" in result.errors["f"]


async def test_a_failed_deployment_run_is_retried_as_a_new_run(
    server: PrefectServer, tmp_path: Path
) -> None:
    catalog = ActionCatalog()
    await catalog.register_deployments(tags=["aether-flaky"])
    step = {
        "id": "count",
        "action": "flaky-count/flaky",
        "inputs": {"text": "one two three", "marker_dir": str(tmp_path)},
    }
    before = executions(server.runs, "flaky-count")
    plan = CandidatePlan.from_dict({"steps": [step]})
    failed = await PlanExecutor(catalog).execute(plan)
    assert not failed.ok
    assert "step 'count' ended FAILED" in failed.errors["count"]
    assert "RuntimeError: transient failure" in failed.errors["count"]
    (tmp_path / "failed-once").unlink()

    retried = CandidatePlan.from_dict(
        {"steps": [{**step, "extras": {"retries": 1, "retry_delay_seconds": 0}}]}
    )
    result = await PlanExecutor(catalog).execute(retried)
    assert result.ok, result.errors
    assert result.outputs == {"result": 3}
    assert executions(server.runs, "flaky-count") == before + 3
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(result.flow_run_id)])
            )
        )
    assert sorted((c.name, c.state.type.value if c.state else "") for c in children) == [
        ("count", "FAILED"),
        ("count-retry-1", "COMPLETED"),
    ]


async def test_deployment_step_past_its_timeout_is_cancelled(server: PrefectServer) -> None:
    catalog = ActionCatalog()
    await catalog.register_deployments(names=["count-words/words"])
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "slow",
                    "action": "count-words/words",
                    "inputs": {"text": "too slow"},
                    "extras": {"timeout_seconds": 0.1},
                }
            ]
        }
    )
    result = await PlanExecutor(catalog).execute(plan)
    assert not result.ok
    assert "did not finish within 0.1 s; it was cancelled" in result.errors["slow"]


def prefect_cli(server: PrefectServer, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_the_scheduled_deployment_in_prefect_yaml_plans_and_runs(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    prefect_cli(real_server, "work-pool", "create", "aether-process", "--type", "process")
    prefect_cli(real_server, "deploy", "--all", "--prefect-file", "flows/prefect.yaml")
    real_server.start(
        [str(BIN / "prefect"), "worker", "start", "--pool", "aether-process"], "worker"
    )
    name = "aether-plan-and-execute/daily-sales-report"
    with use_server(real_server):
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(name)
        assert [s.schedule.cron for s in deployment.schedules] == ["0 6 * * *"]
        assert deployment.parameters["goal"].startswith("revenue by region")
        out = tmp_path / "report"
        flow_run = await arun_deployment(
            name,
            parameters={"user_inputs": {"title": "Nightly", "output_dir": str(out)}},
            timeout=240,
            poll_interval=1,
        )
        assert flow_run.state is not None
        assert flow_run.state.is_completed(), (flow_run.state, real_server.processes[-1].tail())
        report = await flow_run.state.aresult()
        assert report["ok"] is True
        assert report["planner"] == "heuristic"
        assert "# Nightly" in (out / "report.md").read_text()
        async with get_client() as client:
            plan_run = await client.read_flow_run(UUID(report["plan_flow_run_id"]))
        assert plan_run.state is not None
        assert plan_run.state.is_completed()
        assert f"run:{flow_run.id}" in plan_run.tags
        assert "graph:aether-plan-and-execute" in plan_run.tags
