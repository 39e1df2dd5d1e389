"""The executions an MCP server starts (private): each runs in the background as one
`aether-agent-run` flow run, which waits for a person's approval in the Prefect UI when
its plan needs one, then runs the plan as its child flow run."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext

from prefect_aether._internal.text import sanitize
from prefect_aether.context import get_planner
from prefect_aether.execution.events import ExecutionEvent, ExecutionResult
from prefect_aether.execution.executor import BackgroundExecutionHandle
from prefect_aether.flows import approve_then_execute
from prefect_aether.plan import CandidatePlan
from prefect_aether.runinfo import RunInfo
from prefect_aether.service import PlannerService
from prefect_aether.store import PlanStore

#: The flow whose run is one agent's execution (approval pause, then the plan's run).
AGENT_RUN_FLOW = "aether-agent-run"
#: How the runs an agent started are told apart in the UI (`origin:agent`, `app:mcp`).
AGENT_RUN_INFO = RunInfo(agent_id="mcp-client", app_id="mcp", origin="agent")
_FINAL = ("Completed", "Failed", "Rejected", "Cancelled")
#: Longest wait in `run` for the execution's flow run to exist (for its link).
_LINK_WAIT = 10.0


def prefect_server_configured() -> bool:
    """Whether a Prefect server (an API URL) is configured, so a person can approve a
    paused run in its UI (Prefect's embedded server has no UI anybody can reach)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def run_url(flow_run_id: str | None) -> str | None:
    """A flow run's page in the Prefect UI, when a UI URL is known."""
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if not flow_run_id or not ui:
        return None
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


@dataclass
class AgentRun:
    """One execution started by an agent, as its background thread sees it."""

    execution_id: str
    plan_id: str
    needs_approval: bool
    state: str = "Starting"
    flow_run_id: str | None = None
    plan_flow_run_id: str | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    message: str = ""
    handle: BackgroundExecutionHandle | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: ExecutionEvent) -> None:
        """Follow the plan's execution events (called on the run's own thread)."""
        with self.lock:
            if event.phase == "start":
                self.state = "Running"
                self.plan_flow_run_id = event.flow_run_id
            step = self.steps.get(event.step_id or "")
            if step is None:
                return
            if event.phase == "step_start":
                step["state"] = "Running"
            elif event.phase == "step_success":
                step["state"] = "Completed"
                step["output_preview"] = event.output_preview or ""
            elif event.phase == "step_failure":
                step["state"] = "Failed"
                step["error"] = sanitize(event.error or "", 1000)
            elif event.phase == "step_skipped":
                step["state"] = "Skipped"

    def finish(self, state: State[Any] | None, error: str | None) -> None:
        with self.lock:
            if error is not None:
                self.state, self.message = "Failed", sanitize(error, 1000)
            elif state is not None and state.is_completed():
                self.state = "Completed"
            elif state is not None and state.is_cancelled():
                self.state = "Rejected" if "rejected" in (state.message or "") else "Cancelled"
                self.message = sanitize(state.message or "", 1000)
            else:
                self.state = "Failed"
                self.message = sanitize((state.message if state else "") or "the run failed", 1000)

    def view(self, limit: int) -> dict[str, Any]:
        """What `run` and `status` answer."""
        with self.lock:
            steps = [
                {
                    "step": sid,
                    **{k: sanitize(v, limit) if isinstance(v, str) else v for k, v in step.items()},
                }
                for sid, step in self.steps.items()
            ]
            return {
                "execution_id": self.execution_id,
                "plan_id": self.plan_id,
                "state": self.state,
                "finished": self.state in _FINAL,
                "needs_approval": self.needs_approval,
                "flow_run_id": self.flow_run_id,
                "flow_run_url": run_url(self.flow_run_id),
                "plan_flow_run_id": self.plan_flow_run_id,
                "steps": steps,
                "message": self.message or _message(self.state),
            }


def _message(state: str) -> str:
    return {
        "Starting": "The run is starting; call `status` again.",
        "AwaitingApproval": (
            "Waiting for a person to approve the plan on this flow run in the Prefect UI "
            "(flow_run_url); an agent cannot approve. Call `status` later."
        ),
        "Running": "The plan is running; call `status` again.",
        "Completed": "Every step succeeded.",
    }.get(state, "")


class AgentRuns:
    """The executions this server started, by execution id."""

    def __init__(self, service: PlannerService, *, pause_timeout: int) -> None:
        self.service = service
        self.pause_timeout = pause_timeout
        self._runs: dict[str, AgentRun] = {}

    def get(self, execution_id: str) -> AgentRun | None:
        found = self._runs.get(execution_id)
        if found is not None:
            return found
        matches = [run for key, run in self._runs.items() if key.startswith(execution_id)]
        return matches[0] if len(matches) == 1 else None

    async def start(
        self, plan: CandidatePlan, values: dict[str, Any], *, needs_approval: bool
    ) -> AgentRun:
        """Start `plan` (already validated) in the background."""
        run = AgentRun(uuid.uuid4().hex, plan.plan_id, needs_approval)
        run.steps = {step.id: {"action": step.action, "state": "Pending"} for step in plan.steps}
        self._runs[run.execution_id] = run
        store = self.service.store
        assert store is not None
        url, timeout = store.url, store.timeout
        service = self.service
        pause_timeout = self.pause_timeout

        async def main() -> ExecutionResult:
            # Database connections belong to one event loop: this thread opens its own.
            own_store = PlanStore(url, timeout=timeout)
            here = PlannerService(
                service.catalog, planner="heuristic", executor=service.executor, store=own_store
            )

            @flow(
                name=AGENT_RUN_FLOW,
                flow_run_name="agent-run-{plan_id}",
                persist_result=False,
                validate_parameters=False,
            )
            async def agent_run(plan_id: str, execution_id: str) -> dict[str, Any] | State[Any]:
                context = FlowRunContext.get()
                if context is not None and context.flow_run is not None:
                    run.flow_run_id = str(context.flow_run.id)
                return await approve_then_execute(
                    get_planner(service=here),
                    plan,
                    values,
                    approve=needs_approval,
                    pause_timeout=pause_timeout,
                    planner=str(plan.extras.get("planner", "agent")),
                    execution_id=execution_id,
                    on_event=run.on_event,
                    run=AGENT_RUN_INFO.model_dump(exclude={"extra_tags"}, exclude_none=True),
                )

            try:
                state = await agent_run(plan.plan_id, run.execution_id, return_state=True)  # type: ignore[call-overload]
                run.finish(state, None)
            except Exception as exc:
                run.finish(None, f"{type(exc).__name__}: {exc}")
            finally:
                await own_store.close()
            return ExecutionResult(
                ok=run.state == "Completed",
                plan_id=plan.plan_id,
                flow_run_id=run.plan_flow_run_id,
                execution_id=run.execution_id,
            )

        run.handle = BackgroundExecutionHandle.launch(plan.plan_id, main)
        # Not the plan's end, only its flow run's creation (a second or so): the answer
        # can then link the run's page in the UI.
        for _ in range(int(_LINK_WAIT / 0.1)):
            if run.flow_run_id is not None or run.handle.done():
                break
            await asyncio.sleep(0.1)
        return run

    async def refresh(self, run: AgentRun) -> None:
        """Ask the Prefect API whether a run that has not started its plan is paused."""
        if run.state != "Starting" or run.flow_run_id is None:
            return
        async with get_client() as client:
            flow_run = await client.read_flow_run(uuid.UUID(run.flow_run_id))
        with run.lock:
            if (
                run.state == "Starting"
                and flow_run.state is not None
                and flow_run.state.is_paused()
            ):
                run.state = "AwaitingApproval"
