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
    "is_date",
    "is_fraction",
    "named_choice",
    "number",
    "options",
    "passable",
    "ref",
    "resource_fits",
    "same_thing",
    "split_share",
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
        if slot.type == "integer" and resource.cue & _RANKS and _is_count(slot, about):
            return True  # "top 5" for `n: How many to keep`
        return slot.type in ("integer", "number") and bool(about & resource.cue)
    if resource.kind == "split":
        return split_share(resource.value, slot) is not None
    if resource.kind == "date":
        return is_date(slot) or (slot.type in ("string", None) and bool(name & resource.words))
    if slot.type not in ("string", None):
        return False
    if resource.kind == "text":
        return bool(name & resource.words or about & resource.cue)
    # An input that says which media it takes ("the audio file") takes no other.
    wanted = about & _MEDIA
    if wanted and resource.media is not None and not wanted & resource.words:
        return False
    return bool(about & resource.words)


# Words before a count of the best or worst ("top 5", "the first 10").
_RANKS = frozenset(stem(w) for w in ("top", "first", "last", "best", "worst", "bottom"))
_COUNT_NAMES = frozenset({"n", "k", "limit", "top", "top_n", "count", "how_many"})


def _is_count(slot: IOSlot, about: set[str]) -> bool:
    """Whether an integer input says how many to keep (`n`, `limit`, "How many...")."""
    return slot.name.lower() in _COUNT_NAMES or stem("many") in about


def is_date(slot: IOSlot) -> bool:
    """Whether an input takes a calendar date or a timestamp (`date`, `datetime`,
    optional or not)."""
    schema = slot.json_schema
    options = [schema, *(schema.get("anyOf") or [])]
    return any(isinstance(o, dict) and o.get("format") in ("date", "date-time") for o in options)


_FRACTION_WORDS = frozenset(
    stem(w) for w in ("fraction", "share", "ratio", "proportion", "probability")
)
_PERCENT_WORDS = frozenset(stem(w) for w in ("percent", "percentage", "pct"))


def is_fraction(slot: IOSlot) -> bool:
    """Whether a numeric input takes a share as a number between 0 and 1 (a percentage
    goes to it divided by 100): its docs say so, or its default lies in (0, 1)."""
    said = set(tokenize(f"{slot.name} {slot.description or ''}"))
    if slot.type != "number" or said & _PERCENT_WORDS:
        return False
    default = slot.json_schema.get("default")
    return bool(said & _FRACTION_WORDS) or (isinstance(default, float) and 0 < default < 1)


_HELD_OUT = frozenset(stem(w) for w in ("test", "validation", "valid", "holdout", "eval"))
_TRAINING = frozenset(stem(w) for w in ("train", "training"))


def split_share(value: str, slot: IOSlot) -> float | None:
    """The share of a split ("70/30") that a numeric input takes: the second for a
    held-out part (`holdout_size`, `validation_fraction`), the first for the training part;
    None for any other input."""
    said = set(tokenize(slot.name))
    if slot.type != "number" or not said & (_HELD_OUT | _TRAINING):
        return None
    first, second = (int(part) for part in value.split("/"))
    return (second if said & _HELD_OUT else first) / 100


def options(slot: IOSlot) -> list[Any]:
    """The values a choice input (an enum or `Literal`, optional or not) allows; empty
    for any other input."""
    values: list[Any] = []
    for option in (slot.json_schema, *(slot.json_schema.get("anyOf") or [])):
        if isinstance(option, dict) and isinstance(option.get("enum"), list):
            values.extend(option["enum"])
    return values


def named_choice(slot: IOSlot, clause: Clause) -> Any:
    """The value of a choice input (an enum or `Literal`) that the clause names by itself
    ("open a P1 ticket", "promote it to production")."""
    named = {str(v).lower(): v for v in options(slot) if isinstance(v, str) and v}
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
