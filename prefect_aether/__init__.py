"""prefect-aether: point an AI planner at the Prefect flows you already have.

Registered flows become a typed action catalog; a planner composes them into a
plan for a goal; the plan is validated before anything runs.

Examples:
    >>> import prefect_aether
    >>> "ActionCatalog" in prefect_aether.__all__
    True
"""

from __future__ import annotations

from prefect_aether._version import __version__
from prefect_aether.blocks import LLMConfig
from prefect_aether.catalog.policy import action_tags
from prefect_aether.catalog.registry import ActionCatalog, ActionSpec, IOSlot
from prefect_aether.catalog.roles import Reads, Writes
from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.context import NodeContext, NodePlanner, get_planner
from prefect_aether.exceptions import (
    AetherUsageError,
    ApprovalRequired,
    BindingError,
    BudgetExceeded,
    CatalogError,
    ExecutionError,
    ExecutionInterrupted,
    LLMError,
    PlanDecodingError,
    PlanValidationError,
    PrefectAetherError,
    StoreError,
)
from prefect_aether.execution.executor import (
    BackgroundExecutionHandle,
    ExecutionEvent,
    ExecutionResult,
    PlanExecutor,
    Replan,
)
from prefect_aether.plan import (
    Binding,
    CandidatePlan,
    PlanStep,
    iter_bindings,
    map_bindings,
    parse_binding,
)
from prefect_aether.planning.heuristic import HeuristicPlanner
from prefect_aether.planning.llm import OpenAICompatibleLLM
from prefect_aether.planning.llm_planner import (
    ActionPlanner,
    PlanningContext,
    PlanningEvent,
    PlanResult,
    decode_plan,
)
from prefect_aether.replanning import Replanning
from prefect_aether.service import Budget, Identity, PlannerService, RunInfo
from prefect_aether.settings import AetherSettings
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import ValidationIssue, ValidationResult, validate_plan

__all__ = [
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
