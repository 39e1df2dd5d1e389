"""Whether a value fits an input (private to the heuristic planner's wiring): a value
the goal gives (a file, a URL, a channel, a number, quoted text, inline JSON) by its
kind, its words and the way the goal moves it; a choice the goal names; and which of
an earlier step's outputs can feed an input.
"""

from __future__ import annotations

import re
from typing import Any

from prefect_aether.catalog.registry import ActionSpec, IOSlot
from prefect_aether.catalog.schemas import compatible, is_structured
from prefect_aether.catalog.specs import RETURN_SLOT, feed_tier, same_structure
from prefect_aether.catalog.words import stem, tokenize
from prefect_aether.planning._goal import Clause, Resource

__all__ = [
    "PLACES",
    "STRUCTURED",
    "fit",
    "named_choice",
    "number",
    "passable",
    "ref",
    "resource_fits",
    "same_thing",
    "words_of",
]

STRUCTURED = frozenset({"array", "object"})
_MEDIA = frozenset(stem(w) for w in ("image", "audio", "video", "text"))
# Values of the goal that name a place (they carry a direction: read or written).
PLACES = frozenset({"file", "url", "channel"})


def words_of(name: str) -> frozenset[str]:
    return frozenset(tokenize(name))


def resource_fits(resource: Resource, slot: IOSlot) -> bool:
    """Whether a value the goal gives can be this input: a number for a numeric input
    the goal names ("a z threshold of 2.5", "10 rows"); quoted text for a text input or
    one its cue names ("titled 'Q3'"); a file or URL for an input about its kind."""
    name = set(tokenize(slot.name))
    about = name | set(tokenize(slot.description or ""))
    if resource.kind in PLACES and not _same_way(resource, slot):
        return False
    if resource.kind == "channel":
        return slot.type in ("string", None) and bool(about & resource.words)
    if resource.kind == "json":
        shape = "object" if resource.value.lstrip().startswith("{") else "array"
        return slot.type == shape
    if resource.kind == "number":
        return slot.type in ("integer", "number") and bool(about & resource.cue)
    if slot.type not in ("string", None):
        return False
    if resource.kind == "text":
        return bool(name & resource.words or about & resource.cue)
    # An input that says which media it takes ("the audio file") takes no other.
    wanted = about & _MEDIA
    if wanted and resource.media is not None and not wanted & resource.words:
        return False
    return bool(about & resource.words)


def named_choice(slot: IOSlot, clause: Clause) -> Any:
    """The value of a choice input (an enum or `Literal`) that the clause names by itself
    ("open a P1 ticket", "promote it to production")."""
    values: list[Any] = []
    for option in (slot.json_schema, *(slot.json_schema.get("anyOf") or [])):
        if isinstance(option, dict) and isinstance(option.get("enum"), list):
            values.extend(option["enum"])
    named = {str(v).lower(): v for v in values if isinstance(v, str) and v}
    said = [w for w in clause.words if w in named]
    return named[said[0]] if len(set(said)) == 1 else None


def passable(spec: ActionSpec) -> list[IOSlot]:
    """What a step of `spec` can pass on: a structured whole return value (`${step}`),
    then its outputs."""
    whole = spec.returns
    structured = whole is not None and is_structured(whole.json_schema)
    return [whole, *spec.outputs] if whole is not None and structured else list(spec.outputs)


def ref(sid: str, output: str) -> str:
    """The binding to step `sid`'s output, or to its whole return value."""
    return f"${{{sid}}}" if output == RETURN_SLOT else f"${{{sid}.{output}}}"


def _same_way(resource: Resource, slot: IOSlot) -> bool:
    """A place the goal writes to goes only to an input the action writes; any other
    place (read, or said neither way) only to one it does not write."""
    if resource.direction == "write":
        return slot.role == "write"
    return slot.role != "write"


def fit(spec: ActionSpec, out: IOSlot, slot: IOSlot) -> int | None:
    """`feed_tier` (0 too for a whole value of the structure the input takes), plus 2 for
    an action's only output when the action says it makes what the input names
    (`summarize_text` -> `result` for a `text` input)."""
    if out.name == RETURN_SLOT:
        return 0 if same_structure(out, slot) else None
    tier = feed_tier(out, slot)
    if tier is not None or len(spec.outputs) != 1 or out.type is None or slot.type is None:
        return tier
    said = set(tokenize(f"{spec.name} {out.description or ''}"))
    return (
        2
        if set(tokenize(slot.name)) & said and compatible(out.json_schema, slot.json_schema)
        else None
    )


def same_thing(out: IOSlot, slot: IOSlot, about: set[str]) -> bool:
    """An optional input named like an output and its action: all of the input's name
    words are said of the output (its name, description or action)."""
    name = set(tokenize(slot.name))
    return bool(name) and name <= about and compatible(out.json_schema, slot.json_schema)


def number(text: str) -> int | float | str:
    digits = re.match(r"-?\d+(?:[.,]\d+)*", text)
    if digits is None:
        return text
    raw = digits.group(0).replace(",", "")
    try:
        return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    except ValueError:
        return text
