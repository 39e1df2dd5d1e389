"""Replanning after a failed step, as planners and the executor share it: the facts a
planner is told (`Replanning`), and how a new plan joins what already ran (`adopt`).

A new step that does exactly what a completed step did (same action, same inputs once
references are mapped) *is* that step: bound, never run again. The other steps keep
their ids unless a step of the execution has it already (then `<id>_r<n>`), and every
reference follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from prefect_aether.plan import CandidatePlan, PlanStep, parse_binding, step_dependencies

__all__ = ["Replanning", "adopt"]


class Replanning(BaseModel):
    """What a planner is told when it plans the rest of a goal after a step failed.

    Its plan's steps may bind the completed steps' outputs (`${<completed step>...}`);
    those steps are never run again. The failed step's error is data (masked and
    bounded), never instructions.

    Examples:
        >>> Replanning(failed_step="fetch", failed_action="fetch", error="boom").completed
        []
    """

    completed: list[PlanStep] = Field(
        default_factory=list, description="Steps that succeeded; bind their outputs."
    )
    outputs: dict[str, str] = Field(
        default_factory=dict, description="Each completed step's output preview (masked)."
    )
    failed_step: str = Field(description="The step that failed after its retries.")
    failed_action: str = Field(description="Its action.")
    error: str = Field(description="Its error, masked and bounded.")
    excluded_actions: list[str] = Field(
        default_factory=list, description="Actions the new plan must not use again."
    )
    step_ids: list[str] = Field(
        default_factory=list, description="Every step id of the execution (new ids differ)."
    )
    round: int = Field(default=1, ge=1, description="Which replan of the execution this is.")


def adopt(
    new: CandidatePlan, completed: Mapping[str, PlanStep], taken: set[str], round_: int
) -> tuple[list[PlanStep], dict[str, str]]:
    """The steps of `new` still to run, renamed and rewired, and which of its steps are
    completed ones (`new id -> completed id`).

    Examples:
        >>> done = {"load": PlanStep(id="load", action="load", inputs={"p": "a.csv"})}
        >>> plan = CandidatePlan.from_dict({"steps": [
        ...     {"id": "load", "action": "load", "inputs": {"p": "a.csv"}},
        ...     {"id": "sum", "action": "sum", "inputs": {"rows": "${load.rows}"}}]})
        >>> steps, reused = adopt(plan, done, {"load", "sum"}, 1)
        >>> [(s.id, s.inputs) for s in steps], reused
        ([('sum_r1', {'rows': '${load.rows}'})], {'load': 'load'})
    """
    deps = step_dependencies(new)
    by_id = {s.id: s for s in new.steps}
    mapping: dict[str, str] = {}
    reused: dict[str, str] = {}
    kept: list[PlanStep] = []
    used = set(taken)
    for sid in _in_order(deps):
        step = by_id[sid]
        inputs = _renamed(step.inputs, mapping)
        after = [mapping.get(a, a) for a in step.after]
        same = next(
            (
                done.id
                for done in completed.values()
                if done.action == step.action and done.inputs == inputs
            ),
            None,
        )
        if same is not None:
            mapping[sid] = reused[sid] = same
            continue
        final = sid
        if final in used:
            final = f"{sid}_r{round_}"
            n = 2
            while final in used:
                final, n = f"{sid}_r{round_}_{n}", n + 1
        used.add(final)
        mapping[sid] = final
        kept.append(step.model_copy(update={"id": final, "inputs": inputs, "after": after}))
    return kept, reused


def _in_order(deps: Mapping[str, list[str]]) -> list[str]:
    """Step ids with each after the steps it depends on (within `deps`); a cycle's
    steps last, in plan order (validation refuses them)."""
    done: dict[str, None] = {}
    pending = list(deps)
    while pending:
        ready = [s for s in pending if all(d in done or d not in deps for d in deps[s])]
        if not ready:
            done.update(dict.fromkeys(pending))
            break
        done.update(dict.fromkeys(ready))
        pending = [s for s in pending if s not in done]
    return list(done)


def _renamed(value: Any, mapping: Mapping[str, str]) -> Any:
    """`value` with references to renamed steps rewritten; anything else as written."""
    if isinstance(value, dict):
        return {k: _renamed(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, mapping) for v in value]
    binding = parse_binding(value)
    sid = binding.step_id
    if binding.kind != "step_output" or sid is None or sid not in mapping:
        return value
    renamed = binding._replace(step_id=mapping[sid])
    return "${" + renamed.reference + "}"
