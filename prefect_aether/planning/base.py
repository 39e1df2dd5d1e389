"""The planning vocabulary every planner shares: what a planner is asked
(`PlanningContext`), what it reports (`PlanningEvent`, `PlanResult`), what it asks
of an LLM (`ChatModel`), and how an LLM's answer becomes a plan (`decode_plan`).

Planners (`ActionPlanner` in `llm_planner`, `HeuristicPlanner` in `heuristic`)
sit above this module; `llm_planner` and the `planning` package re-export these names.

Examples:
    >>> ctx = PlanningContext(goal="load the sales data and count rows")
    >>> ctx.allow_partial_plans
    True
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from prefect_aether._internal.callbacks import notify
from prefect_aether.catalog.registry import ActionCatalog, ActionSpec
from prefect_aether.exceptions import AetherUsageError, PlanDecodingError
from prefect_aether.plan import CandidatePlan
from prefect_aether.planning._answer import normalize_answer
from prefect_aether.replanning import Replanning, adopt
from prefect_aether.settings import current_settings
from prefect_aether.validation._issues import make_result
from prefect_aether.validation.validate import ValidationIssue, ValidationResult, validate_plan

__all__ = [
    "STREAMED",
    "ChatModel",
    "EventLog",
    "PlanExample",
    "PlanResult",
    "PlanningCallback",
    "PlanningContext",
    "PlanningEvent",
    "PlanningPhase",
    "Replanning",
    "checked_goal",
    "decode_plan",
    "joined",
    "plannable",
]

PlanningPhase = Literal[
    "start", "llm_request", "llm_response", "validation", "fallback", "success", "failure"
]
PlanningCallback = Callable[["PlanningEvent"], Awaitable[None] | None]
#: Who hears an LLM planner's first answer while it streams in (the text so far, each
#: time more arrives); None: nobody, and the answer is not streamed. Set by a
#: plan-and-execute with `stream=True` (`execution._stream.StepFeed.hear`).
STREAMED: ContextVar[Callable[[str], None] | None] = ContextVar("aether_streamed", default=None)
logger = logging.getLogger("prefect_aether.planner")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)(?:```|\Z)", re.S)


class ChatModel(Protocol):
    """What a planner needs from an LLM client (`OpenAICompatibleLLM` is one)."""

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        schema_name: str | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[str, dict[str, int]]:
        """`(content, usage)`; with `on_text`, the answer is streamed and `on_text` hears
        the content received so far each time more arrives."""


class PlanExample(BaseModel):
    """An earlier goal and the plan that executed successfully for it.

    Examples:
        >>> PlanExample(goal="load", plan={"steps": []}).goal
        'load'
    """

    goal: str = Field(description="The earlier goal.")
    plan: dict[str, Any] = Field(description="Its plan, as `CandidatePlan.to_dict()`.")


class PlanningContext(BaseModel):
    """Everything a planner knows about the request.

    Examples:
        >>> PlanningContext(goal="x", user_inputs={"path": "a.csv"}).user_inputs
        {'path': 'a.csv'}
    """

    goal: str = Field(description="What the user wants done.")
    user_inputs: dict[str, Any] = Field(default_factory=dict, description="Values already known.")
    external_slots: dict[str, Any] = Field(
        default_factory=dict, description="Other bindable values, described for the planner."
    )
    memory_snippets: list[str] = Field(default_factory=list, description="Relevant history.")
    artifact_snippets: list[str] = Field(default_factory=list, description="Relevant artifacts.")
    flow_ids: list[str] | None = Field(default=None, description="Restrict actions to groups.")
    instruction: str | None = Field(default=None, description="Extra instruction for the planner.")
    allow_partial_plans: bool = Field(
        default=True, description="Accept plans that still need `${user.*}` values."
    )
    preferred_external_keys: list[str] | None = Field(
        default=None, description="Names to prefer for `${user.*}` keys."
    )
    examples: list[PlanExample] = Field(
        default_factory=list,
        description="Worked examples: plans that ran well for similar earlier goals.",
    )
    replan: Replanning | None = Field(
        default=None, description="Set when planning the rest of a goal after a failed step."
    )


class PlanningEvent(BaseModel):
    """Something that happened while planning.

    Examples:
        >>> PlanningEvent(phase="start", iteration=0, message="planning").phase
        'start'
    """

    phase: PlanningPhase = Field(description="What happened.")
    iteration: int = Field(description="1-based LLM round (0 before the first).")
    message: str = Field(default="", description="Human-readable summary.")
    raw_llm_output: str | None = Field(default=None, description="The LLM's answer, verbatim.")
    plan_dict: dict[str, Any] | None = Field(default=None, description="The decoded plan.")
    validation: ValidationResult | None = Field(default=None, description="Its validation.")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Structured facts (`start`: actions shown, draft, examples used).",
    )


class PlanResult(BaseModel):
    """The outcome of planning: a plan (None when none was accepted) and how it went.

    Examples:
        >>> PlanResult(plan=None, validation=None).usage
        {}
    """

    plan: CandidatePlan | None = Field(description="The accepted plan, or None.")
    validation: ValidationResult | None = Field(description="Validation of the last plan seen.")
    events: list[PlanningEvent] = Field(default_factory=list, description="Every event, in order.")
    usage: dict[str, int] = Field(default_factory=dict, description="Token usage, summed.")
    planner: str = Field(default="llm", description="Which planner produced it.")
    cached: bool = Field(default=False, description="Whether it came from the plan store's cache.")
    unserved: list[str] = Field(
        default_factory=list,
        description=(
            "Parts of the goal no action serves, in the user's words. With no plan, "
            "nothing of the goal can be done; with a plan, it does the rest."
        ),
    )


async def checked(
    plan: CandidatePlan,
    catalog: ActionCatalog,
    ctx: PlanningContext,
    emit: EventLog,
    iteration: int,
) -> ValidationResult:
    """Validate a planner's plan as every planner must (its caller's `flow_ids`, no
    `aether:manual` action) and report it as a `validation` event."""
    replan = ctx.replan
    # A replan's steps are checked with the completed steps they may bind.
    whole = plan if replan is None else CandidatePlan(steps=[*replan.completed, *plan.steps])
    validation = validate_plan(
        whole, catalog, user_inputs=ctx.user_inputs, flow_ids=ctx.flow_ids, allow_manual=False
    )
    if replan is not None:
        again = [s for s in plan.steps if s.action in replan.excluded_actions]
        if again:
            issues = [
                *validation.issues,
                *(
                    ValidationIssue(
                        kind="excluded_action",
                        message=f"Action {s.action!r} failed in this execution: the new plan "
                        "must not use it again.",
                        step_id=s.id,
                        field="action",
                    )
                    for s in again
                ),
            ]
            validation = make_result(issues, validation.missing_user_bindings, validation.levels)
    await emit(
        PlanningEvent(
            phase="validation",
            iteration=iteration,
            message=validation.summary(),
            plan_dict=plan.to_dict(),
            validation=validation,
        )
    )
    return validation


class EventLog:
    """Records planning events and passes each to the caller's callback.

    A failing callback is logged and never breaks planning.
    """

    def __init__(self, on_event: PlanningCallback | None) -> None:
        self.events: list[PlanningEvent] = []
        self.on_event = on_event

    async def __call__(self, event: PlanningEvent) -> None:
        self.events.append(event)
        await notify(self.on_event, event, logger)


class _NumberError(ValueError):
    """A number no plan needs: too many digits, or not finite."""


_MAX_DIGITS = 100


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise _NumberError(f"an integer of {len(text.lstrip('-'))} digits (at most {_MAX_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > _MAX_DIGITS + 10:
        raise _NumberError(f"a number of {len(text)} characters (at most {_MAX_DIGITS + 10})")
    value = float(text)
    if not math.isfinite(value):
        raise _NumberError(f"a number out of range ({text[:20]})")
    return value


def _parse_constant(name: str) -> float:
    raise _NumberError(f"{name}, which is not JSON")


# Strict about numbers: Python's int() refuses more than 4,300 digits with a bare
# ValueError, and NaN/Infinity are not JSON; both become a clear PlanDecodingError.
_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
)


def checked_goal(goal: str) -> str:
    """`goal` when it is one a planner may be given: not blank, and at most `max_goal_chars`
    characters (a goal is untrusted text that reaches prompts, the store and logs).

    Raises:
        AetherUsageError: Blank or too long.

    Examples:
        >>> checked_goal("daily revenue")
        'daily revenue'
    """
    if not goal.strip():
        raise AetherUsageError("the goal is empty: say what should be done, in words")
    limit = current_settings().max_goal_chars
    if len(goal) > limit:
        raise AetherUsageError(
            f"the goal is {len(goal)} characters; at most {limit} are accepted (max_goal_chars)"
        )
    return goal


def decode_plan(text: str, *, max_bytes: int | None = None) -> CandidatePlan:
    """Decode an LLM answer into a plan: code fences and leading prose are tolerated.

    Args:
        text: The answer.
        max_bytes: Largest text accepted; the `max_plan_bytes` setting by default.

    Raises:
        PlanDecodingError: Too large, no JSON plan in the text, truncated JSON, or a
            bad shape; the raw text (up to the limit) is kept on the error.

    Examples:
        >>> decode_plan('Here you go:\\n```json\\n{"steps": []}\\n```').steps
        []
    """
    limit = max_bytes if max_bytes is not None else current_settings().max_plan_bytes
    size = len(text.encode("utf-8", errors="replace"))
    if size > limit:
        raise PlanDecodingError(
            f"the plan text is {size} bytes; at most {limit} are accepted (max_plan_bytes)",
            raw=text[:limit],
        )
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise PlanDecodingError("the answer contains no JSON plan", raw=text)
    try:
        data, _ = _DECODER.raw_decode(body, start)
    except RecursionError:
        raise PlanDecodingError("the JSON plan is nested too deeply", raw=text) from None
    except _NumberError as exc:
        raise PlanDecodingError(f"the JSON plan has {exc}", raw=text) from None
    except json.JSONDecodeError as exc:
        truncated = (
            exc.msg.startswith("Unterminated")
            or exc.pos >= len(body.rstrip()) - 1
            or _unclosed(body[start:])
        )
        what = "truncated" if truncated else f"invalid at position {exc.pos}: {exc.msg}"
        raise PlanDecodingError(f"the JSON plan is {what}", raw=text) from None
    if isinstance(data, list):
        data = {"steps": data}
    if isinstance(data, dict):
        data = normalize_answer(data)
    if isinstance(data, dict) and "unserved" in data:
        # What the LLM says it cannot do travels with the plan, as the heuristic
        # planner's does: a bounded list of short texts.
        said = data.pop("unserved")
        parts = [s.strip()[:200] for s in said if isinstance(s, str) and s.strip()][:20]
        if not isinstance(said, list) or len(parts) != len(said):
            raise PlanDecodingError("'unserved' must be a list of texts", raw=text)
        if parts:
            extras = data.get("extras")
            data["extras"] = {**(extras if isinstance(extras, dict) else {}), "unserved": parts}
    try:
        return CandidatePlan.from_dict(data)
    except PlanDecodingError as exc:
        raise PlanDecodingError(str(exc), raw=text) from None


def _unclosed(text: str) -> bool:
    """Whether brackets outside strings are left open (the answer was cut off)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth > 0 or in_string


def joined(plan: CandidatePlan, ctx: PlanningContext) -> CandidatePlan:
    """A replan's plan as it joins the execution (`replanning.adopt`): steps that repeat
    a completed one are that step, clashing ids renamed; any other plan as it is."""
    replan = ctx.replan
    if replan is None:
        return plan
    done = {s.id: s for s in replan.completed}
    steps, _ = adopt(plan, done, {*done, *replan.step_ids}, replan.round)
    return CandidatePlan(steps=steps, extras=plan.extras)


def plannable(catalog: ActionCatalog, ctx: PlanningContext) -> list[ActionSpec]:
    """The actions a planner may choose for `ctx`: its groups' plannable actions, less
    those a replan must not use again."""
    excluded = set(ctx.replan.excluded_actions) if ctx.replan is not None else set()
    return [
        s
        for s in catalog.list_actions(flow_ids=ctx.flow_ids, plannable=True)
        if s.name not in excluded
    ]
