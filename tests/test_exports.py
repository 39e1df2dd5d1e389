"""The package's public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import inspect

import prefect_aether

EXPECTED = [
    "ActionCatalog",
    "ActionPlanner",
    "ActionSpec",
    "AetherSettings",
    "AetherUsageError",
    "ApprovalRequired",
    "BackgroundExecutionHandle",
    "Binding",
    "BindingError",
    "Budget",
    "BudgetExceeded",
    "CandidatePlan",
    "CatalogError",
    "CatalogSource",
    "ExecutionError",
    "ExecutionEvent",
    "ExecutionInterrupted",
    "ExecutionResult",
    "HeuristicPlanner",
    "IOSlot",
    "Identity",
    "LLMConfig",
    "LLMError",
    "NodeContext",
    "NodePlanner",
    "OpenAICompatibleLLM",
    "PlanDecodingError",
    "PlanExecutor",
    "PlanResult",
    "PlanStep",
    "PlanStore",
    "PlanValidationError",
    "PlannerService",
    "PlanningContext",
    "PlanningEvent",
    "PrefectAetherError",
    "Reads",
    "Replan",
    "Replanning",
    "RunInfo",
    "StoreError",
    "ValidationIssue",
    "ValidationResult",
    "Writes",
    "__version__",
    "action_tags",
    "decode_plan",
    "get_planner",
    "iter_bindings",
    "map_bindings",
    "parse_binding",
    "validate_plan",
]


def test_all_is_pinned_and_sorted() -> None:
    assert prefect_aether.__all__ == EXPECTED
    assert sorted(prefect_aether.__all__) == prefect_aether.__all__


def test_every_public_name_exists_and_has_an_example() -> None:
    for name in prefect_aether.__all__:
        obj = getattr(prefect_aether, name)
        if name == "__version__":
            assert isinstance(obj, str)
            assert obj.count(".") == 2
            continue
        doc = inspect.getdoc(obj) or ""
        assert ">>>" in doc, f"{name} has no runnable example in its docstring"


def test_collection_entry_point_is_declared() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="prefect.collections")}
    assert names.get("prefect_aether") == "prefect_aether"
