"""What the `prefect-aether` commands share: consoles, clean errors, the plan store
and the plan table (private to the CLI)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.exceptions import ExecutionInterrupted, PlanValidationError, PrefectAetherError
from prefect_aether.plan import CandidatePlan
from prefect_aether.settings import current_settings
from prefect_aether.store import PlanStore

console = Console()
errors = Console(stderr=True)

#: Set by the console entry point: a process of its own may exit at once when an
#: execution is interrupted (an in-process caller, such as a test runner, may not).
CONSOLE = {"hard_exit": False}


def fail(message: str) -> NoReturn:
    """Print one clear line and exit with status 2."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def clean_errors() -> Iterator[None]:
    try:
        yield
    except PlanValidationError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ExecutionInterrupted:
        raise  # the run's own failure (exit 1), not bad input
    except PrefectAetherError as exc:
        fail(str(exc))


@asynccontextmanager
async def open_store() -> AsyncIterator[PlanStore | None]:
    """The plan store of the settings (None when `store_enabled` is off), closed after."""
    if not current_settings().store_enabled:
        yield None
        return
    store = PlanStore()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def required_store() -> AsyncIterator[PlanStore]:
    """`open_store()` for commands that only read the store: off is an error."""
    async with open_store() as store:
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
    # The parts of the goal the plan does not do (its planner found no action for them).
    unserved = [str(part) for part in plan.extras.get("unserved") or []]
    if unserved:
        console.print(
            f"[yellow]not done by this plan (no action can do it): "
            f"{escape('; '.join(unserved))}[/]",
            highlight=False,
        )


def build_catalog(modules: list[str] | None, entrypoints: list[str] | None) -> ActionCatalog:
    """A catalog of the flows in the given modules and entrypoints."""
    if not modules and not entrypoints:
        fail("no actions: pass --module and/or --entrypoint")
    return add_local(ActionCatalog(), modules, entrypoints)


def add_local(
    catalog: ActionCatalog, modules: list[str] | None, entrypoints: list[str] | None
) -> ActionCatalog:
    """`catalog` with the flows of these modules (dotted names or `.py` files, found from
    the working directory) and entrypoints registered."""
    with clean_errors():
        for module in modules or []:
            if module.endswith(".py") or "/" in module:
                if not Path(module).is_file():
                    fail(f"module file {module!r} does not exist")
                sys.path.insert(0, str(Path.cwd()))
            catalog.register_module(module)
        for entrypoint in entrypoints or []:
            catalog.register_entrypoint(entrypoint)
    return catalog
