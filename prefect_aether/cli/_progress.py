"""How `prefect-aether run` shows a plan running: a live table, then the result
(private to the CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from prefect_aether._internal.text import sanitize
from prefect_aether.cli._common import CONSOLE, clean_errors, console, errors, fail, open_store
from prefect_aether.exceptions import ExecutionInterrupted
from prefect_aether.execution.events import ExecutionEvent, ExecutionResult
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.plan import CandidatePlan
from prefect_aether.service import PlannerService, RunInfo
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import validate_plan


def run_with_progress(
    executor: PlanExecutor,
    plan: CandidatePlan,
    values: dict[str, Any],
    levels: list[list[str]],
    tags: list[str],
    plan_file: str | None,
    resume: str | None,
    approved: bool,
    *,
    goal: str | None = None,
    planner: str = "heuristic",
    max_replans: int = 0,
) -> ExecutionResult:
    order = [sid for level in levels for sid in level]
    actions = {s.id: s.action for s in plan.steps}
    states = dict.fromkeys(order, "pending")
    notes = dict.fromkeys(order, "")
    styles = {
        "pending": "dim",
        "running": "yellow",
        "done": "green",
        "reused": "cyan",
        "failed": "bold red",
        "skipped": "magenta",
    }

    def render() -> Table:
        table = Table(title=f"plan {plan.plan_id}")
        width = max(len(sid) for sid in order)
        table.add_column("step", no_wrap=True, min_width=width)
        table.add_column("action", no_wrap=True, min_width=max(len(a) for a in actions.values()))
        table.add_column("state", no_wrap=True, min_width=7)
        table.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=40)
        for sid in order:
            table.add_row(sid, actions[sid], f"[{styles[states[sid]]}]{states[sid]}[/]", notes[sid])
        return table

    with Live(render(), console=console, refresh_per_second=8, transient=False) as live:

        def on_event(event: ExecutionEvent) -> None:
            sid = event.step_id
            if event.phase == "replanned":
                console.print(event.message, highlight=False, markup=False)
            if sid is None:
                return
            if sid not in states:  # a step a replan added
                order.append(sid)
                actions[sid] = event.action or "?"
                states[sid], notes[sid] = "pending", ""
            if event.phase == "step_start":
                states[sid] = "running"
            elif event.phase == "step_success":
                states[sid] = "reused" if "reused" in event.message else "done"
                notes[sid] = _short(event.step_outputs)
            elif event.phase == "step_failure":
                states[sid], notes[sid] = "failed", event.error or ""
            elif event.phase == "step_skipped":
                states[sid], notes[sid] = "skipped", event.message
            live.update(render())

        async def execute() -> ExecutionResult:
            async with open_store() as store:
                if store is not None and plan_file is not None:
                    await store.save_plan(
                        plan,
                        goal=str(plan.extras.get("goal") or f"plan file {plan_file}"),
                        catalog_fingerprint=executor.catalog.fingerprint,
                        input_keys=values,
                        validation=validate_plan(
                            plan,
                            executor.catalog,
                            user_inputs=values,
                            allow_overwrite=executor.allow_overwrite,
                        ),
                        planner=str(plan.extras.get("planner", "file")),
                    )
                adaptive = goal is not None and max_replans > 0
                service = PlannerService(
                    executor.catalog,
                    planner=planner if adaptive else "heuristic",  # type: ignore[arg-type]
                    executor=executor,
                    store=store,
                )
                replanner = (
                    service.replanner(goal, user_inputs=values, parent=plan)
                    if adaptive and goal is not None
                    else None
                )
                return await service.aexecute_plan(
                    plan,
                    user_inputs=values,
                    on_event=on_event,
                    run=RunInfo(extra_tags=tags),
                    resume=await _execution_id(store, resume),
                    approved=approved,
                    replanner=replanner,
                    max_replans=max_replans,
                )

        loop = asyncio.new_event_loop()
        try:
            with clean_errors():
                result = loop.run_until_complete(execute())
        except ExecutionInterrupted as exc:
            live.stop()
            console.print()
            errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            if CONSOLE["hard_exit"]:
                # Prefect's engine may go on retrying the dead API for minutes in tasks
                # this process no longer needs (and its log and event workers at exit):
                # the execution is recorded and resumable, so leave now.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            raise typer.Exit(1) from None
        _close(loop)
        return result
    raise AssertionError("unreachable")


def ask_approval(executor: PlanExecutor, plan: CandidatePlan) -> bool:
    """Ask on the terminal whether a plan with `aether:approval` actions may run."""
    actions = executor.approval_actions(plan)
    if not actions or not sys.stdin.isatty():
        return False
    steps = [s.id for s in plan.steps if s.action in actions]
    console.print(
        f"plan {plan.plan_id} runs {escape(', '.join(actions))} (steps "
        f"{escape(', '.join(steps))}), which need a person's approval.",
        highlight=False,
    )
    return typer.confirm("Run it?", default=False)


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """What `asyncio.run` does on the way out: cancel what is left, then close."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


async def _execution_id(store: PlanStore | None, given: str | None) -> str | None:
    """`--resume`'s value as a full execution id ('latest' and full ids as they are; a
    prefix looked up in the store)."""
    if given is None or given == "latest" or len(given) == 32:
        return given
    if store is None:
        fail("--resume with a shortened execution id needs the plan store; give all 32 digits")
    found = await store.find_execution(given)
    if found is None or found.execution_id is None:
        fail(f"no execution {given!r} in the plan store (see `prefect-aether history`)")
    return found.execution_id


def _short(outputs: dict[str, Any] | None, limit: int = 70) -> str:
    from prefect_aether._internal.text import preview

    return preview(outputs, limit)


def print_result(result: ExecutionResult) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    verdict = "[bold green]succeeded[/]" if result.ok else "[bold red]failed[/]"
    console.print()
    console.print(f"plan {result.plan_id} {verdict} (execution {result.execution_id})")
    if result.reused:
        console.print(
            f"reused (not run again): {escape(', '.join(result.reused))}", highlight=False
        )
    if not result.ok and result.execution_id:
        console.print(
            f"to continue it without re-running finished steps: --resume {result.execution_id}",
            highlight=False,
        )
    for sid, error in result.errors.items():
        console.print(
            f"  [red]{escape(sid)}[/] failed: {escape(sanitize(error, 500))}", highlight=False
        )
    for replan in result.replans:
        console.print(
            f"  replanned after {escape(replan.failed_step)} failed: ran "
            f"{escape(', '.join(replan.new_steps))} instead",
            highlight=False,
        )
    if result.stopped:
        console.print(f"  stopped: {escape(result.stopped)}", highlight=False)
    if result.skipped:
        why = "a step they need failed" + (" (a replan took over)" if result.replans else "")
        if result.stopped and not result.errors:
            why = "the budget was spent"
        console.print(
            f"  skipped, because {why}: {escape(', '.join(result.skipped))}", highlight=False
        )
    if result.outputs:
        console.print("outputs of the last step:", highlight=False)
        console.print_json(json.dumps(result.outputs, default=str))
    ui = PREFECT_UI_URL.value()
    if result.flow_run_id and ui:
        console.print(f"flow run: {ui}/runs/flow-run/{result.flow_run_id}", highlight=False)
    elif result.flow_run_id:
        console.print(f"flow run id: {result.flow_run_id}", highlight=False)
    if not PREFECT_API_URL.value():
        console.print(
            "This ran on Prefect's embedded server, which stopped with this command. To browse "
            "runs in the Prefect UI, start `prefect server start` in another terminal, then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` and run again.",
            highlight=False,
        )
