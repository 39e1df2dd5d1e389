"""What an execution reports: its events and its result (`ExecutionEvent`, `ExecutionResult`).

The models the executor, the service, the deployable flows and the CLI share, below
all of them; `prefect_aether.execution.executor` re-exports them.

Examples:
    >>> ExecutionResult(ok=False, plan_id="abc", errors={"load": "OSError: gone"}).ok
    False
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from prefect_aether.plan import CandidatePlan

__all__ = [
    "PLAN_FLOW_NAME",
    "ApprovalCallback",
    "EventCallback",
    "ExecutionEvent",
    "ExecutionPhase",
    "ExecutionResult",
    "Replan",
]

ExecutionPhase = Literal[
    "start",
    "step_start",
    "step_success",
    "step_failure",
    "step_skipped",
    "replanned",
    "planned",
    "stopped",
    "success",
    "failure",
]
EventCallback = Callable[["ExecutionEvent"], Awaitable[None] | None]
# Asked with the plan and the actions that need an approval; True lets the plan run.
ApprovalCallback = Callable[[CandidatePlan, list[str]], Awaitable[bool] | bool]
PLAN_FLOW_NAME = "aether-plan"
#: Longest `ExecutionEvent.output_preview`.
OUTPUT_PREVIEW_CHARS = 4_000


class ExecutionEvent(BaseModel):
    """Something that happened while a plan ran.

    Examples:
        >>> ExecutionEvent(phase="step_start", plan_id="abc", step_id="load").phase
        'step_start'
    """

    phase: ExecutionPhase = Field(description="What happened.")
    plan_id: str = Field(description="The plan being executed.")
    step_id: str | None = Field(default=None, description="The step concerned, if any.")
    action: str | None = Field(default=None, description="The step's action, if any.")
    message: str = Field(default="", description="Human-readable summary.")
    step_outputs: dict[str, Any] | None = Field(
        default=None, description="The step's outputs (step_success only)."
    )
    output_preview: str | None = Field(
        default=None,
        description=(
            "The step's outputs as sanitized JSON, secret values masked, at most "
            "`OUTPUT_PREVIEW_CHARS` characters (step_success only)."
        ),
    )
    error: str | None = Field(default=None, description="'ExceptionType: message' on failure.")
    flow_run_id: str | None = Field(default=None, description="The plan's parent flow run.")


class Replan(BaseModel):
    """One replan of an execution: a step failed, and a new plan took over the rest.

    Examples:
        >>> Replan(failed_step="fetch", error="OSError: gone", plan_id="abc").new_steps
        []
    """

    failed_step: str = Field(description="The step that failed after its retries.")
    error: str = Field(description="Its error (masked, bounded).")
    plan_id: str = Field(description="The new plan: the completed steps and the new ones.")
    new_steps: list[str] = Field(default_factory=list, description="The steps it added.")
    steps_reused: list[str] = Field(
        default_factory=list, description="Completed steps the new plan bound, never re-run."
    )


class ExecutionResult(BaseModel):
    """The outcome of executing a plan.

    Examples:
        >>> ExecutionResult(ok=True, plan_id="abc").errors
        {}
    """

    ok: bool = Field(description="Every step succeeded.")
    plan_id: str = Field(description="The executed plan.")
    outputs: dict[str, Any] = Field(
        default_factory=dict, description="Outputs of the plan's last step."
    )
    output_preview: str = Field(
        default="",
        description="`outputs` as sanitized JSON, secret values masked (500 characters).",
    )
    step_outputs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Outputs of every step that succeeded."
    )
    errors: dict[str, str] = Field(
        default_factory=dict, description="Step id (or 'plan') to 'ExceptionType: message'."
    )
    skipped: list[str] = Field(default_factory=list, description="Steps that never started.")
    reused: list[str] = Field(
        default_factory=list, description="Steps whose persisted result was reused (resume)."
    )
    flow_run_id: str | None = Field(default=None, description="The parent flow run.")
    execution_id: str | None = Field(
        default=None, description="This execution's id: `resume=` it to continue it."
    )
    replans: list[Replan] = Field(
        default_factory=list, description="Each replan after a failed step, in order."
    )
    stopped: str | None = Field(
        default=None,
        description=(
            "What stopped the execution early, in one line: a budget, or a streamed plan "
            "that turned out invalid."
        ),
    )
    streamed: list[str] = Field(
        default_factory=list,
        description="Steps that started while the plan streamed in (`stream=True`).",
    )
    unplanned: list[str] = Field(
        default_factory=list,
        description=(
            "Steps that started while the plan streamed in and that the final plan does "
            "without (they only computed; nothing else binds them)."
        ),
    )
