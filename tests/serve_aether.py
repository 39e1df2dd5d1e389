"""The deployable flows served with `.serve()` by a separate process
(`python -m tests.serve_aether`), as the README shows: `.serve()` pickles each flow
by value into the runs it starts."""

from __future__ import annotations

from prefect import serve

from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.flows import execute_plan, plan_and_execute

SOURCE = CatalogSource(modules=["tests.hitl_flows"])
# The operator's policy for flows that cannot be decorated, in the deployment's defaults.
GUARDED = CatalogSource(
    modules=["tests.guarded_flows"], action_tags={"delete_backups": ["aether:approval"]}
)

if __name__ == "__main__":
    serve(
        plan_and_execute.to_deployment(
            "served-goal",
            parameters={"goal": "greet someone", "catalog": SOURCE.model_dump()},
            tags=["aether-served"],
        ),
        execute_plan.to_deployment(
            "served-plan", parameters={"catalog": SOURCE.model_dump()}, tags=["aether-served"]
        ),
        execute_plan.to_deployment(
            "guarded-plan",
            parameters={"catalog": GUARDED.model_dump(), "pause_timeout": 300},
            tags=["aether-served"],
        ),
    )
