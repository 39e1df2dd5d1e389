"""A hanging step against a real `prefect server start`: stopped at its timeout.

(SIGKILL mid-plan, two processes resuming one execution and an API outage are in
test_executions.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor
from tests import crash_flows
from tests.conftest import use_server
from tests.processes import PrefectServer

PLAN = {
    "steps": [
        {"id": "extract", "action": "extract", "inputs": {"n": 5}},
        {"id": "crunch", "action": "crunch", "inputs": {"values": "${extract.result}"}},
        {"id": "publish", "action": "publish", "inputs": {"total": "${crunch.result}"}},
    ]
}


def runs_of(directory: Path, name: str) -> int:
    return len(list(directory.glob(f"{name}.*")))


async def test_a_hanging_step_is_stopped_and_fail_fast_holds_the_rest(
    real_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("AETHER_TEST_RUNS", str(runs))
    catalog = ActionCatalog()
    catalog.register_module(crash_flows)
    plan = CandidatePlan.from_dict(
        {
            "steps": [
                {
                    "id": "stuck",
                    "action": "crunch",
                    "inputs": {"values": [1]},
                    "extras": {"timeout_seconds": 1},
                },
                {"id": "after", "action": "publish", "inputs": {"total": "${stuck.result}"}},
                {"id": "other", "action": "extract", "inputs": {"n": 2}},
                {"id": "later", "action": "publish", "inputs": {"total": 3}},
            ]
        }
    )
    started = time.monotonic()
    with use_server(real_server):
        result = await PlanExecutor(catalog, max_concurrency=1).execute(plan)
    assert time.monotonic() - started < 30
    assert not result.ok
    assert result.errors["stuck"].startswith("TaskRunTimeoutError")
    # One step at a time: the hanging step ran first, so fail_fast started nothing else.
    assert result.skipped == ["other", "later", "after"]
    assert runs_of(runs, "crunch") == 1
    assert runs_of(runs, "publish") == 0
    assert runs_of(runs, "extract") == 0
