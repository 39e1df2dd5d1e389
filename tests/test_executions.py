"""Executions against real `prefect server start` processes, driven through the CLI as a
user would: a SIGKILL mid-plan, two processes resuming one execution, an API outage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_aether.store import ExecutionRecord, PlanStore
from tests import figures
from tests.processes import BIN, ROOT, PrefectServer

PLAN = {
    "steps": [
        {"id": "extract", "action": "extract", "inputs": {"n": 5}},
        {"id": "crunch", "action": "crunch", "inputs": {"values": "${extract.result}"}},
        {"id": "publish", "action": "publish", "inputs": {"total": "${crunch.result}"}},
    ]
}
MODULE = "tests/crash_flows.py"


def runs_of(directory: Path, name: str) -> int:
    return len(list(directory.glob(f"{name}.*")))


class Workspace:
    """A plan file, a runs folder, a plan store and the environment of a CLI process."""

    def __init__(self, server: PrefectServer, tmp_path: Path, plan: dict[str, Any]) -> None:
        self.runs = tmp_path / "runs"
        self.runs.mkdir()
        self.plan = tmp_path / "plan.json"
        self.plan.write_text(json.dumps(plan))
        self.store_url = f"sqlite+aiosqlite:///{tmp_path}/aether.db"
        self.env = {
            **server.env,
            "AETHER_TEST_RUNS": str(self.runs),
            "PREFECT_INTEGRATIONS_AETHER_STORE_URL": self.store_url,
            "PREFECT_INTEGRATIONS_AETHER_API_OUTAGE_TIMEOUT": "4",
            "COLUMNS": "200",
        }
        self.server = server

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "prefect-aether"), *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        process = self.start(*args)
        out, _ = process.communicate(timeout=timeout)
        return process.returncode, out.decode(errors="replace")

    def run_plan(self, *extra: str) -> subprocess.Popen[bytes]:
        return self.start("run", str(self.plan), "--module", MODULE, *extra)

    def wait_for_step(self, process: subprocess.Popen[bytes], name: str) -> None:
        deadline = time.monotonic() + 90
        while runs_of(self.runs, name) == 0:
            if process.poll() is not None:
                out = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"the plan ended before {name}: {out}")
            assert time.monotonic() < deadline, f"the plan never reached {name}"
            time.sleep(0.2)

    async def executions(self) -> list[ExecutionRecord]:
        store = PlanStore(self.store_url)
        try:
            return [run for _, run in await store.history(limit=50)]
        finally:
            await store.close()

    def flow_run_states(self, execution_id: str) -> list[str]:
        response = httpx.post(
            f"{self.server.api_url}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [f"execution:{execution_id}"]}}},
            timeout=10,
        )
        response.raise_for_status()
        return [run["state"]["type"] for run in response.json()]


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


async def test_sigkill_then_history_reconciles_and_resume_completes(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    work = Workspace(real_server, tmp_path, PLAN)
    victim = work.run_plan()
    try:
        work.wait_for_step(victim, "crunch")
        time.sleep(0.5)  # well inside the 120 s step
        os.killpg(victim.pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
    finally:
        kill(victim)
    assert (runs_of(work.runs, "extract"), runs_of(work.runs, "crunch")) == (1, 1)
    [killed] = await work.executions()
    assert killed.status == "Running"  # nobody recorded the end
    assert killed.execution_id is not None

    # `history` sees that the holding process is gone: the row and the flow run are
    # marked Crashed instead of Running forever.
    code, out = work.run("history")
    assert code == 0, out
    assert "Crashed" in out
    [crashed] = await work.executions()
    assert crashed.status == "Crashed"
    assert work.flow_run_states(killed.execution_id) == ["CRASHED"]

    # --resume continues it: the finished step is reused, not run again.
    (work.runs / "fast").write_text("")
    code, out = work.run("run", str(work.plan), "--module", MODULE, "--resume", killed.execution_id)
    assert code == 0, out
    assert "reused (not run again): extract" in out
    assert (runs_of(work.runs, "extract"), runs_of(work.runs, "crunch")) == (1, 2)
    assert runs_of(work.runs, "publish") == 1
    [done] = await work.executions()
    assert (done.execution_id, done.status) == (killed.execution_id, "Completed")
    figures.add("crash_resume.plans_resumed")
    figures.add("crash_resume.completed_steps_rerun", runs_of(work.runs, "extract") - 1)
    figures.add("crash_resume.steps_completed_after_resume", 2)


async def test_two_processes_resuming_one_execution_never_both_run_a_step(
    real_server: PrefectServer, tmp_path: Path
) -> None:
    plan = {
        "steps": [
            {"id": "charge", "action": "charge", "inputs": {"amount": 7}},
            {"id": "receipt", "action": "publish", "inputs": {"total": 7}, "after": ["charge"]},
        ]
    }
    work = Workspace(real_server, tmp_path, plan)
    (work.runs / "decline").write_text("")
    code, out = work.run("run", str(work.plan), "--module", MODULE)
    assert code == 1, out
    assert "card declined" in out
    [declined] = await work.executions()
    assert declined.execution_id is not None
    assert runs_of(work.runs, "charge") == 0

    resume = ["--resume", declined.execution_id]
    both = [work.run_plan(*resume), work.run_plan(*resume)]
    outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    # The 3-second charge ran once: the second process waited for the first one's
    # result instead of charging the card again.
    figures.add("executions.concurrent_resumes", 2)
    figures.add("executions.double_runs", runs_of(work.runs, "charge") - 1)
    assert runs_of(work.runs, "charge") == 1
    assert sum("reused (not run again): charge" in o for o in outputs) == 1


@pytest.fixture
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A server of its own: this test stops and restarts it."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-outage"))
    try:
        yield server
    finally:
        server.stop()


async def test_an_api_outage_is_loud_bounded_and_resumable(
    outage_server: PrefectServer, tmp_path: Path
) -> None:
    work = Workspace(outage_server, tmp_path, PLAN)
    victim = work.run_plan()
    try:
        work.wait_for_step(victim, "crunch")
        outage_server.stop_server()
        stopped = time.monotonic()
        out, _ = victim.communicate(timeout=120)
        gave_up_after = time.monotonic() - stopped
    finally:
        kill(victim)
    text = out.decode(errors="replace")
    assert victim.returncode == 1, text
    assert gave_up_after < 60, f"took {gave_up_after:.0f} s to give up"
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert "did not answer for 4 s (api_outage_timeout)" in errors[0]
    [interrupted] = await work.executions()
    assert interrupted.status == "Interrupted"
    assert interrupted.execution_id is not None
    assert interrupted.execution_id in text

    outage_server.start_server()
    code, out_history = work.run("history")
    assert code == 0, out_history
    [crashed] = await work.executions()
    assert crashed.status == "Crashed", out_history
    assert work.flow_run_states(interrupted.execution_id) == ["CRASHED"]

    (work.runs / "fast").write_text("")
    code, resumed = work.run(
        "run", str(work.plan), "--module", MODULE, "--resume", interrupted.execution_id
    )
    assert code == 0, resumed
    assert "reused (not run again): extract" in resumed
    assert (runs_of(work.runs, "extract"), runs_of(work.runs, "crunch")) == (1, 2)
    figures.add("executions.api_outages")
    figures.add("executions.gave_up_within_s", round(gave_up_after))


def test_bare_resume_means_latest() -> None:
    from prefect_aether.cli.app import resume_flag

    assert resume_flag(["run", "p.json", "--resume", "--tag", "x"]) == [
        "run",
        "p.json",
        "--resume",
        "latest",
        "--tag",
        "x",
    ]
