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
from prefect_aether.catalog.specs import ActionSpec, IOSlot

MAX_CANDIDATES = 5


def plan_candidates(specs: Mapping[str, ActionSpec], slot: IOSlot) -> list[str]:
    """Bindings to outputs of the plan's steps named like `slot` with a fitting type."""
    return [
        f"${{{sid}.{out.name}}}"
        for sid, spec in specs.items()
        for out in spec.outputs
        if out.name == slot.name and compatible(out.json_schema, slot.json_schema)
    ][:MAX_CANDIDATES]


def producer_candidates(
    catalog: ActionCatalog, slot: IOSlot, allowed: Iterable[str] | None
) -> list[dict[str, Any]]:
    """Catalog actions whose output fits `slot`, by how alike their names are, best first."""
    allowed_names = None if allowed is None else set(allowed)
    scored = []
    for spec in catalog:
        if allowed_names is not None and spec.name not in allowed_names:
            continue
        for out in spec.outputs:
            if (
                out.type is None
                or slot.type is None
                or not compatible(out.json_schema, slot.json_schema)
            ):
                continue
            score = max(
                difflib.SequenceMatcher(None, slot.name, out.name).ratio(),
                difflib.SequenceMatcher(None, slot.name, spec.name).ratio(),
            )
            scored.append((-score, spec.name, out.name))
    scored.sort()
    return [
        {"action": a, "output": o, "score": round(-s, 3)} for s, a, o in scored[:MAX_CANDIDATES]
    ]
