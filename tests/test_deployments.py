"""Deployments as actions, end to end: `prefect server start` + a separate `serve` process."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.flow_runs import resume_flow_run

from prefect_aether import ActionCatalog, CandidatePlan, CatalogError
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.store import PlanStore
from tests import figures, hitl_flows
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
    # The block documents the deployment needs, from blocks/ (as code) and the environment.
    store_file = tmp_path / "deployed-store.db"
    applied = subprocess.run(
        [str(BIN / "prefect-aether"), "blocks", "apply", "blocks/"],
        env={
            **real_server.env,
            "AETHER_LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "AETHER_LLM_MODEL": "unused",
            "AETHER_STORE_URL": f"sqlite+aiosqlite:///{store_file}",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "aether-store/plans: created" in applied.stdout
    # The recipe of flows/prefect.yaml, word for word: the worker is started with nothing
    # of ours in its environment (no allow-list: the deployment brings it).
    prefect_cli(real_server, "work-pool", "create", "aether-process", "--type", "process")
    prefect_cli(real_server, "deploy", "--all", "--prefect-file", "flows/prefect.yaml")
    real_server.start(
        [str(BIN / "prefect"), "worker", "start", "--pool", "aether-process"],
        "worker",
        PREFECT_INTEGRATIONS_AETHER_STORE_BLOCK="plans",
        PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES="[]",
    )
    name = "aether-plan-and-execute/daily-sales-report"
    out = tmp_path / "report"
    parameters = {"user_inputs": {"title": "Nightly", "output_dir": str(out)}}
    started = prefect_cli(
        real_server, "deployment", "run", name, "--params", json.dumps(parameters)
    )
    match = re.search(r"UUID: ([0-9a-f-]{36})", started)
    assert match is not None, started
    with use_server(real_server):
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(name)
        assert [s.schedule.cron for s in deployment.schedules] == ["0 6 * * *"]
        assert deployment.parameters["goal"].startswith("revenue by region")
        flow_run = await wait_for_flow_run(UUID(match.group(1)), timeout=240)
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
    # The worker's runs recorded their execution in the store the block names.
    store = PlanStore(f"sqlite+aiosqlite:///{store_file}")
    try:
        [(_, execution)] = await store.history(limit=5)
    finally:
        await store.close()
    assert (execution.status, execution.execution_id) == ("Completed", report["execution_id"])


async def wait_for_flow_run(
    flow_run_id: UUID, timeout: float, *, until_paused: bool = False
) -> Any:
    """The flow run once it is final, or paused with `until_paused` (or as it is after
    `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(flow_run_id)
            state = run.state
            if state is not None and (state.is_final() or (until_paused and state.is_paused())):
                return run
            if time.monotonic() > deadline:
                return run
            await asyncio.sleep(0.5)


def test_the_deployable_flows_survive_a_pickle_round_trip_into_a_new_process(
    tmp_path: Path,
) -> None:
    """What `.serve()` does to them: cloudpickle by value, load in a fresh interpreter,
    validate parameters (string annotations would not resolve there)."""
    import cloudpickle

    from prefect_aether.flows import execute_plan, plan_and_execute

    cases = [
        (plan_and_execute, {"goal": "x", "catalog": {"modules": ["tests.hitl_flows"]}}),
        (execute_plan, {"plan": {"steps": []}, "resume": "latest"}),
    ]
    for flow_, parameters in cases:
        blob = tmp_path / f"{flow_.name}.pkl"
        blob.write_bytes(cloudpickle.dumps(flow_))
        code = (
            "import cloudpickle, json, sys\n"
            f"f = cloudpickle.loads(open({str(blob)!r}, 'rb').read())\n"
            f"print(json.dumps(sorted(f.validate_parameters({parameters!r}))))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert set(parameters) <= set(json.loads(done.stdout))


async def test_served_flows_run_when_triggered_with_prefect_deployment_run(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    real_server.start([sys.executable, "-m", "tests.serve_aether"], "serve-aether")

    def served() -> bool:
        return all(
            httpx.get(f"{real_server.api_url}/deployments/name/{name}", timeout=5).status_code
            == 200
            for name in (
                "aether-plan-and-execute/served-goal",
                "aether-execute-plan/served-plan",
                "aether-execute-plan/guarded-plan",
            )
        )

    real_server.processes[-1].wait_until(served, 120, "serve the deployable flows")
    plan = {"steps": [{"id": "hi", "action": "greet", "inputs": {"name": "${user.name}"}}]}
    triggered = {
        "aether-plan-and-execute/served-goal": {"user_inputs": {"name": "ada"}},
        "aether-execute-plan/served-plan": {"plan": plan, "user_inputs": {"name": "bo"}},
    }
    outputs = {}
    for name, parameters in triggered.items():
        out = prefect_cli(
            real_server, "deployment", "run", name, "--params", json.dumps(parameters)
        )
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert match is not None, out
        with use_server(real_server):
            flow_run = await wait_for_flow_run(UUID(match.group(1)), timeout=180)
            assert flow_run.state is not None
            assert flow_run.state.is_completed(), (
                flow_run.state,
                real_server.processes[-1].tail(),
            )
            outputs[name] = await flow_run.state.aresult()
    assert outputs["aether-plan-and-execute/served-goal"]["outputs"] == {"result": "hello ada"}
    assert outputs["aether-execute-plan/served-plan"]["outputs"] == {"result": "hello bo"}

    # An attacker who may start runs names a file of their own (and a module) as the
    # catalog: refused before any import, so the file's top-level code never runs.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    for modules in ([str(evil)], ["tests.hitl_flows", str(evil)], ["os"]):
        figures.add("guardrails.parameter_code_injection_tried")
        out = prefect_cli(
            real_server,
            "deployment",
            "run",
            "aether-execute-plan/served-plan",
            "--params",
            json.dumps({"plan": plan, "catalog": {"modules": modules}}),
        )
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert match is not None, out
        with use_server(real_server):
            flow_run = await wait_for_flow_run(UUID(match.group(1)), timeout=180)
        assert flow_run.state is not None
        assert flow_run.state.is_failed(), flow_run.state
        assert "PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES" in str(flow_run.state.message)
        assert not marker.exists()
        figures.add("guardrails.parameter_code_injection_blocked")

    # The operator tagged delete_backups for approval in the deployment's own catalog; a
    # run naming the same (allowed) module as its catalog does not drop that policy.
    inputs = {"log_dir": str(tmp_path)}
    delete = {"steps": [{"id": "d", "action": "delete_backups", "inputs": inputs}]}
    for catalog in (
        {"modules": ["tests.guarded_flows"]},
        {"modules": ["tests.guarded_flows"], "action_tags": {"delete_backups": []}},
    ):
        figures.add("guardrails.policy_overrides_tried")
        parameters = {"plan": delete, "catalog": catalog}
        out = prefect_cli(
            real_server,
            "deployment",
            "run",
            "aether-execute-plan/guarded-plan",
            "--params",
            json.dumps(parameters),
        )
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        assert match is not None, out
        with use_server(real_server):
            paused = await wait_for_flow_run(UUID(match.group(1)), timeout=180, until_paused=True)
            assert paused.state is not None
            assert paused.state.is_paused(), paused.state
            assert not (tmp_path / "backups-deleted").exists()
            await resume_flow_run(paused.id, run_input={"decision": "reject", "approver": "ops"})
            ended = await wait_for_flow_run(paused.id, timeout=120)
        assert ended.state is not None
        assert ended.state.is_cancelled(), ended.state
        assert not (tmp_path / "backups-deleted").exists()
        figures.add("guardrails.policy_overrides_blocked")
