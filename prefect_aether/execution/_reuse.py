"""Which stored result a step may reuse: its keys, their freshness, and writing them
(private to `_run`).

A step's result is keyed by execution id + step id + a hash of its resolved inputs +
a hash of its action's code; with `reuse_within`, a shared key of the same inputs and
code lets another execution reuse it while it is young enough.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from prefect import Flow

from prefect_aether.catalog.specs import ActionSpec
from prefect_aether.execution._results import MISSING, StepResults, code_hash, inputs_hash
from prefect_aether.execution._steps import canonical_inputs
from prefect_aether.plan import PlanStep

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
# What a stored result holds: the step's whole return value. Records of other formats
# (the output fields that releases before whole outputs kept) are not reused.
_FORMAT = 2
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class StepKeeper:
    """The persisted results of one execution's steps."""

    def __init__(
        self, results: StepResults, execution_id: str, reuse_within: dt.timedelta | None
    ) -> None:
        self.results = results
        self.execution_id = execution_id
        self.reuse_within = reuse_within
        self.code_hashes: dict[str, str] = {}
        # Steps whose result came from another execution (`reuse_within`), not this one.
        self.from_elsewhere: set[str] = set()

    def keys(
        self, step: PlanStep, spec: ActionSpec, flow: Flow[..., Any] | None, inputs: dict[str, Any]
    ) -> list[str]:
        """The step's result key in this execution and, when reuse across executions is
        allowed, the shared key of the same inputs and code."""
        code = self.code_hashes.get(spec.name)
        if code is None:
            code = self.code_hashes[spec.name] = code_hash(
                flow.fn if flow is not None else None, spec.model_dump_json()
            )
        digest = inputs_hash(canonical_inputs(flow, inputs))
        keys = [f"aether/{self.execution_id}/{step.id}-{digest}-{code}"]
        if self.reuse_seconds(step) is not None:
            keys.append(f"aether/shared/{_SAFE.sub('_', spec.name)}-{digest}-{code}")
        return keys

    def reuse_seconds(self, step: PlanStep) -> float | None:
        seconds = step.extras.get("reuse_within")
        if seconds is not None:
            return float(seconds)
        within = self.reuse_within
        return within.total_seconds() if within is not None else None

    async def read(self, step: PlanStep, keys: list[str]) -> Any:
        """The step's return value in this execution; else, when reuse is allowed, one of
        the same inputs and code written no longer than `reuse_within` ago; else MISSING."""
        found = _value_of(await self.results.read(keys[0]))
        if found is not MISSING or len(keys) == 1:
            return found
        shared = await self.results.read(keys[1], shared=True)
        seconds = self.reuse_seconds(step)
        try:
            written = dt.datetime.fromisoformat(shared["written_at"])
            age = (dt.datetime.now(dt.timezone.utc) - written).total_seconds()
            fresh = seconds is not None and 0 <= age <= seconds
            found = _value_of(shared["result"]) if fresh else MISSING
        except (TypeError, KeyError, ValueError):
            return MISSING
        if found is not MISSING:
            self.from_elsewhere.add(step.id)
        return found

    def reuse_message(self, step: PlanStep) -> str:
        """Where a reused step's result came from, for its state and the log."""
        if step.id in self.from_elsewhere:
            return "reused the result of another execution with the same inputs and code"
        return "reused its result from an earlier attempt of this execution"

    async def write(
        self, step: PlanStep, keys: list[str], value: Any, holder: str, log: _Log
    ) -> None:
        """Keep the step's whole return value (its outputs are made from it again)."""
        record = {"format": _FORMAT, "value": value}
        if not await self.results.write(keys[0], record, holder=holder):
            log.warning(
                "step %r: its outputs are not JSON data, so they are not kept for resume "
                "(PlanExecutor(result_serializer='pickle') keeps them)",
                step.id,
            )
            return
        if len(keys) > 1:
            now = dt.datetime.now(dt.timezone.utc).isoformat()
            shared = {"written_at": now, "result": record}
            await self.results.write(keys[1], shared, holder=holder, shared=True)


def _value_of(record: Any) -> Any:
    if isinstance(record, dict) and record.get("format") == _FORMAT and "value" in record:
        return record["value"]
    return MISSING
