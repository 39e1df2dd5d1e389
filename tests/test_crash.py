"""Crash and resume: a plan's process is SIGKILLed in the middle of a step, then run again.

Both runs talk to a real `prefect server start` and share its result storage, as
two processes of one deployment would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_aether import ActionCatalog, CandidatePlan, PlanExecutor
from tests import crash_flows, figures
from tests.conftest import use_server
from tests.processes import ROOT, PrefectServer

PLAN = {
    "steps": [
        {"id": "extract", "action": "extract", "inputs": {"n": 5}},
        {"id": "crunch", "action": "crunch", "inputs": {"values": "${extract.result}"}},
        {"id": "publish", "action": "publish", "inputs": {"total": "${crunch.result}"}},
    ]
}


def runs_of(directory: Path, name: str) -> int:
    return len(list(directory.glob(f"{name}.*")))


async def test_sigkill_mid_step_then_rerun_resumes(
    real_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    victim = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_flows", json.dumps(PLAN)],
        env={**real_server.env, "AETHER_TEST_RUNS": str(runs)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while runs_of(runs, "crunch") == 0:
            assert victim.poll() is None, victim.stdout.read().decode() if victim.stdout else ""
            assert time.monotonic() < deadline, "the plan never reached its second step"
            time.sleep(0.2)
        time.sleep(0.5)  # well inside the 120 s step
        os.killpg(victim.pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
    assert (runs_of(runs, "extract"), runs_of(runs, "crunch"), runs_of(runs, "publish")) == (
        1,
        1,
        0,
    )

    # The same plan again, in this process: the finished step is reused, not re-run.
    (runs / "fast").write_text("")
    monkeypatch.setenv("AETHER_TEST_RUNS", str(runs))
    catalog = ActionCatalog()
    catalog.register_module(crash_flows)
    with use_server(real_server):
        result = await PlanExecutor(catalog).execute(CandidatePlan.from_dict(PLAN))
    assert result.ok, result.errors
    assert result.outputs == {"result": "total=10"}
    assert result.reused == ["extract"]
    assert runs_of(runs, "extract") == 1
    assert runs_of(runs, "crunch") == 2
    assert runs_of(runs, "publish") == 1
    figures.add("crash_resume.plans_resumed")
    figures.add("crash_resume.completed_steps_rerun", runs_of(runs, "extract") - 1)
    figures.add("crash_resume.steps_completed_after_resume", len(result.step_outputs))


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
        result = await PlanExecutor(catalog, max_concurrency=1, resume=False).execute(plan)
    assert time.monotonic() - started < 30
    assert not result.ok
    assert result.errors["stuck"].startswith("TaskRunTimeoutError")
    # One step at a time: the hanging step ran first, so fail_fast started nothing else.
    assert result.skipped == ["other", "later", "after"]
    assert runs_of(runs, "crunch") == 1
    assert runs_of(runs, "publish") == 0
    assert runs_of(runs, "extract") == 0
