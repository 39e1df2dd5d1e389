"""What an action is: its typed inputs and outputs (`ActionSpec`, `IOSlot`).

The data every layer shares: the catalog builds specs by introspection, the planners
and the validator read them, the executor runs them. `prefect_aether.catalog.registry`
re-exports both names.

Examples:
    >>> from prefect_aether.catalog.specs import ActionSpec, IOSlot
    >>> spec = ActionSpec(name="load", ref="flow:load@1", inputs=[IOSlot(name="path")])
    >>> spec.input("path").required
    True
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from prefect_aether._internal.canonical import canonical_json
from prefect_aether.catalog.schemas import compatible, is_structured, main_variant
from prefect_aether.catalog.words import tokenize

__all__ = [
    "RETURN_SLOT",
    "WHOLE_RESULT",
    "ActionSpec",
    "IOSlot",
    "feed_tier",
    "render_spec",
    "same_structure",
    "whole_of",
]


class IOSlot(BaseModel):
    """One input (a flow parameter) or output (a field of the return value) of an action.

    Examples:
        >>> IOSlot(name="path", type="string", json_schema={"type": "string"}).required
        True
    """

    name: str = Field(description="Parameter or output field name.")
    type: str | None = Field(
        default=None,
        description=(
            "Coarse JSON type: string, integer, number, boolean, array, object; None means any."
        ),
    )
    json_schema: dict[str, Any] = Field(
        default_factory=dict, description="Self-contained JSON schema of the value."
    )
    description: str | None = Field(default=None, description="Human/LLM-facing description.")
    required: bool = Field(default=True, description="Whether a value must be given.")
    default: Any = Field(default=None, description="Default value (JSON) when not required.")
    role: Literal["read", "write"] | None = Field(
        default=None,
        description=(
            "For an input naming a location (file, folder, URL, table, channel): whether "
            "the action reads it or writes, sends to or changes it; None otherwise."
        ),
    )


class ActionSpec(BaseModel):
    """A catalog action: what a planner may call, with typed inputs and outputs.

    Examples:
        >>> spec = ActionSpec(name="noop", ref="flow:noop@1", version="1")
        >>> spec.kind
        'flow'
    """

    name: str = Field(description="Unique action name (the flow name).")
    ref: str = Field(
        description="Canonical ref: `flow:<name>@<version>` or `deployment:<flow>/<name>`."
    )
    kind: Literal["flow", "deployment"] = Field(default="flow", description="How it runs.")
    version: str | None = Field(default=None, description="Flow version.")
    description: str = Field(default="", description="Docstring summary text.")
    tags: list[str] = Field(default_factory=list, description="Tags, used by search.")
    flow_id: str | None = Field(default=None, description="Group id; None means global.")
    inputs: list[IOSlot] = Field(default_factory=list, description="Inputs, in parameter order.")
    outputs: list[IOSlot] = Field(
        default_factory=list,
        description="Outputs of the return value: one per field of a structured return "
        "(`${step.<field>}`), else one called `result`.",
    )
    returns: IOSlot | None = Field(
        default=None,
        description="The whole return value (`${step}`) with its full schema; None when the "
        "action returns nothing. Left out, it is made from `outputs`.",
    )
    entrypoint: str | None = Field(
        default=None, description="Where the flow was loaded from (`path.py:fn` or `pkg.mod:fn`)."
    )

    @model_validator(mode="after")
    def _whole_from_outputs(self) -> ActionSpec:
        if self.returns is None and self.outputs:
            self.returns = whole_of(self.outputs)
        return self

    def input(self, name: str) -> IOSlot | None:
        """The input slot called `name`, if any."""
        return next((s for s in self.inputs if s.name == name), None)

    def output(self, name: str) -> IOSlot | None:
        """The output slot called `name`, if any."""
        return next((s for s in self.outputs if s.name == name), None)

    def produces(self, output: str | None) -> IOSlot | None:
        """What `${step.<output>}` gives, or `${step}` (the whole return value) for None."""
        return self.returns if output is None else self.output(output)

    def feeds(self) -> list[tuple[str | None, IOSlot]]:
        """What a step of this action can pass on, as (output, slot): the whole return
        value first (output None), then each field of a structured return. An
        unstructured return's `result` is its whole value, listed once."""
        found: list[tuple[str | None, IOSlot]] = []
        if self.returns is not None:
            found.append((None, self.returns))
        if [o.name for o in self.outputs] != [WHOLE_RESULT]:
            found.extend((o.name, o) for o in self.outputs)
        return found


WHOLE_RESULT = "result"
"""The one output of an unstructured return: `${step.result}` is `${step}`."""
RETURN_SLOT = "return"
"""The name of the whole return value's slot (a keyword, so no field can take it)."""


def whole_of(outputs: list[IOSlot]) -> IOSlot:
    """The whole return value made from output slots: `result` itself, or an object of
    the fields."""
    if [o.name for o in outputs] == [WHOLE_RESULT]:
        return outputs[0].model_copy(update={"name": RETURN_SLOT})
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {o.name: o.json_schema for o in outputs},
        "required": [o.name for o in outputs if o.required],
    }
    return IOSlot(name=RETURN_SLOT, type="object", json_schema=schema, required=True)


def feed_tier(out: IOSlot, slot: IOSlot) -> int | None:
    """How well output `out` fits input `slot`: 0 same name, 1 a shared word, None not at all.

    Both types must be known and compatible: wiring by name is a guess otherwise.
    """
    if out.type is None or slot.type is None or not compatible(out.json_schema, slot.json_schema):
        return None
    if out.name == slot.name:
        return 0
    words = set(tokenize(slot.name.replace("_", " ")))
    return 1 if words & set(tokenize(out.name.replace("_", " "))) else None


def same_structure(out: IOSlot, slot: IOSlot) -> bool:
    """Whether `out` is a structured value (fields, or a list or map of them) that fits
    input `slot`: its shape alone says what it is, whatever the names."""
    return is_structured(out.json_schema) and compatible(out.json_schema, slot.json_schema)


def _render_type(slot: IOSlot) -> str:
    enum = slot.json_schema.get("enum")
    if isinstance(enum, list) and enum:
        return "|".join(canonical_json(v) for v in enum)
    kind = slot.type or "any"
    items = main_variant(slot.json_schema).get("items")
    if kind == "array" and isinstance(items, dict) and items.get("type"):
        return f"array[{items['type']}]"
    return kind


def render_spec(spec: ActionSpec) -> str:
    """One action as the LLM reads it: name, summary, typed inputs and outputs."""
    summary = spec.description.splitlines()[0] if spec.description else ""
    inputs = []
    for slot in spec.inputs:
        marker = "(required)" if slot.required else f"= {canonical_json(slot.default)}"
        role = f" [{slot.role}s]" if slot.role else ""
        inputs.append(f"{slot.name}: {_render_type(slot)} {marker}{role}")
    lines = [f"- {spec.name}: {summary}" if summary else f"- {spec.name}"]
    lines.append(f"  inputs: {', '.join(inputs) if inputs else '(none)'}")
    if spec.returns is None:
        lines.append("  returns: (nothing)")
        return "\n".join(lines)
    whole = spec.returns
    title = whole.json_schema.get("title")
    lines.append(f"  returns (${{step}}): {_render_type(whole)}{f' {title}' if title else ''}")
    fields = [f"{o.name}: {_render_type(o)}" for out, o in spec.feeds() if out is not None]
    if fields:
        lines.append(f"  fields (${{step.<field>}}): {', '.join(fields)}")
    return "\n".join(lines)
