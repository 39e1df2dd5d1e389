"""What a `missing_input` issue suggests: producers in the catalog and outputs of the
plan's own steps that can give the input (private to `_checker`).

The suggestions feed the LLM planner's repair prompt and the user's error message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.schemas import compatible
from prefect_aether.catalog.specs import ActionSpec, IOSlot, same_structure

MAX_CANDIDATES = 5


def plan_candidates(specs: Mapping[str, ActionSpec], slot: IOSlot) -> list[str]:
    """Bindings to the plan's steps that can give `slot`: outputs named like it with a
    fitting type, then whole return values of the very type it takes."""
    named, whole = [], []
    for sid, spec in specs.items():
        for output, out in spec.feeds():
            if output is None:
                if same_structure(out, slot):
                    whole.append(f"${{{sid}}}")
            elif output == slot.name and compatible(out.json_schema, slot.json_schema):
                named.append(f"${{{sid}.{output}}}")
    return [*named, *whole][:MAX_CANDIDATES]


def producer_candidates(
    catalog: ActionCatalog, slot: IOSlot, allowed: Iterable[str] | None
) -> list[dict[str, Any]]:
    """Catalog actions that can give `slot`, best first: an output field or whole return
    value (`output` None) of a fitting type, by how alike the names are; a whole value
    of the very structure the input takes counts as a perfect match."""
    allowed_names = None if allowed is None else set(allowed)
    scored: list[tuple[float, str, str]] = []
    for spec in catalog:
        if allowed_names is not None and spec.name not in allowed_names:
            continue
        for output, out in spec.feeds():
            if out.type is None or slot.type is None:
                continue
            if output is None and same_structure(out, slot):
                score = 1.0
            elif compatible(out.json_schema, slot.json_schema):
                score = max(
                    difflib.SequenceMatcher(None, slot.name, output or "").ratio(),
                    difflib.SequenceMatcher(None, slot.name, spec.name).ratio(),
                )
            else:
                continue
            scored.append((-score, spec.name, output or ""))
    scored.sort()
    return [
        {"action": a, "output": o or None, "score": round(-s, 3)}
        for s, a, o in scored[:MAX_CANDIDATES]
    ]


def producer_text(candidate: Mapping[str, Any]) -> str:
    """A producer candidate as a person or an LLM reads it: `action (output rows)`, or
    `action (its whole return value)`."""
    if candidate.get("output") is None:
        return f"{candidate['action']} (its whole return value)"
    return f"{candidate['action']} (output {candidate['output']})"
