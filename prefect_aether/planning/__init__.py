"""Planning: turning a goal into a candidate plan over the catalog.

Owns the planning vocabulary every planner shares (`PlanningContext`, `PlanningEvent`,
`PlanResult`, `ChatModel`, `decode_plan`, in `base`), the planners (`ActionPlanner`
over an LLM in `llm_planner`, the offline `HeuristicPlanner` in `heuristic`), the
OpenAI-compatible client (`llm`), reading missing values out of a message (`inputs`),
and the private helpers: reading a goal, wiring a heuristic plan, retrieval of the
actions an LLM is shown, and the plan store's memory (cache and worked examples).

A new planner goes here: a class with `async plan(ctx, *, on_event=None) -> PlanResult`.

Examples:
    >>> from prefect_aether.planning import PlanningContext
    >>> PlanningContext(goal="load the orders").goal
    'load the orders'
"""

from __future__ import annotations

from prefect_aether.planning.base import (
    ChatModel,
    PlanningCallback,
    PlanningContext,
    PlanningEvent,
    PlanResult,
    decode_plan,
)
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.inputs import ParsedInputs, parse_inputs
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import ActionPlanner

__all__ = [
    "ActionPlanner",
    "ChatModel",
    "HeuristicPlanner",
    "OpenAICompatibleLLM",
    "ParsedInputs",
    "PlanResult",
    "PlanningCallback",
    "PlanningContext",
    "PlanningEvent",
    "decode_plan",
    "parse_inputs",
]
