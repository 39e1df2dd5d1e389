"""Plan validation: everything that can be checked before anything runs.

The validator never raises on a bad plan: it reports every problem as a
`ValidationIssue`. It is linear in steps + bindings, uses no recursion over
the plan, and does not care about the list order of steps, only that the
dependency graph is acyclic (`graphlib`).

Examples:
    >>> from prefect import flow
    >>> from prefect_aether import ActionCatalog, CandidatePlan, validate_plan
    >>> @flow(name="double", version="1")
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> catalog = ActionCatalog()
    >>> _ = catalog.register(double)
    >>> plan = CandidatePlan.from_dict({"steps": [
    ...     {"id": "b", "action": "double", "inputs": {"x": "${a.result}"}},
    ...     {"id": "a", "action": "double", "inputs": {"x": "${user.n}"}},
    ... ]})
    >>> result = validate_plan(plan, catalog)
    >>> result.is_partial_ok(), result.missing_user_bindings, result.levels
    (True, {'n': ['a.x']}, [['a'], ['b']])
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect_aether.catalog.policy import RUN_MODES
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.plan import CandidatePlan
from prefect_aether.settings import current_settings
from prefect_aether.validation._checker import Validator
from prefect_aether.validation._hints import producer_text
from prefect_aether.validation._issues import (
    IssueKind,
    ValidationIssue,
    ValidationResult,
    looks_like_secret,
    make_result,
)

__all__ = [
    "RUN_MODES",
    "IssueKind",
    "ValidationIssue",
    "ValidationResult",
    "looks_like_secret",
    "producer_text",
    "validate_plan",
]


def validate_plan(
    plan: CandidatePlan,
    catalog: ActionCatalog,
    *,
    user_inputs: Mapping[str, Any] | None = None,
    flow_ids: Iterable[str] | None = None,
    max_steps: int | None = None,
    allow_manual: bool = True,
    allow_overwrite: bool = False,
) -> ValidationResult:
    """Check a plan against a catalog before anything runs.

    Args:
        plan: The plan to check.
        catalog: The actions it may use.
        user_inputs: Values for `${user.*}` bindings known so far; checked
            against the inputs they feed.
        flow_ids: Restrict actions to these groups (and global actions).
        max_steps: Largest plan accepted; defaults to the `max_steps` setting.
        allow_manual: Whether the plan may use `aether:manual` actions; planners
            validate with False (only a hand-written plan may use them).
        allow_overwrite: Accept plans that write where another step (or the same one)
            reads, or write one location from two unordered steps; without it each
            such pair is a structural `write_conflict` issue.

    Returns:
        The result; it never raises for a bad plan.

    Examples:
        >>> from prefect_aether import ActionCatalog, CandidatePlan
        >>> plan = CandidatePlan.from_dict({"steps": [{"id": "a", "action": "nope"}]})
        >>> [issue.kind for issue in validate_plan(plan, ActionCatalog()).issues]
        ['unknown_action']
    """
    limit = max_steps if max_steps is not None else current_settings().max_steps
    if not plan.steps:
        issue = ValidationIssue(kind="empty_plan", message="The plan has no steps.")
        return make_result([issue], {}, [])
    if len(plan.steps) > limit:
        issue = ValidationIssue(
            kind="plan_too_large",
            message=f"The plan has {len(plan.steps)} steps; at most {limit} are allowed.",
            details={"steps": len(plan.steps), "max_steps": limit},
        )
        return make_result([issue], {}, [])
    with _gc_paused():
        return Validator(
            plan, catalog, user_inputs or {}, flow_ids, allow_manual, allow_overwrite
        ).run()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while validating.

    Validation allocates a few small containers per step and creates no
    reference cycles, so reference counting frees everything. Left on, the
    collector rescans the whole heap (a large plan included) again and again,
    which makes validating a 64k-step plan superlinear.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
