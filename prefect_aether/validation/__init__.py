"""Plan validation: everything that can be checked before anything runs.

Owns the one-pass checker (`validate_plan`), what it reports (`ValidationResult`,
`ValidationIssue` and their kinds) and the levels of steps that can run together.
It imports only the plan and the catalog: planners and the executor call it, never
the other way round.

Offers `validate_plan`, `ValidationResult`, `ValidationIssue`, `IssueKind`,
`RUN_MODES` and `looks_like_secret`.

Examples:
    >>> from prefect_aether.catalog import ActionCatalog
    >>> from prefect_aether.plan import CandidatePlan
    >>> from prefect_aether.validation import validate_plan
    >>> validate_plan(CandidatePlan(steps=[]), ActionCatalog()).issues[0].kind
    'empty_plan'
"""

from __future__ import annotations

from prefect_aether.validation.validate import (
    RUN_MODES,
    IssueKind,
    ValidationIssue,
    ValidationResult,
    looks_like_secret,
    validate_plan,
)

__all__ = [
    "RUN_MODES",
    "IssueKind",
    "ValidationIssue",
    "ValidationResult",
    "looks_like_secret",
    "validate_plan",
]
