"""The `prefect-aether` command: inspect a catalog, validate and run plans.

Examples:
    $ prefect-aether catalog --module flows/pipeline.py
    $ prefect-aether validate flows/plan.json --module flows/pipeline.py \\
        --input csv_path=flows/data/sales.csv
    $ prefect-aether run flows/plan.json --module flows/pipeline.py --input output_dir=out
"""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from prefect_aether._reconcile import reconcile
from prefect_aether.catalog import ActionCatalog
from prefect_aether.exceptions import (
    ExecutionInterrupted,
    PlanDecodingError,
    PlanValidationError,
    PrefectAetherError,
)
from prefect_aether.execute import ExecutionEvent, ExecutionResult, PlanExecutor
from prefect_aether.plan import CandidatePlan, iter_bindings
from prefect_aether.planner import PlanningEvent, PlanResult, decode_plan
from prefect_aether.service import PlannerKind, PlannerService, RunInfo
from prefect_aether.settings import AetherSettings
from prefect_aether.store import ExecutionRecord, PlanRecord, PlanStore
from prefect_aether.validate import validate_plan

app = typer.Typer(
    name="prefect-aether",
    help="Plan with the Prefect flows you already have.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

ModulesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--module", "-m", help="Module (dotted name or .py file) whose flows are actions."
    ),
]
EntrypointsOpt = Annotated[
    list[str] | None,
    typer.Option("--entrypoint", "-e", help="A flow entrypoint, 'path.py:fn' or 'pkg.mod:fn'."),
]
CacheOpt = Annotated[
    bool,
    typer.Option(help="Reuse the stored plan of the same goal, catalog and input keys."),
]
InputsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input", "-i", help="A user input, key=value (value parsed as JSON if it can be)."
    ),
]


def fail(message: str) -> NoReturn:
    """Print one clear line and exit with status 2."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def warn_unused(plan: CandidatePlan, values: dict[str, Any]) -> None:
    """Say which `--input` values the plan does not use, with the closest names it does
    (an unused `csv_pth=...` is a typo that would otherwise pass silently)."""
    used = {
        binding.key
        for step in plan.steps
        for _, binding in iter_bindings(step.inputs)
        if binding.kind == "external" and binding.key is not None
    }
    for key in sorted(set(values) - used):
        close = difflib.get_close_matches(key, sorted(used), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        errors.print(
            f"[yellow]warning:[/] --input {escape(key)} is not used by the plan{escape(hint)}",
            highlight=False,
        )


@contextmanager
def _clean_errors() -> Iterator[None]:
    try:
        yield
    except PlanValidationError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ExecutionInterrupted:
        raise  # the run's own failure (exit 1), not bad input
    except PrefectAetherError as exc:
        fail(str(exc))


def build_catalog(modules: list[str] | None, entrypoints: list[str] | None) -> ActionCatalog:
    """A catalog of the flows in the given modules and entrypoints."""
    if not modules and not entrypoints:
        fail("no actions: pass --module and/or --entrypoint")
    catalog = ActionCatalog()
    with _clean_errors():
        for module in modules or []:
            if module.endswith(".py") or "/" in module:
                if not Path(module).is_file():
                    fail(f"module file {module!r} does not exist")
                sys.path.insert(0, str(Path.cwd()))
            catalog.register_module(module)
        for entrypoint in entrypoints or []:
            catalog.register_entrypoint(entrypoint)
    return catalog


def load_plan(path: Path) -> CandidatePlan:
    """Read a plan from a JSON or YAML file."""
    limit = AetherSettings().max_plan_bytes
    try:
        size = path.stat().st_size
        if size > limit:
            fail(f"plan {str(path)!r} is {size} bytes; at most {limit} are read (max_plan_bytes)")
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read plan {str(path)!r}: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(
            f"plan {str(path)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        )
    if path.suffix == ".json":
        try:
            # The same strict reader as LLM answers: depth, number and size limits.
            return decode_plan(text)
        except PlanDecodingError as exc:
            fail(f"plan {str(path)!r} is not a valid JSON plan: {exc}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        fail(f"plan {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}")
    with _clean_errors():
        return CandidatePlan.from_dict(data)
    raise AssertionError("unreachable")


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs to a dict; values are JSON when they parse as JSON, else text."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--input {pair!r} must look like key=value")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


@app.command("catalog")
def catalog_command(
    module: ModulesOpt = None,
    entrypoint: EntrypointsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the specs as JSON.")] = False,
) -> None:
    """List the actions built from your flows."""
    catalog = build_catalog(module, entrypoint)
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in catalog], indent=2))
        return
    table = Table(title=f"{len(catalog)} actions (fingerprint {catalog.fingerprint[:12]})")
    for column in ("action", "description", "inputs", "outputs"):
        table.add_column(column)
    for spec in catalog:
        inputs = ", ".join(
            f"{s.name}{'' if s.required else '?'}: {s.type or 'any'}" for s in spec.inputs
        )
        outputs = ", ".join(f"{s.name}: {s.type or 'any'}" for s in spec.outputs)
        table.add_row(spec.name, spec.description.split("\n")[0], inputs, outputs)
    console.print(table)


@app.command("validate")
def validate_command(
    plan: Annotated[Path, typer.Argument(help="Plan file (JSON or YAML).")],
    module: ModulesOpt = None,
    entrypoint: EntrypointsOpt = None,
    inputs: InputsOpt = None,
) -> None:
    """Validate a plan against the catalog; exit 2 when it cannot run."""
    catalog = build_catalog(module, entrypoint)
    candidate = load_plan(plan)
    values = parse_inputs(inputs)
    result = validate_plan(candidate, catalog, user_inputs=values)
    warn_unused(candidate, values)
    console.print(escape(result.summary()), highlight=False)
    if result.ok:
        console.print(f"levels: {result.levels}", highlight=False)
    else:
        raise typer.Exit(2)


def plan_goal(
    catalog: ActionCatalog, goal: str, values: dict[str, Any], kind: str, *, cache: bool = True
) -> CandidatePlan:
    """Plan `goal` with `PlannerService`: the plan store's cache first (unless
    `--no-cache`), then the planner, which falls back to the heuristic planner when an
    LLM configured in settings is unreachable, unless `--planner llm` insists on it."""
    if kind not in ("auto", "heuristic", "llm"):
        fail(f"--planner must be auto, heuristic or llm, got {kind!r}")

    def on_event(event: PlanningEvent) -> None:
        if event.phase in ("llm_request", "validation", "failure"):
            errors.print(f"[dim]planning {event.phase}: {event.message.splitlines()[0]}[/]")
        elif event.phase == "fallback" or (event.phase == "success" and "cache" in event.message):
            errors.print(f"[yellow]{event.message}[/]")

    async def plan() -> PlanResult:
        async with _store() as store:
            service = PlannerService(catalog, planner=cast(PlannerKind, kind), store=store)
            return await service.plan(goal, user_inputs=values, on_event=on_event, cache=cache)

    with _clean_errors():
        result = asyncio.run(plan())
    if result.plan is None:
        validation = result.validation
        if validation is None or any(i.kind == "empty_plan" for i in validation.issues):
            fail(
                f"no plan for {goal!r}: no action matches the goal "
                "(`prefect-aether catalog` lists the actions)"
            )
        fail(f"no plan for {goal!r}: {validation.summary()}")
    return result.plan


@asynccontextmanager
async def _store() -> AsyncIterator[PlanStore | None]:
    """The plan store of the settings (None when `store_enabled` is off), closed after."""
    if not AetherSettings().store_enabled:
        yield None
        return
    store = PlanStore()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _required_store() -> AsyncIterator[PlanStore]:
    """`_store()` for commands that only read the store: off is an error."""
    async with _store() as store:
        if store is None:
            fail("the plan store is off (PREFECT_INTEGRATIONS_AETHER_STORE_ENABLED=false)")
        yield store


def show_plan(plan: CandidatePlan) -> None:
    table = Table(title=f"plan {plan.plan_id} ({plan.extras.get('planner', 'file')})")
    for column in ("step", "action", "inputs", "after", "why"):
        table.add_column(column, overflow="fold")
    for step in plan.steps:
        table.add_row(
            escape(step.id),
            escape(step.action),
            escape(json.dumps(step.inputs)),
            escape(", ".join(step.after)),
            escape(str(step.extras.get("reason", ""))),
        )
    console.print(table)


@app.command("plan")
def plan_command(
    goal: Annotated[str, typer.Argument(help="What you want done, in words.")],
    module: ModulesOpt = None,
    entrypoint: EntrypointsOpt = None,
    inputs: InputsOpt = None,
    planner: Annotated[str, typer.Option(help="auto, heuristic or llm.")] = "auto",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the plan here.")
    ] = None,
    cache: CacheOpt = True,
) -> None:
    """Plan a goal with your flows; print it and optionally save it."""
    catalog = build_catalog(module, entrypoint)
    values = parse_inputs(inputs)
    plan = plan_goal(catalog, goal, values, planner, cache=cache)
    show_plan(plan)
    warn_unused(plan, values)
    console.print(
        escape(validate_plan(plan, catalog, user_inputs=values).summary()), highlight=False
    )
    if output is not None:
        text = json.dumps(plan.to_dict(), indent=2)
        output.write_text(
            yaml.safe_dump(plan.to_dict()) if output.suffix in (".yaml", ".yml") else text
        )
        console.print(f"plan written to {output}", highlight=False)


@app.command("run")
def run_command(
    plan: Annotated[Path | None, typer.Argument(help="Plan file (JSON or YAML).")] = None,
    goal: Annotated[str | None, typer.Option(help="Plan this goal first, then run it.")] = None,
    planner: Annotated[str, typer.Option(help="With --goal: auto, heuristic or llm.")] = "auto",
    module: ModulesOpt = None,
    entrypoint: EntrypointsOpt = None,
    inputs: InputsOpt = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Most steps at once.")] = None,
    run_as: Annotated[str, typer.Option(help="Step mode: task or subflow.")] = "task",
    fail_fast: Annotated[bool, typer.Option(help="Stop starting steps after a failure.")] = True,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue an earlier execution of the plan: its id (8+ characters) or "
            "'latest' (a bare --resume). Its succeeded steps are reused, the rest run."
        ),
    ] = None,
    reuse_within: Annotated[
        float | None,
        typer.Option(
            help="Also reuse a step's result from another execution with the same inputs "
            "and code, younger than this many seconds."
        ),
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Extra tag for the runs.")] = None,
    cache: CacheOpt = True,
    approve: Annotated[
        bool,
        typer.Option(
            "--approve",
            help="You reviewed the plan and approve its aether:approval actions (asked "
            "interactively otherwise; refused without a terminal).",
        ),
    ] = False,
) -> None:
    """Validate and execute a plan (from a file, or planned from --goal) with live progress."""
    catalog = build_catalog(module, entrypoint)
    values = parse_inputs(inputs)
    if (plan is None) == (goal is None):
        fail("give either a plan file or --goal")
    if goal is not None:
        candidate = plan_goal(catalog, goal, values, planner, cache=cache)
        show_plan(candidate)
    else:
        assert plan is not None
        candidate = load_plan(plan)
    if run_as not in ("task", "subflow"):
        fail(f"--run-as must be task or subflow, got {run_as!r}")
    if max_concurrency is not None and max_concurrency < 1:
        fail(f"--max-concurrency must be at least 1, got {max_concurrency}")
    if reuse_within is not None and reuse_within <= 0:
        fail(f"--reuse-within must be a positive number of seconds, got {reuse_within:g}")
    executor = PlanExecutor(
        catalog,
        max_concurrency=max_concurrency,
        fail_fast=fail_fast,
        run_as=run_as,  # type: ignore[arg-type]
        reuse_within=dt.timedelta(seconds=reuse_within) if reuse_within else None,
    )
    warn_unused(candidate, values)
    with _clean_errors():
        levels = executor.check(candidate, values)
        approve = approve or _ask_approval(executor, candidate)
        executor.check_approved(candidate, approved=approve)
    source = None if goal is not None else str(plan)
    result = _run_with_progress(
        executor, candidate, values, levels, tag or [], source, resume, approve
    )
    _print_result(result)
    if not result.ok:
        raise typer.Exit(1)


def _run_with_progress(
    executor: PlanExecutor,
    plan: CandidatePlan,
    values: dict[str, Any],
    levels: list[list[str]],
    tags: list[str],
    plan_file: str | None,
    resume: str | None,
    approved: bool,
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
            if sid is None:
                return
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
            async with _store() as store:
                if store is not None and plan_file is not None:
                    await store.save_plan(
                        plan,
                        goal=str(plan.extras.get("goal") or f"plan file {plan_file}"),
                        catalog_fingerprint=executor.catalog.fingerprint,
                        input_keys=values,
                        validation=validate_plan(plan, executor.catalog, user_inputs=values),
                        planner=str(plan.extras.get("planner", "file")),
                    )
                service = PlannerService(
                    executor.catalog, planner="heuristic", executor=executor, store=store
                )
                return await service.execute_plan(
                    plan,
                    user_inputs=values,
                    on_event=on_event,
                    run=RunInfo(extra_tags=tags),
                    resume=await _execution_id(store, resume),
                    approved=approved,
                )

        loop = asyncio.new_event_loop()
        try:
            with _clean_errors():
                result = loop.run_until_complete(execute())
        except ExecutionInterrupted as exc:
            live.stop()
            console.print()
            errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            if _CONSOLE["hard_exit"]:
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


def _ask_approval(executor: PlanExecutor, plan: CandidatePlan) -> bool:
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
    from prefect_aether._report import preview

    return preview(outputs, limit)


def _print_result(result: ExecutionResult) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    verdict = "[bold green]succeeded[/]" if result.ok else "[bold red]failed[/]"
    console.print()
    console.print(f"plan {result.plan_id} {verdict} (execution {result.execution_id})")
    if result.reused:
        console.print(
            f"reused from earlier runs of this execution: {', '.join(result.reused)}",
            highlight=False,
        )
    if not result.ok and result.execution_id:
        console.print(
            f"to continue it without re-running finished steps: --resume {result.execution_id}",
            highlight=False,
        )
    for sid, error in result.errors.items():
        console.print(f"  [red]{sid}[/]: {error}", highlight=False)
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


@app.command("history")
def history_command(
    goal: Annotated[str | None, typer.Option(help="Only executions of this goal.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many executions.")] = 20,
) -> None:
    """The latest plan executions recorded in the plan store, newest first."""

    async def read() -> list[tuple[PlanRecord, ExecutionRecord]]:
        async with _required_store() as store:
            await reconcile(store)
            return await store.history(goal=goal, limit=limit)

    with _clean_errors():
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


@app.command("show")
def show_command(
    plan_id: Annotated[str, typer.Argument(help="Plan id (or its first 4+ characters).")],
) -> None:
    """A stored plan: its steps, validation and executions."""

    async def read() -> tuple[PlanRecord | None, list[ExecutionRecord]]:
        async with _required_store() as store:
            await reconcile(store)
            record = await store.get_plan(plan_id)
            runs = await store.executions_of(record.plan_id) if record else []
            return record, runs

    with _clean_errors():
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


_RESUME_VALUE = re.compile(r"latest|[0-9a-f]{8,32}")


def resume_flag(argv: list[str]) -> list[str]:
    """A bare `--resume` means `--resume latest` (click options cannot take an optional
    value, so the console entry point spells it out).

    Examples:
        >>> resume_flag(["run", "p.json", "--resume"])
        ['run', 'p.json', '--resume', 'latest']
        >>> resume_flag(["run", "--resume", "ab12cd34", "p.json"])
        ['run', '--resume', 'ab12cd34', 'p.json']
        >>> resume_flag(["run", "--resume", "p.json"])
        ['run', '--resume', 'latest', 'p.json']
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--resume" and (following is None or not _RESUME_VALUE.fullmatch(following)):
            out.append("latest")
    return out


blocks_app = typer.Typer(help="Block documents as code (the repository's blocks/ folder).")
app.add_typer(blocks_app, name="blocks")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, where: str) -> Any:
    """`${VAR}` and `${VAR:-default}` in a block field, from the environment."""
    if not isinstance(value, str):
        return value

    def variable(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        fail(f"{where} needs the environment variable {name}")

    return _VARIABLE.sub(variable, value)


@blocks_app.command("apply")
def blocks_apply(
    folder: Annotated[Path, typer.Argument(help="Folder of block YAML files.")] = Path("blocks"),
) -> None:
    """Register prefect-aether's block types, then create or update each block document
    of FOLDER (`type`, `name`, `fields`) from the environment; secrets are never shown."""
    from prefect.blocks.core import Block

    from prefect_aether import blocks as block_module

    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not folder.is_dir() or not files:
        fail(f"no block files (*.yaml) in {str(folder)!r}")
    documents = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            fail(f"{path}: not a block file: {str(exc).splitlines()[0]}")
        if not isinstance(data, dict) or not {"type", "name", "fields"} <= set(data):
            fail(f"{path}: a block file has type, name and fields")
        fields = {key: _expand(value, f"{path}: {key}") for key, value in data["fields"].items()}
        documents.append((path, str(data["type"]), str(data["name"]), fields))

    kinds: dict[str, type[Block]] = {
        cls.get_block_type_slug(): cls
        for cls in (block_module.LLMConfig, block_module.StoreConnection)
    }
    # Every document is checked before any is saved: a bad one changes nothing.
    built: list[tuple[str, str, Block]] = []
    for path, kind, name, fields in documents:
        cls = kinds.get(kind)
        if cls is None:
            fail(f"{path}: unknown block type {kind!r} (known: {', '.join(sorted(kinds))})")
        try:
            built.append((kind, name, cls(**{k: v for k, v in fields.items() if v != ""})))
        except ValueError as exc:
            fail(f"{path}: {_first_error(exc)}")

    async def apply() -> list[str]:
        for known in kinds.values():
            await known.aregister_type_and_schema()
        lines = []
        for kind, name, block in built:
            try:
                old: Block | None = await type(block).aload(name)
            except ValueError:
                old = None
            if old is not None and _same_block(old, block):
                lines.append(f"{kind}/{name}: unchanged")
                continue
            await block.asave(name, overwrite=True)
            lines.append(f"{kind}/{name}: {'updated' if old is not None else 'created'}")
        return lines

    with _clean_errors():
        for line in asyncio.run(apply()):
            console.print(line, highlight=False)


def _same_block(old: Any, new: Any) -> bool:
    """Equal field by field, secrets compared by value (never printed)."""
    from pydantic import SecretStr

    def plain(block: Any) -> dict[str, Any]:
        return {
            key: value.get_secret_value() if isinstance(value, SecretStr) else value
            for key, value in block.model_dump().items()
            if not key.startswith("_") and key != "block_type_slug"
        }

    return plain(old) == plain(new)


def _first_error(exc: ValueError) -> str:
    """A validation error's first problem, without the input (it may be a secret)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return type(exc).__name__


#: Set by the console entry point: a process of its own may exit at once when an
#: execution is interrupted (an in-process caller, such as a test runner, may not).
_CONSOLE = {"hard_exit": False}


def main() -> None:  # pragma: no cover - console entry point
    _CONSOLE["hard_exit"] = True
    app(args=resume_flag(sys.argv[1:]), prog_name="prefect-aether")
