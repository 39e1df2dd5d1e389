"""Objects a goal writes out field by field (private to `_wiring`).

"Log the run to r.json: 120 parcels, late share 0.2, mean delay 14 min" gives every
field of a `RunStats` input; "escalate the delay for route-7: delay is 42 min, late
share 0.3, and it is not on time" gives a whole delay report. Such an input takes the object as a
literal, instead of a producer step that would compute something the user already said.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from prefect_aether.catalog.registry import IOSlot
from prefect_aether.catalog.words import tokenize, words
from prefect_aether.planning._fits import number
from prefect_aether.planning._goal import Goal
from prefect_aether.planning._values import bare_values

__all__ = ["inline_object"]

# Words that turn the next one around ("not healthy").
_NOT = frozenset({"not", "no", "isn't", "isnt", "aren't", "never"})
# At least this many fields must come from values the goal gives by their names; a
# lone bare word is no object.
_LEAST_NAMED = 2


def inline_object(
    slot: IOSlot, goal: Goal, free: Callable[[int], bool], vocabulary: Collection[str]
) -> tuple[dict[str, Any], list[int]] | None:
    """The object the goal writes out for `slot` (an object input whose required fields
    are plain values), and the goal resources it used; None unless the goal gives every
    required field. A number goes to the field its words name ("late share 0.3",
    "869 ms" after "p95"), a yes/no field to the word itself ("unhealthy", "not
    healthy"), a choice to the option the goal says, text to a name the goal gives."""
    schema = slot.json_schema
    fields = schema.get("properties") or {}
    required = [name for name in schema.get("required") or [] if name in fields]
    if slot.type != "object" or not required or len(required) != len(fields):
        return None
    said = words(goal.text)
    value: dict[str, Any] = {}
    used: list[int] = []
    named = 0
    for name in required:
        field = fields[name]
        kind = field.get("type")
        about = set(tokenize(name))
        if kind in ("number", "integer"):
            index = next(
                (
                    i
                    for i, r in enumerate(goal.resources)
                    if r.kind == "number" and free(i) and i not in used and about & r.words
                ),
                None,
            )
            if index is None:
                return None
            found = number(goal.resources[index].value)
            if isinstance(found, str) or (kind == "integer" and not isinstance(found, int)):
                return None
            value[name], named = found, named + 1
            used.append(index)
        elif kind == "boolean":
            flag = _flag(name, said)
            if flag is None:
                return None
            value[name], named = flag, named + 1
        elif kind == "string" and isinstance(field.get("enum"), list):
            options = {str(o).lower(): o for o in field["enum"]}
            chosen = [options[w] for w in said if w in options]
            if len(set(chosen)) != 1:
                return None
            value[name], named = chosen[0], named + 1
        elif kind == "string":
            taken = {v for v in value.values() if isinstance(v, str)}
            bare = [v for c in goal.clauses for v in bare_values(c, vocabulary, taken)]
            if not bare:
                return None
            value[name] = bare[0]
        else:
            return None
    return (value, used) if named >= _LEAST_NAMED else None


def _flag(name: str, said: list[str]) -> bool | None:
    """True when the goal says the field's words ("healthy", "on time"), False when it
    says their opposite ("unhealthy", "not healthy", "isn't on time"); None when it says
    neither."""
    field = [w for w in name.lower().replace("-", "_").split("_") if w]
    if len(field) == 1:
        opposite = {f"{p}{field[0]}" for p in ("un", "in", "non", "non-")}
        if opposite & set(said):
            return False
    for at in range(len(said) - len(field) + 1):
        if said[at : at + len(field)] == field:
            return not (set(said[max(0, at - 2) : at]) & _NOT)
    return None
