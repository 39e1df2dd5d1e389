"""What is wrong with a binding to another step's output, if anything (private to
`_checker`): an output the action lacks, a path its schema rules out, or a value whose
structure the input cannot take (`catalog.schemas.mismatch`, with where they differ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefect_aether.catalog.schemas import MISSING, coarse_type, schema_at_path
from prefect_aether.catalog.specs import ActionSpec, IOSlot
from prefect_aether.plan import Binding
from prefect_aether.validation._issues import IssueKind

__all__ = ["output_problem"]


def output_problem(
    binding: Binding,
    source: ActionSpec,
    outputs: Mapping[str, IOSlot],
    where: str,
    target: Any,
    mismatch: Callable[[dict[str, Any], dict[str, Any]], str | None],
) -> tuple[IssueKind, str, dict[str, Any]] | None:
    """(issue kind, message, details) for `binding` to a step of `source` (its `outputs`
    by name) feeding the
    input at `where` (of schema `target`; None or MISSING when unknown); None when it
    fits."""
    source_id = binding.step_id or ""
    out = source.returns if binding.output is None else outputs.get(binding.output)
    if out is None:
        said = (
            "returns nothing"
            if binding.output is None
            else f"has no output {binding.output!r}; its outputs are "
            f"{', '.join(outputs) or '(none)'}"
        )
        message = f"{binding.raw}: action {source.name!r} (step {source_id!r}) {said}."
        return "unknown_output", message, {"outputs": list(outputs)}
    produced = schema_at_path(out.json_schema, binding.path) if binding.path else out.json_schema
    if produced is MISSING:
        what = "the return value" if binding.output is None else f"output {binding.output!r}"
        message = (
            f"{binding.raw}: {what} of step {source_id!r} has no path "
            f"{'.'.join(str(p) for p in binding.path)!r}."
        )
        return "unknown_output", message, {"output_schema": out.json_schema}
    problem = None if target is None or target is MISSING else mismatch(produced, target)
    if problem is None:
        return None
    message = (
        f"{binding.raw} gives {_kind(produced)} but {where} expects {_kind(target)}: {problem}."
    )
    return "type_mismatch", message, {"produced": produced, "expected": target}


def _kind(schema: Any) -> str:
    title = schema.get("title") if isinstance(schema, dict) else None
    kind = coarse_type(schema) or "any"
    return f"{kind} ({title})" if isinstance(title, str) and title else kind
