"""Adaptive execution: replanning inside one execution, and the budget checked before
each step (private to the executor).

When a step fails after its retries and the caller gave a `Replanner`, the planner is
asked for a plan for the rest of the goal (`planning.base.Replanning`: the completed
steps and their outputs, the failed step and its masked error, the actions not to use
again). Its plan joins the same parent flow run:

- its steps join the completed ones as `replanning.adopt` says (a step that repeats a
  completed one is that step; clashing ids are renamed);
- the completed steps and the new ones are validated together, like any plan, and a
  new step tagged `aether:approval` needs an approval again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect_aether._internal.budget import current_spending
from prefect_aether._internal.text import sanitize
from prefect_aether.exceptions import ApprovalRequired, BudgetExceeded, PlanValidationError
from prefect_aether.execution import _report
from prefect_aether.execution._options import StepRecord
from prefect_aether.execution.events import Replan
from prefect_aether.plan import CandidatePlan, PlanStep, step_dependencies
from prefect_aether.replanning import Replanning, adopt

if TYPE_CHECKING:
    from prefect_aether.execution._run import PlanRun

__all__ = ["Adaptive", "Replanner", "adopt", "merge", "replan_after_failure", "within_budget"]

# The failed step's error as the planner is shown it.
_ERROR_CHARS = 1_000

#: Asked with the facts of a failure; returns the plan for the rest of the goal (None:
#: the planner has none).
Replanner = Callable[[Replanning], Awaitable[CandidatePlan | None]]


@dataclass
class Adaptive:
    """What one execution may do when a step fails: ask `replanner` up to `max_replans`
    times; `check` validates a plan (levels, or `PlanValidationError`) and `approve`
    asks for a new approval of the new steps, showing the whole plan they make with the
    completed ones (`ApprovalRequired` when refused)."""

    replanner: Replanner | None = None
    max_replans: int = 0
    check: Callable[[CandidatePlan], list[list[str]]] | None = None
    approve: Callable[[CandidatePlan, CandidatePlan], Awaitable[None]] | None = None
    replans: list[Replan] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    # Steps that failed and were replanned: ended, never run again.
    replaced: set[str] = field(default_factory=set)


async def replan_after_failure(run: PlanRun) -> bool:
    """Ask for a plan for the rest of the goal after `run`'s first failed step, and add
    its new steps to the run; False (logged) when there is none to run."""
    adaptive = run.adaptive
    if adaptive.replanner is None or len(adaptive.replans) >= adaptive.max_replans:
        return False
    failed = min(run.errors, key=lambda sid: run.position.get(sid, len(run.position)))
    error = sanitize(run.errors[failed], _ERROR_CHARS)
    completed = {sid: run.steps[sid] for sid in run.order if sid in run.outputs}
    excluded = adaptive.excluded | {run.steps[failed].action}
    round_ = len(adaptive.replans) + 1
    facts = Replanning(
        completed=list(completed.values()),
        outputs={sid: run.records[sid].preview for sid in completed},
        failed_step=failed,
        failed_action=run.steps[failed].action,
        error=error,
        excluded_actions=sorted(excluded),
        step_ids=list(run.steps),
        round=round_,
    )
    log = run.log()
    log.info(
        "step %s failed: asking for a plan for the rest of the goal (replan %d of %d)",
        failed,
        round_,
        adaptive.max_replans,
    )
    try:
        new = await adaptive.replanner(facts)
        steps, reused = adopt(new, completed, set(run.steps), round_) if new else ([], {})
        if not steps:
            log.warning("replan %d: the planner has no new step for the rest of the goal", round_)
            return False
        combined = CandidatePlan(steps=[*completed.values(), *steps])
        assert adaptive.check is not None
        assert adaptive.approve is not None
        levels = adaptive.check(combined)
        await adaptive.approve(CandidatePlan(steps=steps), combined)
    except BudgetExceeded as exc:
        run.stopped = str(exc)
        log.warning("plan %s stopped: %s", run.plan_id, run.stopped)
        return False
    except (PlanValidationError, ApprovalRequired) as exc:
        log.warning("replan %d not run: %s", round_, sanitize(str(exc), 500))
        return False
    except Exception as exc:
        log.warning("replan %d failed: %s", round_, sanitize(f"{type(exc).__name__}: {exc}", 500))
        return False
    adaptive.excluded = excluded
    merge(run, steps, levels)
    for sid in list(run.errors):  # the new plan takes over what failed
        run.records[sid].why = f"{run.errors.pop(sid)} (replanned)"
        adaptive.replaced.add(sid)
    upstream = step_dependencies(combined)
    bound = {d for s in steps for d in upstream[s.id] if d in completed} | set(reused.values())
    record = Replan(
        failed_step=failed,
        error=error,
        plan_id=combined.plan_id,
        new_steps=[s.id for s in steps],
        steps_reused=sorted(bound),
    )
    adaptive.replans.append(record)
    message = (
        f"replan {round_}: step {failed!r} failed; new plan {combined.plan_id} adds "
        f"{', '.join(record.new_steps)}"
        + (f" and binds {', '.join(record.steps_reused)}" if record.steps_reused else "")
    )
    log.info(message)
    await run.emit("replanned", None, message)
    _report.emit_replanned_event(run.plan_id, {"replan": round_, **record.model_dump()})
    # The plan artifact shows every step of the execution now, the new ones after.
    whole = CandidatePlan(steps=[run.steps[sid] for sid in run.order])
    try:
        await _report.plan_artifact(
            whole, run.levels, run.deps, run.user_inputs, run.plan_id, run.client
        )
    except Exception as exc:  # the artifact reports the run; it never fails it
        log.warning("replan %d: the plan artifact was not updated: %s", round_, exc)
    return True


def merge(run: PlanRun, steps: list[PlanStep], levels: list[list[str]]) -> None:
    """Add the new steps to the run, in dependency order after the first ones."""
    resolved = CandidatePlan(steps=steps).resolve_actions(run.executor.catalog).steps
    for step in resolved:
        run.steps[step.id] = step
        run.records[step.id] = StepRecord()
    added = {s.id for s in steps}
    run.order += [sid for level in levels for sid in level if sid in added]
    run.position = {sid: i for i, sid in enumerate(run.order)}
    run.deps = step_dependencies(CandidatePlan(steps=[run.steps[sid] for sid in run.order]))
    new_levels = ([sid for sid in level if sid in added] for level in levels)
    run.levels = [*run.levels, *(level for level in new_levels if level)]


def within_budget(run: PlanRun) -> bool:
    """Whether the plan-and-execute's budget lets another step of `run` start; when it
    does not, `run.stopped` says which budget, in one line."""
    account = current_spending()
    try:
        if account is not None:
            account.before_step()
    except BudgetExceeded as exc:
        run.stopped = str(exc)
        run.log().warning("plan %s stopped: %s", run.plan_id, run.stopped)
        return False
    return True
