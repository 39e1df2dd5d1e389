"""The heuristic draft in the LLM planner's place (private to `llm_planner` and `auto`).

A draft that is valid, complete and serves the whole goal is trusted: it is the plan
and the model is not asked (`trusted_draft`). Where the model is asked, the draft
stands when the model's answers never become a valid plan, and, when the draft is
trusted, when the model's plan leaves out one of the draft's actions, says no action
can do the goal, or is worse than the draft by `auto`'s rule (`draft_stands`,
`kept_over`): each draft step is there because a clause of the goal asked for it, and
the model's `unserved` is a claim, not a check.

`auto`'s rule, in order (`rank`, `better`, `worse_in`): a plan beats no plan; a
complete plan (no `${user.*}` value left to give) beats a partial one; a plan that
serves more of the goal (fewer `unserved` parts) beats one that serves less; a plan
that asks the user for fewer values beats one that asks for more.
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

__all__ = [
    "better",
    "draft_result",
    "draft_stands",
    "kept_over",
    "left_out_of",
    "rank",
    "trusted_draft",
    "worse_in",
]


def rank(result: PlanResult) -> tuple[int, int, int, int]:
    """Higher is better: (has a plan, complete, -unserved parts, -user values asked)."""
    if result.plan is None or result.validation is None:
        return (0, 0, 0, 0)
    validation = result.validation
    return (
        1,
        1 if validation.ok else 0,
        -len(result.unserved),
        -len(validation.missing_user_bindings),
    )


def better(candidate: PlanResult, incumbent: PlanResult) -> bool:
    """Whether `candidate` is strictly better than `incumbent` by the rule."""
    return rank(candidate) > rank(incumbent)


def worse_in(candidate: PlanResult, incumbent: PlanResult, than: str) -> str:
    """How `candidate` is worse than `incumbent` (called `than`), in words for one line;
    "" when it is not worse."""
    ours, theirs = rank(candidate), rank(incumbent)
    if ours >= theirs:
        return ""
    if ours[0] < theirs[0]:
        return f"is no plan, unlike {than}"
    asked = sorted(candidate.validation.missing_user_bindings if candidate.validation else {})
    if ours[1] < theirs[1]:
        return f"is less complete than {than} ({', '.join(asked)} left to give)"
    if ours[2] < theirs[2]:
        return (
            f"leaves more of the goal unserved than {than} "
            f"({len(candidate.unserved)} parts, not {len(incumbent.unserved)})"
        )
    known = incumbent.validation.missing_user_bindings if incumbent.validation else {}
    more = [key for key in asked if key not in known]
    return f"asks the user for more values than {than} ({', '.join(more) or len(asked)})"


async def draft_result(
    catalog: ActionCatalog, draft: CandidatePlan, ctx: PlanningContext
) -> PlanResult:
    """The draft, joined to the goal's context and validated (nothing is told)."""
    plan = joined(draft, ctx)
    validation = await checked(plan, catalog, ctx, EventLog(None), 0)
    unserved = [str(u) for u in plan.extras.get("unserved") or []]
    return PlanResult(plan=plan, validation=validation, unserved=unserved)


def kept_over(drafted: PlanResult, result: PlanResult) -> str:
    """Why a trusted draft (`drafted`, its `draft_result`) stands over the model's valid
    plan (`result`), in one line; "" when the model's plan is taken: it runs every
    action of the draft and is no worse by the rule (on a tie it is the model's
    extension of the draft)."""
    assert result.plan is not None
    left_out = left_out_of(drafted.plan, result.plan)
    if left_out:
        return f"the model's plan leaves out {', '.join(left_out)} of the draft"
    worse = worse_in(result, drafted, "the draft")
    return f"the model's plan {worse}" if worse else ""


async def trusted_draft(
    drafted: PlanResult, ctx: PlanningContext, emit: EventLog
) -> PlanResult | None:
    """The draft (`drafted`, its `draft_result`) as the plan without asking the model,
    when it is valid, complete and leaves no part of the goal unserved; None otherwise
    (and nothing is told)."""
    plan, validation = drafted.plan, drafted.validation
    if drafted.unserved or plan is None or validation is None or not validation.ok:
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
