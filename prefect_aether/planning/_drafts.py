"""The heuristic draft in the LLM planner's place (private to `llm_planner` and `auto`).

A draft that is valid, complete and serves the whole goal is trusted: it is the plan
and the model is not asked (`trusted_draft`). Where the model is asked, the draft
stands when the model's answers never become a valid plan, and, when the draft is
trusted, when the model's plan leaves out one of the draft's actions or says no action
can do the goal (`draft_stands`, `left_out_of`): each draft step is there because a
clause of the goal asked for it.
"""

from __future__ import annotations

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning.base import (
    EventLog,
    PlanningContext,
    PlanningEvent,
    PlanResult,
    checked,
    joined,
)
from prefect_aether.validation.validate import ValidationResult

__all__ = ["draft_stands", "left_out_of", "trusted_draft"]


async def trusted_draft(
    catalog: ActionCatalog, draft: CandidatePlan, ctx: PlanningContext, emit: EventLog
) -> PlanResult | None:
    """The draft as the plan without asking the model, when it is valid, complete and
    leaves no part of the goal unserved; None otherwise (and nothing is told)."""
    if draft.extras.get("unserved"):
        return None
    plan = joined(draft, ctx)
    validation = await checked(plan, catalog, ctx, EventLog(None), 0)
    if not validation.ok:
        return None
    plan = plan.model_copy(
        update={"extras": {**plan.extras, "goal": ctx.goal, "review": "trusted"}}
    )
    await emit(
        PlanningEvent(
            phase="success",
            iteration=0,
            message=(
                "the heuristic draft is valid, complete and serves the whole goal: "
                "it is the plan, the model is not asked (trust_draft)"
            ),
            plan_dict=plan.to_dict(),
            validation=validation,
        )
    )
    return PlanResult(plan=plan, validation=validation, events=emit.events, usage={})


async def draft_stands(
    catalog: ActionCatalog,
    draft: CandidatePlan,
    ctx: PlanningContext,
    emit: EventLog,
    why: str,
    usage: dict[str, int],
    iteration: int,
    last: ValidationResult | None,
) -> PlanResult:
    """The draft as the plan in place of the model's (`why`: a `fallback` event says
    it). When the draft cannot stand either, no plan, with what was wrong with the
    model's last plan (`last`)."""
    plan = joined(draft, ctx)
    validation = await checked(plan, catalog, ctx, emit, iteration)
    if not (validation.ok or (ctx.allow_partial_plans and validation.is_partial_ok())):
        await emit(
            PlanningEvent(phase="failure", iteration=iteration, message=why, validation=last)
        )
        return PlanResult(plan=None, validation=last, events=emit.events, usage=usage)
    extras = {**plan.extras, "goal": ctx.goal, "review": "failed", "review_reason": why}
    plan = plan.model_copy(update={"extras": extras})
    await emit(
        PlanningEvent(
            phase="fallback",
            iteration=iteration,
            message=f"{why}; the draft stands",
            plan_dict=plan.to_dict(),
            validation=validation,
        )
    )
    return PlanResult(
        plan=plan,
        validation=validation,
        events=emit.events,
        usage=usage,
        unserved=[str(u) for u in plan.extras.get("unserved") or []],
    )


def left_out_of(draft: CandidatePlan | None, plan: CandidatePlan) -> list[str]:
    """The draft's actions that `plan` does not run (none without a draft)."""
    if draft is None:
        return []
    return sorted({s.action for s in draft.steps} - {s.action for s in plan.steps})
