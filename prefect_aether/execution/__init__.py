"""Execution: one validated plan as one dynamic Prefect flow run.

Owns the executor (`PlanExecutor`, `BackgroundExecutionHandle`, in `executor`), what an
execution reports (`ExecutionEvent`, `ExecutionResult`, in `events`), and the private
machinery of one execution: the parent flow and its scheduler, how a step runs as a
Prefect child run (task, subflow or deployment), where step results persist and who
may run a step, `${secret.*}` values, the API watchdog, the UI report (artifacts and
events), and `reconcile` for executions that ended badly.

A new step mode goes in `_steps` (`call_step` chooses how one step runs) with its
name in `validation.RUN_MODES`.

Examples:
    >>> from prefect_aether.execution import ExecutionResult
    >>> ExecutionResult(ok=True, plan_id="abc").ok
    True
"""

from __future__ import annotations

from prefect_aether.execution.events import (
    ApprovalCallback,
    EventCallback,
    ExecutionEvent,
    ExecutionResult,
    Replan,
)
from prefect_aether.execution.executor import BackgroundExecutionHandle, PlanExecutor

__all__ = [
    "ApprovalCallback",
    "BackgroundExecutionHandle",
    "EventCallback",
    "ExecutionEvent",
    "ExecutionResult",
    "PlanExecutor",
    "Replan",
]
