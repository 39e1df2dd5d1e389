"""The shape of the LLM's answer: a JSON schema valid under strict structured-output
rules, and the answer read back into a plan (private to `llm_planner` and `base`).

Strict rules (OpenAI's strict mode; llama.cpp's grammar enforces the same schema):
every object lists all its properties as required and sets `additionalProperties:
false`; an optional value is nullable instead of missing. So each step names every
input of its action (null for one it leaves at its default), says why it is there
(`reason`), and lists the earlier steps it waits for without reading them
(`wait_for`, read back as `after`; maybe empty); the
answer lists what no action can do (`unserved`, maybe empty).

With few actions shown, each action gets a step schema of its own (`anyOf`): the
model can only name real inputs with values of their type or bindings. With many, a
step names its action from an enum and gives its inputs as `{name, value}` pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from prefect_aether.catalog.specs import ActionSpec, IOSlot
from prefect_aether.exceptions import BindingError
from prefect_aether.plan import CandidatePlan, PlanStep, iter_strings, parse_binding

__all__ = ["PER_ACTION_LIMIT", "answer_schema", "drop_cyclic_after", "normalize_answer"]

PER_ACTION_LIMIT = 24
"""Most actions shown with a step schema each; above it, one generic step schema."""

_TEXT: dict[str, Any] = {"type": "string"}
_SCALAR: dict[str, Any] = {"type": ["string", "number", "integer", "boolean", "null"]}


def answer_schema(actions: Sequence[ActionSpec]) -> dict[str, Any]:
    """The strict JSON schema of an answer over `actions`.

    Examples:
        >>> from prefect_aether.catalog.specs import ActionSpec, IOSlot
        >>> path = IOSlot(name="path", type="string")
        >>> spec = ActionSpec(name="load", ref="flow:load", inputs=[path])
        >>> step = answer_schema([spec])["properties"]["steps"]["items"]["anyOf"][0]
        >>> step["properties"]["inputs"]["required"], step["additionalProperties"]
        (['path'], False)
    """
    if len(actions) <= PER_ACTION_LIMIT:
        items: dict[str, Any] = {"anyOf": [_action_step(spec) for spec in actions]}
    else:
        items = _generic_step(actions)
    return _object(
        {
            "steps": {"type": "array", "items": items},
            "unserved": {
                "type": "array",
                "items": _TEXT,
                "description": "Parts of the goal, in the user's words, that no action does.",
            },
        }
    )


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _step(action: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    return _object(
        {
            "id": {"type": "string", "description": "Unique step id, e.g. 'load'."},
            "action": action,
            "inputs": inputs,
            "wait_for": {
                "type": "array",
                "items": _TEXT,
                "description": "Ids of earlier steps this one waits for without reading them.",
            },
            "reason": {"type": "string", "description": "Why this step is in the plan."},
        }
    )


def _action_step(spec: ActionSpec) -> dict[str, Any]:
    inputs = _object({slot.name: _value(slot) for slot in spec.inputs})
    return _step({"type": "string", "enum": [spec.name]}, inputs)


def _generic_step(actions: Sequence[ActionSpec]) -> dict[str, Any]:
    names = sorted({slot.name for spec in actions for slot in spec.inputs}) or ["_"]
    pair = _object({"name": {"type": "string", "enum": names}, "value": _SCALAR})
    return _step(
        {"type": "string", "enum": [spec.name for spec in actions]},
        {"type": "array", "items": pair},
    )


def _value(slot: IOSlot) -> dict[str, Any]:
    """A binding (text) or a literal of the input's own type; null for a default."""
    options: list[dict[str, Any]] = [dict(_TEXT)]
    if slot.type in ("integer", "number", "boolean"):
        options.append({"type": slot.type})
    elif slot.type in ("array", "object"):
        strict = _strict(slot.json_schema)
        if strict is not None:
            options.append(strict)
    if not slot.required:
        options.append({"type": "null"})
    return options[0] if len(options) == 1 else {"anyOf": options}


def _strict(schema: dict[str, Any], depth: int = 0) -> dict[str, Any] | None:
    """`schema` under strict rules, or None when it cannot be said strictly (a free-form
    map, a recursive type): the model then writes a binding."""
    if depth > 6 or "$ref" in schema:
        return None
    kind = schema.get("type")
    if isinstance(schema.get("enum"), list):
        values = [v for v in schema["enum"] if isinstance(v, str | int | float | bool)]
        return {"enum": values} if values else None
    if kind in ("string", "integer", "number", "boolean"):
        return {"type": kind}
    if kind == "array":
        items = schema.get("items")
        inner = _strict(items, depth + 1) if isinstance(items, dict) else None
        return {"type": "array", "items": inner} if inner is not None else None
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            return None
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            strict = _strict(sub, depth + 1) if isinstance(sub, dict) else None
            if strict is None:
                return None
            out[name] = strict if name in required else {"anyOf": [strict, {"type": "null"}]}
        return _object(out)
    options = schema.get("anyOf")
    if isinstance(options, list):
        strict_options = [_strict(o, depth + 1) for o in options if isinstance(o, dict)]
        if strict_options and all(o is not None for o in strict_options):
            return {"anyOf": strict_options}
    return None


def normalize_answer(data: dict[str, Any]) -> dict[str, Any]:
    """An answer in the strict shape as a plan's dict: `{name, value}` pairs become
    inputs, null inputs (left at their defaults) are dropped, and each step's `reason`
    goes to its extras. Anything else is left for the plan's own validation."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        return data
    renamed = _step_ids(steps)
    out = []
    for step in steps:
        if not isinstance(step, dict):
            out.append(step)
            continue
        step = _renamed(dict(step), renamed)
        inputs = step.get("inputs")
        if isinstance(inputs, list) and all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in inputs
        ):
            inputs = {p["name"]: p.get("value") for p in inputs}
        if isinstance(inputs, dict):
            step["inputs"] = {k: v for k, v in inputs.items() if v is not None}
        if "wait_for" in step:
            waits = step.pop("wait_for")
            if "after" not in step:
                step["after"] = waits
        reason = step.pop("reason", None)
        if isinstance(reason, str) and reason.strip():
            extras = step.get("extras")
            kept = extras if isinstance(extras, dict) else {}
            step["extras"] = {**kept, "reason": reason.strip()[:300]}
        out.append(step)
    return {**data, "steps": out}


_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _step_ids(steps: list[Any]) -> dict[str, str]:
    """New ids for step ids that are no identifiers (an action's name such as
    `export-summary` used as an id): `-`, `.` and spaces become `_`, unless that id is
    taken; the validator reports anything still wrong."""
    taken = {s.get("id") for s in steps if isinstance(s, dict)}
    renamed: dict[str, str] = {}
    for step in steps:
        sid = step.get("id") if isinstance(step, dict) else None
        if not isinstance(sid, str) or _ID.fullmatch(sid):
            continue
        # Only the separators of names ("export-summary", "step 1"); any other character
        # (shell syntax, invisible ones) leaves the id as it is, for the validator to refuse.
        new = re.sub(r"[-. ]", "_", sid)
        if not _ID.fullmatch(new):
            new = f"s_{new}"
        if _ID.fullmatch(new) and new not in taken:
            renamed[sid] = new
            taken.add(new)
    return renamed


def _renamed(step: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    if not renamed:
        return step
    if step.get("id") in renamed:
        step["id"] = renamed[step["id"]]
    for key in ("after", "wait_for"):
        if isinstance(step.get(key), list):
            step[key] = [renamed.get(s, s) if isinstance(s, str) else s for s in step[key]]

    def rename(text: str) -> str:
        match = re.fullmatch(r"\$\{([^.}]+)(.*)\}", text)
        if match is None or match.group(1) not in renamed:
            return text
        return "${" + renamed[match.group(1)] + match.group(2) + "}"

    step["inputs"] = _map_strings(step.get("inputs"), rename)
    return step


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(v, change) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, change) for k, v in value.items()}
    return value


def drop_cyclic_after(plan: CandidatePlan) -> CandidatePlan:
    """`plan` without the order-only edges that close a cycle: data bindings say what a
    step needs, so an `after` edge to a step that needs this one is a misread order
    (small models list successors there), not a dependency to keep."""
    steps = {s.id: s for s in plan.steps}
    upstream = {sid: _needs(s.inputs, steps) for sid, s in steps.items()}
    changed = False
    kept_steps = []
    for step in plan.steps:
        kept = []
        for before in step.after:
            if before != step.id and not _reaches(upstream, before, step.id):
                kept.append(before)
                upstream[step.id].append(before)
        if kept != step.after:
            changed = True
            step = step.model_copy(update={"after": kept})
        kept_steps.append(step)
    return plan.model_copy(update={"steps": kept_steps}) if changed else plan


def _needs(inputs: Any, steps: Collection[str]) -> list[str]:
    """The steps whose outputs `inputs` bind (malformed bindings are the validator's)."""
    found = []
    for _, text in iter_strings(inputs):
        try:
            binding = parse_binding(text)
        except BindingError:
            continue
        if binding.step_id is not None and binding.step_id in steps:
            found.append(binding.step_id)
    return found


def _reaches(upstream: dict[str, list[str]], start: str, target: str) -> bool:
    """Whether `start` waits, directly or not, for `target`."""
    seen, stack = set(), [start]
    while stack:
        current = stack.pop()
        if current == target:
            return True
        if current in seen:
            continue
        seen.add(current)
        stack.extend(upstream.get(current, ()))
    return False


def bind_by_action(plan: CandidatePlan, done: Sequence[PlanStep] = ()) -> CandidatePlan:
    """`plan` with references to a step by its *action's* name (`${fetch-rates}` where
    the step running `fetch-rates` has the id `rates`) pointed at that step, when no step
    has that id and exactly one step (of the plan, or of `done`: steps a replan may bind)
    runs that action. Small models name the action where the schema asks for a step id.

    Examples:
        >>> plan = CandidatePlan.from_dict({"steps": [
        ...     {"id": "a", "action": "load-rows", "inputs": {}},
        ...     {"id": "b", "action": "count", "inputs": {"rows": "${load_rows.rows}"}}]})
        >>> bind_by_action(plan).steps[1].inputs
        {'rows': '${a.rows}'}
    """
    steps = [*done, *plan.steps]
    ids = {s.id for s in steps}
    by_action: dict[str, list[str]] = {}
    for step in steps:
        by_action.setdefault(_plain(step.action), []).append(step.id)

    def change(text: str) -> str:
        try:
            binding = parse_binding(text)
        except BindingError:
            return text
        sid = binding.step_id
        if binding.kind != "step_output" or sid is None or sid in ids:
            return text
        owners = by_action.get(_plain(sid), [])
        if len(owners) != 1:
            return text
        return "${" + binding._replace(step_id=owners[0]).reference + "}"

    fixed = [s.model_copy(update={"inputs": _map_strings(s.inputs, change)}) for s in plan.steps]
    if all(a.inputs == b.inputs for a, b in zip(fixed, plan.steps, strict=True)):
        return plan
    return plan.model_copy(update={"steps": fixed})


def _plain(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "_", name.strip().lower())
