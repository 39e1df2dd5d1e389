"""Task-mode steps on a distributed engine: a Prefect task runner (prefect-dask)."""

from __future__ import annotations

import os

import pytest

from prefect_aether import ActionCatalog, AetherUsageError, CandidatePlan, PlanExecutor

pytestmark = pytest.mark.usefixtures("prefect_server")


async def test_steps_run_on_a_dask_cluster_of_worker_processes() -> None:
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    catalog = ActionCatalog()
    catalog.register_module("tests.dask_flows")
    width = 4
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                *(
                    {"id": f"w{i}", "action": "which_process", "inputs": {"n": i, "seconds": 0.3}}
                    for i in range(width)
                ),
                {
                    "id": "join",
                    "action": "collect_pids",
                    "inputs": {"pids": [f"${{w{i}.pid}}" for i in range(width)]},
                },
            ]
        }
    )
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        cluster.get_client() as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        executor = PlanExecutor(
            catalog, task_runner=DaskTaskRunner(address=cluster.scheduler_address)
        )
        result = await executor.execute(plan)
    assert result.ok, result.errors
    ran_in = set(result.outputs["result"])
    assert os.getpid() not in ran_in
    assert ran_in <= worker_pids
    assert {result.step_outputs[f"w{i}"]["total"] >= i for i in range(width)} == {True}


def test_a_task_runner_must_be_a_prefect_task_runner() -> None:
    with pytest.raises(AetherUsageError, match="task_runner must be a Prefect task runner"):
        PlanExecutor(ActionCatalog(), task_runner="dask")  # type: ignore[arg-type]
