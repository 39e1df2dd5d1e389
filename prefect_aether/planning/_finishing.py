"""What a heuristic plan gets once every step is wired (private to `heuristic`):
outputs nobody used fed to later inputs that name them, names the goal gives with "as"
set on the step that takes them, and order-only edges where no data orders two steps.
"""

from __future__ import annotations

from prefect_aether.catalog.specs import feed_tier
from prefect_aether.catalog.words import tokenize
from prefect_aether.plan import PlanStep, iter_bindings
from prefect_aether.planning._fits import options, same_thing
from prefect_aether.planning._values import given_names
from prefect_aether.planning._wiring import Wiring

__all__ = ["feed_unused_outputs", "name_given_names", "order_after"]

# An input that takes what something is called (`model_name`, `run_label`).
_NAME_WORDS = frozenset(tokenize("name label alias"))


def order_after(wiring: Wiring, sid: str, previous: str) -> None:
    """Make `sid` wait for `previous` when no data flows between them already."""
    steps = {s.id: s for s in wiring.state.steps}
    if _reaches(steps, sid, previous) or _reaches(steps, previous, sid):
        return
    steps[sid].after.append(previous)


def feed_unused_outputs(wiring: Wiring) -> None:
    """Wire outputs nobody uses into later steps' optional inputs that name the same
    thing (`detect_anomalies.count` into `build_report.anomaly_count`)."""
    order = [s.id for s in wiring.state.steps]
    for i, step in enumerate(wiring.state.steps):
        spec = wiring.state.specs[step.id]
        for out in spec.outputs:
            if wiring.state.used_outputs[(step.id, out.name)]:
                continue
            about = set(tokenize(f"{out.name} {out.description or ''} {spec.name}"))
            for later_id in order[i + 1 :]:
                later = next(s for s in wiring.state.steps if s.id == later_id)
                target = wiring.state.specs[later_id]
                slot = next(
                    (
                        s
                        for s in target.inputs
                        if not s.required
                        and s.name not in later.inputs
                        and (feed_tier(out, s) == 0 or same_thing(out, s, about))
                    ),
                    None,
                )
                if slot is not None:
                    later.inputs[slot.name] = f"${{{step.id}.{out.name}}}"
                    wiring.state.used_outputs[(step.id, out.name)] += 1
                    break


def name_given_names(wiring: Wiring) -> None:
    """Give a name the goal sets ("register it **as** churn-v2", "a table **named**
    daily") to the one step input that takes such a name: an optional text input
    called a name or label whose docs share a word with the clause ("Name the model
    is archived under"), when no step has the value yet."""
    used = {v for s in wiring.state.steps for v in s.inputs.values() if isinstance(v, str)}
    for clause in wiring.state.goal.clauses:
        for value in given_names(clause):
            if value in used:
                continue
            said = set(clause.tokens) - set(tokenize(value))
            takers = [
                (step, slot)
                for step in wiring.state.steps
                for slot in wiring.state.specs[step.id].inputs
                if not slot.required
                and slot.name not in step.inputs
                and slot.type in ("string", None)
                and slot.role is None
                and not options(slot)
                and set(tokenize(slot.name)) & _NAME_WORDS
                and said & set(tokenize(f"{slot.name} {slot.description or ''}"))
            ]
            if len(takers) == 1:
                step, slot = takers[0]
                step.inputs[slot.name] = value
                used.add(value)


def _upstream(step: PlanStep) -> list[str]:
    found = [b.step_id for _, b in iter_bindings(step.inputs) if b.step_id]
    return [*found, *step.after]


def _reaches(steps: dict[str, PlanStep], start: str, target: str) -> bool:
    """Whether `target` is upstream of `start` (adding target -> start makes a cycle)."""
    seen, stack = set(), [start]
    while stack:
        current = stack.pop()
        if current == target:
            return True
        if current in seen or current not in steps:
            continue
        seen.add(current)
        stack.extend(_upstream(steps[current]))
    return False
