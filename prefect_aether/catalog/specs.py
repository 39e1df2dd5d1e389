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

from pydantic import BaseModel, Field

from prefect_aether._internal.canonical import canonical_json
from prefect_aether.catalog.schemas import compatible, main_variant
from prefect_aether.catalog.words import tokenize

__all__ = ["ActionSpec", "IOSlot", "feed_tier", "render_spec"]


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
    outputs: list[IOSlot] = Field(default_factory=list, description="Outputs of the return value.")
    entrypoint: str | None = Field(
        default=None, description="Where the flow was loaded from (`path.py:fn` or `pkg.mod:fn`)."
    )

    def input(self, name: str) -> IOSlot | None:
        """The input slot called `name`, if any."""
        return next((s for s in self.inputs if s.name == name), None)

    def output(self, name: str) -> IOSlot | None:
        """The output slot called `name`, if any."""
        return next((s for s in self.outputs if s.name == name), None)


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
        inputs.append(f"{slot.name}: {_render_type(slot)} {marker}")
    outputs = [f"{slot.name}: {_render_type(slot)}" for slot in spec.outputs]
    lines = [f"- {spec.name}: {summary}" if summary else f"- {spec.name}"]
    lines.append(f"  inputs: {', '.join(inputs) if inputs else '(none)'}")
    lines.append(f"  outputs: {', '.join(outputs) if outputs else '(none)'}")
    return "\n".join(lines)
