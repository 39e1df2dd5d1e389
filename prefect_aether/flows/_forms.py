"""The person in the loop of the deployable flows (private): the typed form for missing
values, the approval form, the pause that waits for them, and the audit of a decision."""

# No `from __future__ import annotations`: these models are built and pickled with the
# deployable flows (see `prefect_aether.flows`).
import keyword
from typing import Any, Literal

import anyio
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field, create_model

from prefect_aether._internal.text import cell, sanitize
from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.schemas import coarse_type
from prefect_aether.context import NodePlanner
from prefect_aether.exceptions import ExecutionError
from prefect_aether.plan import CandidatePlan
from prefect_aether.service import user_input_schemas
from prefect_aether.settings import current_settings

_PYTHON_TYPES: dict[str | None, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list[Any],
    "object": dict[str, Any],
    None: Any,
}


class Approval(RunInput):
    """The form a reviewer fills in to let a plan run (or not). Nothing is chosen until
    the reviewer chooses: submitting the form untouched is refused, never a rejection
    (or an approval) by default.

    Examples:
        >>> Approval(decision="reject", comment="wrong region").approve
        False
    """

    decision: Literal["approve", "reject"] = Field(
        description="Run this plan? Choose approve or reject."
    )
    approver: str = Field(default="", description="Your name, for the audit trail.")
    comment: str = Field(default="", description="Why (logged, and recorded with the decision).")

    @property
    def approve(self) -> bool:
        """Whether the reviewer approved."""
        return self.decision == "approve"


def user_input_model(
    schemas: dict[str, dict[str, Any]], needed_by: dict[str, list[str]] | None = None
) -> type[RunInput]:
    """A `RunInput` form with one typed field per missing `${user.<key>}` value.

    Field names in the form are the keys; each field carries the JSON schema of
    the slot it feeds (enums become drop-downs, bounds are checked).

    Examples:
        >>> Form = user_input_model({"csv_path": {"type": "string"}})
        >>> Form(csv_path="a.csv").model_dump(by_alias=True)
        {'csv_path': 'a.csv'}
    """
    fields: dict[str, Any] = {}
    for i, (key, schema) in enumerate(sorted(schemas.items())):
        where = ", ".join((needed_by or {}).get(key, []))
        # What the value is, and which step needs it: both, when both are known.
        said = [schema.get("description"), f"Needed by {where}." if where else None]
        description = " ".join(part for part in said if part) or None
        # The slot's own schema shapes the form, unless it points at definitions.
        extra = (
            {k: v for k, v in schema.items() if k not in ("title", "description")}
            if "$ref" not in str(schema)
            else {}
        )
        annotation = _PYTHON_TYPES.get(coarse_type(schema), Any)
        name = key if key.isidentifier() and not keyword.iskeyword(key) else f"field_{i}"
        fields[name] = (
            annotation,
            Field(alias=key, description=description, json_schema_extra=extra or None),
        )
    model: type[RunInput] = create_model("PlanInputs", __base__=RunInput, **fields)
    model._description = (  # type: ignore[assignment]
        "The plan needs these values before it can run."
    )
    return model


async def ask_for_values(
    plan: CandidatePlan, catalog: ActionCatalog, missing: dict[str, list[str]], timeout: int
) -> dict[str, Any]:
    """Pause the run until a person submits the missing values in the Prefect UI."""
    schemas = user_input_schemas(plan, catalog)
    form = user_input_model({k: schemas.get(k, {}) for k in missing}, missing)
    get_run_logger().info(
        "Waiting for values of %s; fill in the form on this flow run in the Prefect UI: %s",
        ", ".join(sorted(missing)),
        run_link(),
    )
    answer = await pause(form, timeout, key="aether-user-inputs", waiting_for="the plan's inputs")
    values: dict[str, Any] = answer.model_dump(
        by_alias=True, include=set(type(answer).model_fields)
    )
    return values


async def pause(form: type[Any], timeout: int, *, key: str, waiting_for: str) -> Any:
    poll = current_settings().pause_poll_interval
    # We time the wait ourselves and give the server's pause deadline a margin: once
    # that deadline passes, Prefect replaces any final state, and its message, with
    # "never resumed"; failing before it keeps the message below on the run.
    try:
        with anyio.fail_after(timeout):
            return await apause_flow_run(
                wait_for_input=form, timeout=timeout + 30 + 3 * poll, poll_interval=poll, key=key
            )
    except (TimeoutError, FlowPauseTimeout):
        raise ExecutionError(
            f"nobody provided {waiting_for} within {timeout} s (pause_timeout); "
            "the plan did not run"
        ) from None


def run_link() -> str:
    """This flow run's page in Prefect's new UI (under `/v2/`), and in the classic one;
    its id when no UI URL is known."""
    from prefect.settings import PREFECT_UI_URL

    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context is not None and context.flow_run else "?"
    ui = (PREFECT_UI_URL.value() or "").rstrip("/")
    if not ui:
        return f"flow run {run_id}"
    return f"{ui}/v2/runs/flow-run/{run_id} (classic UI: {ui}/runs/flow-run/{run_id})"


async def record_decision(node: NodePlanner, plan: CandidatePlan, decision: Approval) -> None:
    """Log the decision, emit `prefect-aether.plan.approved|rejected`, and record it in the
    plan store: the audit trail of who let which plan run, and why."""
    context = FlowRunContext.get()
    run_id = str(context.flow_run.id) if context is not None and context.flow_run else None
    verdict = "approved" if decision.approve else "rejected"
    who = sanitize(decision.approver, 200) or "someone (no name given)"
    comment = sanitize(decision.comment, 2000)
    # The new UI turns URLs in log lines into links: an approver's name or comment is
    # text of somebody's, so every link in it is broken (`cell`).
    get_run_logger().info(
        "plan %s %s by %s%s",
        plan.plan_id,
        verdict,
        cell(who),
        f": {cell(comment, 2000)}" if comment else "",
    )
    emit_event(
        event=f"prefect-aether.plan.{verdict}",
        resource={
            "prefect.resource.id": f"prefect-aether.plan.{plan.plan_id}",
            "prefect.resource.name": f"plan-{plan.plan_id}",
        },
        related=(
            [
                {
                    "prefect.resource.id": f"prefect.flow-run.{run_id}",
                    "prefect.resource.role": "flow-run",
                }
            ]
            if run_id
            else []
        ),
        payload={"approved": decision.approve, "approver": who, "comment": comment},
    )
    store = node.service.store
    if store is not None:
        await store.record_approval(
            plan.plan_id,
            approved=decision.approve,
            approver=decision.approver,
            comment=decision.comment,
            flow_run_id=run_id,
        )
