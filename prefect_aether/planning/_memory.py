"""What the plan store gives planning: the plan cache and worked examples (private to
the `service` facade)."""

from __future__ import annotations

import hashlib

from prefect_aether.catalog.registry import ActionCatalog
from prefect_aether.catalog.words import tokenize
from prefect_aether.planning.base import PlanExample
from prefect_aether.planning.llm_planner import EventLog, PlanningContext, PlanningEvent, PlanResult
from prefect_aether.store import PlanStore
from prefect_aether.validation.validate import validate_plan


async def worked_examples(
    store: PlanStore, catalog: ActionCatalog, ctx: PlanningContext, limit: int
) -> list[PlanExample]:
    """Plans that executed successfully for the goals most like this one, that still
    validate on today's catalog as a planner's plan (within `flow_ids`, and without
    `aether:manual` actions, which a planner must never be shown)."""
    wanted = set(tokenize(ctx.goal))
    scored = []
    for record in await store.successful_plans():
        words = set(tokenize(record.goal))
        overlap = len(wanted & words) / len(wanted | words) if wanted | words else 0.0
        if overlap > 0:
            scored.append((-overlap, -record.id, record))
    found: list[PlanExample] = []
    for _, _, record in sorted(scored, key=lambda item: item[:2]):
        checked = validate_plan(record.plan, catalog, flow_ids=ctx.flow_ids, allow_manual=False)
        if checked.has_structural_errors:
            continue
        found.append(PlanExample(goal=record.goal, plan=record.plan.to_dict()))
        if len(found) >= limit:
            break
    return found


def cache_scope(catalog: ActionCatalog, ctx: PlanningContext, planner: str = "") -> str:
    """What a cached plan is keyed by besides goal and input keys: the catalog, the
    actions the caller may use (`flow_ids`), so a plan made for a wider caller is
    never served to a narrower one, and the planner (its kind, and an LLM's base URL
    and model), so configuring or changing an LLM plans afresh."""
    fingerprint = catalog.fingerprint
    if ctx.flow_ids is None and not planner:
        return fingerprint
    scope = "\0".join([fingerprint, planner, *sorted(set(ctx.flow_ids or []))])
    return hashlib.sha256(scope.encode()).hexdigest()[: len(fingerprint)]


async def cached_plan(
    store: PlanStore,
    catalog: ActionCatalog,
    ctx: PlanningContext,
    emit: EventLog,
    planner: str = "",
) -> PlanResult | None:
    """The stored plan for this goal, catalog, allowed actions and input keys, if it may
    still be used (validated again, within `flow_ids` and without manual actions)."""
    hit = await store.find_cached(ctx.goal, cache_scope(catalog, ctx, planner), ctx.user_inputs)
    if hit is None:
        return None
    validation = validate_plan(
        hit.plan,
        catalog,
        user_inputs=ctx.user_inputs,
        flow_ids=ctx.flow_ids,
        allow_manual=False,
    )
    if validation.has_structural_errors or not (
        validation.ok or (ctx.allow_partial_plans and validation.is_partial_ok())
    ):
        return None
    await emit(
        PlanningEvent(
            phase="success",
            iteration=0,
            message=(
                f"reused plan {hit.plan_id} stored {hit.created_at:%Y-%m-%d %H:%M} UTC for "
                "the same goal, catalog and input keys (plan cache; cache=False or --no-cache "
                "plans again)"
            ),
            plan_dict=hit.plan.to_dict(),
            validation=validation,
        )
    )
    return PlanResult(
        plan=hit.plan,
        validation=validation,
        events=emit.events,
        planner=hit.planner,
        cached=True,
    )
