"""Hearing a plan while the LLM streams it (`plan_and_execute(..., stream=True)`).

A `StepFeed` hears the planner's first answer as it arrives (`planning.base.STREAMED`),
reads it as partial JSON (pydantic-core's `from_json(..., allow_partial=True)`), and
clears a step to start early when all of this holds:

- it is complete in the stream (a later step has begun, or the list has ended);
- its action is in the catalog, needs no approval and has no effect on the world: it
  writes to no place and returns something. Writes and effects wait for the whole
  plan, where write conflicts and the order of effects are checked;
- every step it binds or waits for was cleared too, and those steps with it make a
  valid plan (types, policy, groups, user values: `PlanExecutor.check`).

When planning ends, the planner's final plan joins the early steps
(`replanning.adopt`: a final step that does what an early one did *is* that step), and
the whole is validated like any plan. An early step the final plan does without has
only computed: it is reported, never undone. A plan that is invalid at the end, or no
plan, stops everything that has not started (`execution._stream.follow`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from pydantic_core import from_json

from prefect_aether.catalog.policy import needs_approval
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.roles import writes
from prefect_aether.exceptions import PlanDecodingError, PlanValidationError
from prefect_aether.execution._stream import Ending
from prefect_aether.plan import CandidatePlan, PlanStep, step_dependencies
from prefect_aether.planning._answer import bind_by_action
from prefect_aether.planning.base import decode_plan
from prefect_aether.replanning import adopt

__all__ = ["StepFeed"]


class StepFeed:
    """The steps of a plan as the LLM streams it, for one execution.

    Args:
        catalog: The executor's catalog.
        check: Validates a plan for execution with the user's values (its levels, or
            `PlanValidationError`), e.g. `PlanExecutor.check` within the caller's groups.
        values: The user's values known before planning.
    """

    def __init__(
        self,
        catalog: ActionCatalog,
        check: Callable[[CandidatePlan, dict[str, Any]], list[list[str]]],
        values: dict[str, Any],
    ) -> None:
        self.catalog = catalog
        self.check = check
        self.values = dict(values)
        self.heard: list[PlanStep] = []
        self.early: list[PlanStep] = []
        self.levels: list[list[str]] = []
        self.changed = asyncio.Event()
        self._taken = 0
        self._complete = 0
        self._final: CandidatePlan | None = None
        self._problem: str | None = None
        self.closed = False

    # -- the planner's side -----------------------------------------------------------

    def hear(self, text: str) -> None:
        """The answer so far (`STREAMED`): read its complete steps, start what may start."""
        if self.closed:
            return
        dicts, ended = _complete_steps(text)
        if len(dicts) <= self._complete:
            return
        try:
            decoded = decode_plan(json.dumps({"steps": dicts})).resolve_actions(self.catalog)
            steps = bind_by_action(decoded).steps  # as the planner reads the whole answer
        except PlanDecodingError:
            return  # not a plan yet (or not one at all): the whole answer decides
        self._complete = len(dicts)
        self.heard = steps
        if self._admit() or ended:
            self.changed.set()

    def finish(
        self,
        plan: CandidatePlan | None,
        problem: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        """Planning ended with `plan` and the user's `values` (those asked for a partial
        plan among them); None: no plan to run, `problem` says why."""
        self.values.update(values or {})
        self._final = plan
        self._problem = problem if plan is None else None
        self.closed = True
        self.changed.set()

    # -- the executor's side ----------------------------------------------------------

    def take(self) -> list[PlanStep]:
        """The steps cleared to start since the last call."""
        new = self.early[self._taken :]
        self._taken = len(self.early)
        return new

    def ending(self) -> Ending:
        """The rest of the plan, once planning has ended (`closed`)."""
        if self._final is None:
            return Ending([], [], None, [], self._problem or "the planner gave no plan")
        early = {s.id: s for s in self.early}
        rest, kept = adopt(self._final, early, set(early), 1)
        used = set(kept.values()) | _bound(rest, early)
        dropped = [sid for sid in early if sid not in used]
        whole = CandidatePlan(steps=[*(s for s in self.early if s.id in used), *rest])
        try:
            levels = self.check(whole, self.values)
        except PlanValidationError as exc:
            return Ending([], [], None, dropped, f"the streamed plan is invalid: {exc}")
        return Ending(rest, levels, self._final.plan_id, dropped, values=self.values)

    async def first(self) -> None:
        """Wait until a step may start or planning has ended."""
        while not self.early and not self.closed:
            self.changed.clear()
            await self.changed.wait()

    def _admit(self) -> bool:
        """Clear the heard steps that may start early; whether any was."""
        cleared = False
        progress = True
        while progress:
            progress = False
            ids = {s.id for s in self.early}
            for step in self.heard:
                if step.id in ids or not self._may_start(step, ids):
                    continue
                try:
                    self.levels = self.check(CandidatePlan(steps=[*self.early, step]), self.values)
                except PlanValidationError:
                    continue
                self.early.append(step)
                ids.add(step.id)
                cleared = progress = True
        return cleared

    def _may_start(self, step: PlanStep, early: set[str]) -> bool:
        spec = self.catalog.get(step.action)
        if spec is None or writes(spec.inputs) or spec.returns is None or needs_approval(spec):
            return False
        upstream = step_dependencies(CandidatePlan(steps=self.heard)).get(step.id, [])
        return all(dep in early for dep in upstream)


def _complete_steps(text: str) -> tuple[list[dict[str, Any]], bool]:
    """The steps of a partial answer that are complete, and whether the list has ended
    (a later key follows it); ([], False) when it is no JSON object yet."""
    start = text.find("{")
    if start < 0:
        return [], False
    body = text[start:]
    try:
        data, ended = from_json(body), True
    except ValueError:
        try:
            data, ended = from_json(body, allow_partial=True), False
        except ValueError:
            return [], False
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return [], False
    steps = [s for s in data["steps"] if isinstance(s, dict)]
    ended = ended or list(data)[-1] != "steps"
    return (steps if ended else steps[:-1]), ended


def _bound(steps: list[PlanStep], early: dict[str, PlanStep]) -> set[str]:
    """The early steps that `steps` bind or wait for."""
    upstream = step_dependencies(CandidatePlan(steps=[*early.values(), *steps]))
    return {dep for s in steps for dep in upstream.get(s.id, []) if dep in early}
