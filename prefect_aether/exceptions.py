"""Exceptions raised by prefect-aether.

Every error the library raises on purpose derives from `PrefectAetherError`, so
one `except` clause catches them all. Misuse (bad configuration, a wrong
argument) is kept apart from failures of a plan or of a service:

```
PrefectAetherError
├── AetherUsageError          the library was called or configured wrongly
│   └── CatalogError          a flow cannot be registered, loaded or found
├── ApprovalRequired          a plan with aether:approval actions was not approved
├── BindingError              a "${...}" binding is malformed
├── PlanDecodingError         text is not a plan (carries the raw text)
├── PlanValidationError       a plan failed validation (carries the issues)
├── BudgetExceeded            a plan-and-execute spent its LLM calls, tokens or time
├── ExecutionError            a plan or step failed at run time
│   └── ExecutionInterrupted  the Prefect API went away mid-plan (resume it later)
└── LLMError                  the LLM endpoint failed (status code, truncated body)
```

All of them pickle, so they survive crossing a process boundary (a Prefect
worker, a subprocess, a task runner).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AetherUsageError",
    "ApprovalRequired",
    "BindingError",
    "BudgetExceeded",
    "CatalogError",
    "ExecutionError",
    "ExecutionInterrupted",
    "LLMError",
    "PlanDecodingError",
    "PlanValidationError",
    "PrefectAetherError",
    "StoreError",
]

_BODY_LIMIT = 2_000


class PrefectAetherError(Exception):
    """Base class of every error raised by prefect-aether.

    Examples:
        >>> try:
        ...     raise CatalogError("no such flow")
        ... except PrefectAetherError as exc:
        ...     print(type(exc).__name__, exc)
        CatalogError no such flow
    """


class AetherUsageError(PrefectAetherError):
    """The library was used or configured wrongly (not a runtime failure).

    Examples:
        >>> isinstance(CatalogError("x"), AetherUsageError)
        True
    """


class CatalogError(AetherUsageError):
    """A flow cannot be registered, loaded or found in the catalog.

    Examples:
        >>> from prefect_aether import ActionCatalog
        >>> try:
        ...     ActionCatalog().register(print)
        ... except CatalogError as exc:
        ...     print("not a Prefect flow" in str(exc))
        True
    """


class ApprovalRequired(PrefectAetherError):
    """A plan holds actions tagged `aether:approval` and nobody approved it; nothing ran.

    Attributes:
        actions: The actions that need the approval.

    Examples:
        >>> ApprovalRequired("not approved", actions=["charge_card"]).actions
        ['charge_card']
    """

    def __init__(self, message: str, *, actions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.actions = list(actions)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (str(self),), {"actions": self.actions}))


class BindingError(PrefectAetherError, ValueError):
    """A string that looks like a `${...}` binding is malformed.

    Examples:
        >>> from prefect_aether import parse_binding
        >>> try:
        ...     parse_binding("${load.}")
        ... except BindingError as exc:
        ...     print("expected" in str(exc))
        True
    """


class PlanDecodingError(PrefectAetherError):
    """Text (typically an LLM answer) could not be decoded into a plan.

    Attributes:
        raw: The text that failed to decode, kept so nothing is lost.

    Examples:
        >>> err = PlanDecodingError("not JSON", raw="{oops")
        >>> err.raw
        '{oops'
    """

    def __init__(self, message: str, *, raw: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (str(self),), {"raw": self.raw}))


class PlanValidationError(PrefectAetherError):
    """A plan failed validation; `issues` holds every problem found.

    Attributes:
        issues: The `ValidationIssue` objects reported by the validator.

    Examples:
        >>> from prefect_aether import ValidationIssue
        >>> issue = ValidationIssue(kind="empty_plan", message="The plan has no steps.")
        >>> err = PlanValidationError("invalid plan", issues=[issue])
        >>> err.issues[0].kind
        'empty_plan'
    """

    def __init__(self, message: str, *, issues: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.issues = list(issues)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (str(self),), {"issues": self.issues}))


class ExecutionError(PrefectAetherError):
    """A plan or one of its steps failed at run time.

    Attributes:
        step_id: The failing step, when one is known.

    Examples:
        >>> ExecutionError("boom", step_id="load").step_id
        'load'
    """

    def __init__(self, message: str, *, step_id: str | None = None) -> None:
        super().__init__(message)
        self.step_id = step_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (str(self),), {"step_id": self.step_id}))


class ExecutionInterrupted(ExecutionError):
    """An execution stopped before its end because the Prefect API could not be reached.

    Nothing is lost: its finished steps persist and `resume=execution_id` (CLI:
    `prefect-aether run PLAN --resume ID`) continues it once the API is back.

    Attributes:
        execution_id: The execution to resume.
        flow_run_id: Its flow run, when one was created.

    Examples:
        >>> ExecutionInterrupted("API down", execution_id="ab12").execution_id
        'ab12'
    """

    def __init__(
        self, message: str, *, execution_id: str | None = None, flow_run_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.flow_run_id = flow_run_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (
                type(self),
                (str(self),),
                {"execution_id": self.execution_id, "flow_run_id": self.flow_run_id},
            ),
        )


class LLMError(PrefectAetherError):
    """The LLM endpoint failed: transport error, bad status or unusable answer.

    Attributes:
        status_code: The HTTP status code, or None for transport errors.
        body: The response body, truncated to 2,000 characters.

    Examples:
        >>> err = LLMError("rate limited", status_code=429, body="slow down")
        >>> (err.status_code, err.body)
        (429, 'slow down')
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, body: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body[:_BODY_LIMIT] if body is not None else None

    def __reduce__(self) -> tuple[Any, ...]:
        state = {"status_code": self.status_code, "body": self.body}
        return (_rebuild, (type(self), (str(self),), state))


class BudgetExceeded(PrefectAetherError):
    """A plan-and-execute reached one of its budgets (LLM calls, tokens, seconds); it
    stops before the next LLM call or step.

    Attributes:
        budget: Which budget: `"llm_calls"`, `"tokens"` or `"seconds"`.

    Examples:
        >>> err = BudgetExceeded("budget llm_calls: 3 of 3 used", budget="llm_calls")
        >>> err.budget
        'llm_calls'
    """

    def __init__(self, message: str, *, budget: str) -> None:
        super().__init__(message)
        self.budget = budget

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (str(self),), {"budget": self.budget}))


class StoreError(PrefectAetherError):
    """The plan store cannot be used: not a database, locked, unreachable, or too new.

    Examples:
        >>> str(StoreError("database is locked"))
        'database is locked'
    """


def _rebuild(
    cls: type[PrefectAetherError], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> PrefectAetherError:
    return cls(*args, **kwargs)
