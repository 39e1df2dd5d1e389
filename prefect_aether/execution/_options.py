"""What one execution reads of its executor (`Options`; `PlanExecutor` is one) and
what it keeps of each step (`StepRecord`) (private to the executor)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from prefect.task_runners import TaskRunner
from pydantic import BaseModel

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.execution._results import StepResults

__all__ = ["Options", "StepRecord"]


class StepRecord(BaseModel):
    state: str = "Pending"
    started: float | None = None
    ended: float | None = None
    preview: str = ""
    why: str = ""  # why it failed (the masked error) or was skipped

    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return round(self.ended - self.started, 3)


class Options(Protocol):
    """What an execution reads of its executor (`PlanExecutor` is one)."""

    @property
    def catalog(self) -> ActionCatalog: ...
    @property
    def results(self) -> StepResults: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def fail_fast(self) -> bool: ...
    @property
    def run_as(self) -> str: ...
    @property
    def tag_steps(self) -> bool: ...
    @property
    def reuse_within(self) -> dt.timedelta | None: ...
    @property
    def task_runner(self) -> TaskRunner[Any] | None: ...
