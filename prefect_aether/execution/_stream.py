"""Steps that start while the plan streams in (private to the executor).

The executor takes steps from a `Feed` (`prefect_aether._streaming.StepFeed` hears the
LLM planner's answer as it arrives and clears the steps that may start early). While
planning goes on, `follow` adds each cleared step to the run; once it has ended, the
rest of the plan, or, for an invalid plan or none, it stops what has not started. The
run then takes the plan's id: its `plan:` tag, its name and its plan artifact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from prefect_aether._internal.text import sanitize
from prefect_aether.execution import _report
from prefect_aether.execution._replan import merge
from prefect_aether.plan import CandidatePlan, PlanStep

if TYPE_CHECKING:
    from prefect_aether.execution._run import PlanRun

__all__ = ["Ending", "Feed", "follow"]


@dataclass(frozen=True)
class Ending:
    """How planning ended: the steps to run after the early ones (adopted into them),
    their levels, the plan's id, and the early steps the final plan does without; or,
    with no plan, `problem` says why nothing more runs."""

    steps: list[PlanStep]
    levels: list[list[str]]
    plan_id: str | None
    dropped: list[str]
    problem: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


class Feed(Protocol):
    """Where a streamed execution takes its steps from."""

    changed: asyncio.Event
    closed: bool
    levels: list[list[str]]

    def take(self) -> list[PlanStep]:
        """The steps cleared to start since the last call."""
        ...

    def ending(self) -> Ending:
        """The rest of the plan, once planning has ended (`closed`)."""
        ...

    async def first(self) -> None:
        """Wait until a step may start or planning has ended."""
        ...


async def follow(run: PlanRun) -> None:
    """Add to `run` the steps its feed cleared since the last call; once planning has
    ended, the rest of the plan (or, for an invalid plan, stop what has not started)."""
    feed = run.feed
    assert feed is not None
    early = feed.take()
    if early:
        merge(run, early, feed.levels)
        run.streamed += [s.id for s in early]
        run.log().info("while the plan streams in: %s may start", ", ".join(s.id for s in early))
    if not feed.closed or not run.streaming:
        return
    run.streaming = False
    ending = feed.ending()
    if ending.problem is not None or ending.plan_id is None:
        run.stopped = sanitize(ending.problem or "no plan", 1_000)
        run.log().warning("plan stopped: %s", run.stopped)
        return
    run.user_inputs.update(ending.values)  # values asked for once the plan was whole
    merge(run, ending.steps, ending.levels)
    run.unplanned = ending.dropped
    for sid in ending.dropped:
        run.records[sid].why = "started while the plan streamed in; the final plan does without it"
    await _settle(run, ending.plan_id)


async def _settle(run: PlanRun, plan_id: str) -> None:
    """The whole plan is in: the run takes its id (tags, name, artifact) and says so."""
    run.plan_id = plan_id
    run.plan = CandidatePlan(steps=[run.steps[sid] for sid in run.order])
    run.tags.append(f"plan:{plan_id}")
    if not run.named:
        run.run_name = f"plan-{plan_id}"
    if run.client is not None and run.flow_run_id is not None:
        try:
            await run.client.update_flow_run(
                UUID(run.flow_run_id),
                name=None if run.named else run.run_name,
                tags=[*run.tags],
            )
        except Exception as exc:  # the name and tags report the run; they never fail it
            run.log().warning("the run's tags were not updated: %s", sanitize(str(exc), 300))
    run.plan_written = asyncio.ensure_future(
        _report.plan_artifact(run.plan, run.levels, run.deps, run.user_inputs, plan_id, run.client)
    )
    early = len(run.streamed)
    message = (
        f"the whole plan is in: plan {plan_id}, {len(run.order) - len(run.unplanned)} steps "
        f"({early} started while it streamed in"
        + (f"; the final plan does without {', '.join(run.unplanned)}" if run.unplanned else "")
        + ")"
    )
    run.log().info(message)
    await run.emit("planned", None, message)
