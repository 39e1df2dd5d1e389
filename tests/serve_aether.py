"""The deployable flows served with `.serve()` by a separate process
(`python -m tests.serve_aether`), as the README shows: `.serve()` pickles each flow
by value into the runs it starts."""

from __future__ import annotations

from prefect import serve

from prefect_aether.catalog.sources import CatalogSource
from prefect_aether.flows import execute_plan, plan_and_execute

SOURCE = CatalogSource(modules=["tests.hitl_flows"])

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
    )
