from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.events.filters import EventFilter, EventResourceFilter

from prefect_aether import ActionCatalog, AetherUsageError, CandidatePlan, PlanValidationError
from prefect_aether.execution._results import ProcessLockManager
from prefect_aether.execution.executor import ExecutionEvent, PlanExecutor
from tests import exec_flows, figures
from tests.artifacts import results
from tests.exec_flows import executions

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def catalog() -> ActionCatalog:
    catalog = ActionCatalog()
    catalog.register_module(exec_flows)
    return catalog


def diamond(log: Path, width: int = 3) -> CandidatePlan:
    steps: list[dict[str, Any]] = [
        {
            "id": f"n{i}",
            "action": "emit_number",
            "inputs": {"value": i + 1, "log_dir": str(log), "delay": 0.2},
        }
        for i in range(width)
    ]
    steps.append(
        {
            "id": "join",
            "action": "summarize",
            "inputs": {"values": [f"${{n{i}.result}}" for i in range(width)], "log_dir": str(log)},
        }
    )
    steps.append(
        {
            "id": "twice",
            "action": "double",
            "inputs": {"value": "${join.total}", "log_dir": str(log)},
        }
    )
    return CandidatePlan.from_dict({"steps": steps})


async def task_runs(
    flow_run_id: str | None, expected: int | None = None, timeout: float = 20
) -> dict[str, TaskRun]:
    """The plan's task runs once all (`expected` many) are final; the server records them
    from events, so they show up a little after the flow run ends."""
    assert flow_run_id is not None
    deadline = time.monotonic() + timeout
    while True:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            )
        settled = all(r.state is not None and r.state.is_final() for r in runs)
        if (settled and len(runs) >= (expected or 0)) or time.monotonic() > deadline:
            return {run.name: run for run in runs}
        await asyncio.sleep(0.2)


async def flow_run(flow_run_id: str | None) -> FlowRun:
    assert flow_run_id is not None
    async with get_client() as client:
        return await client.read_flow_run(UUID(flow_run_id))


async def test_dag_runs_with_outputs_tags_and_edges(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    plan = diamond(counter_dir)
    events: list[ExecutionEvent] = []
    executor = PlanExecutor(catalog, tag_steps=True)
    result = await executor.execute(plan, on_event=events.append, tags=["team:data"])
    assert result.ok, result.errors
    assert result.step_outputs["join"] == {"total": 6, "count": 3}
    assert result.outputs == {"result": 12}
    assert executions(counter_dir, "summarize") == 1

    parent = await flow_run(result.flow_run_id)
    assert parent.name == f"plan-{plan.plan_id}"
    assert set(parent.tags) >= {"team:data", f"plan:{plan.plan_id}"}
    assert parent.state is not None
    assert parent.state.is_completed()

    runs = await task_runs(result.flow_run_id, expected=5)
    assert set(runs) == {"n0", "n1", "n2", "join", "twice"}
    for sid, run in runs.items():
        assert set(run.tags) >= {f"plan_step:{sid}", f"plan:{plan.plan_id}", "team:data"}
    upstream_of_join = {
        str(ref.id)
        for ref in runs["join"].task_inputs["wait_for"]  # type: ignore[union-attr]
    }
    assert upstream_of_join == {str(runs[f"n{i}"].id) for i in range(3)}
    assert {str(r.id) for r in runs["twice"].task_inputs["wait_for"]} == {str(runs["join"].id)}  # type: ignore[union-attr]

    phases = [(e.phase, e.step_id) for e in events]
    assert phases[0] == ("start", None)
    assert phases[-1] == ("success", None)
    assert phases.index(("step_success", "join")) < phases.index(("step_start", "twice"))
    for i in range(3):
        assert phases.index(("step_success", f"n{i}")) < phases.index(("step_start", "join"))


async def test_independent_steps_overlap_and_max_concurrency_bounds_them(
    catalog: ActionCatalog, tmp_path: Path
) -> None:
    def plan_for(log: Path) -> CandidatePlan:
        log.mkdir()
        return CandidatePlan.from_dict(
            {
                "steps": [
                    {"id": f"s{i}", "action": "sleepy", "inputs": {"value": i, "log_dir": str(log)}}
                    for i in range(3)
                ]
            }
        )

    def spans(log: Path) -> list[tuple[float, float]]:
        out = []
        for i in range(3):
            start, end = (log / f"span-{i}").read_text().split()
            out.append((float(start), float(end)))
        return sorted(out)

    wide = await PlanExecutor(catalog).execute(plan_for(tmp_path / "wide"))
    assert wide.ok, wide.errors
    starts_and_ends = spans(tmp_path / "wide")
    assert max(s for s, _ in starts_and_ends) < min(e for _, e in starts_and_ends)  # all overlap

    serial = await PlanExecutor(catalog, max_concurrency=1).execute(plan_for(tmp_path / "serial"))
    assert serial.ok, serial.errors
    ordered = spans(tmp_path / "serial")
    assert all(ordered[i][1] <= ordered[i + 1][0] for i in range(2))  # never two at once


async def test_invalid_plan_raises_before_any_flow_run(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    async with get_client() as client:
        before = await client.count_flow_runs()
    bad = CandidatePlan.from_dict(
        {"steps": [{"id": "a", "action": "double", "inputs": {"value": "${ghost.result}"}}]}
    )
    with pytest.raises(PlanValidationError) as info:
        await PlanExecutor(catalog).execute(bad)
    assert {i.kind for i in info.value.issues} == {"unknown_step", "missing_input"}
    partial = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "a", "action": "double", "inputs": {"value": "${user.n}", "log_dir": "x"}}
            ]
        }
    )
    with pytest.raises(PlanValidationError, match=r"user\.n is needed by a\.value"):
        await PlanExecutor(catalog).execute(partial)
    async with get_client() as client:
        assert await client.count_flow_runs() == before


async def test_user_inputs_and_paths_are_bound_at_run_time(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "sum",
                    "action": "summarize",
                    "inputs": {"values": "${user.numbers}", "log_dir": str(counter_dir)},
                },
                {
                    "id": "d",
                    "action": "double",
                    "inputs": {"value": "${sum.total}", "log_dir": "${user.cfg.dir}"},
                },
            ]
        }
    )
    result = await PlanExecutor(catalog).execute(
        plan, user_inputs={"numbers": ["1", 2, 3], "cfg": {"dir": str(counter_dir)}}
    )
    assert result.ok, result.errors
    assert result.step_outputs["sum"] == {"total": 6, "count": 3}  # "1" coerced by Prefect
    assert result.outputs == {"result": 12}


async def test_fail_fast_skips_everything_not_started(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "boom", "action": "always_fail", "inputs": {"log_dir": log}},
                {
                    "id": "after",
                    "action": "double",
                    "inputs": {"value": "${boom.result}", "log_dir": log},
                },
                {
                    "id": "slow",
                    "action": "emit_number",
                    "inputs": {"value": 5, "log_dir": log, "delay": 1.0},
                },
                {
                    "id": "later",
                    "action": "double",
                    "inputs": {"value": "${slow.result}", "log_dir": log},
                },
            ]
        }
    )
    events: list[ExecutionEvent] = []
    result = await PlanExecutor(catalog, fail_fast=True).execute(plan, on_event=events.append)
    assert not result.ok
    assert result.errors == {"boom": "RuntimeError: this step always fails"}
    assert sorted(result.skipped) == ["after", "later"]
    assert executions(counter_dir, "double") == 0
    failure = next(e for e in events if e.phase == "step_failure")
    assert (failure.step_id, failure.error) == ("boom", "RuntimeError: this step always fails")
    assert {e.step_id for e in events if e.phase == "step_skipped"} == {"after", "later"}
    assert events[-1].phase == "failure"
    parent = await flow_run(result.flow_run_id)
    assert parent.state is not None
    assert parent.state.is_failed()
    assert "boom" in (parent.state.message or "")


async def test_without_fail_fast_independent_branches_run_on(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "boom", "action": "always_fail", "inputs": {"log_dir": log}},
                {
                    "id": "after",
                    "action": "double",
                    "inputs": {"value": "${boom.result}", "log_dir": log},
                },
                {
                    "id": "deeper",
                    "action": "double",
                    "inputs": {"value": "${after.result}", "log_dir": log},
                },
                {
                    "id": "slow",
                    "action": "emit_number",
                    "inputs": {"value": 5, "log_dir": log, "delay": 0.5},
                },
                {
                    "id": "later",
                    "action": "double",
                    "inputs": {"value": "${slow.result}", "log_dir": log},
                },
            ]
        }
    )
    result = await PlanExecutor(catalog, fail_fast=False).execute(plan)
    assert not result.ok
    assert sorted(result.skipped) == ["after", "deeper"]
    assert result.step_outputs["later"] == {"result": 10}
    assert executions(counter_dir, "double") == 1


async def test_every_execution_is_fresh_and_resume_continues_one(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "a", "action": "emit_number", "inputs": {"value": 20, "log_dir": log}},
                {"id": "b", "action": "double", "inputs": {"value": "${a.result}", "log_dir": log}},
                {
                    "id": "c",
                    "action": "fail_once",
                    "inputs": {"value": "${b.result}", "log_dir": log},
                },
            ]
        }
    )
    first = await PlanExecutor(catalog).execute(plan)
    assert not first.ok
    assert first.errors == {"c": "ValueError: transient failure, try again"}
    assert first.execution_id is not None
    parent = await flow_run(first.flow_run_id)
    assert f"execution:{first.execution_id}" in parent.tags
    # Resume continues that execution: a and b are reused, c runs again (and succeeds).
    second = await PlanExecutor(catalog).execute(plan, resume=first.execution_id)
    assert second.ok, second.errors
    assert second.execution_id == first.execution_id
    assert second.outputs == {"result": 41}
    assert sorted(second.reused) == ["a", "b"]
    assert executions(counter_dir, "emit_number-20") == 1
    assert executions(counter_dir, "double") == 1
    assert executions(counter_dir, "fail_once") == 2
    runs = await task_runs(second.flow_run_id, expected=3)
    assert runs["a"].state_name == "Reused"
    assert runs["c"].state_name == "Completed"
    # A new execution (the default) runs every step again: nothing stale is reused.
    third = await PlanExecutor(catalog).execute(plan)
    assert third.ok
    assert third.reused == []
    assert third.execution_id not in (None, first.execution_id)
    assert executions(counter_dir, "emit_number-20") == 2
    # "latest" is the newest execution of this plan.
    latest = await PlanExecutor(catalog).execute(plan, resume="latest")
    assert latest.execution_id == third.execution_id
    assert sorted(latest.reused) == ["a", "b", "c"]


async def test_resume_of_an_unknown_execution_is_a_clear_error(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "a",
                    "action": "emit_number",
                    "inputs": {"value": 5, "log_dir": str(counter_dir)},
                }
            ]
        }
    )
    with pytest.raises(AetherUsageError, match="no earlier execution of plan"):
        await PlanExecutor(catalog).execute(plan, resume="latest")
    with pytest.raises(AetherUsageError, match=r"no execution 0{32} of plan"):
        await PlanExecutor(catalog).execute(plan, resume="0" * 32)
    with pytest.raises(AetherUsageError, match="32 hex digits"):
        await PlanExecutor(catalog).execute(plan, resume="../../etc")
    assert executions(counter_dir, "emit_number-5") == 0


async def test_resume_key_is_step_and_inputs_not_call_order(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    steps = [
        {"id": f"s{i}", "action": "emit_number", "inputs": {"value": v, "log_dir": log, "delay": d}}
        for i, (v, d) in enumerate([(100, 0.3), (200, 0.0), (100, 0.1), (300, 0.2)])
    ]
    plan = CandidatePlan.from_dict({"steps": steps})
    first = await PlanExecutor(catalog).execute(plan)
    assert {k: v["result"] for k, v in first.step_outputs.items()} == {
        "s0": 100,
        "s1": 200,
        "s2": 100,
        "s3": 300,
    }
    again = await PlanExecutor(catalog).execute(
        CandidatePlan.from_dict({"steps": list(reversed(steps))}), resume=first.execution_id
    )
    assert again.step_outputs == first.step_outputs
    assert sorted(again.reused) == ["s0", "s1", "s2", "s3"]
    # s0 and s2 share an action and inputs but are different steps: both really ran once.
    assert executions(counter_dir, "emit_number-100") == 2


async def test_a_changed_flow_body_runs_again_under_the_same_version(
    counter_dir: Path, tmp_path: Path
) -> None:
    """The result key holds a hash of the action's code: editing the function without
    bumping `version=` is not served a stale result, even when resuming."""
    source = tmp_path / "edited_flows.py"
    body = (
        "from prefect import flow\n"
        "from tests.exec_flows import record\n"
        "@flow(name='price', version='1')\n"
        "def price(log_dir: str) -> int:\n"
        "    record(log_dir, 'price')\n"
        "    return {value}\n"
    )
    plan = CandidatePlan.from_dict(
        {"steps": [{"id": "p", "action": "price", "inputs": {"log_dir": str(counter_dir)}}]}
    )
    outputs = []
    execution: str | None = None
    for value in (10, 10, 12):
        source.write_text(body.format(value=value))
        catalog = ActionCatalog()
        catalog.register_module(str(source))
        result = await PlanExecutor(catalog).execute(plan, resume=execution)
        assert result.ok, result.errors
        execution = result.execution_id
        outputs.append((result.outputs["result"], result.reused))
    assert outputs == [(10, []), (10, ["p"]), (12, [])]
    assert executions(counter_dir, "price") == 2


async def test_reuse_across_executions_only_when_asked(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    step = {"id": "a", "action": "emit_number", "inputs": {"value": 77, "log_dir": log}}
    plan = CandidatePlan.from_dict({"steps": [step]})
    hour = dt.timedelta(hours=1)
    assert (await PlanExecutor(catalog, reuse_within=hour).execute(plan)).reused == []
    assert (await PlanExecutor(catalog, reuse_within=hour).execute(plan)).reused == ["a"]
    assert (await PlanExecutor(catalog).execute(plan)).reused == []  # not asked: runs
    assert executions(counter_dir, "emit_number-77") == 2
    # Per step, in seconds (other inputs, so nothing above is young enough to reuse);
    # an expired result is not reused.
    other = {**step, "inputs": {"value": 78, "log_dir": log}, "extras": {"reuse_within": 4}}
    timed = CandidatePlan.from_dict({"steps": [other]})
    assert (await PlanExecutor(catalog).execute(timed)).reused == []
    assert (await PlanExecutor(catalog).execute(timed)).reused == ["a"]
    await asyncio.sleep(4.2)
    assert (await PlanExecutor(catalog).execute(timed)).reused == []
    assert executions(counter_dir, "emit_number-78") == 2


async def test_step_policy_retries_and_timeout(catalog: ActionCatalog, counter_dir: Path) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "flaky",
                    "action": "fail_once",
                    "inputs": {"value": 1, "log_dir": log},
                    "extras": {"retries": 1, "retry_delay_seconds": 0},
                },
                {
                    "id": "stuck",
                    "action": "hang",
                    "inputs": {"log_dir": log},
                    "extras": {"timeout_seconds": 0.5},
                },
            ]
        }
    )
    started = time.monotonic()
    result = await PlanExecutor(catalog, fail_fast=False).execute(plan)
    assert time.monotonic() - started < 20
    assert result.step_outputs["flaky"] == {"result": 2}
    assert executions(counter_dir, "fail_once") == 2
    assert result.errors["stuck"].startswith("TaskRunTimeoutError")
    assert executions(counter_dir, "hang") == 1


@pytest.mark.parametrize("run_as", ["task", "subflow"])
async def test_after_edges_wait_without_passing_data(
    catalog: ActionCatalog, counter_dir: Path, run_as: str
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "slow",
                    "action": "sleepy",
                    "inputs": {"value": 1, "log_dir": log, "seconds": 0.3},
                },
                {
                    "id": "later",
                    "action": "emit_number",
                    "inputs": {"value": 2, "log_dir": log},
                    "after": ["slow"],
                },
            ]
        }
    )
    result = await PlanExecutor(catalog, run_as=run_as).execute(plan)  # type: ignore[arg-type]
    assert result.ok, result.errors
    finished = float((counter_dir / "span-1").read_text().split()[1])
    started = float(next(counter_dir.glob("emit_number-2.*")).read_text())
    assert started >= finished
    if run_as == "task":
        runs = await task_runs(result.flow_run_id, expected=2)
        waits = runs["later"].task_inputs["wait_for"]  # type: ignore[union-attr]
        assert [str(w.id) for w in waits] == [str(runs["slow"].id)]


async def test_subflow_mode_creates_named_tagged_child_flow_runs(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "first", "action": "emit_number", "inputs": {"value": 7, "log_dir": log}},
                {
                    "id": "second",
                    "action": "double",
                    "inputs": {"value": "${first.result}", "log_dir": log},
                    "extras": {"run_as": "task"},
                },
            ]
        }
    )
    result = await PlanExecutor(catalog, run_as="subflow").execute(plan, tags=["mode:subflow"])
    assert result.ok, result.errors
    assert result.outputs == {"result": 14}
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"plan:{plan.plan_id}", "plan_step:first"])
            )
        )
    assert [c.name for c in children] == ["first"]
    assert set(children[0].tags) >= {"mode:subflow", f"plan:{plan.plan_id}", "plan_step:first"}
    runs = await task_runs(result.flow_run_id, expected=2)
    async with get_client() as client:
        assert children[0].parent_task_run_id is not None
        link = await client.read_task_run(children[0].parent_task_run_id)
    # Prefect links a child flow run into the plan's run by a task run, and draws the
    # child as its flow run: the next step waits for that flow run, so the run graph
    # has the edge first -> second.
    assert str(link.flow_run_id) == result.flow_run_id
    waits = runs["second"].task_inputs["wait_for"]  # type: ignore[union-attr]
    assert [w.id for w in waits] == [children[0].id]
    assert ("first", "second") in await graph_edges(result.flow_run_id)
    assert not any(c.name == "second" for c in children)

    again = await PlanExecutor(catalog, run_as="subflow").execute(plan, resume=result.execution_id)
    assert again.ok
    assert sorted(again.reused) == ["first", "second"]
    assert executions(counter_dir, "emit_number-7") == 1


async def graph_edges(flow_run_id: str | None) -> set[tuple[str, str]]:
    """The edges of a flow run's graph as the Prefect UI reads them (`graph-v2`), by
    node label."""
    assert flow_run_id is not None
    async with get_client() as client:
        response = await client._client.get(f"/flow_runs/{flow_run_id}/graph-v2")
    response.raise_for_status()
    nodes: dict[str, Any] = dict(response.json()["nodes"])
    # A child flow run's node is labelled "<flow> / <run name>": the step id is the name.
    label = {node_id: node["label"].rsplit(" / ", 1)[-1] for node_id, node in nodes.items()}
    return {
        (label[parent["id"]], label[node_id])
        for node_id, node in nodes.items()
        for parent in node["parents"]
    }


async def test_subflow_mode_draws_the_dag(catalog: ActionCatalog, counter_dir: Path) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "a", "action": "emit_number", "inputs": {"value": 3, "log_dir": log}},
                {"id": "b", "action": "double", "inputs": {"value": "${a.result}", "log_dir": log}},
                {"id": "c", "action": "double", "inputs": {"value": "${b.result}", "log_dir": log}},
                {
                    "id": "d",
                    "action": "emit_number",
                    "inputs": {"value": 4, "log_dir": log},
                    "after": ["a"],
                },
            ]
        }
    )
    result = await PlanExecutor(catalog, run_as="subflow").execute(plan)
    assert result.ok, result.errors
    assert result.outputs == {"result": 12}
    deadline = time.monotonic() + 20
    while True:
        edges = await graph_edges(result.flow_run_id)
        if len(edges) >= 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert edges == {("a", "b"), ("b", "c"), ("a", "d")}


async def plan_and_results(
    plan: CandidatePlan, result: Any
) -> tuple[str, dict[str, dict[str, str]]]:
    """The run's plan artifact (markdown) and its results, by step."""
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(
                    any_=[f"aether-plan-{plan.plan_id}", f"aether-results-{plan.plan_id}"]
                )
            )
        )
    by_key = {a.key: a for a in artifacts if str(a.flow_run_id) == result.flow_run_id}
    return (
        str(by_key[f"aether-plan-{plan.plan_id}"].data),
        results(str(by_key[f"aether-results-{plan.plan_id}"].data)),
    )


async def test_artifacts_show_plan_and_results(catalog: ActionCatalog, counter_dir: Path) -> None:
    plan = diamond(counter_dir, width=2)
    result = await PlanExecutor(catalog).execute(plan)
    markdown, rows = await plan_and_results(plan, result)
    assert "mermaid" not in markdown  # neither Prefect UI draws it: a table both read
    assert "4 steps in 3 levels." in markdown
    assert "| 2 | join | summarize | n0, n1 | values = " in markdown
    assert "| 3 | twice | double | join | value = " in markdown
    assert list(rows) == ["n0", "n1", "join", "twice"]
    assert {r["state"] for r in rows.values()} == {"Completed"}
    assert rows["join"]["output"] == '{"count":2,"total":3}'


async def test_artifacts_say_why_a_step_failed_or_was_skipped_and_what_values_ran(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "a",
                    "action": "emit_number",
                    "inputs": {"value": "${user.n}", "log_dir": "x"},
                },
                {"id": "boom", "action": "always_fail", "inputs": {"log_dir": log}, "after": ["a"]},
                {"id": "b", "action": "double", "inputs": {"value": "${boom}", "log_dir": log}},
            ]
        }
    )
    plan.steps[0].inputs["log_dir"] = log
    result = await PlanExecutor(catalog).execute(plan, user_inputs={"n": 21})
    assert not result.ok
    markdown, rows = await plan_and_results(plan, result)
    # The binding, then the value it got.
    [row_a] = [line for line in markdown.splitlines() if line.startswith("| 1 | a |")]
    assert "user" in row_a
    assert row_a.count("→ 21") == 1, row_a
    why = {sid: (r["state"], r["why"]) for sid, r in rows.items()}
    assert why["a"] == ("Completed", "")
    assert why["boom"][0] == "Failed"
    assert "RuntimeError: this step always fails" in why["boom"][1]
    assert why["b"][0] == "Skipped"
    assert "failed" in why["b"][1]


async def test_event_callbacks_may_be_async_and_may_fail(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    seen: list[str] = []

    async def on_event(event: ExecutionEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.phase)
        if event.phase == "step_start":
            raise RuntimeError("callback bug")

    plan = diamond(counter_dir, width=1)
    result = await PlanExecutor(catalog).execute(plan, on_event=on_event)
    assert result.ok, result.errors
    assert seen.count("step_start") == 3
    assert seen[-1] == "success"


def test_background_execution_handle(catalog: ActionCatalog, counter_dir: Path) -> None:
    completed: list[Any] = []
    plan = diamond(counter_dir, width=2)
    handle = PlanExecutor(catalog).execute_background(plan, on_complete=completed.append)
    assert handle.plan_id == plan.plan_id
    result = handle.wait(timeout=120)
    assert handle.done()
    assert not handle.cancelled()
    assert result.ok
    assert result.outputs == {"result": 6}
    assert completed == [result]
    assert handle.cancel() is False

    slow = CandidatePlan.from_dict(
        {"steps": [{"id": "h", "action": "hang", "inputs": {"log_dir": str(counter_dir)}}]}
    )
    handle = PlanExecutor(catalog).execute_background(slow)
    time.sleep(1.0)
    assert handle.cancel() is True
    result = handle.wait(timeout=60)
    assert handle.cancelled()
    assert not result.ok
    assert result.errors["plan"].startswith("CancelledError")


class Boom:
    """Unpickling this runs code: the payload a forged result would carry."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.path), "pwned"))


async def test_a_forged_result_file_is_neither_executed_nor_trusted(
    catalog: ActionCatalog, counter_dir: Path, tmp_path: Path
) -> None:
    import base64
    import pickle

    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {"id": "a", "action": "emit_number", "inputs": {"value": 8, "log_dir": log}},
                {"id": "b", "action": "fail_once", "inputs": {"value": 1, "log_dir": log}},
            ]
        }
    )
    executor = PlanExecutor(catalog)
    first = await executor.execute(plan)
    assert not first.ok
    folder = executor.results.folder
    assert folder is not None
    assert folder.stat().st_mode & 0o777 == 0o700
    [written] = list((folder / "aether" / str(first.execution_id)).iterdir())
    assert written.stat().st_mode & 0o777 == 0o600
    assert json.loads(written.read_text())["metadata"]["serializer"]["type"] == "aether-json"
    canary = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(Boom(str(canary)))).decode()
    forged = {
        "metadata": {"serializer": {"type": "pickle", "picklelib": "pickle"}},
        "result": payload,
    }
    for content in (json.dumps(forged), pickle.dumps(Boom(str(canary)))):
        if isinstance(content, str):
            written.write_text(content)
        else:
            written.write_bytes(content)
        again = await PlanExecutor(catalog).execute(plan, resume=first.execution_id)
        assert again.ok, again.errors
        assert not canary.exists()  # never unpickled
        assert again.step_outputs["a"] == {"result": 8}
        assert "a" not in again.reused  # not trusted: the step ran again
        figures.add("executions.forged_results_planted")
        figures.add("executions.forged_results_trusted", int("a" in again.reused))
    assert executions(counter_dir, "emit_number-8") == 3


async def test_values_json_cannot_hold_are_pickled_only_when_allowed(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    log = str(counter_dir)
    plan = CandidatePlan.from_dict(
        {"steps": [{"id": "o", "action": "opaque", "inputs": {"log_dir": log}}]}
    )
    for serializer, reused in (("json", []), ("pickle", ["o"])):
        executor = PlanExecutor(catalog, result_serializer=serializer)  # type: ignore[arg-type]
        first = await executor.execute(plan)
        assert first.ok, first.errors
        again = await executor.execute(plan, resume=first.execution_id)
        assert again.ok
        assert again.reused == reused
    with pytest.raises(AetherUsageError, match="result_serializer"):
        PlanExecutor(catalog, result_serializer="marshal")  # type: ignore[arg-type]


async def test_a_900_kb_plan_and_a_5_mb_input_run_with_small_run_parameters(
    catalog: ActionCatalog,
) -> None:
    big_literal = "p" * 900_000
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "size",
                    "action": "measure",
                    "inputs": {"text": big_literal, "extra": "${user.document}"},
                }
            ]
        }
    )
    assert len(json.dumps(plan.to_dict())) > 900_000
    document = "d" * 5_000_000
    result = await PlanExecutor(catalog).execute(plan, user_inputs={"document": document})
    assert result.ok, result.errors
    assert result.outputs == {"result": 5_900_000}
    parent = await flow_run(result.flow_run_id)
    assert set(parent.parameters) == {"plan_id", "execution_id", "summary"}
    assert len(json.dumps(parent.parameters)) < 1_000
    # A wrong value of that size is refused without echoing it.
    with pytest.raises(PlanValidationError) as refused:
        await PlanExecutor(catalog).execute(plan, user_inputs={"document": ["d" * 5_000_000]})
    assert len(str(refused.value)) < 2_000
    assert "d" * 100 not in str(refused.value)


async def test_the_plan_run_log_tells_each_step_and_the_artifacts(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    plan = diamond(counter_dir, width=2)
    first = await PlanExecutor(catalog).execute(plan)
    again = await PlanExecutor(catalog).execute(plan, resume=first.execution_id)
    assert again.ok
    assert again.flow_run_id is not None
    deadline = time.monotonic() + 20
    while True:
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(again.flow_run_id)]))
            )
        text = "\n".join(log.message for log in logs)
        if "artifacts aether-plan-" in text or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    for sid, action in (("n0", "emit_number"), ("join", "summarize"), ("twice", "double")):
        assert f"step {sid} (action {action}) started" in text
        assert re.search(
            rf"step {sid} \(action {action}\) reused its result from an earlier attempt of "
            rf"this execution in \d+\.\d\d s",
            text,
        ), text
    assert f"artifacts aether-plan-{plan.plan_id} (the plan) and aether-results-" in text


async def test_lock_files_do_not_pile_up(catalog: ActionCatalog, counter_dir: Path) -> None:
    """Each step locks its result key with a file; the holder removes it as it lets go,
    so a long-lived worker does not collect one file per step ever run."""
    executor = PlanExecutor(catalog)
    await executor.results.store()
    manager = (await executor.results.store()).lock_manager
    assert isinstance(manager, ProcessLockManager)
    before = len(list(manager.directory.iterdir()))
    result = await executor.execute(diamond(counter_dir, width=3))
    assert result.ok, result.errors
    assert len(list(manager.directory.iterdir())) <= before


def test_a_released_lock_is_taken_again_on_a_new_file(tmp_path: Path) -> None:
    first, second = ProcessLockManager(tmp_path), ProcessLockManager(tmp_path)
    assert first.acquire_lock("k", holder="a")
    assert not second.acquire_lock("k", holder="b", acquire_timeout=0.1)
    assert second.is_locked("k")
    first.release_lock("k", holder="a")
    assert list(tmp_path.iterdir()) == []
    assert not second.is_locked("k")
    assert list(tmp_path.iterdir()) == []  # asking creates no file
    assert second.acquire_lock("k", holder="b", acquire_timeout=1)
    assert first.is_locked("k")
    with pytest.raises(ValueError, match="does not hold"):
        second.release_lock("k", holder="a")
    second.release_lock("k", holder="b")
    assert first.acquire_lock("k", holder="a", acquire_timeout=1)
    first.release_lock("k", holder="a")


async def test_each_step_emits_one_event_when_it_ends(
    catalog: ActionCatalog, counter_dir: Path
) -> None:
    """One Prefect event per step (its end, with its duration): each event costs the
    server several ms of CPU, and the step's run emits its own `Running` event."""
    plan = diamond(counter_dir, width=2)
    result = await PlanExecutor(catalog).execute(plan)
    assert result.ok, result.errors
    resource = f"prefect-aether.plan.{plan.plan_id}"
    events: list[Any] = []
    async with get_client() as client:
        for _ in range(60):
            page = await client.read_events(
                filter=EventFilter(resource=EventResourceFilter(id=[resource])), limit=50
            )
            events = page.events
            if len(events) >= 4:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # a late `started` event would show up by now
        events = (
            await client.read_events(
                filter=EventFilter(resource=EventResourceFilter(id=[resource])), limit=50
            )
        ).events
    assert sorted(e.event for e in events) == ["prefect-aether.step.succeeded"] * 4
    assert sorted(e.payload["step_id"] for e in events) == ["join", "n0", "n1", "twice"]
    assert all(e.payload["duration_s"] >= 0 for e in events)
    slow = next(e for e in events if e.payload["step_id"] == "n0")
    assert slow.payload["duration_s"] >= 0.2  # emit_number sleeps 0.2 s


async def test_a_failed_artifact_write_does_not_fail_the_plan(
    catalog: ActionCatalog,
    counter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Artifacts report a run: when the API refuses one, the steps' outputs are still
    the result, and the reason is logged."""
    from prefect.artifacts import MarkdownArtifact

    async def refuse(self: Any, client: Any = None) -> Any:
        raise RuntimeError("artifact storage is full")

    monkeypatch.setattr(MarkdownArtifact, "acreate", refuse)
    with caplog.at_level("WARNING", logger="prefect_aether.execute"):
        result = await PlanExecutor(catalog).execute(diamond(counter_dir, width=1))
    assert result.ok, result.errors
    assert result.outputs == {"result": 2}
    assert "its artifacts could not be written: RuntimeError: artifact storage is full" in (
        caplog.text
    )
