"""The writes a goal asks for that no chosen step makes (private to `heuristic`).

"Summarize the orders and save both as JSON in out/": when the clauses chose no action
that writes to `out/`, a writer is added after the plan's steps: an action with an
input it writes that takes the place, and whose data inputs earlier steps can feed
(the latest first). A place the goal writes to is never dropped silently: when no
action can write it, the clause that asked is reported as not served.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from prefect_aether.catalog.specs import ActionSpec, same_structure
from prefect_aether.catalog.words import tokenize
from prefect_aether.planning._fits import PLACES, STRUCTURED, resource_fits
from prefect_aether.planning._goal import Clause, Goal
from prefect_aether.planning._wiring import Wiring

__all__ = ["write_leftovers"]


def write_leftovers(
    wiring: Wiring, goal: Goal, actions: Iterable[ActionSpec], skipped: Iterable[str]
) -> list[str]:
    """Add a writer step for each place the goal writes to that no step took; return
    the clauses (in the goal's words) of those no action can write. Places inside
    clauses already reported as not served (`skipped`) are left alone."""
    candidates = [spec for spec in actions if any(s.role == "write" for s in spec.inputs)]
    skip = set(skipped)
    unserved: list[str] = []
    for index, resource in enumerate(goal.resources):
        if (
            resource.kind not in PLACES
            or resource.direction != "write"
            or wiring.state.used_resources[index]
        ):
            continue
        clause = _clause_of(goal, index)
        said = clause.said or clause.text if clause is not None else resource.value
        if said in skip:
            continue
        writer = _best_writer(wiring, candidates, resource_index=index)
        if writer is None or clause is None:
            unserved.append(said)
            continue
        before = copy.deepcopy(wiring.state)
        wiring.add(writer, clause, depth=0, reason=f"writes {resource.value!r} as the goal asks")
        if not wiring.state.used_resources[index]:
            # The writer took the place elsewhere: undo it, and whatever it brought along.
            wiring.state = before
            unserved.append(said)
    return unserved


def _slot_text(spec: ActionSpec) -> str:
    return " ".join(f"{s.name} {s.description or ''}" for s in spec.inputs if s.role == "write")


def _clause_of(goal: Goal, index: int) -> Clause | None:
    return next((c for c in goal.clauses if index in c.resources), None)


def _best_writer(
    wiring: Wiring, candidates: list[ActionSpec], *, resource_index: int
) -> ActionSpec | None:
    """The writer that takes the place and whose data the latest step can feed."""
    resource = wiring.state.goal.resources[resource_index]
    steps = wiring.state.steps
    best: tuple[int, int, int, str] | None = None
    chosen = None
    for spec in candidates:
        if not any(s.role == "write" and resource_fits(resource, s) for s in spec.inputs):
            continue
        data = [s for s in spec.inputs if s.required and s.type in STRUCTURED]
        # How recent a step feeds every data input (the latest step is 0).
        recency = None
        for age, step in enumerate(reversed(steps)):
            made = wiring.state.specs[step.id].returns
            if made is not None and data and all(same_structure(made, s) for s in data):
                recency = age
                break
        if data and recency is None:
            continue
        # A writer that says it writes this kind of file ("Write orders to a CSV file").
        said = set(tokenize(f"{spec.description} {_slot_text(spec)}")) & resource.words
        rank = (
            recency if recency is not None else len(steps),
            -len(said),
            -len(data),
            spec.name,
        )
        if best is None or rank < best:
            best, chosen = rank, spec
    return chosen
