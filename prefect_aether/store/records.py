"""The rows the plan store hands out: plans and executions (`PlanRecord`,
`ExecutionRecord`), and how goals are normalized for the cache."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from prefect_aether.plan import CandidatePlan

__all__ = ["ExecutionRecord", "PlanRecord", "normalize_goal"]

_WORDS = re.compile(r"[\w$-]+", re.UNICODE)


def normalize_goal(goal: str) -> str:
    """The cache key form of a goal: lower case, words only, single spaces.

    Examples:
        >>> normalize_goal("  Revenue by REGION, then the report! ")
        'revenue by region then the report'
    """
    return " ".join(_WORDS.findall(goal.casefold()))


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite gives back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


class PlanRecord(BaseModel):
    """A stored plan.

    Examples:
        >>> PlanRecord(id=1, plan_id="p", goal="g", normalized_goal="g",
        ...            catalog_fingerprint="f", plan=CandidatePlan(steps=[]),
        ...            validation_ok=True, created_at=now()).input_keys
        []
    """

    id: int = Field(description="Row id.")
    plan_id: str = Field(description="The plan's content hash.")
    goal: str = Field(description="The goal as asked.")
    normalized_goal: str = Field(description="The goal as the cache compares it.")
    catalog_fingerprint: str = Field(description="Fingerprint of the catalog it was planned on.")
    input_keys: list[str] = Field(default_factory=list, description="User input keys given.")
    plan: CandidatePlan = Field(description="The plan.")
    validation_ok: bool = Field(description="Whether it was valid as planned.")
    validation_summary: str = Field(default="", description="`ValidationResult.summary()`.")
    missing_keys: list[str] = Field(default_factory=list, description="User values it needed.")
    planner: str = Field(default="", description="Which planner made it.")
    usage: dict[str, int] = Field(default_factory=dict, description="LLM tokens spent.")
    created_at: dt.datetime = Field(description="When it was stored (UTC).")


class ExecutionRecord(BaseModel):
    """One execution of a stored plan.

    Examples:
        >>> ExecutionRecord(id=1, plan_id="p", status="Running", started_at=now()).error is None
        True
    """

    id: int = Field(description="Row id.")
    plan_id: str = Field(description="The plan executed.")
    flow_run_id: str | None = Field(default=None, description="The plan's flow run.")
    status: str = Field(description="`Running`, `Completed` or `Failed`.")
    started_at: dt.datetime = Field(description="Start (UTC).")
    ended_at: dt.datetime | None = Field(default=None, description="End (UTC), once ended.")
    output_preview: str = Field(default="", description="Sanitized, truncated outputs.")
    error: str | None = Field(default=None, description="First error, if it failed.")
    execution_id: str | None = Field(
        default=None, description="The execution's id (tag `execution:<id>` on its flow run)."
    )
    holder: str | None = Field(default=None, description="`host:pid` of the process running it.")


def join_keys(keys: Iterable[str]) -> str:
    return ",".join(sorted(set(keys)))


def split_keys(value: str | None) -> list[str]:
    return [k for k in (value or "").split(",") if k]


def failed_step(error: str) -> str | None:
    """The step id an execution's error starts with (`"<step>: <message>"`), if any."""
    head = error.partition(":")[0]
    return head if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", head) else None


def plan_record(row: dict[str, Any]) -> PlanRecord:
    return PlanRecord(
        id=row["id"],
        plan_id=row["plan_id"],
        goal=row["goal"],
        normalized_goal=row["normalized_goal"],
        catalog_fingerprint=row["catalog_fingerprint"],
        input_keys=split_keys(row["input_keys"]),
        plan=CandidatePlan.from_dict(json.loads(row["plan_json"])),
        validation_ok=row["validation_ok"],
        validation_summary=row["validation_summary"] or "",
        missing_keys=split_keys(row["missing_keys"]),
        planner=row["planner"] or "",
        usage=dict(row["usage"] or {}),
        created_at=aware(row["created_at"]),
    )


def execution_record(row: dict[str, Any]) -> ExecutionRecord:
    return ExecutionRecord(
        **{**row, "started_at": aware(row["started_at"]), "ended_at": aware(row["ended_at"])}
    )
