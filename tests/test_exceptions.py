from __future__ import annotations

import pickle

import pytest

from prefect_aether import (
    AetherUsageError,
    CatalogError,
    ExecutionError,
    ExecutionInterrupted,
    LLMError,
    PlanDecodingError,
    PlanValidationError,
    PrefectAetherError,
    ValidationIssue,
)


@pytest.mark.parametrize(
    "error",
    [
        CatalogError("no flow"),
        PlanDecodingError("bad json", raw="{oops"),
        PlanValidationError(
            "invalid", issues=[ValidationIssue(kind="empty_plan", message="The plan has no steps.")]
        ),
        ExecutionError("boom", step_id="load"),
        ExecutionInterrupted("API down", execution_id="ab" * 16, flow_run_id="r1"),
        LLMError("rate limited", status_code=429, body="slow down"),
    ],
)
def test_errors_pickle_with_their_fields(error: PrefectAetherError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_tree_separates_misuse_from_runtime_failures() -> None:
    assert issubclass(CatalogError, AetherUsageError)
    for runtime in (PlanDecodingError, PlanValidationError, ExecutionError, LLMError):
        assert issubclass(runtime, PrefectAetherError)
        assert not issubclass(runtime, AetherUsageError)


def test_llm_error_truncates_body() -> None:
    error = LLMError("server error", status_code=500, body="x" * 10_000)
    assert error.body is not None
    assert len(error.body) == 2_000
