"""Reading missing user values out of a free-text message.

Without an LLM, a deterministic parser understands `key = value`,
`key: value`, `key is value` and JSON objects; with one, the LLM extracts the
values against a JSON schema. Either way values are coerced and checked with
the slots' JSON schemas when they are known.

Examples:
    >>> import asyncio
    >>> parsed = asyncio.run(parse_inputs("limit is 5, path: data.csv", ["path", "limit"],
    ...     schemas={"limit": {"type": "integer"}}))
    >>> parsed.values, parsed.missing_keys
    ({'path': 'data.csv', 'limit': 5}, [])
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.schemas import schema_at_path
from prefect_aether.catalog.specs import IOSlot
from prefect_aether.exceptions import LLMError
from prefect_aether.plan import Binding, CandidatePlan, iter_bindings
from prefect_aether.planning.llm_planner import ChatModel

__all__ = ["ParsedInputs", "parse_inputs", "user_input_schemas", "user_input_slots"]

_SEPARATORS = r"(?:=|:|\bis\b|\bto\b)"


class ParsedInputs(BaseModel):
    """What a message said about the missing keys.

    Examples:
        >>> ParsedInputs(values={"a": 1}, resolved_keys=["a"], missing_keys=["b"]).errors
        {}
    """

    values: dict[str, Any] = Field(default_factory=dict, description="Key to parsed value.")
    resolved_keys: list[str] = Field(default_factory=list, description="Keys that got a value.")
    missing_keys: list[str] = Field(default_factory=list, description="Keys still without one.")
    errors: dict[str, str] = Field(
        default_factory=dict, description="Key to why the value given was rejected."
    )


async def parse_inputs(
    message: str,
    missing_keys: Sequence[str],
    *,
    schemas: Mapping[str, dict[str, Any]] | None = None,
    llm: ChatModel | None = None,
    instruction: str | None = None,
) -> ParsedInputs:
    """Extract values for `missing_keys` from `message`.

    Args:
        message: What the user wrote.
        missing_keys: The `${user.*}` keys still needed.
        schemas: JSON schema per key (from the slots they feed), for coercion and checks.
        llm: Use this LLM to extract (falls back to the deterministic parser if it fails).
        instruction: Extra guidance for the LLM.
    """
    schemas = dict(schemas or {})
    raw: dict[str, Any] = {}
    if llm is not None:
        try:
            raw = await _extract_with_llm(llm, message, missing_keys, schemas, instruction)
        except (LLMError, ValueError):
            raw = {}
    if not raw:
        raw = _extract(message, missing_keys)
    result = ParsedInputs()
    for key in missing_keys:
        if key not in raw:
            result.missing_keys.append(key)
            continue
        value, error = _coerce(raw[key], schemas.get(key))
        if error is None:
            result.values[key] = value
            result.resolved_keys.append(key)
        else:
            result.errors[key] = error
            result.missing_keys.append(key)
    return result


def _extract(message: str, keys: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    start = message.find("{")
    if start >= 0:
        try:
            data, _ = json.JSONDecoder().raw_decode(message, start)
        except (json.JSONDecodeError, RecursionError):
            data = None
        if isinstance(data, dict):
            found.update({k: data[k] for k in keys if k in data})
    for key in keys:
        if key in found:
            continue
        label = r"[\s_-]+".join(re.escape(part) for part in re.split(r"[_\s-]+", key) if part)
        value = r"(\"[^\"]*\"|'[^']*'|\[[^\]]*\]|.+?)(?=\s*(?:[,;\n]|\s\band\s|$))"
        pattern = rf"(?i)(?<![\w-]){label}\s*{_SEPARATORS}\s*{value}"
        match = re.search(pattern, message)
        if match:
            found[key] = match.group(1).strip().rstrip(".").strip()
    return found


def _readings(value: Any) -> list[Any]:
    """Plausible typed readings of a value, most specific first."""
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return [text[1:-1]]
    words = {"true": True, "false": False, "yes": True, "no": False}
    if text.lower() in words:
        return [words[text.lower()], text]
    try:
        return [json.loads(text), text]
    except (json.JSONDecodeError, RecursionError):
        return [text]


def _coerce(value: Any, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    readings = _readings(value)
    if not schema:
        # Without a schema only structure is safe to infer: "5" stays text, "[1, 2]" a list.
        return (readings[0] if isinstance(readings[0], (list, dict)) else readings[-1]), None
    validator = Draft202012Validator(schema)
    for reading in readings:
        if validator.is_valid(reading):
            return reading, None
    error = next(iter(validator.iter_errors(readings[0])))
    return None, error.message


async def _extract_with_llm(
    llm: ChatModel,
    message: str,
    keys: Sequence[str],
    schemas: Mapping[str, dict[str, Any]],
    instruction: str | None,
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {k: schemas.get(k) or {} for k in keys},
        "additionalProperties": False,
    }
    prompt = (
        (f"{instruction}\n\n" if instruction else "")
        + "Extract these values from the user's message; leave out any that it does not give.\n"
        + f"Keys: {', '.join(keys)}\nMessage: {message}"
    )
    content, _ = await llm.chat(
        [{"role": "user", "content": prompt}], json_schema=schema, schema_name="inputs"
    )
    start = content.find("{")
    data, _ = json.JSONDecoder().raw_decode(content, max(start, 0))
    if not isinstance(data, dict):
        raise ValueError("the LLM did not answer with an object")
    return {k: v for k, v in data.items() if k in keys}


def user_input_schemas(plan: CandidatePlan, catalog: ActionCatalog) -> dict[str, dict[str, Any]]:
    """JSON schema of every `${user.<key>}` value `plan` reads, from the slots it feeds.

    A key that feeds several slots gets the first one's schema; a key whose
    slot is unknown accepts any value (`{}`).

    Examples:
        >>> plan = CandidatePlan.from_dict({"steps": [{"id": "a", "action": "x",
        ...                                          "inputs": {"n": "${user.n}"}}]})
        >>> user_input_schemas(plan, ActionCatalog())
        {'n': {}}
    """
    schemas: dict[str, dict[str, Any]] = {}
    for key, (slot, location, binding) in user_input_slots(plan, catalog).items():
        found = (
            schema_at_path(slot.json_schema, location[1:])
            if slot is not None and not binding.path
            else {}
        )
        schemas[key] = found if isinstance(found, dict) else {}
    return schemas


def user_input_slots(
    plan: CandidatePlan, catalog: ActionCatalog
) -> dict[str, tuple[IOSlot | None, tuple[Any, ...], Binding]]:
    """Per `${user.<key>}` the plan reads, the first input it feeds (None when the action
    or input is unknown), where in that input, and the binding.

    Examples:
        >>> plan = CandidatePlan.from_dict({"steps": [{"id": "a", "action": "x",
        ...                                          "inputs": {"n": "${user.n}"}}]})
        >>> user_input_slots(plan, ActionCatalog())["n"][0] is None
        True
    """
    found: dict[str, tuple[IOSlot | None, tuple[Any, ...], Binding]] = {}
    for step in plan.steps:
        spec = catalog.get(step.action)
        for location, binding in iter_bindings(step.inputs):
            if binding.kind != "external" or binding.key is None or binding.key in found:
                continue
            slot = spec.input(str(location[0])) if spec is not None else None
            found[binding.key] = (slot, tuple(location), binding)
    return found
