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
from pathlib import Path
from typing import Annotated, Any, cast

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.cli._ask import missing_values
from prefect_aether.cli._blocks import blocks_app
from prefect_aether.cli._common import (
    CONSOLE,
    build_catalog,
    clean_errors,
    console,
    errors,
    fail,
    open_store,
    show_plan,
)
from prefect_aether.cli._history import history_command, show_command
from prefect_aether.cli._progress import ask_approval, print_result, run_with_progress
from prefect_aether.exceptions import BindingError, PlanDecodingError
from prefect_aether.execution.executor import PlanExecutor
from prefect_aether.plan import CandidatePlan, iter_bindings, non_finite
from prefect_aether.planning.llm_planner import PlanningEvent, PlanResult, decode_plan
from prefect_aether.service import PlannerKind, PlannerService
from prefect_aether.settings import current_settings
from prefect_aether.validation.validate import validate_plan

app = typer.Typer(
    name="prefect-aether",
    help="Plan with the Prefect flows you already have.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Longest `--reuse-within`: ten years (a `timedelta` holds at most about 2.7 million).
MAX_REUSE_SECONDS = 10 * 365 * 86_400

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


def warn_unused(plan: CandidatePlan, values: dict[str, Any]) -> None:
    """Say which `--input` values the plan does not use, with the closest names it does
    (an unused `csv_pth=...` is a typo that would otherwise pass silently)."""
    used: set[str] = set()
    for step in plan.steps:
        try:
            found = list(iter_bindings(step.inputs))
        except BindingError:
            return  # validation names the malformed binding; a guess here would mislead
        used |= {b.key for _, b in found if b.kind == "external" and b.key is not None}
    for key in sorted(set(values) - used):
        close = difflib.get_close_matches(key, sorted(used), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        errors.print(
            f"[yellow]warning:[/] --input {escape(key)} is not used by the plan{escape(hint)}",
            highlight=False,
        )


def load_plan(path: Path) -> CandidatePlan:
    """Read a plan from a JSON or YAML file."""
    limit = current_settings().max_plan_bytes
    try:
        # Bounded by the bytes actually read: `stat` says 0 for /dev/zero or a pipe.
        with path.open("rb") as file:
            raw = file.read(limit + 1)
        if len(raw) > limit:
            fail(
                f"plan {str(path)!r} is over {limit} bytes, the most that is read (max_plan_bytes)"
            )
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
    with clean_errors():
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
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        except RecursionError:
            fail(f"--input {key.strip()} nests too deeply to read")
        if non_finite(value):
            fail(f"--input {key.strip()}: NaN and infinities are not numbers a plan accepts")
        values[key.strip()] = value
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


OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--allow-overwrite",
        help="Accept a plan that writes where one of its steps reads, or writes one "
        "location from two unordered steps (refused as write_conflict otherwise).",
    ),
]


@app.command("validate")
def validate_command(
    plan: Annotated[Path, typer.Argument(help="Plan file (JSON or YAML).")],
    module: ModulesOpt = None,
    entrypoint: EntrypointsOpt = None,
    inputs: InputsOpt = None,
    allow_overwrite: OverwriteOpt = False,
) -> None:
    """Validate a plan against the catalog; exit 2 when it cannot run."""
    catalog = build_catalog(module, entrypoint)
    candidate = load_plan(plan)
    values = parse_inputs(inputs)
    result = validate_plan(candidate, catalog, user_inputs=values, allow_overwrite=allow_overwrite)
    warn_unused(candidate, values)
    console.print(escape(result.summary()), highlight=False)
    if result.ok:
        console.print(f"levels: {result.levels}", highlight=False)
    else:
        raise typer.Exit(2)


def event_line(message: str) -> str:
    """A planning event's message on one line: a validation report's heading with its
    first issue (and how many more), not the heading alone.

    Examples:
        >>> event_line("Plan is invalid:\\n- [cycle] a -> b\\n- [unknown_step] c")
        'Plan is invalid: [cycle] a -> b (and 1 more issue)'
    """
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) == 1 or not lines[0].endswith(":"):
        return lines[0]
    more = len(lines) - 2
    tail = f" (and {more} more issue{'s' if more > 1 else ''})" if more else ""
    return f"{lines[0]} {lines[1].removeprefix('- ')}{tail}"


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
            errors.print(
                f"[dim]planning {event.phase}: {escape(event_line(event.message))}[/]",
                highlight=False,
            )
        elif event.phase == "fallback" or (event.phase == "success" and "cache" in event.message):
            errors.print(f"[yellow]{event.message}[/]")

    async def plan() -> PlanResult:
        async with open_store() as store:
            service = PlannerService(catalog, planner=cast(PlannerKind, kind), store=store)
            return await service.aplan(goal, user_inputs=values, on_event=on_event, cache=cache)

    with clean_errors():
        result = asyncio.run(plan())
    if result.plan is None and result.unserved:
        fail(f"no plan for {goal!r}: no action can: {'; '.join(result.unserved)}")
    if result.plan is None:
        validation = result.validation
        if validation is None or any(i.kind == "empty_plan" for i in validation.issues):
            fail(
                f"no plan for {goal!r}: no action matches the goal "
                "(`prefect-aether catalog` lists the actions)"
            )
        fail(f"no plan for {goal!r}: {validation.summary()}")
    return result.plan


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
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(
                yaml.safe_dump(plan.to_dict()) if output.suffix in (".yaml", ".yml") else text
            )
        except OSError as exc:
            fail(f"cannot write the plan to {str(output)!r}: {exc.strerror or exc}")
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
    allow_overwrite: OverwriteOpt = False,
    max_replans: Annotated[
        int,
        typer.Option(
            help="With --goal: when a step fails, plan the rest of the goal again (at most "
            "this many times); completed steps are kept, the failed action is not used again."
        ),
    ] = 0,
) -> None:
    """Validate and execute a plan (from a file, or planned from --goal) with live progress."""
    catalog = build_catalog(module, entrypoint)
    values = parse_inputs(inputs)
    if (plan is None) == (goal is None):
        fail("give either a plan file or --goal")
    if max_replans < 0 or (max_replans and goal is None):
        fail(f"--max-replans takes a number of replans from 0 up, with --goal; got {max_replans}")
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
    if reuse_within is not None and not 0 < reuse_within <= MAX_REUSE_SECONDS:
        fail(
            f"--reuse-within must be a number of seconds above 0 and at most "
            f"{MAX_REUSE_SECONDS:,} (ten years), got {reuse_within:g}"
        )
    executor = PlanExecutor(
        catalog,
        max_concurrency=max_concurrency,
        fail_fast=fail_fast,
        run_as=run_as,  # type: ignore[arg-type]
        reuse_within=dt.timedelta(seconds=reuse_within) if reuse_within else None,
        allow_overwrite=allow_overwrite,
    )
    warn_unused(candidate, values)
    values = missing_values(catalog, candidate, values)
    with clean_errors():
        levels = executor.check(candidate, values)
        approve = approve or ask_approval(executor, candidate)
        executor.check_approved(candidate, approved=approve)
    source = None if goal is not None else str(plan)
    result = run_with_progress(
        executor,
        candidate,
        values,
        levels,
        tag or [],
        source,
        resume,
        approve,
        goal=goal,
        planner=planner,
        max_replans=max_replans,
    )
    print_result(result)
    if not result.ok:
        raise typer.Exit(1)


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


@app.command("mcp")
def mcp_command(
    module: ModulesOpt = None,
    entrypoint: EntrypointsOpt = None,
    deployment: Annotated[
        list[str] | None,
        typer.Option("--deployment", "-d", help="A deployment, 'flow name/deployment name'."),
    ] = None,
    deployment_tag: Annotated[
        list[str] | None,
        typer.Option(help="Every deployment with this tag becomes an action."),
    ] = None,
    flow_id: Annotated[
        list[str] | None,
        typer.Option(help="Agents may use only actions of these groups (and global ones)."),
    ] = None,
    planner: Annotated[str, typer.Option(help="auto, heuristic or llm.")] = "auto",
    transport: Annotated[str, typer.Option(help="stdio, or http (streamable HTTP).")] = "stdio",
    host: Annotated[str, typer.Option(help="With --transport http: the address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --transport http: the port.")] = 8000,
    pause_timeout: Annotated[
        int, typer.Option(help="Seconds a run waits for a person's approval.")
    ] = 3600,
) -> None:
    """Serve the catalog to agents over the Model Context Protocol (stdio by default).

    The actions are those of --module, --entrypoint, --deployment and --deployment-tag,
    or, with none of them, the catalog_* settings. Over HTTP every request needs the
    bearer token of PREFECT_INTEGRATIONS_AETHER_MCP_TOKEN.
    """
    from prefect_aether.cli._mcp import run_mcp_server

    run_mcp_server(
        modules=module or [],
        entrypoints=entrypoint or [],
        deployments=deployment or [],
        deployment_tags=deployment_tag or [],
        flow_ids=flow_id,
        planner=planner,
        transport=transport,
        host=host,
        port=port,
        pause_timeout=pause_timeout,
    )


app.command("history")(history_command)
app.command("show")(show_command)
app.add_typer(blocks_app, name="blocks")


# With no API URL, Prefect starts an embedded server; its first start on a new
# PREFECT_HOME migrates a new database, which takes longer than Prefect's default wait
# of 20 s on a small machine (the README's `make demo` on a fresh clone failed so).
EMBEDDED_STARTUP_SECONDS = 120


def main() -> None:  # pragma: no cover - console entry point
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED as ANALYTICS,
    )
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as STARTUP,
    )
    from prefect.settings import temporary_settings

    CONSOLE["hard_exit"] = True
    # Prefect read its settings when it was imported: a change goes through its context.
    updates: dict[Any, Any] = (
        {} if STARTUP.name in os.environ else {STARTUP: EMBEDDED_STARTUP_SECONDS}
    )
    # The embedded server's telemetry heartbeat logs an ERROR with a traceback on every
    # command where it cannot reach the internet: off, unless the user chose.
    if ANALYTICS.name not in os.environ:
        updates[ANALYTICS] = False
    with temporary_settings(updates=updates):
        app(args=resume_flag(sys.argv[1:]), prog_name="prefect-aether")
