"""A deterministic, offline planner: no LLM, no network.

It splits the goal into ordered clauses, maps each clause to the most relevant
action (`ActionCatalog.search`, above a score threshold), and wires inputs:
from `user_inputs` by name, from earlier steps' outputs by name and type, and
by backward chaining: when an input can only come from another action's
output, that action is inserted before the step (bounded depth). Anything
left becomes a `${user.<name>}` binding, making a partial plan.

Examples:
    >>> from prefect import flow
    >>> from prefect_aether import ActionCatalog
    >>> @flow(name="load_rows", version="1")
    ... def load_rows(path: str) -> list[int]:
    ...     '''Load rows from a file.'''
    ...     return [1]
    >>> catalog = ActionCatalog()
    >>> _ = catalog.register(load_rows)
    >>> plan = HeuristicPlanner(catalog).build(PlanningContext(goal="load the rows"))
    >>> [(s.id, s.inputs) for s in plan.steps]
    [('load_rows', {'path': '${user.path}'})]
"""

from __future__ import annotations

import re
from typing import Any

from prefect_aether.catalog import ActionCatalog, ActionSpec, IOSlot, feed_tier
from prefect_aether.plan import CandidatePlan, PlanStep
from prefect_aether.planner import (
    EventLog,
    PlanningCallback,
    PlanningContext,
    PlanningEvent,
    PlanResult,
)
from prefect_aether.validate import validate_plan

__all__ = ["HeuristicPlanner"]

_CONTEXT_WEIGHT = 0.5
_CLAUSE_SPLIT = re.compile(
    r"\s*(?:[,;.]|->|=>|\bthen\b|\band then\b|\bafter that\b|\bfinally\b|\band\b)\s*", re.I
)


class HeuristicPlanner:
    """Plans without an LLM; the same input always gives the same plan.

    Args:
        catalog: The actions to plan with.
        threshold: Least BM25 score for a clause to select an action.
        max_depth: Most producer steps inserted in a row by backward chaining.

    Examples:
        >>> from prefect_aether import ActionCatalog
        >>> HeuristicPlanner(ActionCatalog()).max_depth
        4
    """

    name = "heuristic"

    def __init__(
        self, catalog: ActionCatalog, *, threshold: float = 1.0, max_depth: int = 4
    ) -> None:
        self.catalog = catalog
        self.threshold = threshold
        self.max_depth = max_depth

    def select(self, ctx: PlanningContext) -> list[ActionSpec]:
        """The actions the goal's clauses ask for, in goal order (each at most once).

        A clause picks the action it matches best; the whole goal's score, at
        half weight, breaks near-ties, so "then fix the types" in a goal about
        the crm source picks the crm action.
        """
        size = max(len(self.catalog), 1)
        context = {
            s.name: score
            for s, score in self.catalog.search_scores(ctx.goal, k=size, flow_ids=ctx.flow_ids)
        }
        chosen: dict[str, ActionSpec] = {}
        for clause in [c for c in _CLAUSE_SPLIT.split(ctx.goal) if c and c.strip()]:
            ranked = self.catalog.search_scores(clause, k=size, flow_ids=ctx.flow_ids)
            ranked = [(s, score) for s, score in ranked if score >= self.threshold]
            if ranked:
                best = max(
                    ranked,
                    key=lambda pair: pair[1] + _CONTEXT_WEIGHT * context.get(pair[0].name, 0),
                )
                chosen.setdefault(best[0].name, best[0])
        if not chosen:
            ranked = self.catalog.search_scores(ctx.goal, k=1, flow_ids=ctx.flow_ids)
            if ranked and ranked[0][1] >= self.threshold:
                chosen[ranked[0][0].name] = ranked[0][0]
        return list(chosen.values())

    def build(self, ctx: PlanningContext) -> CandidatePlan:
        """The plan for `ctx.goal` (possibly partial; possibly empty when nothing matches)."""
        builder = _Builder(self, ctx)
        for spec in self.select(ctx):
            builder.add(spec, depth=0)
        extras = {"goal": ctx.goal, "planner": self.name}
        return CandidatePlan(steps=builder.steps, extras=extras)

    async def plan(
        self, ctx: PlanningContext, *, on_event: PlanningCallback | None = None
    ) -> PlanResult:
        """Build, validate and report the plan with the same events as `ActionPlanner`."""
        emit = EventLog(on_event)
        events = emit.events

        await emit(PlanningEvent(phase="start", iteration=0, message=f"planning: {ctx.goal}"))
        plan = self.build(ctx)
        validation = validate_plan(
            plan, self.catalog, user_inputs=ctx.user_inputs, flow_ids=ctx.flow_ids
        )
        await emit(
            PlanningEvent(
                phase="validation",
                iteration=1,
                message=validation.summary(),
                plan_dict=plan.to_dict(),
                validation=validation,
            )
        )
        accepted = validation.ok or (ctx.allow_partial_plans and validation.is_partial_ok())
        if not accepted:
            why = "no action matches the goal" if not plan.steps else "the plan is not acceptable"
            await emit(
                PlanningEvent(phase="failure", iteration=1, message=why, validation=validation)
            )
            return PlanResult(plan=None, validation=validation, events=events, planner=self.name)
        await emit(
            PlanningEvent(
                phase="success",
                iteration=1,
                message="plan accepted" + ("" if validation.ok else " (partial)"),
                plan_dict=plan.to_dict(),
                validation=validation,
            )
        )
        return PlanResult(plan=plan, validation=validation, events=events, planner=self.name)


class _Builder:
    """Accumulates steps in dependency order while wiring inputs."""

    def __init__(self, planner: HeuristicPlanner, ctx: PlanningContext) -> None:
        self.planner = planner
        self.ctx = ctx
        self.steps: list[PlanStep] = []
        self.specs: dict[str, ActionSpec] = {}

    def add(self, spec: ActionSpec, *, depth: int, chain: tuple[str, ...] = ()) -> str:
        existing = next((sid for sid, s in self.specs.items() if s.name == spec.name), None)
        if existing is not None:
            return existing
        inputs: dict[str, Any] = {}
        for slot in spec.inputs:
            value = self.wire(spec, slot, depth=depth, chain=(*chain, spec.name))
            if value is not None:
                inputs[slot.name] = value
        sid = self._step_id(spec.name)
        self.steps.append(PlanStep(id=sid, action=spec.name, action_ref=spec.ref, inputs=inputs))
        self.specs[sid] = spec
        return sid

    def wire(
        self, spec: ActionSpec, slot: IOSlot, *, depth: int, chain: tuple[str, ...]
    ) -> str | None:
        if slot.name in self.ctx.user_inputs:
            return f"${{user.{slot.name}}}"
        found = self.from_steps(slot, loose=slot.required)
        if found is not None:
            return found
        if not slot.required:
            return None
        if depth < self.planner.max_depth:
            producer = self.producer(slot, chain)
            if producer is not None:
                spec_out, output = producer
                sid = self.add(spec_out, depth=depth + 1, chain=chain)
                return f"${{{sid}.{output}}}"
        return f"${{user.{slot.name}}}"

    def from_steps(self, slot: IOSlot, *, loose: bool) -> str | None:
        """The latest earlier step's output for `slot`: same name first, then (when
        `loose`) a shared word; an optional input keeps its default rather than guess."""
        for wanted in (0, 1) if loose else (0,):
            for sid in reversed(list(self.specs)):
                for out in self.specs[sid].outputs:
                    if feed_tier(out, slot) == wanted:
                        return f"${{{sid}.{out.name}}}"
        return None

    def producer(self, slot: IOSlot, chain: tuple[str, ...]) -> tuple[ActionSpec, str] | None:
        """An action (not already on this chain) whose output can feed `slot`."""
        found = self.planner.catalog.producers(slot, flow_ids=self.ctx.flow_ids, exclude=chain)
        return (found[0][0], found[0][1].name) if found else None

    def _step_id(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "step"
        if base == "user":
            base = "user_step"
        sid, n = base, 2
        while sid in self.specs:
            sid, n = f"{base}_{n}", n + 1
        return sid
