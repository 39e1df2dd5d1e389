"""`prefect-aether history` and `prefect-aether show`: what the plan store recorded
(private to the CLI)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from prefect_aether.cli._common import clean_errors, console, fail, required_store, show_plan
from prefect_aether.execution.reconcile import reconcile
from prefect_aether.store import ExecutionRecord, PlanRecord

#: Most executions `history --limit` lists.
MAX_HISTORY = 10_000


def history_command(
    goal: Annotated[str | None, typer.Option(help="Only executions of this goal.")] = None,
    limit: Annotated[int, typer.Option(help="How many executions (1 to 10,000).")] = 20,
) -> None:
    """The latest plan executions recorded in the plan store, newest first."""
    if not 1 <= limit <= MAX_HISTORY:
        fail(f"--limit must be between 1 and {MAX_HISTORY:,}, got {limit}")

    async def read() -> list[tuple[PlanRecord, ExecutionRecord]]:
        async with required_store() as store:
            await reconcile(store)
            return await store.history(goal=goal, limit=limit)

    with clean_errors():
        rows = asyncio.run(read())
    if not rows:
        console.print("no executions recorded" + (f" for goal {goal!r}" if goal else ""))
        return
    table = Table(title="plan executions")
    for column in ("started (UTC)", "plan", "execution", "goal", "status", "duration", "flow run"):
        table.add_column(column, overflow="fold")
    for plan, run in rows:
        duration = (
            f"{(run.ended_at - run.started_at).total_seconds():.1f} s" if run.ended_at else "-"
        )
        table.add_row(
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            plan.plan_id,
            run.execution_id or "-",
            plan.goal,
            run.status,
            duration,
            run.flow_run_id or "-",
        )
    console.print(table)


def show_command(
    plan_id: Annotated[str, typer.Argument(help="Plan id (or its first 4+ characters).")],
) -> None:
    """A stored plan: its steps, validation and executions."""

    async def read() -> tuple[PlanRecord | None, list[ExecutionRecord]]:
        async with required_store() as store:
            await reconcile(store)
            record = await store.get_plan(plan_id)
            runs = await store.executions_of(record.plan_id) if record else []
            return record, runs

    with clean_errors():
        record, runs = asyncio.run(read())
    if record is None:
        fail(f"no stored plan {plan_id!r} (see `prefect-aether history`)")
    console.print(f"goal: {record.goal}", highlight=False)
    console.print(
        f"planned {record.created_at:%Y-%m-%d %H:%M:%S} UTC by {record.planner or '?'}"
        f"{f', tokens {record.usage}' if record.usage else ''}; catalog "
        f"{record.catalog_fingerprint[:12]}",
        highlight=False,
    )
    parent = record.plan.extras.get("replan_of")
    if parent:
        # A replan: the plan a failed step of it was replanned from.
        failed = record.plan.extras.get("failed_step", "?")
        console.print(
            f"replan of plan {parent} after step {failed} failed (`prefect-aether show {parent}`)",
            highlight=False,
            markup=False,
        )
    show_plan(record.plan)
    console.print(record.validation_summary or "valid", highlight=False)
    if not runs:
        console.print("never executed")
        return
    table = Table(title="executions")
    for column in ("started (UTC)", "execution", "status", "flow run", "outputs / error"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            f"{run.started_at:%Y-%m-%d %H:%M:%S}",
            run.execution_id or "-",
            run.status,
            run.flow_run_id or "-",
            run.error or run.output_preview,
        )
    console.print(table)
