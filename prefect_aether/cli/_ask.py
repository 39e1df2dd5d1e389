"""Asking for the values a plan still needs (private to the CLI): on a terminal, one
typed question per `${user.*}` key with what the input is for; elsewhere, the
`--input` lines to add."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.markup import escape

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.cli._common import console, errors, fail
from prefect_aether.plan import CandidatePlan, non_finite
from prefect_aether.planning.inputs import user_input_schemas, user_input_slots
from prefect_aether.validation.validate import validate_plan


def missing_values(
    catalog: ActionCatalog, plan: CandidatePlan, values: dict[str, Any]
) -> dict[str, Any]:
    """`values` with what the plan still misses: asked on a terminal; without one, exit 2
    naming the `--input` lines to add. A plan with other issues is left to the caller."""
    validation = validate_plan(plan, catalog, user_inputs=values)
    missing = sorted(validation.missing_user_bindings)
    if not missing or validation.has_structural_errors:
        return values
    hints = _hints(catalog, plan)
    if not sys.stdin.isatty():
        lines = "\n".join(f"  --input {key}=<{hints.get(key, 'a value')}>" for key in missing)
        fail(f"the plan needs values nobody gave; add:\n{lines}")
    console.print(f"The plan needs {len(missing)} value(s).", highlight=False)
    answered = dict(values)
    for key in missing:
        answered[key] = _ask(catalog, plan, answered, key, hints.get(key, "a value"))
    return answered


def _ask(
    catalog: ActionCatalog, plan: CandidatePlan, values: dict[str, Any], key: str, hint: str
) -> Any:
    """Ask for one key until the answer is a value its input accepts."""
    schema = user_input_schemas(plan, catalog).get(key, {})
    while True:
        raw = typer.prompt(f"{key} ({hint})")
        value: Any = raw
        if schema.get("type") != "string":
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, RecursionError):
                value = raw
        if non_finite(value):
            errors.print("[red]NaN and infinities are not accepted; try again[/]")
            continue
        result = validate_plan(plan, catalog, user_inputs={**values, key: value})
        problems = [i.message for i in result.issues if i.details.get("user_key") == key]
        if not problems:
            return value
        errors.print(f"[red]{escape(problems[0])}[/] try again", highlight=False)


def _hints(catalog: ActionCatalog, plan: CandidatePlan) -> dict[str, str]:
    """Per user key, the type and description of the first input it feeds."""
    hints: dict[str, str] = {}
    for key, (slot, _, _) in user_input_slots(plan, catalog).items():
        if slot is not None:
            about = (slot.description or "").split("\n")[0].strip().rstrip(".")
            hints[key] = f"{slot.type or 'any'}{f': {about}' if about else ''}"
    return hints
