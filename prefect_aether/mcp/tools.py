"""What the MCP server's tools do, without the protocol: `AgentTools` searches, plans,
validates, runs and watches plans over one catalog for an agent.

An agent is a planner, never an operator. Everything it sends is untrusted: goals and
values are bounded and checked, plans are decoded with the limits of LLM answers and
validated as a planner's (no `aether:manual` action, only the allowed `flow_ids`), and
no argument can approve a plan. What goes back is sanitized and bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_aether._internal.canonical import canonical_json
from prefect_aether._internal.text import sanitize
from prefect_aether.catalog import policy
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.specs import ActionSpec, IOSlot
from prefect_aether.exceptions import AetherUsageError, PlanDecodingError
from prefect_aether.mcp._runs import AgentRuns, prefect_server_configured
from prefect_aether.plan import CandidatePlan, nesting_depth, non_finite
from prefect_aether.planning.base import checked_goal, decode_plan
from prefect_aether.service import PlannerService, user_input_schemas
from prefect_aether.settings import current_settings
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import ValidationResult, validate_plan

__all__ = ["AgentTools"]

#: Longest text of one value sent back (an output, an error, a schema).
TEXT_CHARS = 4_000
#: Most actions `search_actions` returns, most history entries `history` returns.
MOST_RESULTS = 50
#: The goal given to plans an agent wrote itself (`validate`) when it names none.
AGENT_PLAN_GOAL = "(a plan written by an agent)"


class AgentTools:
    """The tools of `prefect-aether mcp`, as plain async methods returning JSON data.

    Args:
        service: Plans and executes over its catalog; it must have a plan store (plans
            are run by the id under which the store keeps them).
        flow_ids: The only action groups an agent may use (and global actions); all
            when None.
        pause_timeout: Seconds a run waits for a person's approval in the Prefect UI.

    Raises:
        AetherUsageError: The service has no plan store.
    """

    def __init__(
        self,
        service: PlannerService,
        *,
        flow_ids: Iterable[str] | None = None,
        pause_timeout: int = 3600,
    ) -> None:
        if service.store is None:
            raise AetherUsageError(
                "the MCP server needs the plan store (PREFECT_INTEGRATIONS_AETHER_STORE_ENABLED)"
            )
        self.service = service
        self.store: PlanStore = service.store
        self.flow_ids = list(flow_ids) if flow_ids is not None else None
        self.runs = AgentRuns(service, pause_timeout=pause_timeout)

    @property
    def catalog(self) -> ActionCatalog:
        return self.service.catalog

    def _allowed(self) -> list[ActionSpec]:
        return self.catalog.list_actions(flow_ids=self.flow_ids, plannable=True)

    # -- search_actions -------------------------------------------------------------------

    def search_actions(self, query: str = "", limit: int = 10) -> dict[str, Any]:
        """The actions an agent may plan with that best match `query` (all, for an empty
        query), with their inputs, outputs, types, roles and policy."""
        limit = _bounded_int(limit, "limit", 1, MOST_RESULTS)
        allowed = {spec.name for spec in self._allowed()}
        if query.strip():
            found = self.catalog.search(query[:1000], len(allowed) or 1, flow_ids=self.flow_ids)
            specs = [spec for spec in found if spec.name in allowed]
        else:
            specs = self._allowed()
        return {
            "actions": [_describe(spec) for spec in specs[:limit]],
            "total_actions": len(allowed),
        }

    # -- plan ---------------------------------------------------------------------------------

    async def plan(self, goal: str, user_inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Plan `goal` over the allowed actions; the plan is kept in the plan store under
        its `plan_id` for `run`."""
        values = _checked_values(user_inputs)
        # The service refuses a blank or too long goal (`checked_goal`) before planning.
        result = await self.service.aplan(goal, user_inputs=values, flow_ids=self.flow_ids)
        answer: dict[str, Any] = {
            "plan_id": result.plan.plan_id if result.plan else None,
            "planner": result.planner,
            "cached": result.cached,
            "unserved": [sanitize(text, TEXT_CHARS) for text in result.unserved],
        }
        if result.plan is None:
            reason = (
                f"no action can: {'; '.join(result.unserved)}"
                if result.unserved
                else "no plan of the allowed actions reaches the goal"
            )
            detail = result.validation.summary() if result.validation is not None else ""
            return {
                **answer,
                "plan": None,
                "valid": False,
                "issues": _issues(result.validation),
                "message": sanitize(f"{reason}. {detail}".strip(), TEXT_CHARS),
            }
        validation = validate_plan(
            result.plan,
            self.catalog,
            user_inputs=values,
            flow_ids=self.flow_ids,
            allow_manual=False,
        )
        return {**answer, **self._verdict(result.plan, validation)}

    # -- validate -------------------------------------------------------------------------

    async def validate(
        self,
        plan: Mapping[str, Any],
        user_inputs: Mapping[str, Any] | None = None,
        goal: str = "",
    ) -> dict[str, Any]:
        """Validate a plan written by the agent; a plan that can run (now or once its
        missing values are given) is stored and gets a `plan_id` for `run`."""
        candidate = _decoded(plan)
        values = _checked_values(user_inputs)
        validation = validate_plan(
            candidate,
            self.catalog,
            user_inputs=values,
            flow_ids=self.flow_ids,
            allow_manual=False,
        )
        verdict = self._verdict(candidate, validation)
        if validation.has_structural_errors:
            return {"plan_id": None, **verdict}
        await self.store.save_plan(
            candidate,
            goal=checked_goal(goal) if goal.strip() else AGENT_PLAN_GOAL,
            # Never the scope of the plan cache: a plan an agent wrote is not served to
            # whoever plans the same goal next.
            catalog_fingerprint=f"agent:{self.catalog.fingerprint}",
            input_keys=values,
            validation=validation,
            planner="agent",
        )
        return {"plan_id": candidate.plan_id, **verdict}

    def _verdict(self, plan: CandidatePlan, validation: ValidationResult) -> dict[str, Any]:
        schemas = user_input_schemas(plan, self.catalog)
        missing = {
            key: {
                "schema": _bounded_json(schemas.get(key, {})),
                "used_by": sorted(set(slots)),
            }
            for key, slots in validation.missing_user_bindings.items()
        }
        approval = self.service.executor.approval_actions(plan)
        return {
            "plan": _bounded_json(plan.to_dict()),
            "valid": not validation.has_structural_errors,
            "ready": validation.ok,
            "issues": _issues(validation),
            "missing_inputs": missing,
            "levels": validation.levels,
            "needs_approval": approval,
            "next": _next_step(validation, missing, approval),
        }

    # -- run and status -------------------------------------------------------------------

    async def run(
        self, plan_id: str, user_inputs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Start executing a stored plan; returns at once with its `execution_id`."""
        plan_id = _checked_id(plan_id, "plan_id")
        values = _checked_values(user_inputs)
        record = await self.store.get_plan(plan_id)
        if record is None:
            raise AetherUsageError(
                f"no plan {plan_id!r} in the plan store; `plan` or `validate` a plan first"
            )
        plan = record.plan
        validation = validate_plan(
            plan, self.catalog, user_inputs=values, flow_ids=self.flow_ids, allow_manual=False
        )
        if validation.has_structural_errors:
            raise AetherUsageError(f"plan {plan_id} cannot run here: {validation.summary()}")
        if validation.missing_user_bindings:
            raise AetherUsageError(
                f"plan {plan_id} needs values for "
                f"{', '.join(sorted(validation.missing_user_bindings))}: pass them in "
                "user_inputs (`validate` or `plan` lists their schemas)"
            )
        approval = self.service.executor.approval_actions(plan)
        if approval and not prefect_server_configured():
            raise AetherUsageError(
                f"plan {plan_id} uses {', '.join(approval)}, which a person must approve, and "
                "an agent cannot approve; this MCP server has no Prefect server "
                "(PREFECT_API_URL) whose UI could ask one. Nothing ran."
            )
        started = await self.runs.start(plan, values, needs_approval=bool(approval))
        return started.view(TEXT_CHARS)

    async def status(self, execution_id: str) -> dict[str, Any]:
        """The state of an execution: of a run this server started (live step states),
        else of any execution in the plan store."""
        execution_id = _checked_id(execution_id, "execution_id")
        live = self.runs.get(execution_id)
        if live is not None:
            await self.runs.refresh(live)
            return live.view(TEXT_CHARS)
        record = await self.store.find_execution(execution_id)
        if record is None:
            raise AetherUsageError(f"no execution {execution_id!r} in the plan store")
        return {
            "execution_id": record.execution_id,
            "plan_id": record.plan_id,
            "state": record.status,
            "flow_run_id": record.flow_run_id,
            "started_at": record.started_at.isoformat(),
            "ended_at": record.ended_at.isoformat() if record.ended_at else None,
            "outputs_preview": sanitize(record.output_preview, TEXT_CHARS),
            "error": sanitize(record.error, TEXT_CHARS) if record.error else None,
        }

    # -- history --------------------------------------------------------------------------

    async def history(self, goal: str = "", limit: int = 10) -> dict[str, Any]:
        """The newest executions (of one goal's plans, when given)."""
        limit = _bounded_int(limit, "limit", 1, MOST_RESULTS)
        wanted = checked_goal(goal) if goal.strip() else None
        entries = await self.store.history(goal=wanted, limit=limit)
        return {
            "executions": [
                {
                    "execution_id": run.execution_id,
                    "plan_id": plan.plan_id,
                    "goal": sanitize(plan.goal, 500),
                    "state": run.status,
                    "started_at": run.started_at.isoformat(),
                    "ended_at": run.ended_at.isoformat() if run.ended_at else None,
                    "steps": [step.action for step in plan.plan.steps],
                    "outputs_preview": sanitize(run.output_preview, 500),
                    "error": sanitize(run.error, 500) if run.error else None,
                }
                for plan, run in entries
            ]
        }


def _describe(spec: ActionSpec) -> dict[str, Any]:
    """An action as an agent reads it."""

    def slot(io: IOSlot) -> dict[str, Any]:
        view: dict[str, Any] = {"name": io.name, "type": io.type or "any"}
        if io.description:
            view["description"] = sanitize(io.description, 500)
        if io.role:
            view["role"] = io.role
        if not io.required:
            view["required"] = False
            view["default"] = _bounded_json(io.default)
        if io.json_schema:
            view["schema"] = _bounded_json(io.json_schema)
        return view

    described: dict[str, Any] = {
        "name": spec.name,
        "description": sanitize(spec.description, 1000),
        "kind": spec.kind,
        "needs_approval": policy.needs_approval(spec),
        "inputs": [slot(io) for io in spec.inputs],
        "outputs": [slot(io) for io in spec.outputs],
    }
    if spec.returns is not None:
        described["returns"] = slot(spec.returns)
    return described


def _issues(validation: ValidationResult | None) -> list[dict[str, Any]]:
    if validation is None:
        return []
    return [
        {
            "kind": issue.kind,
            "step": sanitize(issue.step_id, 200) if issue.step_id else None,
            "message": sanitize(issue.message, 1000),
        }
        for issue in validation.issues[:MOST_RESULTS]
    ]


def _next_step(
    validation: ValidationResult, missing: Mapping[str, Any], approval: list[str]
) -> str:
    if validation.has_structural_errors:
        return "The plan cannot run: fix the issues and call `validate`, or `plan` again."
    parts = []
    if missing:
        parts.append(f"give values for {', '.join(sorted(missing))} in `run`'s user_inputs")
    if approval:
        parts.append(
            f"a person must approve {', '.join(approval)} in the Prefect UI once it runs "
            "(an agent cannot)"
        )
    return (
        ("Call `run` with the plan_id; " + "; ".join(parts) + ".")
        if parts
        else ("Call `run` with the plan_id.")
    )


def _decoded(plan: Any) -> CandidatePlan:
    """A plan sent by an agent, read with the limits of an LLM answer."""
    if not isinstance(plan, Mapping):
        raise AetherUsageError('plan must be a JSON object: {"steps": [...]}')
    try:
        text = json.dumps(plan, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise AetherUsageError(f"plan is not plain JSON: {sanitize(str(exc))}") from None
    try:
        return decode_plan(text)
    except PlanDecodingError as exc:
        raise AetherUsageError(f"plan is not a valid plan: {sanitize(str(exc), 1000)}") from None


def _checked_values(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """User values from an agent: a JSON object of finite, bounded values."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise AetherUsageError("user_inputs must be a JSON object of key: value")
    checked: dict[str, Any] = {}
    depth = current_settings().max_input_depth
    for key, value in values.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise AetherUsageError(f"user_inputs has a bad key {sanitize(str(key), 50)!r}")
        if nesting_depth(value, depth) > depth:
            raise AetherUsageError(
                f"user_inputs[{key!r}] nests deeper than {depth} levels (max_input_depth)"
            )
        if non_finite(value):
            raise AetherUsageError(f"user_inputs[{key!r}] holds NaN or an infinity")
        checked[key] = value
    try:
        size = len(canonical_json(checked))
    except (TypeError, ValueError, RecursionError):
        raise AetherUsageError("user_inputs is not plain JSON") from None
    limit = current_settings().max_plan_bytes
    if size > limit:
        raise AetherUsageError(
            f"user_inputs is {size} bytes as JSON; at most {limit} are accepted (max_plan_bytes)"
        )
    return checked


def _checked_id(value: str, name: str) -> str:
    text = value.strip().lower()
    if not (4 <= len(text) <= 64) or any(c not in "0123456789abcdef-" for c in text):
        raise AetherUsageError(
            f"{name} must be the hex id a tool returned, got {sanitize(value, 80)!r}"
        )
    return text


def _bounded_int(value: int, name: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise AetherUsageError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bounded_json(value: Any) -> Any:
    """`value` when its JSON is short, else a note of its size (never cut mid-structure)."""
    try:
        size = len(canonical_json(value))
    except (TypeError, ValueError):
        return sanitize(repr(value), TEXT_CHARS)
    if size <= TEXT_CHARS * 4:
        return value
    return f"(too large to show: {size} characters of JSON)"
