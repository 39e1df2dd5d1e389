"""LLM planning: prompt with the relevant actions, decode, validate, repair.

Examples:
    >>> from prefect_aether import ActionCatalog
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
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from prefect_aether._callbacks import notify
from prefect_aether.catalog import ActionCatalog, ActionSpec
from prefect_aether.exceptions import AetherUsageError, PlanDecodingError
from prefect_aether.plan import CandidatePlan, canonical_json
from prefect_aether.settings import AetherSettings
from prefect_aether.validate import ValidationResult, validate_plan

__all__ = [
    "ActionPlanner",
    "ChatModel",
    "PlanResult",
    "PlanningContext",
    "PlanningEvent",
    "decode_plan",
]

PlanningPhase = Literal[
    "start", "llm_request", "llm_response", "validation", "fallback", "success", "failure"
]
PlanningCallback = Callable[["PlanningEvent"], Awaitable[None] | None]
logger = logging.getLogger("prefect_aether.planner")
_PRODUCER_DEPTH = 4
_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)(?:```|\Z)", re.S)


class ChatModel(Protocol):
    """What a planner needs from an LLM client (`OpenAICompatibleLLM` is one)."""

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any] | None = None,
        schema_name: str | None = None,
    ) -> tuple[str, dict[str, int]]: ...


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
    limit = max_bytes if max_bytes is not None else AetherSettings().max_plan_bytes
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
    try:
        return CandidatePlan.from_dict(data)
    except PlanDecodingError as exc:
        raise PlanDecodingError(str(exc), raw=text) from None


class ActionPlanner:
    """Plans with an LLM: JSON-schema output, validation, and repair rounds.

    Args:
        catalog: The actions to plan with.
        llm: A chat model (e.g. `OpenAICompatibleLLM`).
        max_iter: Most LLM rounds (the first answer plus repairs).
        retrieval_threshold: Catalogs larger than this are not rendered whole:
            only the `top_k` actions most relevant to the goal, plus those it names.
        top_k: How many actions retrieval keeps.

    Examples:
        >>> from prefect_aether import ActionCatalog
        >>> planner = ActionPlanner(ActionCatalog(), llm=None, max_iter=2)  # type: ignore[arg-type]
        >>> planner.max_iter
        2
    """

    def __init__(
        self,
        catalog: ActionCatalog,
        llm: ChatModel,
        max_iter: int = 3,
        *,
        retrieval_threshold: int = 40,
        top_k: int = 15,
    ) -> None:
        settings = AetherSettings()
        if not 1 <= max_iter <= settings.max_planning_iterations:
            raise AetherUsageError(
                f"max_iter must be between 1 and {settings.max_planning_iterations} "
                f"(max_planning_iterations), got {max_iter}"
            )
        self.catalog = catalog
        self.llm = llm
        self.max_iter = max_iter
        self.max_tokens = settings.max_planning_tokens
        self.retrieval_threshold = retrieval_threshold
        self.top_k = top_k

    def relevant_actions(self, ctx: PlanningContext) -> list[ActionSpec]:
        """The actions shown to the LLM for this goal."""
        pool = self.catalog.list_actions(flow_ids=ctx.flow_ids)
        if len(pool) <= self.retrieval_threshold:
            return pool
        named = [s for s in pool if _names(s.name, ctx.goal)]
        ranked = self.catalog.search(ctx.goal, k=self.top_k, flow_ids=ctx.flow_ids)
        chosen = {s.name: s for s in [*named, *ranked]}
        # Close over producers: an action is of no use if nothing shown can feed its
        # required inputs. Breadth-first, bounded, best producer per input.
        frontier = list(chosen.values())
        for _ in range(_PRODUCER_DEPTH):
            added = []
            for spec in frontier:
                for slot in spec.inputs:
                    if not slot.required or slot.name in ctx.user_inputs:
                        continue
                    found = self.catalog.producers(slot, flow_ids=ctx.flow_ids, exclude=[spec.name])
                    exact = [p for p, out in found if out.name == slot.name]
                    candidates = exact or [p for p, _ in found]
                    if candidates and not any(p.name in chosen for p in candidates):
                        chosen[candidates[0].name] = candidates[0]
                        added.append(candidates[0])
            frontier = added
        return list(chosen.values())

    def messages(self, ctx: PlanningContext) -> list[dict[str, str]]:
        """The first prompt: instructions, context and the relevant actions."""
        return [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": self._prompt(ctx)},
        ]

    def _prompt(self, ctx: PlanningContext) -> str:
        parts = []
        if ctx.instruction:
            parts.append(f"Instruction: {ctx.instruction}")
        parts.append(f"Goal: {ctx.goal}")
        if ctx.user_inputs:
            known = ", ".join(f"{k} ({_kind(v)})" for k, v in ctx.user_inputs.items())
            parts.append(f"User inputs available as ${{user.<key>}}: {known}")
        if ctx.preferred_external_keys:
            parts.append(
                f"Prefer these names for new user inputs: {', '.join(ctx.preferred_external_keys)}"
            )
        if ctx.external_slots:
            parts.append(f"External bindings: {canonical_json(ctx.external_slots)}")
        if ctx.memory_snippets:
            parts.append("Relevant history:\n" + "\n".join(f"- {m}" for m in ctx.memory_snippets))
        if ctx.artifact_snippets:
            parts.append(
                "Relevant artifacts:\n" + "\n".join(f"- {a}" for a in ctx.artifact_snippets)
            )
        parts.append("Actions:\n" + self.catalog.render(self.relevant_actions(ctx)))
        return "\n\n".join(parts)

    async def plan(
        self, ctx: PlanningContext, *, on_event: PlanningCallback | None = None
    ) -> PlanResult:
        """Ask the LLM for a plan, validate it, and repair it up to `max_iter` rounds.

        Raises:
            LLMError: The LLM could not be reached (a caller may fall back).
        """
        emit = EventLog(on_event)
        events = emit.events
        usage: dict[str, int] = {}

        messages = self.messages(ctx)
        await emit(PlanningEvent(phase="start", iteration=0, message=f"planning: {ctx.goal}"))
        validation: ValidationResult | None = None
        for iteration in range(1, self.max_iter + 1):
            await emit(
                PlanningEvent(
                    phase="llm_request", iteration=iteration, message=f"round {iteration}"
                )
            )
            content, used = await self.llm.chat(
                messages, json_schema=CandidatePlan.json_schema(), schema_name="plan"
            )
            for key, value in used.items():
                usage[key] = usage.get(key, 0) + value
            spent = usage.get("total_tokens") or usage.get("prompt_tokens", 0) + usage.get(
                "completion_tokens", 0
            )
            if spent > self.max_tokens:
                message = (
                    f"token budget exceeded: {spent} tokens spent, at most {self.max_tokens} "
                    "per plan (max_planning_tokens)"
                )
                await emit(PlanningEvent(phase="failure", iteration=iteration, message=message))
                return PlanResult(plan=None, validation=validation, events=events, usage=usage)
            await emit(
                PlanningEvent(
                    phase="llm_response",
                    iteration=iteration,
                    message="answer received",
                    raw_llm_output=content,
                )
            )
            messages.append({"role": "assistant", "content": content})
            try:
                plan = decode_plan(content).resolve_actions(self.catalog)
            except PlanDecodingError as exc:
                await emit(PlanningEvent(phase="validation", iteration=iteration, message=str(exc)))
                messages.append({"role": "user", "content": _repair_decoding(str(exc))})
                continue
            validation = validate_plan(
                plan, self.catalog, user_inputs=ctx.user_inputs, flow_ids=ctx.flow_ids
            )
            await emit(
                PlanningEvent(
                    phase="validation",
                    iteration=iteration,
                    message=validation.summary(),
                    plan_dict=plan.to_dict(),
                    validation=validation,
                )
            )
            if validation.ok or (ctx.allow_partial_plans and validation.is_partial_ok()):
                plan = plan.model_copy(
                    update={"extras": {**plan.extras, "goal": ctx.goal, "planner": "llm"}}
                )
                await emit(
                    PlanningEvent(
                        phase="success",
                        iteration=iteration,
                        message="plan accepted" + (" (partial)" if not validation.ok else ""),
                        plan_dict=plan.to_dict(),
                        validation=validation,
                    )
                )
                return PlanResult(plan=plan, validation=validation, events=events, usage=usage)
            messages.append({"role": "user", "content": _repair(validation, ctx)})
        await emit(
            PlanningEvent(
                phase="failure",
                iteration=self.max_iter,
                message=f"no acceptable plan after {self.max_iter} rounds",
                validation=validation,
            )
        )
        return PlanResult(plan=None, validation=validation, events=events, usage=usage)


_SYSTEM = """You plan workflows out of the listed actions (Prefect flows).
Answer with one JSON object and nothing else:
{"steps": [{"id": ..., "action": ..., "inputs": {...}, "after": [...]}]}.
Rules:
- Use only the listed actions and their listed inputs; give every required input.
- Step ids are short names of letters, digits, '_' or '-', unique in the plan.
- An input value is a JSON literal, "${user.<key>}" for a value the user gives, or
  "${<step_id>.<output>}" for an output of another step; a dotted path may follow
  ("${load.rows.0}"). A binding must be the whole string. Bindings may sit inside lists and objects.
- "after" (optional) lists steps that must finish first although this step reads none of
  their outputs ("book the taxi, then play a song"); inputs bound to a step already wait for it.
- Steps may be listed in any order; the dependencies must not form a cycle.
- Use the fewest steps that reach the goal."""


def _repair_decoding(problem: str) -> str:
    return (
        f"Your answer could not be read as a plan: {problem}. "
        "Answer again with only the JSON object."
    )


def _repair(validation: ValidationResult, ctx: PlanningContext) -> str:
    lines = [
        "The plan has problems; fix all of them and answer with the whole corrected plan.",
        validation.summary(),
    ]
    for issue in validation.issues:
        candidates = issue.details.get("candidates") or []
        if issue.kind == "missing_input" and candidates:
            producers = ", ".join(f"{c['action']} (output {c['output']})" for c in candidates)
            lines.append(f"- {issue.step_id}.{issue.field} can come from: {producers}")
        bindings = issue.details.get("plan_bindings") or []
        if bindings:
            lines.append(f"- or bind it to {', '.join(bindings)}")
    if validation.missing_user_bindings and not ctx.allow_partial_plans:
        lines.append(
            "Every value must be known now: do not use ${user.*} keys that were not given."
        )
    return "\n".join(lines)


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


def _names(action: str, goal: str) -> bool:
    text = goal.lower()
    return action.lower() in text or action.lower().replace("_", " ").replace("-", " ") in text


def _kind(value: Any) -> str:
    return type(value).__name__
