"""`planner="auto"`: the LLM planner, never worse than the offline heuristic planner.

Both plan the goal. The LLM's plan is taken only when it is valid and strictly better
than the heuristic planner's by this rule, in order:

1. a plan beats no plan;
2. a complete plan (no `${user.*}` value left to give) beats a partial one;
3. a plan that serves more of the goal (fewer `unserved` parts) beats one that
   serves less;
4. a plan that asks the user for fewer values beats one that asks for more;

and only when it runs every action of the heuristic planner's plan: each of those
is there because a clause of the goal asked for it, so a plan that is complete, or
says it serves more of the goal, by leaving one out is not better (the LLM's own
`unserved` is a claim, not a check).

A heuristic plan that is valid, complete and serves the whole goal ranks highest:
no LLM plan could be taken over it, so the LLM is not asked (the LLM planner's
`trust_draft`, on by default). On a tie the heuristic planner's plan stays: it is
deterministic and made only of what the goal says; except when the LLM's answer
streamed into execution (`plan_and_execute(..., stream=True)`): then its steps may be
running, and on a tie the LLM's plan stays. Whenever the LLM's plan is not taken
(invalid after its repair rounds, garbage, empty, late, or the server failed in any
way), a `fallback` event says why in one line.

Examples:
    >>> from prefect_aether.planning.base import PlanResult
    >>> better(PlanResult(plan=None, validation=None), PlanResult(plan=None, validation=None))
    False
"""

from __future__ import annotations

import asyncio
import logging

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.planning._drafts import better, left_out_of, worse_in
from prefect_aether.planning.base import (
    STREAMED,
    EventLog,
    PlanningCallback,
    PlanningContext,
    PlanningEvent,
    PlanResult,
)
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.llm_planner import ActionPlanner

__all__ = ["AutoPlanner", "better", "dropped"]

logger = logging.getLogger("prefect_aether.planner")


class AutoPlanner:
    """Plans with the LLM and the heuristic planner, and returns the better plan.

    Args:
        catalog: The actions to plan with.
        llm_planner: The LLM planner (its deadline bounds the LLM's part).
    """

    name = "auto"

    def __init__(self, catalog: ActionCatalog, llm_planner: ActionPlanner) -> None:
        self.catalog = catalog
        self.llm_planner = llm_planner
        self.heuristic = HeuristicPlanner(catalog)

    async def plan(
        self, ctx: PlanningContext, *, on_event: PlanningCallback | None = None
    ) -> PlanResult:
        emit = EventLog(on_event)
        heuristic = await self.heuristic.plan(ctx)
        why = ""
        try:
            result = await self.llm_planner.plan(ctx, on_event=emit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the LLM's part: the offline plan stands
            result = None
            text = _line(str(exc))
            why = f"the LLM failed ({type(exc).__name__}{f': {text}' if text else ''})"
        streamed = STREAMED.get() is not None
        if result is not None and (
            (better(result, heuristic) and not dropped(result, heuristic))
            or (streamed and result.plan is not None and not better(heuristic, result))
        ):
            return result.model_copy(update={"events": emit.events, "planner": "llm"})
        if result is not None:
            why = _why_not(result, heuristic)
        message = f"{why}; using the heuristic planner's plan" + (
            "" if heuristic.plan is not None else " (it has none either)"
        )
        # The event says it (the CLI prints it, flows log it): a log line would repeat it.
        logger.debug(message)
        await emit(PlanningEvent(phase="fallback", iteration=0, message=message))
        for event in heuristic.events:
            await emit(event)
        usage = result.usage if result is not None else {}
        return heuristic.model_copy(
            update={"events": emit.events, "usage": usage, "planner": "heuristic"}
        )


def dropped(llm: PlanResult, heuristic: PlanResult) -> list[str]:
    """The actions of the heuristic planner's plan that the LLM's plan does not run."""
    return left_out_of(heuristic.plan, llm.plan) if llm.plan is not None else []


def _why_not(llm: PlanResult, heuristic: PlanResult) -> str:
    if llm.plan is None:
        last = next((e.message for e in reversed(llm.events) if e.phase == "failure"), "")
        return f"the LLM gave no acceptable plan ({_line(last) or 'none'})"
    review = llm.plan.extras.get("review")
    if review == "trusted":
        return "the heuristic planner's plan does the whole goal (the LLM was not asked)"
    if review == "failed":
        why = _line(str(llm.plan.extras.get("review_reason", "")))
        return f"the LLM planner kept the heuristic planner's plan ({why})"
    left_out = dropped(llm, heuristic)
    if left_out and better(llm, heuristic):
        return f"the LLM's plan leaves out what the goal asked for ({', '.join(left_out)})"
    worse = worse_in(llm, heuristic, "the heuristic planner's")
    if worse:
        return f"the LLM's plan {worse}"
    return "the LLM's plan is no better than the heuristic planner's"


def _line(text: str, limit: int = 200) -> str:
    first = " ".join(text.split())
    return first if len(first) <= limit else first[: limit - 1] + "…"
